#!/usr/bin/env bash
# Train Malenia on a CUDA machine that has Python and PyTorch but no network, in one command:
# install the other dependencies from a wheel folder (when given), synthesise training and test data on all
# cores, train for N minutes (warm-up + cosine over the wall time), evaluate on unseen and seen lesion types,
# and pack the model folder in pieces of at most 15 MB. What to copy to such a machine: docs/training.md;
# scripts/gpu_payload.sh gathers it.
#
#   scripts/gpu_train.sh --minutes 10 [--out DIR] [--wheels DIR] [--cache DIR] [--config NAME]
#       [--batch-size 16] [--cases 160] [--test-cases 48] [--size VOXELS] [--base DIR]... [--init MODEL]
#       [--workers W] [--device cuda] [--python PY] [--set KEY=VALUE]... [--augment KEY=VALUE]...
#       [--mixed N] [--transplant N] [--transplant-looks LIST] [--nodules LIDC_DATASET]... [--replay-seed S] [--replay-fraction 0.7] [--hard-negatives FILE]
#       [--lr LR] [--ema DECAY] [--freeze PREFIX]... [--host-floor] [--mix-density P] [--bench] [--profile]
#
# --set, --augment, --ema and --freeze go to `malenia train` as they are (model config and sampler augmentation, e.g.
# --augment 'scale=[0.7,1.4]' --augment scale_isotropic=true for nnU-Net's scale range from the first step).
# The training set is `malenia synth --cases N --seed 1` of the seen types, named seen_train, as on the CPU, so
# `--hard-negatives` takes a `malenia mine` file of that dataset (hard-negative and missed fractions 0.5). A replay
# set, drawn for --replay-fraction of the patches, holds --mixed N attribute-mixed seen-type cases (seed 8) and the
# training nodules of each --nodules LIDC dataset planted in the bases (seeds 41, 42, ...; 2 mm). --replay-seed S
# draws them afresh, for a model that has seen those: the mixed cases on seed S, the nodules on S+1, S+2, ...
# (the twenty-eighth round: 50); the training set stays seed 1, which --hard-negatives refers to. --transplant N adds
# N cases of the training-only transplanted looks (seed S+500; docs/data.md) to the replay: their location is free
# text, embedded without the encoder from --cache (scripts/gpu_payload.sh --texts) or --init's bank when it holds it.
# --transplant-looks: which ones (`malenia synth --diseases`; default spleen_calcification, the look the thirty-first
# round measured; `transplant` for all, the stomach mass included, which no round has shown to teach anything yet).
# --host-floor: every drawn lesion, training and test alike, with `malenia synth --host-floor` (pancreatic lesions
# against parenchyma, not the fat a real base's pancreas label averages in; docs/data.md). Its test sets are then
# not the card's, which were drawn without it.
# --mix-density P: the --mixed cases also with `malenia synth --mix-density P` (a share P of their lesions at a density
# level, darker / similar / brighter than the host, drawn apart from their disease; docs/data.md, forty-ninth round).
# --bench: `malenia bench train` of the run's config and batch on the device after the training.
# --profile: `malenia bench train --profile` of the config to be trained, at --batch-size, while the CPUs synthesise
# the data (profile.txt: operators and CUDA kernels a step, by phase and by source line; bench_profile.txt).
# Outputs in --out (default ./gpu_run): data/, run/ (checkpoints, metrics.jsonl, model/), eval_unseen/,
# eval_seen/, model.tgz.part-* (join: cat model.tgz.part-* | tar xzf -), bench.txt, profile.txt, log.txt.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
MINUTES="" OUT=$PWD/gpu_run WHEELS="" CACHE="" CONFIG="" BATCH=16 CASES=160 TEST_CASES=48 SIZE=""
INIT="" WORKERS="" DEVICE=cuda PY=${PYTHON:-python3} BASES=() TRAIN_OPTS=()
MIXED=0 TRANSPLANT=0 TRANSPLANT_LOOKS=spleen_calcification NODULES=() REPLAY_FRACTION=0.7 BENCH=0 PROFILE=0 MIX_SEED=8 NODULE_SEED=40
HOST_FLOOR="" MIX_DENSITY=()
die() { echo "gpu_train.sh: error: $*" >&2; exit 2; }
# Paths given are made absolute while parsing: the script works inside --out from then on.
folder() { [ -d "$2" ] || die "$1 $2 is not a folder"; (cd "$2" && pwd); }
file() { [ -f "$2" ] || die "$1 $2 is not a file"; echo "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;       --out) OUT=$2; shift 2 ;;
    --wheels) WHEELS=$(folder "$1" "$2"); shift 2 ;;                  --cache) CACHE=$(folder "$1" "$2"); shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;         --batch-size) BATCH=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;           --test-cases) TEST_CASES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;             --base) BASES+=(--base "$([ "$2" = phantom ] && echo phantom || folder "$1" "$2")"); shift 2 ;;
    --init) INIT=$(folder "$1" "$2"); shift 2 ;;                      --workers) WORKERS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;         --python) PY=$2; shift 2 ;;
    --set|--augment) [ $# -ge 2 ] || die "$1 needs KEY=VALUE"; TRAIN_OPTS+=("$1" "$2"); shift 2 ;;
    --mixed|--transplant) [[ ${2:-} =~ ^[0-9]+$ ]] || die "$1 needs a number of cases, got '${2:-}'"
                          [ "$1" = --mixed ] && MIXED=$2 || TRANSPLANT=$2; shift 2 ;;
    --nodules) NODULES+=("$(folder "$1" "$2")"); shift 2 ;;
    --transplant-looks) [ -n "${2:-}" ] || die "$1 needs a list of looks"; TRANSPLANT_LOOKS=$2; shift 2 ;;
    --replay-fraction) REPLAY_FRACTION=$2; shift 2 ;;                 --bench) BENCH=1; shift ;;
    --profile) PROFILE=1; shift ;;          --host-floor) HOST_FLOOR=--host-floor; shift ;;
    --mix-density) [[ ${2:-} =~ ^(0|1|0?\.[0-9]+|1\.0*)$ ]] || die "--mix-density needs a share from 0 to 1, got '${2:-}'"
                   MIX_DENSITY=(--mix-density "$2"); shift 2 ;;
    --replay-seed) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--replay-seed needs a whole number, got '${2:-}'"; MIX_SEED=$2 NODULE_SEED=$2; shift 2 ;;
    --lr) TRAIN_OPTS+=(--lr "$2"); shift 2 ;;
    --ema|--freeze) [ -n "${2:-}" ] || die "$1 needs a value"; TRAIN_OPTS+=("$1" "$2"); shift 2 ;;
    --hard-negatives) TRAIN_OPTS+=(--hard-negatives "$(file "$1" "$2")" --hard-negative-fraction 0.5 --missed-fraction 0.5); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$MINUTES" ] || die "--minutes is required"
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); cd "$OUT"
exec > >(tee -a log.txt) 2>&1
T0=$SECONDS; log() { echo "[$((SECONDS - T0)) s] $*"; }
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$WHEELS" ]; then  # no network: only the wheels given, next to the Python that has torch
  log "installing wheels from $WHEELS into $OUT/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" "$WHEELS"/*.whl
  mkdir -p "$OUT/site"
  for t in "$WHEELS"/*.tar.xz; do  # packages shipped as their unpacked files (scripts/gpu_payload.sh --xz)
    if [ -e "$t" ]; then tar -xJf "$t" -C "$OUT/site"; fi
  done
  export PYTHONPATH=$OUT/site:$PYTHONPATH
fi
[ -z "$CACHE" ] || export MALENIA_CACHE=$CACHE  # holds banks/: no text encoder needed
M() { "$PY" -m malenia.cli "$@"; }
"$PY" -c "import torch, SimpleITK, monai, malenia, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', os.cpu_count())"
[ "$DEVICE" != cuda ] || "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device (use --device cpu)')"
[ ${#BASES[@]} -gt 0 ] || BASES=(--base phantom)
SEEN=colon_tumor,lung_tumor,liver_tumor,pancreas_tumor,kidney_cyst,gallstone
UNSEEN=hepatic_vessel_tumor,pancreas_cyst,kidney_tumor,liver_cyst,gallbladder_tumor,kidney_stone
CPUS=$("$PY" -c "import os; print(os.cpu_count())")
SHARDS=$(( CASES < CPUS - 2 ? CASES : (CPUS > 3 ? CPUS - 2 : 1) ))
SYN=(synth "${BASES[@]}" --quiet --overwrite ${SIZE:+--size $SIZE} $HOST_FLOOR)

# --shard: the shards merge into the dataset `malenia synth --cases $CASES --seed 1 --name seen_train` writes in
# one process, whatever the core count, so a CPU machine can rebuild (and mine) the GPU run's training data
log "synthesising $CASES training cases in $SHARDS shards, $TEST_CASES unseen-type and $TEST_CASES seen-type test cases"
rm -rf data logs; mkdir -p data logs
pids=()
for i in $(seq 1 "$SHARDS"); do
  OMP_NUM_THREADS=1 M "${SYN[@]}" --diseases $SEEN --cases "$CASES" --shard "$i/$SHARDS" --out data/shard$i --name seen_train --seed 1 > logs/synth_shard$i.log 2>&1 & pids+=($!)
done
MIXED_SHARDS=$(( MIXED < SHARDS ? MIXED : SHARDS )) PARTS=()
for i in $(seq 1 "$MIXED_SHARDS"); do  # the replay's attribute-mixed cases: runs/data/seen_mix's recipe
  PARTS+=(data/mixed$i)
  OMP_NUM_THREADS=1 M "${SYN[@]}" --diseases $SEEN --cases "$MIXED" --shard "$i/$MIXED_SHARDS" --out data/mixed$i --name seen_mix --seed "$MIX_SEED" \
    --mix-attributes 1 ${MIX_DENSITY[@]+"${MIX_DENSITY[@]}"} --val-fraction 0 --test-fraction 0 > logs/synth_mixed$i.log 2>&1 & pids+=($!)
done
if [ "$TRANSPLANT" -gt 0 ]; then  # one process: a few cases of small lesions
  PARTS+=(data/transplant)
  OMP_NUM_THREADS=1 M "${SYN[@]}" --diseases "$TRANSPLANT_LOOKS" --cases "$TRANSPLANT" --out data/transplant --name transplant \
    --seed $((MIX_SEED + 500)) --val-fraction 0 --test-fraction 0 > logs/synth_transplant.log 2>&1 & pids+=($!)
fi
k=0
for nod in ${NODULES[@]+"${NODULES[@]}"}; do  # one process per LIDC dataset (planting is not sharded)
  k=$((k + 1)) PARTS+=(data/nodules$k)
  OMP_NUM_THREADS=1 M synth --nodules "$nod" --nodule-split train "${BASES[@]}" --spacing 2 --seed $((NODULE_SEED + k)) --name lidc$k \
    --out data/nodules$k --quiet --overwrite > logs/synth_nodules$k.log 2>&1 & pids+=($!)
done
OMP_NUM_THREADS=1 M "${SYN[@]}" --diseases $UNSEEN --cases "$TEST_CASES" --out data/unseen_test --seed 2 > logs/synth_unseen.log 2>&1 & pids+=($!)
OMP_NUM_THREADS=1 M "${SYN[@]}" --diseases $SEEN --cases "$TEST_CASES" --out data/seen_test --seed 3 --val-fraction 0 --test-fraction 0 > logs/synth_seen.log 2>&1 & pids+=($!)
if [ "$PROFILE" = 1 ]; then  # the device is idle while the CPUs synthesise: measure the step to be trained
  PCONFIG=${CONFIG:-${INIT:+$INIT/config.json}}
  log "bench train --profile (${PCONFIG:-compact}, batch $BATCH) while the data is synthesised"
  M bench train --config "${PCONFIG:-compact}" --batch-size "$BATCH" --device "$DEVICE" --steps 10 --warmup 3 --workers 2 \
    --profile profile.txt > bench_profile.txt 2>&1 || log "bench --profile failed (training goes on): $(tail -n 1 bench_profile.txt)"
fi
for p in "${pids[@]}"; do wait "$p" || { tail -n 5 logs/*.log; die "synthesis failed"; }; done
"$PY" "$REPO/scripts/merge_datasets.py" data/seen_train data/shard*
REPLAY=()
if [ ${#PARTS[@]} -gt 0 ]; then
  "$PY" "$REPO/scripts/merge_datasets.py" data/replay "${PARTS[@]}"
  REPLAY=(--replay data/replay --replay-fraction "$REPLAY_FRACTION")
fi
rm -rf data/shard* data/mixed* data/nodules* data/transplant

log "training ${CONFIG:-the default config, that of --init or compact} for $MINUTES min on $DEVICE (batch $BATCH)"
M train ${CONFIG:+--config "$CONFIG"} --data data/seen_train ${REPLAY[@]+"${REPLAY[@]}"} --out run --minutes "$MINUTES" --batch-size "$BATCH" --device "$DEVICE" \
  ${WORKERS:+--workers $WORKERS} ${INIT:+--init "$INIT"} ${TRAIN_OPTS[@]+"${TRAIN_OPTS[@]}"} --checkpoint-every 500 --val-every 250 --log-every 50 \
  --progress none --name "malenia-${CONFIG:-compact}" --version "gpu-$(date -u +%Y%m%d)" \
  --training-data "synthetic seen lesion types, $CASES cases, seed 1 ($OUT/data/seen_train)${REPLAY[@]+; replay $REPLAY_FRACTION: $MIXED attribute-mixed cases (seed $MIX_SEED), $TRANSPLANT transplanted-look cases (seed $((MIX_SEED + 500))), ${#NODULES[@]} LIDC nodule set(s) (seeds from $((NODULE_SEED + 1)))}"
tail -n 2 run/metrics.jsonl

log "packing run/model in pieces of at most 15 MB"
rm -f model.tgz.part-*
tar czf - -C run model | split -b 15m - model.tgz.part-
ls -l model.tgz.part-*

if [ "$BENCH" = 1 ]; then
  log "bench train"
  M bench train --config "${CONFIG:-run/model/config.json}" --batch-size "$BATCH" --device "$DEVICE" --steps 20 --warmup 3 ${WORKERS:+--workers $WORKERS} 2>&1 | tee bench.txt || log "bench failed (the model is packed; evaluating)"
fi
log "evaluating"
M evaluate --model run/model --data data/unseen_test --split test --device "$DEVICE" --out eval_unseen --progress none | head -n 20
M evaluate --model run/model --data data/seen_test --split all --device "$DEVICE" --out eval_seen --progress none | head -n 20
log "done: $OUT/run/model (model.tgz.part-*), eval_unseen/evaluation.md, eval_seen/evaluation.md"
