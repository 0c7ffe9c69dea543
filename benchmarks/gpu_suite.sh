#!/usr/bin/env bash
# The GPU checks and timings in one run: CUDA tests of the numeric kernels, the three benchmarks on CUDA, and the
# covid bundle's training (single process, then torchrun with NCCL). Usage: bash benchmarks/gpu_suite.sh [OUT_DIR]
# Writes JSON and logs to OUT_DIR (default benchmarks/results/gpu). Each step runs even when an earlier one failed;
# the exit status is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python}
failed=0

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | tail -n 40
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$py" -c "import torch, monai, spikingjelly; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__)"

step pytest_cuda 180 "$py" -m pytest -q -p no:cacheprovider -k cuda tests/networks tests/metrics
step attention 60 "$py" benchmarks/attention.py --device cuda --out "$out/attention.json"
step train_step 480 "$py" benchmarks/train_step.py --device cuda --lif both --rounds 1 --steps 8 \
    --out "$out/train_step.json"
step train_step_b8 150 "$py" benchmarks/train_step.py --device cuda --batch 8 --lif lean --no-monai --rounds 1 \
    --steps 5 --out "$out/train_step_b8.json"
step ct_inference 120 "$py" benchmarks/ct_inference.py --device cuda --shape 512 512 64 --repeats 3 \
    --out "$out/ct_inference.json"
step covid_training 240 "$py" -m monai.bundle run training --config_file bundles/covid/train.json \
    --output_root "$out/bundle_outputs"
step covid_torchrun 240 "$py" -m torch.distributed.run --nproc_per_node 1 -m monai.bundle run training \
    --config_file "['bundles/covid/configs/train.json','bundles/covid/configs/multi_gpu_train.json']" \
    --output_root "$out/bundle_outputs_ddp" --epochs 2
echo "== failed steps: $failed"
exit "$failed"
