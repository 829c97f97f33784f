#!/usr/bin/env bash
# Every GPU check of deepssim in one script: speed of the search, embedding and training on the
# device, the quality the fast preset reaches there, and the CUDA-only tests.
#
#   bash benchmarks/gpu_checks.sh DATA OUT [tiny]
#
# DATA: the brain-tumor-mri folder (Training/ and manifest.csv). OUT: logs and tables, at most
# eight files per run (gpu_checks.log, the metrics and config of each trained model, and the
# quality stage's two tables: run quality alone). "tiny": the same stages on small settings, to
# check the script on a CPU (DEVICE=cpu).
# Environment: DEVICE (cuda), PYTHON (python3), STAGES (default: search embed paper fast tests;
# smoke and quality also exist; they run in the order below), WORK (/tmp/deepssim-gpu: models
# and caches, not kept in OUT), PYTEST_ARGS (extra pytest arguments, e.g. "-n 8 --timeout 60"),
# QUALITY_MINUTES (4, whole minutes: the quality stage's training budget).
#
# Time on an H200: search 23 s, embed 114 s, paper 200 s (most of it reading the images at
# 224 px and building the pairs before 75 s of training), fast 139 s. The stages' limits add up
# to more than 10 minutes: where a run must fit in 10 minutes, split it and drop what is not
# needed, e.g. STAGES="fast tests" with a 360 s limit, then STAGES="search embed paper".
#
# Stages:
#   smoke   a short `deepssim train --preset fast` on the device (flipped pairs, block targets)
#   search  benchmarks/search_speed.py --device: exact top-k against torch.mm, 100k x 100k
#   embed   benchmarks/embed_speed.py --device: files vs raw forward, and CUDA vs CPU embeddings,
#           for the fast preset's network and ConvNeXt-Base at 224 px
#   paper   `deepssim train --preset paper` (random initialisation: the machine may have no
#           network and no ImageNet weights), training images/s and the validation MAE reached
#   fast    benchmarks/train_fast.py on the device: what the fast preset reaches with a GPU
#   quality the macro F1 table of docs/quality.md with a GPU: the development benchmark and
#           its calibration twin built from DATA as docs/benchmark.md builds them (seeds 0 and
#           1), the fast preset trained on its train/ for QUALITY_MINUTES,
#           benchmarks/evaluate_all.py's two tables (macro F1 registered / perturbed, fixed and
#           calibrated thresholds). Limits 60 + 60 + (budget + 120) + 90 s, 570 s with the
#           default 4 minutes: alone in a run of at most 10 minutes (STAGES=quality)
#   tests   the CUDA-only tests (`-k cuda`: SSIM engine, embeddings and pair targets against
#           the CPU's); they need ../shared/data/brain-tumor-mri beside the checkout
set -u
if [ ! -d "${1:-}/Training" ] || [ -z "${2:-}" ]; then
    echo "usage: bash benchmarks/gpu_checks.sh DATA OUT [tiny] (DATA holds Training/ and manifest.csv)" >&2
    exit 2
fi
DATA=$(cd "$1" && pwd)
OUT=$2
SCALE=${3:-full}
QUALITY_MINUTES=${QUALITY_MINUTES:-4}
case $QUALITY_MINUTES in
    '' | *[!0-9]*) echo "QUALITY_MINUTES: whole minutes, got '$QUALITY_MINUTES'" >&2; exit 2 ;;
esac
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
STAGES=${STAGES:-search embed paper fast tests}
WORK=${WORK:-/tmp/deepssim-gpu}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_checks.log
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

if [ "$SCALE" = tiny ]; then
    SMOKE="--max-images 120 --image-size 32 --n-train-pairs 400 --n-val-pairs 100 --max-minutes 0.1"
    SEARCH="--n-queries 4000 --n-base 6000"
    EMBED_N=64
    EMBED_BIG="--backbone resnet18 --size 64"
    PAPER="--max-images 200 --image-size 64 --n-train-pairs 600 --n-val-pairs 100 --max-minutes 0.2"
    FAST="--minutes 0.2 --set max_images=400 --set n_train_pairs=2000 --set n_val_pairs=300"
    TESTS="tests/refssim/test_engine.py"
    BUILD="--n-train 150 --n-synthetic 40"
    QUALITY="--max-minutes 0.2 --max-images 300 --n-train-pairs 1500 --n-val-pairs 200"
else
    SMOKE="--max-images 400 --image-size 64 --n-train-pairs 2000 --n-val-pairs 200 --max-minutes 0.2"
    SEARCH=""
    EMBED_N=2048
    EMBED_BIG="--backbone convnext_base --size 224"
    PAPER="--max-minutes 1.25"
    FAST="--minutes 2"
    TESTS="tests -k cuda --continue-on-collection-errors"
    BUILD=""
    QUALITY="--max-minutes $QUALITY_MINUTES"
fi
# The quality training's limit: its budget, and 2 minutes for the pairs and the last validation.
QUALITY_LIMIT=$(( 10#$QUALITY_MINUTES * 60 + 120 ))

# wanted NAME: whether STAGES lists stage NAME.
wanted() {
    case " $STAGES " in *" $1 "*) return 0 ;; esac
    return 1
}

# run NAME SECONDS COMMAND...: the whole output to the log; tables, results and errors on stdout.
run() {
    local name=$1 limit=$2
    shift 2
    wanted "$name" || return 0
    echo "== $name: $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tr '\r' '\n' \
        | grep -E '^(\||#|max |model written|stopped|FAILED|ERROR|SKIPPED|[0-9]+ (passed|failed)|.*(Error|error):)' \
        | grep -v '^#$'
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}

# trained NAME: training throughput and the best validation figures of WORK/NAME.
trained() {
    wanted "$1" || return 0
    cp "$WORK/$1/metrics.csv" "$OUT/$1_metrics.csv" 2>/dev/null
    cp "$WORK/$1/config.json" "$OUT/$1_config.json" 2>/dev/null
    "$PY" - "$WORK/$1" <<'EOF' 2>&1 | tee -a "$LOG"
import csv, json, sys
from pathlib import Path
folder = Path(sys.argv[1])
try:
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    config = json.loads((folder / "config.json").read_text())
except OSError as exc:
    sys.exit(f"{folder}: no trained model ({exc})")
last, best, train = rows[-1], config["validation"], config["training"]
steps, seconds = int(last["step"]), float(last["elapsed_s"])
images = 2 * train["batch_size"] * steps
print(f"{folder.name}: {config['model']['backbone']} {config['preprocess']['size']} px, batch "
      f"{train['batch_size']} pairs, {steps} steps in {seconds:.0f} s (validation included): "
      f"{images / seconds:,.0f} training images/s; best validation (step {int(best['step'])}): "
      f"MAE clean {best['val_clean_mae']:.4f}, perturbed {best['val_perturbed_mae']:.4f}, "
      f"r {best['val_perturbed_r']:.3f}")
EOF
}

{
    echo "# $(date -u +%FT%TZ) $(uname -n), scale $SCALE, device $DEVICE"
    nvidia-smi -L 2>/dev/null
    "$PY" -c "import sys, torch, torchvision, numpy; print('# python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
} | tee -a "$LOG"

run smoke 120 "$PY" -m deepssim train "$DATA/Training" --preset fast --device "$DEVICE" \
    --out "$WORK/smoke" --no-progress --no-compile $SMOKE
run search 120 "$PY" benchmarks/search_speed.py --device "$DEVICE" $SEARCH
run embed 120 "$PY" benchmarks/embed_speed.py --device "$DEVICE" --data "$DATA" --n "$EMBED_N" --batch-size 256 \
    --workers 1,8
run embed 150 "$PY" benchmarks/embed_speed.py --device "$DEVICE" --data "$DATA" --n $((EMBED_N / 2)) --batch-size 128 \
    --workers 1,8 $EMBED_BIG
run paper 200 "$PY" -m deepssim train "$DATA/Training" --preset paper --pretrained none --device "$DEVICE" \
    --out "$WORK/paper" --no-progress $PAPER
trained paper
run fast 240 "$PY" benchmarks/train_fast.py --data "$DATA/Training" --device "$DEVICE" --out "$WORK/fast" \
    --no-progress --set compile=false $FAST
trained fast
# Nothing of an earlier run's quality model or tables may be reported as this run's.
wanted quality && rm -rf "$WORK/quality" "$WORK/eval-quality"
run quality 60 "$PY" -m deepssim benchmark build --images "$DATA/Training" --out "$WORK/bench" \
    --seed 0 --overwrite --no-progress $BUILD
run quality 60 "$PY" -m deepssim benchmark build --images "$DATA/Training" --out "$WORK/bench-val" \
    --seed 1 --overwrite --no-progress $BUILD
run quality "$QUALITY_LIMIT" "$PY" -m deepssim train "$WORK/bench/train" --preset fast --device "$DEVICE" \
    --out "$WORK/quality" --no-progress --no-compile $QUALITY
trained quality
run quality 90 "$PY" benchmarks/evaluate_all.py --bench "$WORK/bench" --val-bench "$WORK/bench-val" \
    --model "$WORK/quality" --metrics deepssim --out "$WORK/eval-quality"
wanted quality && cp "$WORK"/eval-quality/table-*.md "$OUT"/ 2>/dev/null
run tests 120 "$PY" -m pytest $TESTS -q -p no:cacheprovider ${PYTEST_ARGS:-}
echo "# done after $SECONDS s" | tee -a "$LOG"
