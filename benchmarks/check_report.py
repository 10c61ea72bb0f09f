"""Open an HTML report (evaluation.html_report) in a real headless browser: every image must load, and a
screenshot is taken (the README's picture of the report).

    python -m benchmarks.check_report outputs/synthetic/demo/predict/report.html \\
        --screenshot benchmarks/figures/predict_report.png

Needs Debian's chromium (`apt-get install chromium`). The page records on its <body>, once loaded, how many images
it has and how many failed to load (`data-images`, `data-missing`); this script reads them from the DOM the
browser dumps and compares the count with the <img> tags of the file. Exit code 0 when every image loaded, 1
otherwise (one line per problem), 2 when no browser is installed.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
         "--virtual-time-budget=10000")


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def loaded_images(page: Path, exe: str) -> tuple[int, int]:
    """(images on the page, images that failed to load) as the browser saw them."""
    dom = subprocess.run([exe, *FLAGS, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'data-(images|missing)="(\d+)"', body.group(1) if body else ""))
    if "images" not in attrs:
        raise RuntimeError(f"{page}: the page did not report its images (its script did not run)")
    return int(attrs["images"]), int(attrs["missing"])


def screenshot(page: Path, exe: str, out: Path, width: int, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, *FLAGS, f"--screenshot={out.resolve()}", f"--window-size={width},{height}",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", type=Path, help="report.html files")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the first page")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    exe = browser()
    if exe is None:
        print("error: no headless browser found (apt-get install chromium)", file=sys.stderr)
        return 2
    problems = []
    for page in args.pages:
        if not page.is_file():
            problems.append(f"{page}: no such report")
            continue
        tags = len(re.findall(r"<img\b", page.read_text(encoding="utf-8")))
        images, missing = loaded_images(page, exe)
        print(f"{page}: {images} images, {missing} missing ({tags} <img> tags in the file)")
        if missing or images != tags or images == 0:
            problems.append(f"{page}: {missing} of {images} images did not load ({tags} in the file)")
    if args.screenshot is not None and args.pages[0].is_file():
        screenshot(args.pages[0], exe, args.screenshot, args.width, args.height)
        print(f"screenshot: {args.screenshot}")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
