#!/usr/bin/env bash
# The GPU check of issue 16 point 6, as one command on a machine with a CUDA GPU:
#
#     bash bench/gpu_check.sh                      # from the repository root; results in $OUT
#
# Steps (each under `timeout`, each one's stdout in $OUT/<step>.txt and stderr in
# $OUT/<step>.stderr.txt; a failing step is recorded in $OUT/summary.txt and the next one runs):
#   env          nvidia-smi, Python, torch / CUDA / cuDNN versions, date            -> env.txt
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
# The sum of the step time limits is 8 minutes (setting up a Python environment comes on top).
#
# Environment variables:
#   OUT                 output folder (default ./gpu_out)
#   GPU_CHECK_DEVICE    cuda (default) or cpu: the same steps on the CPU with the tiniest settings,
#                       to check the script itself where no GPU is lent (`--dry-run` does the same)
#   GPU_CHECK_STEPS     comma-separated steps to run (default: all), e.g. to rerun a failed one
#   GPU_CHECK_PYTHON    the Python to use (default: ./.venv/bin/python, made if missing)
#
# Assumptions to check on the GPU machine (it gets a copy of the repository without the ignored
# .venv): without GPU_CHECK_PYTHON or ./.venv, the script makes ./.venv the way `make setup` does
# (torch==2.14.1 torchvision==0.29.1 first, then -e ".[dev,dist,hf]"), with the system's site
# packages visible so that a torch already installed there is used. That needs a package registry
# (or a local wheel cache) to be reachable; nothing else is downloaded (the tests and benches build
# seeded models, no weights from model hubs).
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
if [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then
    PYTHON="$GPU_CHECK_PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
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
if [[ "$DEVICE" == "cuda" ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "cuda 1 (torch sees no CUDA device: nothing measured; see env.txt)" >>"$SUMMARY"
    cat "$SUMMARY"
    exit 1
fi
step pytest_gpu 120 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests
step vit_lrp_s16 60 "$PYTHON" bench/vit_lrp.py --model "$VIT_S" "${VIT_LRP[@]}"
step vit_lrp_b16 60 "$PYTHON" bench/vit_lrp.py --model "$VIT_B" "${VIT_LRP[@]}"
step vit_methods 60 "$PYTHON" bench/vit_methods.py "${VIT_METHODS[@]}"
step mil_explain 60 "$PYTHON" bench/mil_explain.py "${MIL_EXPLAIN[@]}"
step wsi_run_float32 60 "$PYTHON" bench/wsi_run.py "${WSI_RUN[@]}" --precision float32
step wsi_run_bfloat16 60 "$PYTHON" bench/wsi_run.py "${WSI_RUN[@]}" --precision bfloat16

echo
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
for name in pytest_gpu vit_lrp_s16 vit_lrp_b16 vit_methods mil_explain wsi_run_float32 wsi_run_bfloat16; do
    if [[ -f "$OUT/$name.txt" ]] && wanted "$name"; then
        echo
        echo "== $name"
        tail -n 25 "$OUT/$name.txt"
    fi
done
