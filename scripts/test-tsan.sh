#!/usr/bin/env bash
# The suite under ThreadSanitizer (data races), with the same throwaway Postgres as scripts/test.sh.
# Run scripts/test.sh once first (it installs what is needed). Uses its own build folder
# (.build-tsan) so the normal build stays as it is. Skipped here (they run in scripts/test.sh):
# - NewsdModelTests: under TSan their BLAS-heavy training and gradient checks take many minutes;
# - every test that starts a librdkafka client (mock cluster, consumer, `newsd run`): librdkafka
#   starts its threads with C11 thrd_create, which this TSan runtime does not intercept, so the
#   first allocation on such a thread crashes inside TSan's allocator (SIGSEGV in calloc on the
#   "rdk:mock" thread) before any race could be seen.
set -euo pipefail
cd "$(dirname "$0")/.."
export NEWSD_BASE_MODEL_DIR="$PWD/.models/all-MiniLM-L6-v2"
was_running=no; ./scripts/pg.sh status >/dev/null 2>&1 && was_running=yes
export NEWSD_TEST_POSTGRES_URL="$(./scripts/pg.sh start)"
[ $was_running = no ] && trap './scripts/pg.sh stop' EXIT
swift build --build-tests --sanitize=thread --scratch-path .build-tsan
export NEWSD_BINARY="$(swift build --sanitize=thread --scratch-path .build-tsan --show-bin-path)/newsd"
# Races in libraries we do not own (OpenBLAS's threads, librdkafka) are not ours to fix here.
mkdir -p .build-tsan/reports && rm -f .build-tsan/reports/*
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 log_path=$PWD/.build-tsan/reports/tsan suppressions=$PWD/scripts/tsan.supp ${TSAN_OPTIONS:-}"
swift test --skip-build --sanitize=thread --scratch-path .build-tsan \
  --skip 'NewsdModelTests|IngestTests|ingestQueuesColdStart|twoHostsSwapRollbackAndRefuse|loopPromotesWhileStreaming|hostileFieldsThroughTheLivePipeline|AdversarialCorpusTests|TopicRestartTests|FaultMatrixTests|ShutdownTests' "$@" || status=$?
# Every process (the test runner and the daemons it starts) writes its reports to .build-tsan/reports.
if ls .build-tsan/reports/tsan.* >/dev/null 2>&1; then
  echo "ThreadSanitizer reports:" >&2; grep -h "^WARNING: ThreadSanitizer\|^SUMMARY" .build-tsan/reports/tsan.* | sort | uniq -c >&2
  exit 1
fi
echo "ThreadSanitizer: no reports"
exit ${status:-0}
