#!/usr/bin/env bash
# The GPU check of issue 16 point 6, as one command on a machine with a CUDA GPU:
#
#     bash bench/gpu_check.sh                      # from the repository root; results in $OUT
#
# Steps (each under `timeout`, each one's stdout in $OUT/<step>.txt and stderr in
# $OUT/<step>.stderr.txt; a failing step is recorded in $OUT/summary.txt and the next one runs):
#   env          nvidia-smi, Python, torch / CUDA / cuDNN versions, date            -> env.txt
#   imports      every module the steps need (a missing package is named here)
#   pytest_gpu   the suite's tests marked `gpu` (pytest -m gpu): LRP conformance in float64 on
#                CUDA against the CPU, features under autocast, a wsi run drawing its heatmap, MIL
#   vit_lrp_s16  bench/vit_lrp.py, ViT-S/16, batch 4, float32: LRP methods ÷ forward+backward
#   vit_lrp_b16  the same on ViT-B/16
#   vit_methods  bench/vit_methods.py: attention methods ÷ forward (and forward+backward)
#   mil_explain  bench/mil_explain.py: MIL relevance methods ÷ one forward of a 100,000-patch bag
#   wsi_run_float32, wsi_run_bfloat16
#                bench/wsi_run.py on a 4096² synthetic slide: `wsi run` (features, attention,
#                overlap heatmap) against CLAM's scripts re-created on the same GPU; features in
#                float32, then under bfloat16 autocast
# The step time limits add up to 490 s, about 8 minutes (making a Python environment comes on top).
#
# Environment variables:
#   OUT                 output folder (default ./gpu_out)
#   GPU_CHECK_DEVICE    cuda (default) or cpu: the same steps on the CPU with the tiniest settings,
#                       to check the script itself where no GPU is lent (`--dry-run` does the same)
#   GPU_CHECK_STEPS     comma-separated steps to run (default: all), e.g. to rerun a failed one
#   GPU_CHECK_PYTHON    the Python to use (default: see below)
#   GPU_CHECK_WHEELS    a folder of wheels to add to a system Python (default ./.whl)
#   GPU_CHECK_SYSTEM_PYTHON  that system Python (default python3)
#   GPU_CHECK_PACK=1    at the end, every file but summary.txt and env.txt packed into
#                       $OUT/gpu_check.tar.gz (the device tool brings back at most 8 files)
#
# With the device tool, after `bash bench/gpu_wheels.sh` here:
#     run(command="GPU_CHECK_PACK=1 bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# The summary and the end of each step's output are printed last, so they are in the reply too.
#
# Which Python (the GPU machine gets a copy of the repository without the ignored .venv):
#   1. GPU_CHECK_PYTHON if set; 2. ./.venv/bin/python if present;
#   3. `python3` if it imports torch (the lent H200 machines' image has torch 2.11 with CUDA, timm,
#      h5py, OpenCV, SciPy, pytest, ...): the wheels in ./.whl are installed into a folder under
#      /tmp put on PYTHONPATH, for what that image lacks (pydantic, OpenSlide, imagecodecs, geojson).
#      That machine reaches no network, so make the wheels HERE first, `bash bench/gpu_wheels.sh`,
#      and carry .whl with the call;
#   4. else ./.venv made as `make setup` does (torch==2.14.1 torchvision==0.29.1, then
#      -e ".[dev,dist,hf]"), which needs a package registry.
# Then the modules the steps import are checked (step "imports"; a missing one is named there).
# Nothing else is downloaded: the tests and benches build seeded models, no weights from hubs.
set -euo pipefail

if [[ "${1:-}" == "--dry-run" ]]; then
    GPU_CHECK_DEVICE=cpu
elif [[ $# -gt 0 ]]; then
    echo "usage: bash bench/gpu_check.sh [--dry-run]   (see the header for the environment variables)" >&2
    exit 2
fi
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
if [[ "$DEVICE" != "cuda" && "$DEVICE" != "cpu" ]]; then
    echo "GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # this tree's code, whatever is installed

# ------------------------------------------------------------------ Python environment
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
SYSTEM_PYTHON="${GPU_CHECK_SYSTEM_PYTHON:-python3}"
if [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then
    PYTHON="$GPU_CHECK_PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
elif "$SYSTEM_PYTHON" -c "import torch" >/dev/null 2>&1; then
    PYTHON="$SYSTEM_PYTHON"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        SITE="${TMPDIR:-/tmp}/attnmap_gpu_site"
        if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl >"$OUT/setup.txt" 2>&1; then
            echo "setup 1 (the wheels in $WHEELS did not install: see setup.txt)" >>"$SUMMARY"
        fi
        export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH#"$ROOT/src"}"
    fi
else
    echo "no .venv: making one (log in $OUT/setup.txt)"
    if ! {
        python3 -m venv --system-site-packages .venv &&
            .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 &&
            .venv/bin/python -m pip install -q -e ".[dev,dist,hf]"
    } >"$OUT/setup.txt" 2>&1; then
        echo "setup 1 (python environment could not be made: see setup.txt)" >>"$SUMMARY"
        tail -n 20 "$OUT/setup.txt"
        exit 1
    fi
    PYTHON=.venv/bin/python
fi

# ------------------------------------------------------------------ settings per mode
if [[ "$DEVICE" == "cuda" ]]; then
    VIT_LRP=(--batch 4 --big-batch 16 --rounds 5 --device cuda)
    VIT_METHODS=(--batch-sizes 1,16 --repeats 3 --device cuda)
    MIL_EXPLAIN=(--device cuda)
    WSI_RUN=(--size 4096 --encoder resnet50_trunc --batch-size 64 --device cuda)
    VIT_S=vit_small_patch16_224
    VIT_B=vit_base_patch16_224
else  # the tiniest settings: the script's own check, not a measurement
    VIT_LRP=(--batch 1 --big-batch 2 --rounds 1 --no-memory --threads 1 --methods lrp,transformer_attribution)
    VIT_METHODS=(--models vit_tiny_patch16_224 --batch-sizes 1 --repeats 1 --threads 1)
    MIL_EXPLAIN=(--patches 2000 --repeats 1 --steps 4)
    WSI_RUN=(--size 2048 --encoder attnmap:tiny --batch-size 16)
    VIT_S=vit_tiny_patch16_224
    VIT_B=vit_tiny_patch16_224
fi

wanted() {
    [[ -z "${GPU_CHECK_STEPS:-}" || ",$GPU_CHECK_STEPS," == *",$1,"* ]]
}

# step NAME SECONDS COMMAND...: run under `timeout`, record "NAME EXIT_STATUS SECONDS" (124: timed out)
step() {
    local name="$1" limit="$2" start status
    shift 2
    wanted "$name" || return 0
    echo "== $name (limit ${limit} s)"
    start=$SECONDS
    if timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.stderr.txt"; then
        status=0
    else
        status=$?
    fi
    echo "$name $status $((SECONDS - start))s" >>"$SUMMARY"
    echo "   exit status $status after $((SECONDS - start)) s"
}

environment() {
    local failed=0
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -srm), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) (uncommitted changes not shown)"
    echo "mode: $DEVICE"
    "$PYTHON" - <<'PY' || failed=1
import sys

import timm
import torch

print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("timm", timm.__version__)
print("cuda available:", torch.cuda.is_available())
for index in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(index)
    print(f"cuda:{index}", props.name, f"{props.total_memory / 2**30:.1f} GiB", f"capability {props.major}.{props.minor}")
print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "tf32 cudnn", torch.backends.cudnn.allow_tf32)
PY
    echo
    if command -v nvidia-smi >/dev/null; then nvidia-smi || failed=1; else echo "nvidia-smi: not found"; fi
    return "$failed"
}

echo "gpu_check: mode $DEVICE, python $PYTHON, output $OUT"
echo "# step exit_status seconds ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), mode $DEVICE)" >>"$SUMMARY"
if wanted env; then  # a shell function: no `timeout` (nothing in it waits on the GPU's work)
    if environment >"$OUT/env.txt" 2>"$OUT/env.stderr.txt"; then status=0; else status=$?; fi
    echo "env $status" >>"$SUMMARY"
fi
# every module the steps import, so that a missing package is named once, before any step fails on it
step imports 30 "$PYTHON" -c "
import importlib, sys
names = ('torch', 'torchvision', 'timm', 'numpy', 'h5py', 'cv2', 'PIL', 'tifffile', 'imagecodecs', 'openslide',
         'pydantic', 'yaml', 'click', 'scipy', 'matplotlib', 'tqdm', 'safetensors', 'geojson', 'pytest',
         'attnmap.vit', 'attnmap.mil', 'attnmap.wsi.pipeline.run', 'attnmap.cli.main')
missing = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        missing.append(f'{name} ({type(error).__name__}: {error})')
print('missing:', '; '.join(missing) if missing else 'none')
sys.exit(1 if missing else 0)
"
if [[ "$DEVICE" == "cuda" ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "cuda 1 (torch sees no CUDA device: nothing measured; see env.txt)" >>"$SUMMARY"
    cat "$SUMMARY"
    exit 1
fi
# only the modules holding `gpu` tests: a package that a CPU-only module needs (dask, playwright)
# cannot stop the collection
mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_*.py)
step pytest_gpu 100 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider "${GPU_TESTS[@]}"
step vit_lrp_s16 60 "$PYTHON" bench/vit_lrp.py --model "$VIT_S" "${VIT_LRP[@]}"
step vit_lrp_b16 60 "$PYTHON" bench/vit_lrp.py --model "$VIT_B" "${VIT_LRP[@]}"
step vit_methods 45 "$PYTHON" bench/vit_methods.py "${VIT_METHODS[@]}"
step mil_explain 45 "$PYTHON" bench/mil_explain.py "${MIL_EXPLAIN[@]}"
step wsi_run_float32 75 "$PYTHON" bench/wsi_run.py "${WSI_RUN[@]}" --precision float32
step wsi_run_bfloat16 75 "$PYTHON" bench/wsi_run.py "${WSI_RUN[@]}" --precision bfloat16

for name in imports pytest_gpu vit_lrp_s16 vit_lrp_b16 vit_methods mil_explain wsi_run_float32 wsi_run_bfloat16; do
    if [[ -f "$OUT/$name.txt" ]] && wanted "$name"; then
        echo
        echo "== $name"
        tail -n 14 "$OUT/$name.txt" | cut -c1-160
    fi
done
if [[ "${GPU_CHECK_PACK:-}" == "1" ]]; then
    (
        cd "$OUT"
        mapfile -t loose < <(find . -maxdepth 1 -type f ! -name summary.txt ! -name env.txt ! -name gpu_check.tar.gz)
        if [[ ${#loose[@]} -gt 0 ]]; then
            tar -czf gpu_check.tar.gz "${loose[@]}" && rm -f "${loose[@]}"
        fi
    )
fi
echo
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
