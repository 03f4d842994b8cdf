#!/usr/bin/env bash
# newsd's main job end to end on embedded defaults: trains a first student on the demo data's
# known labels, starts a local Postgres and the development Kafka broker, streams synthetic news
# through `newsd run`, and prints a per-company sentiment summary queried from Postgres.
# usage: scripts/demo.sh [--count N]
set -euo pipefail
cd "$(dirname "$0")/.."
count=3000
while [ $# -gt 0 ]; do case $1 in --count) count=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac; done
./scripts/setup.sh
echo "== building newsd (release)" >&2
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
demo=$PWD/.run/demo; rm -rf "$demo"; mkdir -p "$demo"
export NEWSD_BASE_MODEL_DIR=$PWD/.models/all-MiniLM-L6-v2

echo "== local Postgres" >&2
admin=$(./scripts/pg.sh start)
psql -q "$admin" -c "DROP DATABASE IF EXISTS newsd_demo" -c "CREATE DATABASE newsd_demo" >/dev/null
db=${admin%/postgres}/newsd_demo

echo "== demo data: $count streamed sentences; a separate labelled set trains the first student" >&2
"$newsd" demo-data --out "$demo/news.jsonl" --count "$count" --seed 1 --portfolio "$demo/portfolio.csv" 2>/dev/null
"$newsd" demo-data --out "$demo/train.jsonl" --count 1500 --seed 7 --labels "$demo/train.csv" 2>/dev/null
# A few malformed messages ride along: they must land in rejected_messages, not stop the stream.
printf '%s\n' '{"text": 42}' '{"id": "x", "broken json' '   ' '{"id":"no-text"}' >> "$demo/news.jsonl"

echo "== training the first student (top-2 layers of MiniLM-L6)" >&2
"$newsd" train --data "$demo/train.csv" --label-column label --epochs 2 --out "$demo/model" >&2

echo "== dev broker (librdkafka mock cluster)" >&2
mkfifo "$demo/broker.in"
"$newsd" dev-broker --topic news:4 --bootstrap-file "$demo/bootstrap" < "$demo/broker.in" > "$demo/broker.out" 2>&1 &
broker=$!
exec 3> "$demo/broker.in"
trap 'exec 3>&-; kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$demo/bootstrap" ] && break; sleep 0.1; done
brokers=$(cat "$demo/bootstrap")
total=$(wc -l < "$demo/news.jsonl")
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/news.jsonl" >&2

cat > "$demo/newsd.toml" <<TOML
[kafka]
brokers = "$brokers"
topics = ["news"]
group_id = "newsd-demo"
session_timeout_ms = 6000
[postgres]
url = "$db"
[model]
dir = "$demo/model"
[portfolio]
file = "$demo/portfolio.csv"
TOML
echo "== newsd run (stops after $total messages)" >&2
start=$(date +%s.%N)
NEWSD_STATS_FILE="$demo/stats.json" "$newsd" run --config "$demo/newsd.toml" --stop-after "$total" 2> "$demo/newsd.log" || { tail -20 "$demo/newsd.log" >&2; exit 1; }
end=$(date +%s.%N)

echo
echo "== per-company sentiment (from Postgres: company_sentiment_daily, latest predictions)"
psql -q "$db" -P pager=off <<'SQL'
SELECT c.name AS company, sum(s.items) AS items, sum(s.positive) AS positive, sum(s.negative) AS negative,
       sum(s.neutral) AS neutral, round(sum(s.net_sentiment * s.items) / sum(s.items), 3) AS net_sentiment
FROM company_sentiment_daily s JOIN companies c ON c.id = s.company_id
GROUP BY c.name ORDER BY net_sentiment;
SELECT count(*) AS stored_items, (SELECT count(*) FROM rejected_messages) AS rejected,
       (SELECT count(DISTINCT model_version) FROM predictions) AS model_versions
FROM news_items;
SQL
python3 - "$demo/stats.json" "$start" "$end" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"consumed {s['consumed']} messages in {wall:.1f} s wall (incl. model load and group join); "
      f"batches {s['batches']}, p50 batch {s['p50_batch_ms']:.0f} ms, p99 {s['p99_batch_ms']:.0f} ms; "
      f"stage seconds: poll {s['poll_seconds']:.1f}, parse+link {s['parse_seconds']:.2f}, classify {s['classify_seconds']:.1f}, write {s['write_seconds']:.1f}")
PY
echo "(logs: $demo/newsd.log; database: $db)"
