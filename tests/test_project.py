"""The project's own housekeeping: pyproject.toml agrees with the requirements files, the fast test tier
(`-m "not slow"`) still reaches every package, and CI runs the README's test command. Reads files only."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from tests.test_architecture import PACKAGE_LAYERS

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(name: str) -> list[str]:
    """The requirement specifiers of a requirements file (comments, blank lines and `-r` includes left out)."""
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-r")]


def normalised(requirement: str) -> str:
    """Compare names as pip does: case-insensitive, `-` and `_` alike."""
    name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest.replace(" ", "")


def test_pyproject_dependencies_are_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
    assert requirement_lines("requirements.txt")                       # something to read
    extras = project["project"]["optional-dependencies"]
    for extra, name in (("test", "requirements-test.txt"), ("baselines", "requirements-baselines.txt")):
        assert sorted(map(normalised, extras[extra])) == sorted(map(normalised, requirement_lines(name))), name
    assert not (ROOT / "pytest.ini").exists()                          # one place for the pytest settings


def test_pyproject_lists_every_code_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in ROOT.glob("*/**/__init__.py")
                if p.parts[len(ROOT.parts)] in PACKAGE_LAYERS}
    assert set(setuptools["packages"]) == packages


def _is_slow(decorators: list[ast.expr]) -> bool:
    return any(ast.unparse(d).endswith("mark.slow") for d in decorators)


def _packages(nodes) -> set[str]:
    found = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {alias.name.split(".")[0] for alias in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                found.add(sub.module.split(".")[0])
    return found


def fast_tier_packages() -> set[str]:
    """Project packages imported by a test module that has at least one test outside the slow tier (its
    module-level imports, and the imports inside its fast tests)."""
    reached = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if any("pytestmark" in ast.unparse(n) and "slow" in ast.unparse(n) for n in tree.body
               if isinstance(n, ast.Assign)):
            continue
        fast = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
                and not _is_slow(n.decorator_list)]
        if fast:
            top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
            reached |= _packages(top) | _packages(fast)
    return reached


def test_every_package_keeps_a_fast_test():
    missing = (set(PACKAGE_LAYERS) | {"benchmarks"}) - fast_tier_packages()
    assert not missing, f"no test outside the slow tier imports {sorted(missing)}"


def test_the_slow_marker_is_registered_and_strict():
    """A misspelt marker (`@pytest.mark.slwo`) would silently put a slow test in the fast tier."""
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("slow:") for m in pytest_options["markers"])
    assert "--strict-markers" in pytest_options["addopts"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    step_b = readme[readme.index("**(b)"):]
    command = re.search(r"```bash\n(.+?)\n```", step_b, re.S).group(1).strip()
    assert "ruff check" in command and "pytest" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
