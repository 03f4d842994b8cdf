#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then runs `swift test`.
# Extra arguments go to `swift test` (e.g. --filter GradientTests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export NEWSD_BASE_MODEL_DIR="$PWD/.models/all-MiniLM-L6-v2"
swift build --build-tests
swift test --skip-build "$@"
