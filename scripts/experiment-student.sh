#!/usr/bin/env bash
# The student's acceptance experiment: train on the first 1,500 rows of the shared teacher-labelled
# data (hard majority labels, then soft self-consistency votes), evaluate on the last 311 rows
# against the experts' labels, and print accuracy, macro-F1, training time and peak RSS.
# usage: scripts/experiment-student.sh [--data CSV] [--trainable top:2] [--epochs 4] [--threads 2]
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/fpb-mixtral-train.csv; extra=()
while [ $# -gt 0 ]; do case $1 in --data) data=$2; shift 2;; *) extra+=("$1"); shift;; esac; done
./scripts/setup.sh
swift build -c release --product newsd >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 - "$data" "$work" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline='')))
csv.writer(open(sys.argv[2] + '/train.csv', 'w', newline='')).writerows([rows[0]] + rows[1:1501])
csv.writer(open(sys.argv[2] + '/test.csv', 'w', newline='')).writerows([rows[0]] + rows[1501:])
PY
newsd=./.build/release/newsd
for mode in hard soft; do
  soft=(); [ $mode = soft ] && soft=(--soft-label-columns sc_iter1,sc_iter2,sc_iter3)
  start=$(date +%s.%N)
  $newsd train --data "$work/train.csv" --label-column label_llm_cot_multiple "${soft[@]}" "${extra[@]}" --out "$work/$mode" > "$work/$mode.train.txt" 2> "$work/$mode.log"
  end=$(date +%s.%N)
  $newsd eval --model "$work/$mode" --data "$work/test.csv" --label-column label_experts --precision int8 --json \
    --predictions-out "$work/$mode.pred.csv" > "$work/$mode.eval.json"
  python3 - "$work/$mode.eval.json" "$work/$mode.train.txt" "$mode" "$start" "$end" "$work/$mode.pred.csv" <<'PY'
import csv, json, random, sys, re
e = json.load(open(sys.argv[1])); t = open(sys.argv[2]).read()
pairs = [(r['truth'], r['predicted']) for r in csv.DictReader(open(sys.argv[6], newline=''))]
def macro_f1(ps):
    f = []
    for l in sorted({t for t, _ in ps}):
        tp = sum(1 for a, b in ps if a == l and b == l); fp = sum(1 for a, b in ps if a != l and b == l); fn = sum(1 for a, b in ps if a == l and b != l)
        f.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f) / len(f)
rng = random.Random(7); n = len(pairs)
boots = [[pairs[rng.randrange(n)] for _ in range(n)] for _ in range(2000)]
acc = sorted(sum(a == b for a, b in s) / n for s in boots); f1 = sorted(macro_f1(s) for s in boots)
print(f"{sys.argv[3]:>4} labels, int8 as served, 95% bootstrap intervals: accuracy [{acc[50]:.4f}, {acc[1949]:.4f}]  macro-F1 [{f1[50]:.4f}, {f1[1949]:.4f}]")
rss = re.search(r'peak RSS MB\s+(\d+)', t).group(1); temp = re.search(r'temperature\s+([\d.]+)', t)
ece = re.search(r'ECE before / after\s+([\d.]+) / ([\d.]+)', t)
print(f"{sys.argv[3]:>4} labels: accuracy {e['accuracy']:.4f}  macro-F1 {e['macro_f1']:.4f}  (n={e['n']}, expert labels)  "
      f"train wall {float(sys.argv[5]) - float(sys.argv[4]):.1f} s  peak RSS {rss} MB  T={temp.group(1) if temp else '-'}  "
      f"validation ECE {ece.group(1)} -> {ece.group(2)}  test ECE {e['ece']:.4f}" if ece else "")
PY
done
python3 - "$work/test.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='')))
ps = [(r['label_experts'], r['label_llm_cot_multiple']) for r in rows]
f = []
for l in sorted({t for t, _ in ps}):
    tp = sum(1 for a, b in ps if a == l and b == l); fp = sum(1 for a, b in ps if a != l and b == l); fn = sum(1 for a, b in ps if a == l and b != l)
    f.append(2 * tp / (2 * tp + fp + fn))
print(f"the teacher on the same rows (majority of its votes): accuracy {sum(a == b for a, b in ps) / len(ps):.4f}  macro-F1 {sum(f) / len(f):.4f}")
PY
