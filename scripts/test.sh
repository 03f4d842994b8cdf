#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, starts a throwaway
# PostgreSQL on loopback (scripts/pg.sh), builds, and runs `swift test` (unit tests, numerics
# against committed goldens, and integration tests on real Postgres and librdkafka's mock
# cluster). Extra arguments go to `swift test` (e.g. --filter GradientTests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export NEWSD_BASE_MODEL_DIR="$PWD/.models/all-MiniLM-L6-v2"
was_running=no; ./scripts/pg.sh status >/dev/null 2>&1 && was_running=yes
export NEWSD_TEST_POSTGRES_URL="$(./scripts/pg.sh start)"
# The tests' scratch files (configurations, logs, models, sockets: a few hundred folders a run)
# go to one folder per run, through TMPDIR: removed when the run passes, kept and named when it
# fails, for the daemons' logs.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/newsd-test-run.XXXXXX")
finish() {
  local status=$?
  # A cluster this run started is stopped when it ends (CI leaves nothing running).
  if [ $was_running = no ]; then ./scripts/pg.sh stop; fi
  if [ "$status" = 0 ]; then rm -rf "$scratch"; else echo "the tests' scratch files are kept in $scratch" >&2; fi
}
trap finish EXIT
# A cluster kept running between runs keeps no databases of earlier runs.
[ $was_running = yes ] && ./scripts/pg.sh drop-test-databases
swift build --build-tests
export NEWSD_BINARY="$(swift build --show-bin-path)/newsd"
TMPDIR=$scratch swift test --skip-build "$@"
