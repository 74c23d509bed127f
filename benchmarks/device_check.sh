#!/usr/bin/env bash
# Every GPU measurement stemsep has, in one call, under 8 minutes, ending with one table of figures.
#
#   bash benchmarks/device_check.sh              # on a CUDA machine (names the card first)
#   bash benchmarks/device_check.sh --dry-run    # every step at tiny sizes on CPU (also: DEVICE=cpu QUICK=1)
#
# Run from anywhere in a checkout where stemsep is installed (pip install -e .); no network, no downloads
# (the demucs / bs-roformer comparisons build randomly initialised reference networks from their packages).
# Steps, each under its own time limit (`timeout`), all run even when one fails:
#   separate    bench_separate.py: our batched apply_model vs demucs' apply_model (released HT Demucs)
#   train_bf16  bench_train_step.py: a bf16 training step of each family (HT Demucs, HDemucs, BS-/Mel-Band
#               RoFormer, SCNet, HS-TasNet) from configs/model, with its peak memory
#   models      bench_models.py --only models: ours vs demucs, forward and train step (bf16)
#   roformers   bench_models.py --only roformers: ours vs bs-roformer, and checkpoint_blocks' peak memory
#   attention   bench_models.py --only attention: the attention kernels' time and peak memory
#   scnet       bench_scnet.py: SCNet next to HT Demucs of the same size
#   stream      bench_stream_device.py: StreamingSeparator on the device (HS-TasNet causal, HT Demucs windowed)
# Environment: DEVICE (cuda; cpu for the dry run), PYTHON (python), STEPS (comma list, default all),
# DEVICE_CHECK_BUDGET (seconds for all steps, default 450, dry run 2100: limits are cut to what is left),
# DRY_STEP_LIMIT (a dry-run step's time limit, default 300 s),
# DEVICE_CHECK_LOGS (folder for each step's log, default a new temporary folder).
# Exit status: 0 when every step ran and printed its figures, 1 otherwise (the table says which).
set -euo pipefail

QUICK=${QUICK:-0}
if [[ ${1:-} == --dry-run ]]; then
    QUICK=1
elif [[ -n ${1:-} ]]; then
    echo "device_check.sh: error: unknown argument '$1' (the only one is --dry-run)" >&2
    exit 2
fi
if [[ $QUICK == 1 ]]; then DEVICE=${DEVICE:-cpu}; else DEVICE=${DEVICE:-cuda}; fi
PYTHON=${PYTHON:-python}
# On the GPU the per-step limits below keep the whole under 8 minutes; a dry run's steps are tiny but
# bound by CPU speed and load, so each gets DRY_STEP_LIMIT seconds instead.
if [[ $QUICK == 1 ]]; then BUDGET=${DEVICE_CHECK_BUDGET:-2100}; else BUDGET=${DEVICE_CHECK_BUDGET:-450}; fi
DRY_STEP_LIMIT=${DRY_STEP_LIMIT:-300}
STEPS=${STEPS:-separate,train_bf16,models,roformers,attention,scnet,stream}
LOGS=${DEVICE_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")}
mkdir -p "$LOGS"
LOGS=$(cd "$LOGS" && pwd)  # absolute: the steps run from benchmarks/
cd "$(dirname "${BASH_SOURCE[0]}")"  # benchmarks/: the scripts import their shared pieces (_timing, ...)
export PYTHONUNBUFFERED=1
if [[ $QUICK == 1 ]]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi

ROWS=()     # "step|status|seconds|figure" lines for the table
FAILED=0
START=$SECONDS

# step NAME LIMIT PATTERN COMMAND...: run COMMAND under min(LIMIT, what is left of the budget), log it,
# and keep the lines of its output matching PATTERN (grep -E) as its figures.
step() {
    local name=$1 limit=$2 pattern=$3 rc=0 status=ok
    shift 3
    [[ ,$STEPS, == *,$name,* ]] || return 0
    [[ $QUICK == 1 ]] && limit=$DRY_STEP_LIMIT
    local left=$((BUDGET - (SECONDS - START)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        ROWS+=("$name|SKIPPED (budget spent)|0|")
        FAILED=1
        return 0
    fi
    local log="$LOGS/$name.log" began=$SECONDS
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
    local took=$((SECONDS - began)) figures
    figures=$(grep -E -- "$pattern" "$log" | sed -E 's/[[:space:]]+/ /g; s/^ //' || true)
    if ((rc == 124 || rc == 137)); then
        status="TIMEOUT after ${limit} s"
    elif ((rc != 0)); then
        status="FAILED (exit $rc)"
    elif [[ -z $figures ]]; then
        status="NO FIGURE"
    fi
    if [[ $status != ok ]]; then
        FAILED=1
        echo "   $status; last lines of $log:"
        tail -n 5 "$log" | sed 's/^/     /'
    fi
    if [[ -z $figures ]]; then
        ROWS+=("$name|$status|$took|")
    else
        while IFS= read -r line; do
            ROWS+=("$name|$status|$took|$line")
        done <<<"$figures"
    fi
}

echo "stemsep device check: device $DEVICE, $([[ $QUICK == 1 ]] && echo "dry run (tiny sizes, figures meaningless)" || echo "full sizes"), logs in $LOGS"
if [[ $DEVICE == cuda* ]]; then
    nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi failed (no NVIDIA driver?)"
else
    echo "cpu: $(getconf _NPROCESSORS_ONLN) cores; OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
fi
"$PYTHON" -c "import torch, stemsep; print('torch', torch.__version__, '| stemsep', stemsep.__version__, '| cuda', torch.cuda.is_available())" || true

if [[ $QUICK == 1 ]]; then
    step separate 60 'apply_model:|ratio' "$PYTHON" bench_separate.py --device "$DEVICE" --model htdemucs_tiny \
        --seconds 3 --repeats 1
    step train_bf16 90 'train step|FAILED' "$PYTHON" bench_train_step.py --device "$DEVICE" --dtype bf16 --segment 0.25 \
        --reps 1 --configs htdemucs_small hdemucs_small bs_roformer_small mel_band_roformer_small scnet_small hstasnet_tiny
    step models 90 'ours/ref' "$PYTHON" bench_models.py --only models --device "$DEVICE" --dtype bf16 --segment 0.5 \
        --batch 1 --reps 1 --configs htdemucs
    step roformers 120 'ours/ref|ratio' "$PYTHON" bench_models.py --only roformers --device "$DEVICE" --dtype bf16 \
        --roformer-configs bs_roformer_small --roformer-segment 0.25 --batch 1 --reps 1 --memory-segment 0.25
    step attention 120 'x dense' "$PYTHON" bench_models.py --only attention --device "$DEVICE" --dtype bf16 \
        --attn-segment 0.5 --reps 1
    step scnet 90 'SCNet/HTDemucs' "$PYTHON" bench_scnet.py --device "$DEVICE" --dtype bf16 --segment 0.25 --batch 1 \
        --reps 1 --configs scnet
    step stream 90 'block' "$PYTHON" bench_stream_device.py --device "$DEVICE" --configs hstasnet_tiny htdemucs_small \
        --seconds 2 --blocks 4096 --window 0.5
else
    step separate 60 'apply_model:|ratio' "$PYTHON" bench_separate.py --device "$DEVICE" --model htdemucs \
        --seconds 120 --batch-size 16 --repeats 2
    step train_bf16 90 'train step|FAILED' "$PYTHON" bench_train_step.py --device "$DEVICE" --dtype bf16 --segment 6 \
        --batch 4 --reps 5
    step models 60 'ours/ref' "$PYTHON" bench_models.py --only models --device "$DEVICE" --dtype bf16 --segment 7.8 \
        --batch 4 --reps 10
    step roformers 60 'ours/ref|ratio' "$PYTHON" bench_models.py --only roformers --device "$DEVICE" --dtype bf16 \
        --roformer-configs bs_roformer mel_band_roformer --roformer-segment 8 --batch 2 --reps 5 --memory-segment 8
    step attention 45 'x dense' "$PYTHON" bench_models.py --only attention --device "$DEVICE" --dtype bf16 --reps 5
    step scnet 60 'SCNet/HTDemucs' "$PYTHON" bench_scnet.py --device "$DEVICE" --dtype bf16 --segment 11 --batch 4 \
        --reps 5
    step stream 45 'block' "$PYTHON" bench_stream_device.py --device "$DEVICE" --seconds 20 --blocks 512 4096
fi

echo
echo "| step | status | s | figure |"
echo "|---|---|---:|---|"
previous=""
for row in "${ROWS[@]}"; do
    IFS='|' read -r name status took figure <<<"$row"
    figure=${figure//|/\\|}  # a pipe inside a figure (max |difference|) escaped for the markdown table
    if [[ $name == "$previous" ]]; then
        echo "| | | | $figure |"
    else
        echo "| $name | $status | $took | $figure |"
    fi
    previous=$name
done
echo "device check: $((SECONDS - START)) s for all steps; logs in $LOGS"
exit $FAILED
