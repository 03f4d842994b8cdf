#!/usr/bin/env bash
# End-to-end benchmark (figures, not a test): Kafka (dev broker) -> parse/link -> MiniLM-L6 student
# (model.precision, int8 by default) -> PostgreSQL (COPY, one transaction per batch), sustained messages/s from the first
# message to the last commit, the share of time per stage, p50/p99 batch latency and peak RSS.
# usage: scripts/bench-ingest.sh [--count N] [--data CSV-with-text-column] [--batch N] [--no-rollup-triggers] [--cache-entries N] [--model DIR] [--no-write-behind]
# --model: the student to serve (default the base checkpoint; a trained artifact adds early exit).
# --no-write-behind: each batch written before the next is read (ingest.write_behind = false).
# --no-rollup-triggers: the analysts' rollup triggers disabled (their cost, side by side with a run
# that has them). --cache-entries: the prediction cache (default 0, off: the shared sentences repeat
# every 1,811 messages, so with the cache on this measures the cache, not the student).
set -euo pipefail
cd "$(dirname "$0")/.."
count=20000; data=../shared/data/fpb-mixtral-train.csv; batch=96; triggers=1; cache=0; writebehind=true; model=$PWD/.models/all-MiniLM-L6-v2
while [ $# -gt 0 ]; do case $1 in --count) count=$2; shift 2;; --data) data=$2; shift 2;; --batch) batch=$2; shift 2;;
  --no-rollup-triggers) triggers=0; shift;; --cache-entries) cache=$2; shift 2;;
  --model) model=$(cd "$2" && pwd); shift 2;; --no-write-behind) writebehind=false; shift;; *) exit 2;; esac; done
./scripts/setup.sh
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
work=$(mktemp -d); trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
admin=$(./scripts/pg.sh start)
psql -q "$admin" -c "DROP DATABASE IF EXISTS newsd_bench" -c "CREATE DATABASE newsd_bench" >/dev/null
db=${admin%/postgres}/newsd_bench
if [ "$triggers" = 0 ]; then
  "$newsd" migrate --postgres "$db" >/dev/null
  psql -q "$db" -c "ALTER TABLE predictions DISABLE TRIGGER USER" -c "ALTER TABLE mentions DISABLE TRIGGER USER"
  echo "rollup triggers disabled"
fi
"$newsd" demo-data --style easy --out "$work/demo.jsonl" --count "$count" --portfolio "$work/portfolio.csv" 2>/dev/null
if [ -f "$data" ]; then
  # Real news sentences (FPB: mean 30 tokens), cycled to $count JSON messages.
  python3 - "$data" "$count" "$work/news.jsonl" <<'PY'
import csv, json, sys
texts = [r['text'] for r in csv.DictReader(open(sys.argv[1], newline=''))]
with open(sys.argv[3], 'w') as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({'id': f'b{i}', 'text': texts[i % len(texts)], 'source': 'bench'}) + '\n')
PY
else
  cp "$work/demo.jsonl" "$work/news.jsonl"
fi
"$newsd" dev-broker --topic news:4 --bootstrap-file "$work/bootstrap" < /dev/null > /dev/null 2>&1 &
broker=$!
for _ in $(seq 100); do [ -s "$work/bootstrap" ] && break; sleep 0.1; done
brokers=$(cat "$work/bootstrap")
"$newsd" produce --brokers "$brokers" --topic news --file "$work/news.jsonl" 2>/dev/null
cat > "$work/newsd.toml" <<TOML
[kafka]
brokers = "$brokers"
topics = ["news"]
group_id = "bench"
session_timeout_ms = 6000
[postgres]
url = "$db"
[model]
dir = "$model"
threads = 2
cache_entries = $cache
[portfolio]
file = "$work/portfolio.csv"
[ingest]
batch_max_messages = $batch
write_behind = $writebehind
TOML
NEWSD_STATS_FILE="$work/stats.json" "$newsd" run --config "$work/newsd.toml" --stop-after "$count" 2> "$work/log"
stored=$(psql -qtA "$db" -c "SELECT count(*) FROM news_items")
python3 - "$work/stats.json" "$stored" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); stored = int(sys.argv[2])
stages = {k: s[k + '_seconds'] for k in ('poll', 'parse', 'classify', 'write')}
total = sum(stages.values())
print(f"end-to-end: {s['consumed']} messages, {stored} stored, {s['batches']} batches of <= {s['consumed'] // max(1, s['batches']) + 1}")
print(f"sustained {s['sustained_per_second']:.1f} messages/s (first message to last commit); "
      f"batch latency p50 {s['p50_batch_ms']:.0f} ms, p99 {s['p99_batch_ms']:.0f} ms; peak RSS {s['peak_rss_mb']} MB")
print("time per stage: " + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in stages.items()))
PY
