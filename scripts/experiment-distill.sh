#!/usr/bin/env bash
# Experiment (figures for the closing note, not a test): stream the shared sentences through the
# whole loop (dev broker -> newsd run with teacher worker and trainer -> dev-teacher replaying the
# recorded Mixtral samples) with a teacher budget of 30 % of the items, once with uncertainty
# sampling and once with random sampling, and compare the final students with one trained on
# the teacher labels of ALL items. Every final model is scored on the same held-out expert split
# (rows 1,501-1,811, never streamed) through trainer.gold_sets.
#
# --pseudo-margin M adds, per arm, a final student that also learns the arm's active student's
# confident predictions (margin >= M) on the unlabelled streamed items (self-training,
# trainer.pseudo_label_min_margin). --final-only reuses the loops of the previous run (their
# databases) and trains only the final students.
# usage: scripts/experiment-distill.sh [--rate MSGS_PER_S] [--budget 0.3] [--pseudo-margin M] [--final-only]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=20; budget=0.3; data=../shared/data/fpb-mixtral-train.csv; pseudo=; final_only=0
while [ $# -gt 0 ]; do case $1 in --rate) rate=$2; shift 2;; --budget) budget=$2; shift 2;; --pseudo-margin) pseudo=$2; shift 2;;
  --final-only) final_only=1; shift;; *) exit 2;; esac; done
[ -f "$data" ] || { echo "needs $data" >&2; exit 1; }
./scripts/setup.sh >&2
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
work=$PWD/.run/experiment-distill
if [ $final_only = 1 ]; then
  [ -f "$work/results" ] || { echo "--final-only needs a previous run in $work" >&2; exit 1; }
  grep -v '+pseudo' "$work/results" > "$work/results.loops"; mv "$work/results.loops" "$work/results"
else
  rm -rf "$work"; mkdir -p "$work"
fi
export NEWSD_BASE_MODEL_DIR=$PWD/.models/all-MiniLM-L6-v2
admin=$(./scripts/pg.sh start)
python3 - "$data" "$work" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='')))
train, test = rows[:1500], rows[1500:]
with open(sys.argv[2] + '/stream.jsonl', 'w') as f:
    for i, r in enumerate(train): f.write(json.dumps({'id': f's{i}', 'text': r['text']}) + '\n')
for name, part in (('answers', train), ('test', test)):
    w = csv.DictWriter(open(f"{sys.argv[2]}/{name}.csv", 'w', newline=''), fieldnames=rows[0].keys()); w.writeheader(); w.writerows(part)
PY
# The gold set scores against the experts: a copy whose label column is label_experts only.
python3 - "$work/test.csv" "$work/gold.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='')))
w = csv.writer(open(sys.argv[2], 'w', newline='')); w.writerow(['text', 'label'])
for r in rows: w.writerow([r['text'], r['label_experts']])
PY
items=$(wc -l < "$work/stream.jsonl")
cold=$((items / 10))
share=$(python3 -c "print(round(($budget * $items - $cold) / ($items - $cold), 4))")
"$newsd" dev-teacher --answers "$work/answers.csv" --port 0 --url-file "$work/teacher-url" --latency-ms 100 > /dev/null 2> "$work/dev-teacher.log" &
teacher=$!
broker=
trap 'kill $teacher $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/teacher-url" ] && break; sleep 0.1; done

config() {   # config NAME SELECTION SHARE BROKERS
  cat > "$work/$1.toml" <<TOML
[kafka]
brokers = "$4"
topics = ["news"]
group_id = "exp-$1"
session_timeout_ms = 6000
[postgres]
url = "${admin%/postgres}/newsd_exp_$1"
[model]
dir = "$NEWSD_BASE_MODEL_DIR"
cache_dir = "$work/models-$1"
[ingest]
batch_max_messages = 100
batch_max_wait_ms = 5000
[teacher]
base_url = "$(cat "$work/teacher-url")"
requests_per_minute = 0
daily_budget_usd = 0
cold_start_items = $cold
selection = "$2"
top_k = 1000000
max_share = $3
exploration_rate = 0
[trainer]
mode = "daemon"
min_labels = $cold
min_new_labels = 100
check_seconds = 2
epochs = 4
gold_sets = ["$work/gold.csv"]
TOML
  psql -q "$admin" -c "DROP DATABASE IF EXISTS newsd_exp_$1" -c "CREATE DATABASE newsd_exp_$1" >/dev/null 2>&1
}
final_metrics() {   # final_metrics NAME -> the newest candidate's gold metrics
  psql -tA "${admin%/postgres}/newsd_exp_$1" -c "SELECT 'v' || seq || ' ' || status || ' ' || round((metrics->>'gold_gold_macro_f1')::numeric, 4) || ' ' || round((metrics->>'gold_gold_accuracy')::numeric, 4) || ' ' || (SELECT count(*) FROM teacher_labels) || ' ' || (SELECT count(*) FROM teacher_requests) FROM models ORDER BY seq DESC LIMIT 1"
}

for arm in uncertainty random; do
  [ $final_only = 1 ] && break
  selection=top_k; [ $arm = random ] && selection=random
  rm -f "$work/bootstrap"
  "$newsd" dev-broker --topic news:4 --bootstrap-file "$work/bootstrap" < /dev/null > /dev/null 2>&1 &
  broker=$!
  for _ in $(seq 100); do [ -s "$work/bootstrap" ] && break; sleep 0.1; done
  config $arm $selection "$share" "$(cat "$work/bootstrap")"
  echo "== $arm sampling: $items items at $rate/s, cold start $cold, then $share of the rest" >&2
  "$newsd" run --config "$work/$arm.toml" 2> "$work/$arm.log" &
  daemon=$!
  "$newsd" produce --brokers "$(cat "$work/bootstrap")" --topic news --file "$work/stream.jsonl" --rate "$rate" 2>/dev/null
  db=${admin%/postgres}/newsd_exp_$arm
  for _ in $(seq 600); do
    [ "$(psql -tA "$db" -c "SELECT count(*) FROM news_items")" -ge "$items" ] && \
    [ "$(psql -tA "$db" -c "SELECT count(*) FROM teacher_queue WHERE status = 'pending'")" -eq 0 ] && break; sleep 1; done
  kill -TERM $daemon; wait $daemon || true
  kill $broker 2>/dev/null || true; broker=
  # The final student: one more run from the base on every label the loop collected (gate figures recorded).
  NEWSD_TRAINER_THREADS=2 NEWSD_TRAINER_INCREMENTAL=false "$newsd" trainer --config "$work/$arm.toml" --force >> "$work/$arm.trainer" 2>&1 || true
  echo "$arm $(final_metrics $arm) $(psql -tA "$db" -c "SELECT count(*) FROM models")" >> "$work/results"
done

if [ $final_only = 0 ]; then
  echo "== all teacher labels: every streamed item labelled, one training run" >&2
  config all top_k 1 127.0.0.1:9
  NEWSD_TEACHER_CONCURRENCY=16 "$newsd" teacher enqueue --config "$work/all.toml" --in "$work/answers.csv" > /dev/null
  NEWSD_LOG_LEVEL=warning "$newsd" teacher work --config "$work/all.toml" --stop-when-empty 2> "$work/all.worker.log"
  NEWSD_TRAINER_THREADS=2 "$newsd" trainer --config "$work/all.toml" --force >> "$work/all.trainer" 2>&1 || true
  echo "all $(final_metrics all) 1" >> "$work/results"
fi

if [ -n "$pseudo" ]; then
  for arm in uncertainty random; do
    echo "== $arm + self-training: the active student's predictions with margin >= $pseudo on the streamed items" >&2
    db=${admin%/postgres}/newsd_exp_$arm
    NEWSD_TRAINER_THREADS=2 NEWSD_TRAINER_INCREMENTAL=false NEWSD_TRAINER_PSEUDO_LABEL_MIN_MARGIN=$pseudo \
      "$newsd" trainer --config "$work/$arm.toml" --force >> "$work/$arm+pseudo.trainer" 2>&1 || true
    echo "$arm+pseudo$pseudo $(final_metrics $arm) $(psql -tA "$db" -c "SELECT count(*) FROM models")" >> "$work/results"
  done
fi

python3 - "$work/results" "$items" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
n = int(sys.argv[2])
print(f"{'arm':12} {'teacher items':>14} {'share':>6} {'requests':>9} {'models':>7} {'final':>6} {'expert macro-F1':>16} {'accuracy':>9}")
ref = None
for r in rows:
    arm, seq, status, f1, acc, labels, requests, models = r[0], r[1], r[2], float(r[3]), float(r[4]), int(r[5]), int(r[6]), int(r[7])
    if arm == 'all': ref = f1
    print(f"{arm:12} {labels:>14} {labels / n:>6.1%} {requests:>9} {models:>7} {seq:>6} {f1:>16.4f} {acc:>9.4f}")
if ref is not None:
    for r in rows:
        if r[0] != 'all': print(f"{r[0]} vs all labels: {100 * (float(r[3]) - ref):+.2f} points macro-F1")
PY
