#!/usr/bin/env bash
# The analysts' benchmark: a year of synthetic history (default 10,000,000 predictions over 200
# companies, 10% of items naming a second company, 5% rescored by a second model version, a
# model rolled back half-way), the rollups built from it, then every example query of
# docs/analysts.md timed (median of 5 runs) on this machine.
# usage: scripts/bench-analysts.sh [--rows N] [--companies N] [--days N] [--keep]
# Uses its own throwaway Postgres cluster on port 54339 (scripts/pg.sh), so tests are not disturbed.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=10000000 companies=200 days=365 keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --rows) rows=$2; shift 2;; --companies) companies=$2; shift 2;; --days) days=$2; shift 2;; --keep) keep=1; shift;;
    *) echo "usage: $0 [--rows N] [--companies N] [--days N] [--keep]" >&2; exit 2;;
  esac
done
./scripts/setup.sh >/dev/null
# The work happens in Postgres: a debug build of the CLI is enough (and shares the tests' build).
swift build --product newsd >/dev/null
bin=$(swift build --show-bin-path)/newsd
admin=$(NEWSD_PG_PORT=54339 ./scripts/pg.sh start)
psql=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/psql
db=newsd_bench
export NEWSD_POSTGRES_URL=${admin%/*}/$db
if [ "$keep" = 1 ] && "$psql" "$NEWSD_POSTGRES_URL" -Atc "SELECT 1 FROM sentiment_daily LIMIT 1" >/dev/null 2>&1; then
  echo "bench-analysts: reusing the database $db"
else
  "$psql" "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "$bin" migrate --postgres "$NEWSD_POSTGRES_URL" >/dev/null
  echo "bench-analysts: generating $rows predictions over $companies companies and $days days ..."
  start=$(date +%s)
  "$psql" "$NEWSD_POSTGRES_URL" -v ON_ERROR_STOP=1 -q <<SQL
-- Bulk load with triggers off (replica role); the rollups are then built once with --all.
SET session_replication_role = replica;
SET synchronous_commit = off;
SELECT setseed(0.42) \\g /dev/null
-- Company 1 is 'ACME', as in the documented queries.
CREATE FUNCTION pg_temp.company(i bigint) RETURNS text IMMUTABLE LANGUAGE sql AS \$\$ SELECT CASE WHEN i = 1 THEN 'ACME' ELSE 'C' || i END \$\$;
INSERT INTO companies (id, name) SELECT pg_temp.company(i), 'Company ' || i FROM generate_series(1, $companies) i;
INSERT INTO models (version, seq, status, label_counts, training, metrics, checksum, activated_at, reasons) VALUES
  ('bench-v1', 1, 'retired', '{}', '{}', '{}', 'x', now() - interval '$days days', NULL),
  ('bench-v2', 2, 'retired', '{}', '{}', '{}', 'x', now() - interval '120 days', 'rolled back'),
  ('bench-v3', 3, 'active', '{}', '{}', '{}', 'x', now() - interval '60 days', NULL);
INSERT INTO news_items (topic, partition, kafka_offset, text, published_at, received_at)
SELECT 'bench', g % 12, g, 'Company ' || (g % $companies + 1) || ' reported results, item ' || g || ', with an outlook the market read closely',
       ts, ts
FROM (SELECT g, now() - interval '$days days' + (g::float8 / $rows) * interval '$days days' AS ts FROM generate_series(1, $rows) g) s;
-- Each company has its own negative share, drifting over the year.
INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy, predicted_at)
SELECT id, v, label, jsonb_build_object('negative', pn, 'neutral', pu, 'positive', pp), greatest(pn, pu, pp) - (pn + pu + pp - greatest(pn, pu, pp) - least(pn, pu, pp)), 0.7, received_at
FROM (
  SELECT id, received_at, v, label,
         CASE label WHEN 'negative' THEN top ELSE rest END AS pn,
         CASE label WHEN 'neutral' THEN top ELSE rest END AS pu,
         CASE label WHEN 'positive' THEN top ELSE 1 - top - rest END AS pp
  FROM (
    SELECT n.id, n.received_at,
           CASE WHEN n.received_at < now() - interval '120 days' THEN 'bench-v1' WHEN n.received_at < now() - interval '60 days' THEN 'bench-v2' ELSE 'bench-v3' END AS v,
           CASE WHEN r < share THEN 'negative' WHEN r < share + 0.45 THEN 'neutral' ELSE 'positive' END AS label,
           0.5 + 0.45 * random() AS top, 0.05 + 0.1 * random() AS rest
    FROM (SELECT id, received_at, random() AS r,
                 0.12 + 0.2 * ((kafka_offset % $companies) % 7) / 6.0 + 0.05 * sin(extract(epoch FROM received_at) / 259200.0 + kafka_offset % $companies) AS share
          FROM news_items) n
  ) a
) b;
-- Mentions: every item names its company; one in ten names a second one.
INSERT INTO mentions (item_id, company_id, matched_by, published_at)
SELECT id, pg_temp.company(kafka_offset % $companies + 1), 'name', published_at FROM news_items;
INSERT INTO mentions (item_id, company_id, matched_by, published_at)
SELECT id, pg_temp.company((kafka_offset * 7 + 3) % $companies + 1), 'name', published_at FROM news_items
WHERE kafka_offset % 10 = 0 AND (kafka_offset * 7 + 3) % $companies <> kafka_offset % $companies;
-- The rolled-back v2's predictions are withdrawn; 5% of items were rescored by v3.
UPDATE predictions SET withdrawn = true WHERE model_version = 'bench-v2';
INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy, predicted_at, rescored)
SELECT item_id, 'bench-v3', CASE WHEN random() < 0.9 THEN label ELSE 'neutral' END, probabilities, margin, entropy, now(), true
FROM predictions WHERE model_version <> 'bench-v3' AND item_id % 20 = 0;
-- Two alerts per company over the year, five drivers each.
INSERT INTO alerts (company_id, rule, severity, state, verification, window_start, window_end, observed_share, baseline_share,
                    window_weight, window_negative, window_items, p_value, drivers_checked, drivers_confirmed, parameters, raised_by, raised_at, resolved_at)
SELECT c.id, 'shift', 'warning', 'resolved', 'confirmed', t - interval '1 hour', t, 0.6, 0.2, 30, 18, 30, 1e-6, 5, 4, '{}', 'bench', t, t + interval '3 hours'
FROM companies c CROSS JOIN generate_series(1, 2) k CROSS JOIN LATERAL (SELECT now() - (k * 20 || ' days')::interval + (random() * interval '15 days') AS t) x;
INSERT INTO alert_drivers (alert_id, rank, item_id, text, published_at, student_label, negative_probability, model_version, teacher_label, teacher_status)
SELECT a.id, r, r, 'a driver sentence of alert ' || a.id, a.raised_at, 'negative', 0.9, 'bench-v1', 'negative', 'labelled'
FROM alerts a CROSS JOIN generate_series(1, 5) r;
SET session_replication_role = origin;
ANALYZE;
SQL
  echo "bench-analysts: generated in $(( $(date +%s) - start )) s; building the rollups ..."
  "$bin" analysts rollup --all
  "$psql" "$NEWSD_POSTGRES_URL" -qc "VACUUM ANALYZE"
fi
"$psql" "$NEWSD_POSTGRES_URL" -Atc "SELECT 'predictions: ' || count(*) FROM predictions" \
  -c "SELECT 'mentions: ' || count(*) FROM mentions" -c "SELECT 'companies: ' || count(*) FROM companies" \
  -c "SELECT 'hourly rollup rows: ' || count(*) FROM sentiment_hourly" -c "SELECT 'database size: ' || pg_size_pretty(pg_database_size(current_database()))"
nproc | sed 's/^/cores: /'; grep -m1 'model name' /proc/cpuinfo
"$bin" analysts queries --docs docs/analysts.md --runs 5
