#!/usr/bin/env bash
# CIFAR-10 training on the lent GPU machine, in the two calls DESIGN.md section 7 describes (each
# call carries at most 64 MiB, and the machine stays warm 30 s between calls):
#
#   here:   bash bench/gpu_train.sh stage train     # copies train.zip into .data/ (git-ignored)
#   device: bash bench/gpu_train.sh unpack          # (carry .data) .data/*.zip -> /dev/shm/cifar10
#   here:   bash bench/gpu_train.sh stage test
#   device: MODELS="ann-vgg snn-vgg" EPOCHS="20 30" bash bench/gpu_train.sh unpack run
#
# "run" trains each model of MODELS for the matching count of EPOCHS (the cosine schedule's
# length) under a time limit each (LIMITS, seconds), resuming runs already in /dev/shm/runs, then
# writes the comparison; histories, results and plots are copied to $OUT as they are.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/neuro-emu-train}
SHARED=${SHARED:-../shared/data/cifar10-jpeg}
RUNS=${RUNS:-/dev/shm/runs}
source bench/gpu_env.sh
export NEURO_EMU_CIFAR10=/dev/shm/cifar10 NEURO_EMU_CACHE=/dev/shm/neuro-emu-cache

for step in "$@"; do
    case $step in
        stage)
            shift
            mkdir -p .data && rm -f .data/*.zip && cp "$SHARED/$1.zip" .data/ && ls -la .data
            exit 0
            ;;
        unpack)
            mkdir -p /dev/shm/cifar10 && cp .data/*.zip /dev/shm/cifar10/ && ls -la /dev/shm/cifar10
            ;;
        decode)  # fill the decoded-image cache in /dev/shm while the machine is warm
            python3 -c "from neuro_emu.data import load_cifar10
for split in ('train', 'test'):
    try:
        print(split, load_cifar10(split, progress=False)[0].shape)
    except Exception as error:
        print(split, 'not decoded:', error)"
            ;;
        run)
            read -r -a models <<<"${MODELS:-ann-vgg snn-vgg}"
            read -r -a epochs <<<"${EPOCHS:-10 10}"
            read -r -a limits <<<"${LIMITS:-240 300}"
            mkdir -p "$OUT" "$RUNS"
            for i in "${!models[@]}"; do
                model=${models[$i]}
                resume=""
                [ -f "$RUNS/$model/last.pt" ] && resume=--resume
                timeout "${limits[$i]}" neuro-emu train --model "$model" --epochs "${epochs[$i]}" \
                    --out "$RUNS/$model" $resume ${TRAIN_ARGS:-} 2>&1 | grep -v "it/s\]" \
                    | tee -a "$OUT/train.log"
                cp "$RUNS/$model/history.json" "$OUT/history-$model.json" 2>/dev/null
            done
            if [ -f "$RUNS/snn-vgg/best.pt" ] && [ -f "$RUNS/ann-vgg/best.pt" ]; then
                python3 -c "
from neuro_emu.train.report import compare_runs
compare_runs('$RUNS/snn-vgg', '$RUNS/ann-vgg', '$OUT', device='cuda')"
            fi
            ;;
    esac
done
ls -la "$OUT" 2>/dev/null
