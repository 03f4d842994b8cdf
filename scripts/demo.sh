#!/usr/bin/env bash
# newsd's main job end to end on embedded defaults, the whole loop: a local Postgres, the
# development Kafka broker, the development teacher (replaying the demo stream's known labels),
# and `newsd run` starting with NO trained model. Cold start: the first items all go to the
# teacher, v1 is trained and hot-swapped in, the items that came before it are classified; more
# uncertain items are labelled, v2 is trained, passes the gate and is swapped in. Closes with a
# summary: per-company sentiment, items, teacher calls and spend, model versions and metrics,
# and the cost per million sentences against sending every sentence to the teacher.
# usage: scripts/demo.sh [--count N]
set -euo pipefail
cd "$(dirname "$0")/.."
count=3000
while [ $# -gt 0 ]; do case $1 in --count) count=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac; done
[ "$count" -ge 1500 ] || { echo "--count must be at least 1500 (the loop needs labels for two models)" >&2; exit 2; }
./scripts/setup.sh
echo "== building newsd (release)" >&2
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
demo=$PWD/.run/demo; rm -rf "$demo"; mkdir -p "$demo"
export NEWSD_BASE_MODEL_DIR=$PWD/.models/all-MiniLM-L6-v2

echo "== local Postgres" >&2
admin=$(./scripts/pg.sh start)
psql -q "$admin" -c "DROP DATABASE IF EXISTS newsd_demo" -c "CREATE DATABASE newsd_demo" >/dev/null 2>&1
db=${admin%/postgres}/newsd_demo

echo "== demo data: $count news sentences about a demo portfolio (their labels drive the dev teacher)" >&2
"$newsd" demo-data --out "$demo/news.jsonl" --count "$count" --seed 1 --labels "$demo/answers.csv" --portfolio "$demo/portfolio.csv" 2>/dev/null
# A few malformed messages ride along: they must land in rejected_messages, not stop the stream.
printf '%s\n' '{"text": 42}' '{"id": "x", "broken json' '   ' '{"id":"no-text"}' >> "$demo/news.jsonl"
total=$(wc -l < "$demo/news.jsonl")
wave1=$((count / 3)); wave2=$((count * 5 / 6))
sed -n "1,${wave1}p" "$demo/news.jsonl" > "$demo/wave1.jsonl"
sed -n "$((wave1 + 1)),${wave2}p" "$demo/news.jsonl" > "$demo/wave2.jsonl"
sed -n "$((wave2 + 1)),\$p" "$demo/news.jsonl" > "$demo/wave3.jsonl"

echo "== dev broker (librdkafka mock cluster) and dev teacher (recorded answers, 50 ms latency)" >&2
mkfifo "$demo/broker.in"
"$newsd" dev-broker --topic news:4 --bootstrap-file "$demo/bootstrap" < "$demo/broker.in" > "$demo/broker.out" 2>&1 &
broker=$!
exec 3> "$demo/broker.in"
"$newsd" dev-teacher --answers "$demo/answers.csv" --port 0 --url-file "$demo/teacher-url" --latency-ms 50 > /dev/null 2> "$demo/dev-teacher.log" &
teacher=$!
daemon=
trap 'exec 3>&-; kill $broker $teacher $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$demo/bootstrap" ] && [ -s "$demo/teacher-url" ] && break; sleep 0.1; done
brokers=$(cat "$demo/bootstrap")

cat > "$demo/newsd.toml" <<TOML
[kafka]
brokers = "$brokers"
topics = ["news"]
group_id = "newsd-demo"
session_timeout_ms = 6000
[postgres]
url = "$db"
[model]
dir = "$NEWSD_BASE_MODEL_DIR"     # no trained student: cold start
cache_dir = "$demo/models"
[portfolio]
file = "$demo/portfolio.csv"
[teacher]
base_url = "$(cat "$demo/teacher-url")"
model = "dev-teacher"
requests_per_minute = 0
daily_budget_usd = 5.0
cold_start_items = 400            # the first 400 items all go to the teacher
selection = "top_k"               # then the least certain items...
top_k = 100000
max_share = 0.25                  # ...a quarter of traffic at most
[trainer]
mode = "daemon"
min_labels = 300
min_new_labels = 300
check_seconds = 2
epochs = 2
TOML
q() { psql -tA "$db" -c "$1" 2>/dev/null || echo 0; }
wait_for() {   # wait_for SQL TARGET WHAT
  for _ in $(seq 600); do [ "$(q "$1")" -ge "$2" ] && return 0; kill -0 "$daemon" 2>/dev/null || { tail -20 "$demo/newsd.log" >&2; exit 1; }; sleep 0.5; done
  echo "timed out waiting for $3" >&2; tail -20 "$demo/newsd.log" >&2; exit 1
}
echo "== newsd run, starting with no trained model (log: $demo/newsd.log)" >&2
start=$(date +%s.%N)
NEWSD_STATS_FILE="$demo/stats.json" "$newsd" run --config "$demo/newsd.toml" --stop-after "$total" 2> "$demo/newsd.log" &
daemon=$!
echo "== wave 1: $wave1 messages; cold start -> teacher -> v1" >&2
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave1.jsonl" 2>/dev/null
wait_for "SELECT count(*) FROM models WHERE activated_at IS NOT NULL" 1 "v1"
wait_for "SELECT count(*) FROM news_items n WHERE EXISTS (SELECT 1 FROM predictions p JOIN models m ON m.version = p.model_version WHERE p.item_id = n.id)" "$wave1" "the cold-start backfill"
echo "   v1 active; the $wave1 items that came before it are classified by it" >&2
echo "== wave 2: $((wave2 - wave1)) messages; uncertain items -> teacher -> v2" >&2
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave2.jsonl" 2>/dev/null
wait_for "SELECT count(*) FROM models WHERE activated_at IS NOT NULL" 2 "v2"
sleep 3
echo "== wave 3: the rest, served by v2" >&2
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave3.jsonl" 2>/dev/null
wait "$daemon" || { tail -20 "$demo/newsd.log" >&2; exit 1; }
daemon=
end=$(date +%s.%N)

echo
echo "== per-company sentiment (company_sentiment_daily, latest predictions)"
psql -q "$db" -P pager=off <<'SQL'
SELECT c.name AS company, sum(s.items) AS items, sum(s.positive) AS positive, sum(s.negative) AS negative,
       sum(s.neutral) AS neutral, round(sum(s.net_sentiment * s.items) / sum(s.items), 3) AS net_sentiment
FROM company_sentiment_daily s JOIN companies c ON c.id = s.company_id
GROUP BY c.name ORDER BY net_sentiment;
SQL
echo "== model versions (newsd models list)"
"$newsd" models list --config "$demo/newsd.toml" 2>/dev/null
echo
echo "== which model classified what (ingest predictions; rescored = cold-start backfill)"
psql -q "$db" -P pager=off -c "SELECT coalesce('v' || m.seq, p.model_version || ' (untrained base)') AS model, count(*) FILTER (WHERE NOT p.rescored) AS at_ingest, count(*) FILTER (WHERE p.rescored) AS backfilled FROM predictions p LEFT JOIN models m ON m.version = p.model_version GROUP BY 1 ORDER BY 1"
echo "== teacher (newsd teacher stats)"
"$newsd" teacher stats --config "$demo/newsd.toml" 2>/dev/null
python3 - "$demo/stats.json" "$start" "$end" "$(q "SELECT count(*) FROM news_items")" "$(q "SELECT count(*) FROM rejected_messages")" \
  "$(q "SELECT coalesce(sum(cost_usd), 0) FROM teacher_requests")" "$(q "SELECT count(*) FROM teacher_labels")" "$(q "SELECT count(*) FROM teacher_requests")" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); wall = float(sys.argv[3]) - float(sys.argv[2])
items, rejected, spend, verdicts, calls = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
per_item = spend / verdicts if verdicts else 0
print(f"summary: {items} items stored, {rejected} malformed rejected, {s['consumed']} consumed in {wall:.0f} s wall")
print(f"teacher: {calls} calls for {verdicts} verdicts ({100 * verdicts / max(items, 1):.1f} % of items), spend ${spend:.4f}")
print(f"cost per million sentences: newsd ${spend / max(items, 1) * 1e6:,.2f}  vs  every sentence to the teacher "
      f"${per_item * 1e6:,.2f}  ({(per_item * 1e6) / max(spend / max(items, 1) * 1e6, 1e-9):.1f}x)")
PY
echo "(logs: $demo/newsd.log; database: $db)"
