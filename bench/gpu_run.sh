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
[ -d .whl/site ] && export PYTHONPATH="$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
    python3 -c "import sys, torch, triton, numba; print(sys.version.split()[0], torch.__version__,
triton.__version__, numba.__version__, torch.cuda.get_device_name())"
} >"$OUT/env.txt" 2>&1
# The machine has no package index, so no `pip install -e .`: the layout setup.py's package_dir
# makes (kernels/ and reference/ inside neuro_emu) is made with symbolic links in this copy of the
# tree (ignored by git), and the console script is a two-line wrapper.
ln -sfn ../kernels neuro_emu/kernels
ln -sfn ../reference neuro_emu/reference
mkdir -p /tmp/neuro-emu-bin
printf '#!/bin/sh\nexec python3 -m neuro_emu.cli "$@"\n' >/tmp/neuro-emu-bin/neuro-emu
chmod +x /tmp/neuro-emu-bin/neuro-emu
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/neuro-emu-bin:$PATH"
cat "$OUT/env.txt"

for stage in ${STAGES:-tests neurons sparse_conv loihi}; do
    start=$SECONDS
    case $stage in
        tests)
            timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest tests -q -n 8 -p no:cacheprovider \
                >"$OUT/tests.log" 2>&1
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
