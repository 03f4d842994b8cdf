#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, starts a throwaway
# PostgreSQL on loopback (scripts/pg.sh), builds, and runs `swift test` (unit tests, numerics
# against committed goldens, and integration tests on real Postgres and librdkafka's mock
# cluster). Extra arguments go to `swift test` (e.g. --filter GradientTests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export NEWSD_BASE_MODEL_DIR="$PWD/.models/all-MiniLM-L6-v2"
export NEWSD_TEST_POSTGRES_URL="$(./scripts/pg.sh start)"
swift build --build-tests
export NEWSD_BINARY="$(swift build --show-bin-path)/newsd"
# librdkafka logs broker faults that the tests inject on purpose; keep them out of the summary.
swift test --skip-build "$@" 2> >(grep -vE '^%[0-9]+\|' >&2)
