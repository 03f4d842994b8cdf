#!/usr/bin/env bash
# newsd's main job end to end on embedded defaults, the whole loop: a local Postgres, the
# development Kafka broker, the development teacher, and `newsd run` starting with NO trained
# model. The demo news is not easy: besides plain sentences it has ones whose label turns on
# numbers, negations, hedges or mixed news, and half-way through the stream it changes kind, from
# agency wire sentences to short social-media posts with tickers and links. The demo teacher is
# wrong on ~7 % of items (more often on the hard ones), as a real LLM is.
#
# Cold start: the first items all go to the teacher, v1 is trained and hot-swapped in, the items
# that came before it are classified. Then the news changes kind: the student is unsure, those
# items go to the teacher, and the next model learns the new kind of news; the gate checks it on
# held-out sentences of the old kind too, so a model that forgets is refused. Closes with a
# summary: per-company sentiment, model versions, the accuracy of each model on held-out
# sentences of both kinds (scored against the truth, never trained on) and live on the
# stream, the time from the shift to the first adapted model, the teacher's labels and spend, and
# the cost per million sentences against sending every sentence to the teacher.
#
# With --wire-csv, the first kind of news is real instead of generated: the CSV's sentences with
# their recorded teacher votes and expert labels (the shared Financial PhraseBank file with a real
# LLM's answers): the experiment of a real stream meeting a new kind of news.
# usage: scripts/demo.sh [--count N] [--wire-csv FILE]   (FILE: text, sc_iter1..3, label_experts)
set -euo pipefail
cd "$(dirname "$0")/.."
count=3000; wire_csv=
while [ $# -gt 0 ]; do
  case $1 in
    --count) count=$2; shift 2;;
    --wire-csv) wire_csv=$(realpath "$2"); shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
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

echo "== demo data: $count news sentences about a demo portfolio, wire news then social posts; a teacher wrong on ~7 %" >&2
"$newsd" demo-data --out "$demo/news.jsonl" --count "$count" --seed 1 --labels "$demo/answers.csv" --portfolio "$demo/portfolio.csv" 2>/dev/null
# Held-out sentences of both kinds, never streamed: the truth the summary scores every model on.
"$newsd" demo-data --out "$demo/heldout.jsonl" --count 1200 --seed 2 --labels "$demo/heldout.csv" 2>/dev/null
if [ -n "$wire_csv" ]; then
  # The first kind of news is real: the CSV's sentences (in order) with its recorded teacher
  # votes (sc_iter1..3) and expert labels; its rows after the streamed ones are held out.
  python3 - "$demo" "$wire_csv" "$((count / 2))" <<'PY'
import csv, json, sys
demo, source, streamed = sys.argv[1], sys.argv[2], int(sys.argv[3])
real = list(csv.DictReader(open(source, newline='')))
if len(real) < streamed + 100: sys.exit(f"{source}: {len(real)} rows; --wire-csv needs at least {streamed + 100} for --count {2 * streamed}")
def replace(rows, wires):
    for r, w in zip((r for r in rows if r['domain'] == 'wire'), wires):
        r.update(text=w['text'], sc_iter1=w['sc_iter1'], sc_iter2=w['sc_iter2'], sc_iter3=w['sc_iter3'], label=w['label_experts'], kind='real')
def write(name, rows):
    w = csv.DictWriter(open(f"{demo}/{name}", 'w', newline=''), fieldnames=rows[0].keys()); w.writeheader(); w.writerows(rows)
answers = list(csv.DictReader(open(f"{demo}/answers.csv", newline='')))
replace(answers, real[:streamed]); write('answers.csv', answers)
text = {a['id']: a['text'] for a in answers}
lines = [json.loads(l) for l in open(f"{demo}/news.jsonl") if l.strip()]
with open(f"{demo}/news.jsonl", 'w') as f:
    for m in lines:
        if m.get('id') in text: m['text'] = text[m['id']]
        f.write(json.dumps(m, ensure_ascii=False) + '\n')
heldout = list(csv.DictReader(open(f"{demo}/heldout.csv", newline='')))
wire = [r for r in heldout if r['domain'] == 'wire'][:len(real) - streamed]
replace(wire, real[streamed:])
write('heldout.csv', wire + [r for r in heldout if r['domain'] == 'social'])
PY
fi
python3 - "$demo" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1] + '/heldout.csv', newline='')))
for domain in ('wire', 'social'):
    w = csv.DictWriter(open(f"{sys.argv[1]}/heldout-{domain}.csv", 'w', newline=''), fieldnames=['text', 'label', 'kind'], extrasaction='ignore')
    w.writeheader(); w.writerows(r for r in rows if r['domain'] == domain)
PY
# A few malformed messages ride along: they must land in rejected_messages, not stop the stream.
printf '%s\n' '{"text": 42}' '{"id": "x", "broken json' '   ' '{"id":"no-text"}' >> "$demo/news.jsonl"
# The truth, for the summary only (the loop never reads it).
psql -q "$db" -c "CREATE TABLE demo_truth (id text PRIMARY KEY, text text, v1 text, v2 text, v3 text, label text, company text, domain text, kind text)" \
  -c "\\copy demo_truth FROM '$demo/answers.csv' WITH (FORMAT csv, HEADER true)" >/dev/null
total=$(wc -l < "$demo/news.jsonl")
wave1=$((count / 3)); shift_at=$((count / 2)); wave3=$((count * 3 / 4))
sed -n "1,${wave1}p" "$demo/news.jsonl" > "$demo/wave1.jsonl"
sed -n "$((wave1 + 1)),${shift_at}p" "$demo/news.jsonl" > "$demo/wave2.jsonl"
sed -n "$((shift_at + 1)),${wave3}p" "$demo/news.jsonl" > "$demo/wave3.jsonl"
sed -n "$((wave3 + 1)),\$p" "$demo/news.jsonl" > "$demo/wave4.jsonl"

echo "== dev broker (librdkafka mock cluster) and dev teacher (the demo teacher's answers, 50 ms latency)" >&2
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
max_share = 0.3                   # ...30 % of traffic at most
exploration_rate = 0.05           # random items: the live accuracy estimate
[trainer]
mode = "daemon"
min_labels = 300
min_new_labels = 250
check_seconds = 2
threads = 2
gold_sets = ["$demo/heldout-wire.csv"]   # the old kind of news: a model that forgets it is refused
negative_recall_tolerance = 0.05  # the real held-out set (--wire-csv) has 43 negatives: one is 2.3 points
TOML
q() { psql -tA "$db" -c "$1" 2>/dev/null || echo 0; }
wait_for() {   # wait_for SQL TARGET WHAT [SECONDS: then return 1 instead of failing]
  for _ in $(seq $((2 * ${4:-300}))); do [ "$(q "$1")" -ge "$2" ] && return 0; kill -0 "$daemon" 2>/dev/null || { tail -20 "$demo/newsd.log" >&2; exit 1; }; sleep 0.5; done
  [ -n "${4:-}" ] && return 1
  echo "timed out waiting for $3" >&2; tail -20 "$demo/newsd.log" >&2; exit 1
}
echo "== newsd run, starting with no trained model (log: $demo/newsd.log)" >&2
start=$(date +%s.%N)
NEWSD_STATS_FILE="$demo/stats.json" "$newsd" run --config "$demo/newsd.toml" --stop-after "$total" 2> "$demo/newsd.log" &
daemon=$!
echo "== wave 1: $wave1 wire messages; cold start -> teacher -> v1" >&2
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave1.jsonl" 2>/dev/null
wait_for "SELECT count(*) FROM models WHERE activated_at IS NOT NULL" 1 "v1"
wait_for "SELECT count(*) FROM news_items n WHERE EXISTS (SELECT 1 FROM predictions p JOIN models m ON m.version = p.model_version WHERE p.item_id = n.id)" "$wave1" "the cold-start backfill"
echo "   v1 active; the $wave1 items that came before it are classified by it" >&2
echo "== wave 2: $((shift_at - wave1)) more wire messages, served by v1" >&2
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave2.jsonl" 2>/dev/null
wait_for "SELECT count(*) FROM news_items" "$shift_at" "wave 2"
echo "== wave 3: the news changes kind: $((wave3 - shift_at)) social posts; uncertain ones -> teacher -> v2" >&2
"$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave3.jsonl" 2>/dev/null
# Adapted: a model whose training started after the first teacher label of a social post.
adapted="SELECT seq FROM models WHERE activated_at IS NOT NULL AND to_timestamp((metrics->>'labels_until')::float8)
  >= (SELECT min(l.labelled_at) FROM teacher_labels l JOIN (SELECT DISTINCT text, label, domain FROM demo_truth) t ON t.text = l.text WHERE t.domain = 'social') ORDER BY seq LIMIT 1"
# The gate may refuse the first candidate (it must not forget the old kind of news); then the
# next one needs more labels, which the rest of the stream brings.
if wait_for "SELECT count(*) FROM ($adapted) a" 1 "a model trained on labels of the new kind of news" 90; then
  sleep 3
  echo "== wave 4: the rest, served by the adapted model" >&2
  "$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave4.jsonl" 2>/dev/null
else
  # The daemon stops once the stream is consumed: the summary then shows what the loop reached.
  echo "   no adapted model promoted yet (see the gate's reasons in models list); the rest of the stream follows" >&2
  "$newsd" produce --brokers "$brokers" --topic news --file "$demo/wave4.jsonl" 2>/dev/null
fi
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
echo
echo "== what the loop learned (scored against the demo's truth: never trained on; the held-out wire set is also the gate's regression set)"
psql -q -A -F, "$db" -c "SELECT seq, version FROM models WHERE activated_at IS NOT NULL ORDER BY seq" -t > "$demo/activated.csv"
: > "$demo/heldout-evals.jsonl"
while IFS=, read -r seq version; do
  for domain in wire social; do
    printf '{"seq": %s, "domain": "%s", "eval": %s}\n' "$seq" "$domain" \
      "$("$newsd" eval --model "$demo/models/$version" --data "$demo/heldout-$domain.csv" --label-column label --precision int8 --json)" >> "$demo/heldout-evals.jsonl"
  done
done < "$demo/activated.csv"
psql -X -q --csv "$db" -o "$demo/live.csv" -c "SELECT coalesce('v' || m.seq, 'untrained base') AS model, t.domain, count(*) AS items,
    sum((p.label = t.label)::int) AS correct
  FROM predictions p JOIN news_items n ON n.id = p.item_id JOIN demo_truth t ON t.id = n.external_id LEFT JOIN models m ON m.version = p.model_version
  WHERE NOT p.rescored GROUP BY 1, 2 ORDER BY min(p.predicted_at)"
psql -X -q --csv "$db" -o "$demo/shift.csv" -c "SELECT
    extract(epoch FROM (SELECT min(n.received_at) FROM news_items n JOIN demo_truth t ON t.id = n.external_id WHERE t.domain = 'social')) AS shift_at,
    (SELECT seq FROM ($adapted) a) AS adapted_seq,
    extract(epoch FROM (SELECT activated_at FROM models WHERE seq = (SELECT seq FROM ($adapted) a))) AS adapted_at,
    (SELECT count(*) FROM teacher_labels l JOIN (SELECT DISTINCT text, label, domain FROM demo_truth) t ON t.text = l.text WHERE t.domain = 'social'
       AND l.labelled_at <= (SELECT to_timestamp((metrics->>'labels_until')::float8) FROM models
                            WHERE seq = (SELECT seq FROM ($adapted) a))) AS social_labels_before,
    (SELECT round((count(*) / greatest(extract(epoch FROM max(n.received_at) - min(n.received_at)), 1))::numeric, 1) FROM news_items n
       JOIN demo_truth t ON t.id = n.external_id WHERE t.domain = 'social') AS social_items_per_second,
    (SELECT count(*) FROM teacher_labels WHERE status = 'labelled') AS labels,
    (SELECT count(*) FROM teacher_labels l JOIN (SELECT DISTINCT text, label, domain FROM demo_truth) t ON t.text = l.text WHERE l.status = 'labelled' AND l.label <> t.label) AS wrong_labels"
python3 - "$demo" <<'PY'
import csv, json, sys
demo = sys.argv[1]
held = [json.loads(l) for l in open(f"{demo}/heldout-evals.jsonl")]
truth = list(csv.DictReader(open(f"{demo}/heldout.csv", newline='')))
def teacher(domain):
    rows = [r for r in truth if r['domain'] == domain]
    def major(r):
        v = [r['sc_iter1'], r['sc_iter2'], r['sc_iter3']]
        return max(set(v), key=v.count)
    return sum(major(r) == r['label'] for r in rows) / len(rows), len(rows)
print("held-out sentences (never streamed), accuracy / macro-F1:")
print(f"  {'model':<16}{'wire news':>20}{'social posts':>20}")
for seq in sorted({h['seq'] for h in held}):
    cells = {h['domain']: h['eval'] for h in held if h['seq'] == seq}
    print(f"  {'v' + str(seq):<16}" + "".join(f"{cells[d]['accuracy']:.3f} / {cells[d]['macro_f1']:.3f}".rjust(20) for d in ('wire', 'social')))
(tw, nw), (ts, ns) = teacher('wire'), teacher('social')
print(f"  {'the teacher':<16}{f'{tw:.3f}':>20}{f'{ts:.3f}':>20}   (its majority vote; n = {nw} wire, {ns} social)")
print("live on the stream (at ingest), accuracy by the model that classified the item:")
for r in csv.DictReader(open(f"{demo}/live.csv", newline='')):
    print(f"  {r['model']:<16}{r['domain']:<8}{int(r['correct']) / int(r['items']):>8.3f}  ({r['items']} items)")
sh = next(csv.DictReader(open(f"{demo}/shift.csv", newline='')))
if sh['adapted_at']:
    print(f"shift to recovery: {float(sh['adapted_at']) - float(sh['shift_at']):.0f} s from the first social post to v{sh['adapted_seq']} serving, "
          f"trained with {sh['social_labels_before']} teacher labels of social posts (the stream ran at demo speed: "
          f"{sh['social_items_per_second']} social posts/s)")
print(f"teacher labels used: {sh['labels']}; the teacher was wrong on {sh['wrong_labels']} of them "
      f"({100 * int(sh['wrong_labels']) / max(1, int(sh['labels'])):.1f} %: it is asked about the hard items)")
PY
echo "(logs: $demo/newsd.log; database: $db)"
