#!/usr/bin/env bash
# Held-out accuracy of the serving choices, cross-validated: the shared teacher-labelled data is
# cut into K contiguous folds; for each, a student is trained on the others (soft self-consistency
# votes, the defaults) and scored on the fold against the experts' labels with fp32, int8, and
# each with early exit; on a host with AVX-512 VNNI also int8 on the AVX2 path (6-bit activations,
# what an AVX2-only host serves). Prints one row per fold and the mean, with the mean layers per sentence.
# --keep-model DIR keeps fold 0's student there (e.g. for scripts/bench-model.sh --student DIR).
# usage: scripts/experiment-precision.sh [--data CSV] [--folds K] [--keep-model DIR]
set -euo pipefail
data=; folds=5; keep=
while [ $# -gt 0 ]; do case $1 in --data) data=$(realpath "$2"); shift 2;; --folds) folds=$2; shift 2;; --keep-model) keep=$(realpath -m "$2"); shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac; done
cd "$(dirname "$0")/.."
data=${data:-../shared/data/fpb-mixtral-train.csv}
./scripts/setup.sh
swift build -c release --product newsd >&2
newsd=./.build/release/newsd
precisions="fp32 int8"
if grep -qw avx512_vnni /proc/cpuinfo; then precisions="$precisions int8-avx2"; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 - "$data" "$work" "$folds" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline='')))
head, body, k = rows[0], rows[1:], int(sys.argv[3])
size = (len(body) + k - 1) // k
for f in range(k):
    test = body[f * size:(f + 1) * size]
    train = body[:f * size] + body[(f + 1) * size:]
    csv.writer(open(f"{sys.argv[2]}/train{f}.csv", 'w', newline='')).writerows([head] + train)
    csv.writer(open(f"{sys.argv[2]}/test{f}.csv", 'w', newline='')).writerows([head] + test)
PY
for f in $(seq 0 $((folds - 1))); do
  $newsd train --data "$work/train$f.csv" --label-column label_llm_cot_multiple --soft-label-columns sc_iter1,sc_iter2,sc_iter3 \
    --out "$work/model$f" > "$work/train$f.txt" 2> "$work/train$f.log"
  for p in $precisions; do
    for exit in no-early-exit early-exit; do
      $newsd eval --model "$work/model$f" --data "$work/test$f.csv" --label-column label_experts --precision $p --$exit --json > "$work/eval$f-$p-$exit.json"
    done
  done
done
if [ -n "$keep" ]; then rm -rf "$keep"; mkdir -p "$(dirname "$keep")"; cp -r "$work/model0" "$keep"; fi
python3 - "$work" "$folds" $precisions <<'PY'
import json, re, sys
work, k = sys.argv[1], int(sys.argv[2])
variants = [(p, e) for p in sys.argv[3:] for e in ('no-early-exit', 'early-exit')]
def name(p, e): return p + (' + exit' if e == 'early-exit' else '')
print(f"{'fold':<6}{'n':>5}  " + "  ".join(f"{name(p, e):>24}" for p, e in variants) + "  threshold")
sums = {v: [0.0, 0.0, 0.0] for v in variants}
for f in range(k):
    cells, n = [], 0
    for v in variants:
        e = json.load(open(f"{work}/eval{f}-{v[0]}-{v[1]}.json")); n = e['n']
        cells.append(f"{e['accuracy']:.4f} {e['macro_f1']:.4f} {e['mean_layers']:.2f}L")
        for i, key in enumerate(('accuracy', 'macro_f1', 'mean_layers')): sums[v][i] += e[key] / k
    t = re.search(r'early exit\s+after layers \S+ \S+ \S+, threshold ([\d.]+)', open(f"{work}/train{f}.txt").read())
    print(f"{f:<6}{n:>5}  " + "  ".join(f"{c:>24}" for c in cells) + f"  {t.group(1) if t else '-'}")
print(f"{'mean':<6}{'':>5}  " + "  ".join(f"{sums[v][0]:.4f} {sums[v][1]:.4f} {sums[v][2]:.2f}L".rjust(24) for v in variants))
print("cells: accuracy, macro-F1 (expert labels of the held-out fold), mean encoder layers per sentence")
PY
