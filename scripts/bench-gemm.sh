#!/usr/bin/env bash
# int8 GEMM candidates side by side (figures, not a test): newsd's own kernels against oneDNN's
# matmul (Debian's libdnnl-dev 2.6.3, OpenMP build, its own ISA dispatch incl. VNNI and AMX), on
# the student's linear-layer shapes, one thread each. Installs libdnnl-dev if missing.
# usage: scripts/bench-gemm.sh [ROWS]   (default 480: one thread's sub-batch of 16 x 30 tokens)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/include/dnnl.h ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev >/dev/null
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
clang -O3 -march=native -Wno-unused-command-line-argument -I Sources/NewsdInt8/include \
  scripts/bench_gemm.c Sources/NewsdInt8/int8.c -ldnnl -lm -o "$out/bench-gemm"
# One thread each: the encoder gives each thread its own sub-batch, so one GEMM runs per thread.
OMP_NUM_THREADS=1 DNNL_VERBOSE=0 "$out/bench-gemm" "${1:-480}"
