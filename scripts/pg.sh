#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on loopback for development and tests.
# usage: scripts/pg.sh start|stop|restart|url|status|drop-test-databases   (NEWSD_PG_PORT, default 54329)
# Data lives in /tmp/newsd-pg-$PORT (owned by the postgres user; trust auth on loopback only).
set -euo pipefail
port=${NEWSD_PG_PORT:-54329}
dir=/tmp/newsd-pg-$port
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# The server must not inherit our caller's descriptors (a pipe held open by it would keep a CI
# log reader or a `| grep` waiting forever): close everything above stderr.
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done; true
case ${1:-url} in
  start)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
      as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
max_connections = 200
shared_buffers = 128MB
CONF
    fi
    if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null 2>&1 </dev/null
    fi
    echo "postgresql://postgres@127.0.0.1:$port/postgres";;
  stop) as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true;;
  restart) as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -l "$dir/log" restart >/dev/null 2>&1 </dev/null;;
  status) as_pg "$bin/pg_ctl" -D "$dir/data" status;;
  url) echo "postgresql://postgres@127.0.0.1:$port/postgres";;
  drop-test-databases)
    # The integration tests make one database each (newsd_test_*); a cluster kept between runs
    # would gather thousands. Drops those nobody is connected to (a running suite's are skipped).
    url="postgresql://postgres@127.0.0.1:$port/postgres"
    for db in $(psql -tA "$url" -c "SELECT datname FROM pg_database d WHERE datname LIKE 'newsd\_test\_%' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"); do
      psql -q "$url" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done;;
  *) echo "usage: $0 start|stop|restart|url|status|drop-test-databases" >&2; exit 2;;
esac
