#!/usr/bin/env bash
# Teacher throughput: labelled items per second through the durable queue (Postgres claims,
# k=3 samples, request records, verdicts) and through `newsd label` (no database), against
# dev-teacher replaying the shared recorded answers with a fixed latency per request.
# usage: scripts/bench-teacher.sh [--latency-ms 200] [--concurrency 16] [--items 1811]
set -euo pipefail
cd "$(dirname "$0")/.."
latency=200; concurrency=16; items=1811
while [ $# -gt 0 ]; do case $1 in
  --latency-ms) latency=$2; shift 2;; --concurrency) concurrency=$2; shift 2;; --items) items=$2; shift 2;;
  *) echo "unknown option $1" >&2; exit 2;; esac; done
data=../shared/data/fpb-mixtral-train.csv
[ -f "$data" ] || { echo "needs $data" >&2; exit 1; }
./scripts/setup.sh >&2
swift build -c release --product newsd >&2
newsd=$PWD/.build/release/newsd
work=$PWD/.run/bench-teacher; rm -rf "$work"; mkdir -p "$work"
python3 - "$data" "$items" "$work/answers.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))[: int(sys.argv[2])]
w = csv.DictWriter(open(sys.argv[3], "w", newline=""), fieldnames=rows[0].keys()); w.writeheader(); w.writerows(rows)
PY
admin=$(./scripts/pg.sh start)
psql -q "$admin" -c "DROP DATABASE IF EXISTS newsd_bench_teacher" -c "CREATE DATABASE newsd_bench_teacher" >/dev/null
db=${admin%/postgres}/newsd_bench_teacher
"$newsd" dev-teacher --answers "$work/answers.csv" --port 0 --url-file "$work/url" --latency-ms "$latency" > /dev/null 2> "$work/dev-teacher.log" &
teacher=$!
trap 'kill $teacher 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.1; done
export NEWSD_POSTGRES_URL=$db NEWSD_TEACHER_BASE_URL=$(cat "$work/url") NEWSD_TEACHER_CONCURRENCY=$concurrency \
       NEWSD_TEACHER_REQUESTS_PER_MINUTE=0 NEWSD_TEACHER_DAILY_BUDGET_USD=0 NEWSD_TEACHER_SAMPLES=3 NEWSD_LOG_LEVEL=warning
"$newsd" teacher enqueue --in "$work/answers.csv" >&2
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/worker.rss" "$newsd" teacher work --stop-when-empty 2> "$work/worker.log"
end=$(date +%s.%N)
verdicts=$(psql -tA "$db" -c "SELECT count(*) FROM teacher_labels")
requests=$(psql -tA "$db" -c "SELECT count(*) FROM teacher_requests")
start2=$(date +%s.%N)
"$newsd" label --in "$work/answers.csv" --out "$work/labelled.csv" > "$work/label.out" 2> "$work/label.log"
end2=$(date +%s.%N)
python3 - "$start" "$end" "$verdicts" "$requests" "$start2" "$end2" "$items" "$latency" "$concurrency" "$(cat "$work/worker.rss")" <<'PY'
import sys
s, e, v, r, s2, e2, n, lat, conc, rss = sys.argv[1:]
q = float(e) - float(s); l = float(e2) - float(s2)
print(f"teacher benchmark: {n} texts, k=3, dev-teacher latency {lat} ms, concurrency {conc}")
print(f"  queue worker (Postgres claims + records): {int(v)} verdicts, {int(r)} requests in {q:.1f} s = {int(v)/q:.1f} items/s, worker peak RSS {int(rss)/1024:.0f} MB")
print(f"  newsd label (no database):                {int(n)} rows in {l:.1f} s = {int(n)/l:.1f} items/s")
print(f"  ceiling at this latency and concurrency with n=3 in one request: {int(conc)/(int(lat)/1000):.0f} items/s")
PY
