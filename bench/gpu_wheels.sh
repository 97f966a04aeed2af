#!/usr/bin/env bash
# Wheels for the packages attnmap needs that the lent GPU machines' Python lacks, made HERE (that
# machine reaches no network) and carried with the call that runs `bash bench/gpu_check.sh`, which
# installs them from ./.whl into a folder on PYTHONPATH.
#
#     bash bench/gpu_wheels.sh            # -> ./.whl (ignored by git); then carry ".whl"
#
# The machines' image (Python 3.12, torch 2.11 with CUDA, timm, h5py, OpenCV, SciPy, Pillow,
# tifffile, PyYAML, click, tqdm, safetensors, pytest, ...) lacks pydantic (and what it needs),
# OpenSlide, imagecodecs (tifffile's JPEG) and geojson. Each is fetched at the version installed in
# this checkout's Python (the one the suite passed with), for CPython $GPU_PYTHON_VERSION on x86-64
# Linux, without dependencies (they are all named here). About 31 MB, mostly imagecodecs: with the
# repository it stays under the 64 MiB a call may carry.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GPU_PYTHON_VERSION="${GPU_PYTHON_VERSION:-3.12}"
PYTHON="${GPU_WHEELS_PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
NAMES=(pydantic pydantic_core annotated-types typing-inspection typing_extensions
       openslide-python openslide-bin imagecodecs geojson)

mapfile -t PINNED < <("$PYTHON" - "${NAMES[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
PY
)
PLATFORMS=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux_2_5_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$platform")
done
rm -rf .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON_VERSION" \
    --implementation cp "${PLATFORMS[@]}" -d .whl "${PINNED[@]}"
ls -l .whl
echo "$(du -sh .whl | cut -f1) in .whl; carry it: run(command='bash bench/gpu_check.sh', carry=['.whl'])"
