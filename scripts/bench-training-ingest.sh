#!/usr/bin/env bash
# Ingest slowdown during training (figures, not a test): the same stream is ingested twice —
# alone, then with a training run (`newsd trainer --force`, the daemon's own code path: nice 10,
# trainer.threads cores) working beside it on the shared teacher labels — and the sustained rates
# and the training time are printed side by side.
# --labels N trains on N labels: the shared data's 1,811 plus generated demo sentences.
# --model DIR serves that trained artifact (with its early exits), as a daemon past its cold start
# does; the default serves the base checkpoint (every layer, untrained head). The candidate is
# trained with the trainer's defaults (the final configuration), from the base.
# usage: scripts/bench-training-ingest.sh [--count N] [--trainer-threads N] [--labels N] [--model DIR]
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
count=8000; tthreads=1; labels=0; data=../shared/data/fpb-mixtral-train.csv; model=$PWD/.models/all-MiniLM-L6-v2
while [ $# -gt 0 ]; do
  case $1 in
    --count) count=$2; shift 2;;
    --trainer-threads) tthreads=$2; shift 2;;
    --labels) labels=$2; shift 2;;
    --model) model=$(cd "$here" && realpath "$2"); shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[ -f "$data" ] || { echo "needs $data" >&2; exit 1; }
./scripts/setup.sh >&2   # installs the default model: check the directory after it
[ -d "$model" ] || { echo "--model: no directory $model" >&2; exit 1; }
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
work=$PWD/.run/bench-training; rm -rf "$work"; mkdir -p "$work"
broker=; trap 'kill $broker 2>/dev/null || true' EXIT
admin=$(./scripts/pg.sh start)
python3 - "$data" "$count" "$work/news.jsonl" <<'PY'
import csv, json, sys
texts = [r['text'] for r in csv.DictReader(open(sys.argv[1], newline=''))]
with open(sys.argv[3], 'w') as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({'id': f'b{i}', 'text': texts[i % len(texts)]}) + '\n')
PY
# The dev broker (librdkafka's mock cluster) keeps at most 5 MB per partition and deletes the
# oldest beyond that: a stream larger than that would lose its start before it is read (newsd
# counts such gaps in newsd_offsets_skipped_total) and `--stop-after` would never be reached.
# The broker's bytes are the file's plus about 20 per record (key, record header); 75 % of the
# 4 x 5 MB leaves room for partitions that fill unevenly.
bytes=$(( $(stat -c %s "$work/news.jsonl") + 20 * count ))
[ "$bytes" -le $((4 * 5 * 1048576 * 3 / 4)) ] || { echo "--count $count makes about $((bytes / 1048576)) MB on the broker: more than the dev broker can keep in 4 partitions (4 x 5 MB, 75 % of it used here); use a smaller --count (at most about 90,000 of the shared sentences)" >&2; exit 2; }
"$newsd" dev-broker --topic news:4 --bootstrap-file "$work/bootstrap" < /dev/null > /dev/null 2>&1 &
broker=$!
for _ in $(seq 100); do [ -s "$work/bootstrap" ] && break; sleep 0.1; done
brokers=$(cat "$work/bootstrap")
extra=$((labels - $(python3 -c "import csv,sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1], newline=''))))" "$data")))
[ "$extra" -gt 0 ] && "$newsd" demo-data --out "$work/extra.jsonl" --count "$extra" --seed 9 --labels "$work/extra.csv" 2>/dev/null
"$newsd" produce --brokers "$brokers" --topic news --file "$work/news.jsonl" 2>/dev/null
run() {   # run NAME WITH_TRAINING
  local name=$1 db=${admin%/postgres}/newsd_bench_$1
  psql -q "$admin" -c "DROP DATABASE IF EXISTS newsd_bench_$name" -c "CREATE DATABASE newsd_bench_$name" >/dev/null 2>&1
  cat > "$work/$name.toml" <<TOML
[kafka]
brokers = "$brokers"
topics = ["news"]
group_id = "bench-$name"
session_timeout_ms = 6000
[postgres]
url = "$db"
[model]
dir = "$model"
base_dir = "$PWD/.models/all-MiniLM-L6-v2"
threads = 2
cache_entries = 0        # the shared sentences repeat: measure the student, not the cache
[trainer]
mode = "off"
threads = $tthreads
TOML
  "$newsd" migrate --config "$work/$name.toml" > /dev/null
  "$newsd" labels import --config "$work/$name.toml" "$data" --label-column label_llm_cot_multiple --source bench > /dev/null
  if [ "$extra" -gt 0 ]; then "$newsd" labels import --config "$work/$name.toml" "$work/extra.csv" --label-column label --source bench-demo > /dev/null; fi
  local trainer=
  if [ "$2" = yes ]; then
    ( start=$(date +%s.%N); "$newsd" trainer --config "$work/$name.toml" --force > "$work/trainer.out" 2> "$work/trainer.log"; \
      echo "$start $(date +%s.%N)" > "$work/trainer.time" ) &
    trainer=$!
    sleep 2
  fi
  NEWSD_STATS_FILE="$work/$name.json" "$newsd" run --config "$work/$name.toml" --stop-after "$count" 2> "$work/$name.log"
  [ -n "$trainer" ] && wait $trainer
  true
}
run alone no
run training yes
python3 - "$work/alone.json" "$work/training.json" "$work/trainer.time" "$tthreads" "$work/trainer.out" <<'PY'
import json, sys
a = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))
s, e = map(float, open(sys.argv[3]).read().split())
print(f"ingest alone:           {a['sustained_per_second']:.1f} messages/s, p99 batch {a['p99_batch_ms']:.0f} ms")
print(f"ingest during training: {t['sustained_per_second']:.1f} messages/s, p99 batch {t['p99_batch_ms']:.0f} ms "
      f"({100 * (1 - t['sustained_per_second'] / a['sustained_per_second']):.0f} % slower)")
print(f"training beside it: trainer.threads = {sys.argv[4]}, nice 10, {e - s:.0f} s wall; {open(sys.argv[5]).read().strip()}")
print(f"(the training run overlapped the timed ingest only while the stream lasted: make --count large enough)")
PY
