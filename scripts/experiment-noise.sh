#!/usr/bin/env bash
# The label-noise pass, checked against the experts (figures for docs/experiments.md, not a
# test): a student is trained with `--noise-folds 2` on the teacher labels of the shared data
# (all rows but every fifth, as fold 0 of scripts/experiment-recipe.sh), and the labels it
# down-weighted are compared with the experts' labels: how many of the suspects the teacher
# really got wrong, against the teacher's error rate on all training rows, and how many of its
# errors were caught.
# usage: scripts/experiment-noise.sh [--data CSV] [--threshold P]
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/fpb-mixtral-train.csv; threshold=0.2
while [ $# -gt 0 ]; do case $1 in --data) data=$2; shift 2;; --threshold) threshold=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac; done
[ -f "$data" ] || { echo "needs $data" >&2; exit 1; }
./scripts/setup.sh >&2
swift build -c release --product newsd >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export NEWSD_BASE_MODEL_DIR=$PWD/.models/all-MiniLM-L6-v2
python3 - "$data" "$work/train.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline='')))
csv.writer(open(sys.argv[2], 'w', newline='')).writerows([rows[0]] + [r for i, r in enumerate(rows[1:]) if i % 5 != 0])
PY
./.build/release/newsd train --data "$work/train.csv" --label-column label_llm_cot_multiple --soft-label-columns sc_iter1,sc_iter2,sc_iter3 \
  --no-early-exit --noise-folds 2 --suspect-threshold "$threshold" --suspects-out "$work/suspects.csv" --out "$work/model" > "$work/train.txt" 2> "$work/train.log"
python3 - "$work/train.csv" "$work/suspects.csv" "$work/train.txt" <<'PY'
import csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='')))
suspects = {r['text'] for r in csv.DictReader(open(sys.argv[2], newline=''))}
trained = re.search(r'of (\d+) \(', open(sys.argv[3]).read())
wrong = lambda r: r['label_llm_cot_multiple'] != r['label_experts']
split = lambda r: len({r['sc_iter1'], r['sc_iter2'], r['sc_iter3']}) > 1
in_s = [r for r in rows if r['text'] in suspects]
errors = [r for r in rows if wrong(r)]
print(f"training rows {len(rows)} (the trainer keeps {trained.group(1) if trained else '?'} after its validation split); "
      f"teacher wrong on {len(errors)} ({100 * len(errors) / len(rows):.1f} %)")
print(f"suspects (down-weighted): {len(in_s)}; of them the teacher was wrong on {sum(map(wrong, in_s))} "
      f"({100 * sum(map(wrong, in_s)) / max(1, len(in_s)):.1f} %, against {100 * len(errors) / len(rows):.1f} % of all rows)")
print(f"teacher errors caught: {sum(1 for r in errors if r['text'] in suspects)} of {len(errors)}; "
      f"suspects with split votes: {sum(map(split, in_s))} of {len(in_s)}")
PY
