#!/usr/bin/env bash
# Side-by-side student throughput: newsd's Swift encoder and the ONNX Runtime peer
# (../shared/bench/ort-peer: fp32, fused and int8 variants) on the same sentences, the same thread
# count and batch size, in one run. Prints each engine's sentences/s and newsd's ratio to each.
# usage: scripts/bench-model.sh [--data CSV] [--threads N] [--batch B] [--model DIR] [--repeat R]
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/fpb-mixtral-train.csv; threads=2; batch=32; repeat=3
model=.models/all-MiniLM-L6-v2
while [ $# -gt 0 ]; do case $1 in
  --data) data=$2; shift 2;; --threads) threads=$2; shift 2;; --batch) batch=$2; shift 2;;
  --model) model=$2; shift 2;; --repeat) repeat=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac; done
./scripts/setup.sh
swift build -c release --product newsd >&2
peer=../shared/bench/ort-peer
out=$(mktemp -d)
# newsd first and the peer after, then newsd again: the machine's drift shows as a spread.
./.build/release/newsd bench model --model "$model" --data "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --json > "$out/newsd1.json"
if [ -x "$peer" ]; then
  "$peer" "$model" "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --json > "$out/ort.json" 2> "$out/ort.log" || { cat "$out/ort.log" >&2; echo "ort-peer failed" >&2; }
else
  echo "no ONNX Runtime peer at $peer: printing newsd alone" >&2; : > "$out/ort.json"
fi
./.build/release/newsd bench model --model "$model" --data "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --json > "$out/newsd2.json"
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
n1, n2 = (json.load(open(os.path.join(d, f))) for f in ('newsd1.json', 'newsd2.json'))
newsd = (n1['sentences_per_second'] + n2['sentences_per_second']) / 2
rows = [('newsd fp32 (Swift + OpenBLAS)', newsd, f"runs {n1['sentences_per_second']:.1f} / {n2['sentences_per_second']:.1f}")]
for line in open(os.path.join(d, 'ort.json')):
    line = line.strip()
    if not line: continue
    o = json.loads(line); variant = 'int8' if '.int8.' in o['model'] else 'fused' if '.fused.' in o['model'] else 'fp32'
    rows.append((f"{o['engine']} {variant}", o['sentences_per_second'], f"min {o['min']:.1f} max {o['max']:.1f}"))
print(f"threads={n1['threads']} batch={n1['batch']} sentences={n1['n']} mean tokens={n1['mean_tokens']}")
print(f"{'engine':<34}{'sentences/s':>12}{'newsd ratio':>13}  notes")
for name, rate, notes in rows:
    print(f"{name:<34}{rate:>12.1f}{newsd / rate:>12.2f}x  {notes}")
print(f"newsd batch 1: {n1['batch1_sentences_per_second']:.1f} sentences/s, p50 {n1['p50_ms']:.2f} ms, p99 {n1['p99_ms']:.2f} ms; "
      f"{n1['tokens_per_second']:.0f} tokens/s batched; peak RSS {max(n1['peak_rss_mb'], n2['peak_rss_mb'])} MB")
PY
rm -rf "$out"
