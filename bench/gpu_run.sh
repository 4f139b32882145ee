#!/usr/bin/env bash
# One call on the lent GPU machine (the `device` tool): install this checkout there, run the test
# suite with the Triton backend on the GPU, then the benchmark suites; logs and a tarball of the
# CUDA results go to $OUT. Usage, from the repository root on that machine:
#
#   NEURO_EMU_COMMIT=<sha> STAGES="tests neurons sparse_conv loihi" bash bench/gpu_run.sh
#
# Peers travel as pure-Python packages copied into .whl/site (the machine has no package index).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/neuro-emu-gpu}
mkdir -p "$OUT"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
    python3 -c "import sys, torch, triton, numba; print(sys.version.split()[0], torch.__version__,
triton.__version__, numba.__version__, torch.cuda.get_device_name())"
} >"$OUT/env.txt" 2>&1
source bench/gpu_env.sh
cat "$OUT/env.txt"

for stage in ${STAGES:-tests neurons sparse_conv loihi}; do
    start=$SECONDS
    case $stage in
        tests)
            timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest ${TEST_ARGS:-tests} -q -n 8 \
                -p no:cacheprovider >"$OUT/tests.log" 2>&1
            ;;
        lif_tune)
            timeout "${BENCH_TIMEOUT:-240}" python3 bench/gpu_lif_tune.py --out "$OUT/lif_tune.json" \
                >"$OUT/bench-lif_tune.log" 2>&1
            ;;
        train_timing)
            # Two short epochs on the shipped subset per model and LIF backend: the second
            # epoch's time per batch, without Triton's compile time.
            for run in "snn-vgg triton" "snn-vgg torch" "ann-vgg auto"; do
                set -- $run
                timeout 150 neuro-emu train --model "$1" --backend "$2" --epochs 2 --data subset \
                    --out "/tmp/timing-$1-$2" 2>&1 | grep -v "it/s]" >>"$OUT/bench-train_timing.log"
                python3 -c "import json; h = json.load(open('/tmp/timing-$1-$2/history.json'))
print('$1 $2', [round(e['train_s'], 2) for e in h['epochs']], 's per epoch of 23 batches')" \
                    >>"$OUT/bench-train_timing.log" 2>&1
            done
            ;;
        *)
            timeout "${BENCH_TIMEOUT:-240}" neuro-emu bench --suite "$stage" \
                >"$OUT/bench-$stage.log" 2>&1
            ;;
    esac
    echo "== $stage: exit $? in $((SECONDS - start)) s"
    tail -n 4 "$OUT"/*"$stage".log
done

tar czf "$OUT/results.tar.gz" bench/results/*cuda* 2>/dev/null
ls -la "$OUT"
