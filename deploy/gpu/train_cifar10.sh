#!/usr/bin/env bash
# Train the CIFAR-10 bundles' stages on a rented GPU inside a fixed wall-clock budget, and pack the
# checkpoints for the trip back; the export (int8 part, coder tables, merge calibration, report) then
# runs on a CPU machine with `agilenn-train ... --resume` (docs/training.md, "Training on a rented GPU").
#
#   BUDGET=480 OUT=/some/dir bash deploy/gpu/train_cifar10.sh
#
# A second call on the still-warm machine (its /tmp keeps the runs) finishes what the first left:
#   RESUME=1 BUDGET=200 OUT=/some/dir bash deploy/gpu/train_cifar10.sh
#
# A dry run of the plumbing on a CPU (minutes, tiny subsets):
#   DEVICE=cpu N_PROBE=512 RUN_ARGS="--train-subset 1024 --test-subset 500" BUDGET=400 OUT=/tmp/o bash deploy/gpu/train_cifar10.sh
#
# Which card: name the device tool's nvidia-h100-x1. The reference epoch took 1.10 s on an H100 and 1.73 s
# on an H200 (2026-11-27, same script and net; not profiled: small steps, likely launch-bound).
#
# Needs: python3 with torch (CUDA) and numpy, Pillow; .gpu/cifar10-jpeg.npz made by
# deploy/gpu/pack_imagefolder.py from ../shared/data/cifar10-jpeg. No agilenn install: the training
# stages import only agilenn.training and agilenn.datasets, linked into a namespace folder.
#
# Four joint runs share stages 1-3 and the GPU: the AgileNN bundle (2-point IG), the plain split
# (lambda = 1), and the ablation's saliency and 8-step IG variants. Epochs: REF_EPOCHS, JOINT_EPOCHS,
# SAL_EPOCHS, IG8_EPOCHS if given (the surer way), else a probe on a subset times each stage and
# deploy/gpu/gpu_runs.py sizes them to what is left of the budget.
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-480}
OUT=${OUT:?set OUT}
DATA=${DATA:-/work/shared/data/cifar10-jpeg}   # the CPU machine's path: manifests name the same dataset
R=/tmp/gpu-runs
DEVICE=${DEVICE:-cuda}
N_PROBE=${N_PROBE:-6400}
RUN_ARGS=${RUN_ARGS:-}        # extra arguments for the real run (a dry run's subsets)
RESUME=${RESUME:-0}           # 1: resume the runs a previous call on this machine left in $R
OTHERS=${OTHERS:-plain saliency ig8}  # the joint runs beside the AgileNN bundle's
# Given REF_EPOCHS is a ceiling: once the reference has timed 3 warm epochs, a schedule that would end
# after REF_DEADLINE seconds (from the start of this call) restarts, shortened to end there (~30 s lost)
REF_DEADLINE=${REF_DEADLINE:-}
# Version 3's recipe by default (docs/training.md, "Version 3"): the expansion stem (3->16 stride-2 conv, 1x1 to
# 48, depthwise stride 2, 1x1 to 32: 489,984 MACs with the local predictor), a reference trained without nested
# stem-channel dropout and with random erasing (with the stem, 88.77 % against version 2's 87.72 %),
# distillation from the reference and 8 quantizer levels in the joint stage. Version 2's:
# STEM="--stem-width 32" REF="--ref-nested-p-full 0.5" JOINT="--centroids 4".
STEM=${STEM:---stem-width 16 --stem-expand 48}
REF=${REF:---ref-nested-p-full 1 --ref-erase-p 0.5}
# weight-averaging epochs after the reference's schedule (--ref-swa-epochs in REF): the deadline and the
# plan leave time for them
SWA_EPOCHS=$(echo "$REF" | sed -n 's/.*--ref-swa-epochs[ =]\([0-9]*\).*/\1/p'); SWA_EPOCHS=${SWA_EPOCHS:-0}
SWA_EXTRA=$(( SWA_EPOCHS > 0 ? SWA_EPOCHS + 1 : 0 ))   # ... and the BatchNorm pass after them
JOINT=${JOINT:---distill-weight 0.5 --distill-temp 4 --centroids 8}
N_FULL=50000
[ -n "$RUN_ARGS" ] && N_FULL=$(echo "$RUN_ARGS" | sed -n 's/.*--train-subset \([0-9]*\).*/\1/p')
left() { echo $(( T0 + BUDGET - $(date +%s) )); }
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/agilenn-src
# a machine kept warm between calls still has the last call's runs: resume them only when asked to
[ "$RESUME" = 1 ] || rm -rf "$R"
mkdir -p /tmp/agilenn-src/agilenn "$R"
for d in training datasets; do ln -sfn "$PWD/$d" /tmp/agilenn-src/agilenn/$d; done
[ -d "$DATA/train" ] || python3 deploy/gpu/pack_imagefolder.py unpack .gpu/cifar10-jpeg.npz "$DATA" || exit 3
[ "$DEVICE" = cpu ] || python3 -c "import torch; assert torch.cuda.is_available(); print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 4
# batches are augmented where the data lives (the GPU): the same random draws must give the same pixels
[ "$DEVICE" = cpu ] || python3 -c "from agilenn.training.data import batches_match_cpu as m; assert m('cuda'), 'GPU-side batches differ from the CPU'; print('batches on the GPU: the same numbers as on the CPU')" || exit 4

# STEM, REF and JOINT come last: argparse keeps a flag's last value, so they can override any of the
# defaults before them (on 2026-11-26 a JOINT "--rate-target-bits 1.8" placed before the 1.2 here lost)
COMMON=(--dataset "imagefolder:$DATA" --data-note "CIFAR-10 re-encoded as JPEG q75 (../shared/data/cifar10-jpeg), not the original pixels"
        --device "$DEVICE" --threads 4 --batch-size 256 --channels 32 --k 8 --stride 4 --body-width 160
        --body-blocks 2 --local-width 64 --ref-lr 0.2 --rho 0.9 --centroid-min-gap 0.1
        --rate-target-bits 1.2 --train-only $STEM $REF $JOINT)
train() { python3 -m agilenn.training.cli "${COMMON[@]}" "$@"; }
train_to_deadline() { timeout $(( $(left) - 30 )) python3 -m agilenn.training.cli "${COMMON[@]}" $RUN_ARGS "$@"; }
variant_args() {  # the joint run's own settings
  case $1 in
    main) echo "--name agilenn-cifar10" ;;
    plain) echo "--name plain-split-cifar10 --lam 1" ;;
    saliency) echo "--name agilenn-cifar10-saliency --xai saliency" ;;
    ig8) echo "--name agilenn-cifar10-ig8 --ig-steps 8" ;;
  esac
}
copy_stages() {  # $1: a run whose stages 1-3 are done, $2: root, $3..: joint runs -> root/<run>/ckpt
  local src=$1 root=$2; shift 2
  for v in "$@"; do
    mkdir -p "$root/$v/ckpt"
    cp "$src/ckpt/"{reference,extractor,preselect}.pt "$root/$v/ckpt/"
  done
}

# 1. epochs: given (REF_EPOCHS, JOINT_EPOCHS, SAL_EPOCHS, IG8_EPOCHS), or sized from a probe: stages
#    1-3 on a subset, then the four joint runs side by side, two epochs each; the plan reads the second
#    epoch's time, as the first is mostly cuDNN's warm-up (one probe epoch of 12,800 images took 7.6 s
#    on an H200, a warm full epoch of 50,000 1.9 s). Given epochs are the surer way once a run is timed.
if [ "$RESUME" = 1 ]; then
  read -r REF_EPOCHS JOINT_EPOCHS SAL_EPOCHS IG8_EPOCHS < $R/epochs || exit 7
  echo "resuming: reference $REF_EPOCHS, joint $JOINT_EPOCHS (saliency $SAL_EPOCHS, ig8 $IG8_EPOCHS)"
elif [ -z "${REF_EPOCHS:-}" ]; then
  P=$R/probe
  s=$(date +%s.%N)
  train --out $P/stages --train-subset $N_PROBE --test-subset 1000 --ref-epochs 2 --ref-swa-epochs 0 --extractor-epochs 1 --joint-epochs 0 \
    > $P.stages.log 2>&1 || { tail -20 $P.stages.log; exit 5; }
  STARTUP=$(python3 -c "import re,sys; t=float(sys.argv[2])-float(sys.argv[1]); l=open('$P/stages/train.log').read(); print(max(5.0, t - sum(float(x) for x in re.findall(r' epoch \d/\d .*\(([\d.]+)s\)', l))))" "$s" "$(date +%s.%N)")
  copy_stages $P/stages $P main plain saliency ig8
  for v in main plain saliency ig8; do
    train --out $P/$v --train-subset $N_PROBE --test-subset 1000 --ref-epochs 2 --ref-swa-epochs 0 --extractor-epochs 1 --joint-epochs 2 \
      --resume $(variant_args $v) > $P.$v.log 2>&1 &
  done
  wait
  eval "$(python3 deploy/gpu/gpu_runs.py plan "$(( $(left) - 40 ))" $P $N_PROBE $N_FULL "$STARTUP" $SWA_EXTRA)" || exit 6
  echo "plan after $(( $(date +%s) - T0 ))s: reference $REF_EPOCHS, joint $JOINT_EPOCHS (saliency $SAL_EPOCHS, ig8 $IG8_EPOCHS), startup ${STARTUP}s"
else
  JOINT_EPOCHS=${JOINT_EPOCHS:?}; SAL_EPOCHS=${SAL_EPOCHS:-$JOINT_EPOCHS}; IG8_EPOCHS=${IG8_EPOCHS:-$JOINT_EPOCHS}
fi

# 2. the real run: stages 1-3 and the AgileNN joint stage in one process; the other three joint runs
#    start as soon as stage 3 (preselection) has written its checkpoint
epochs() { echo "--ref-epochs $REF_EPOCHS --extractor-epochs 1 --joint-epochs $1"; }
RES=; [ "$RESUME" = 1 ] && RES=--resume
start_main() { train_to_deadline --out $R/main $(epochs $JOINT_EPOCHS) --name agilenn-cifar10 $RES >> $R/main.log 2>&1 & MAIN=$!; }
ref_epoch_s() { grep -o 'reference epoch [0-9]*/[0-9]* .*(\([0-9.]*\)s)' $R/main/train.log 2>/dev/null | sed 's/.*(\([0-9.]*\)s)/\1/'; }
save_epochs() { echo "$REF_EPOCHS $JOINT_EPOCHS $SAL_EPOCHS $IG8_EPOCHS" > $R/epochs; }  # what RESUME=1 reads
save_epochs
start_main
if [ "$RESUME" != 1 ] && [ -n "$REF_DEADLINE" ]; then
  while [ "$(ref_epoch_s | wc -l)" -lt 4 ] && kill -0 $MAIN 2>/dev/null; do sleep 1; done
  [ "$(ref_epoch_s | wc -l)" -ge 4 ] || { echo "reference stopped before 4 epochs"; tail -20 $R/main.log; exit 5; }
  # the first epoch is mostly cuDNN's warm-up: time the next three
  T_EP=$(ref_epoch_s | sed -n 2,4p | awk '{s+=$1} END {printf "%.3f", s/NR}')
  FIT=$(python3 -c "print(int(4 + ($T0 + $REF_DEADLINE - $(date +%s)) / $T_EP) - $SWA_EXTRA)")
  echo "reference: $T_EP s per epoch; $FIT epochs fit before ${REF_DEADLINE}s"
  if [ "$FIT" -lt "$REF_EPOCHS" ]; then
    kill $MAIN; wait $MAIN 2>/dev/null
    REF_EPOCHS=$(python3 -c "print(max(8, int(($T0 + $REF_DEADLINE - 25 - $(date +%s)) / $T_EP) - $SWA_EXTRA))")
    echo "reference restarts with $REF_EPOCHS epochs"
    rm -rf $R/main; save_epochs
    start_main
  fi
fi
while [ ! -f $R/main/ckpt/preselect.pt ] && kill -0 $MAIN 2>/dev/null; do sleep 2; done
if [ -f $R/main/ckpt/preselect.pt ]; then
  sleep 1
  for v in $OTHERS; do
    [ -f $R/$v/ckpt/preselect.pt ] || copy_stages $R/main $R $v
    case $v in plain) e=$JOINT_EPOCHS ;; saliency) e=$SAL_EPOCHS ;; ig8) e=$IG8_EPOCHS ;; esac
    train_to_deadline --out $R/$v $(epochs $e) --resume $(variant_args $v) >> $R/$v.log 2>&1 &
  done
fi
wait
echo "training done after $(( $(date +%s) - T0 ))s"
grep -h "reference epoch $(( REF_EPOCHS + SWA_EPOCHS ))/\|weight average\|joint epoch\|finished" $R/main/train.log | tail -5
for v in $OTHERS; do grep -h "joint epoch" $R/$v/train.log 2>/dev/null | tail -1; done

# 3. pack for the trip back: checkpoints split into <= 15 MiB parts, logs beside them
python3 deploy/gpu/gpu_runs.py collect "$OUT" $R/main $(for v in $OTHERS; do echo $R/$v; done)
tar -cf "$OUT/logs.tar" -C /tmp --exclude='*.pt' gpu-runs
echo "all done after $(( $(date +%s) - T0 ))s"
