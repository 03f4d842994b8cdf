#!/usr/bin/env bash
# Side-by-side student throughput: newsd's Swift encoder and the ONNX Runtime peer
# (../shared/bench/ort-peer: fp32, fused and int8 variants) on the same sentences, the same thread
# count and batch size, in one run: newsd fp32 and int8 on every kernel path this CPU runs. Prints
# each one's sentences/s and its ratio to ORT's best variant, and the CPU features. With a trained
# student (--student DIR, an artifact that carries early-exit classifiers), newsd's rows come from
# it, each precision also with early exit ("+exit"), while the peer runs the base checkpoint (the
# same encoder; ORT has no early exit).
# --hide-avx512 runs both engines as on an AVX2-only host (AMD Zen 3 class): scripts/cpuid_mask.c,
# preloaded into both, makes CPUID report no AVX-512, VNNI or AMX (Linux CPUID faulting; the host
# needs the cpuid_fault flag), so each engine's own dispatch picks its AVX2 kernels.
# usage: scripts/bench-model.sh [--data CSV] [--threads N] [--batch B] [--model DIR] [--student DIR] [--repeat R] [--precisions fp32,int8] [--hide-avx512]
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/fpb-mixtral-train.csv; threads=2; batch=32; repeat=3
model=.models/all-MiniLM-L6-v2; precisions=fp32,int8; student=; hide=0
while [ $# -gt 0 ]; do case $1 in
  --data) data=$2; shift 2;; --threads) threads=$2; shift 2;; --batch) batch=$2; shift 2;;
  --model) model=$2; shift 2;; --student) student=$2; shift 2;; --repeat) repeat=$2; shift 2;; --precisions) precisions=$2; shift 2;; --hide-avx512) hide=1; shift;; *) echo "unknown option $1" >&2; exit 2;; esac; done
./scripts/setup.sh
swift build -c release --product newsd >&2
peer=../shared/bench/ort-peer
student=${student:-$model}
out=$(mktemp -d)
run=(env)
if [ "$hide" = 1 ]; then
  grep -qw cpuid_fault /proc/cpuinfo || { echo "--hide-avx512 needs CPUID faulting (the cpuid_fault flag), which this host lacks" >&2; exit 2; }
  cc -O2 -shared -fPIC -o "$out/cpuid_mask.so" scripts/cpuid_mask.c
  # OpenBLAS reads CPUID before the mask loads: give it the core newsd picks on an AVX2 host.
  # The Swift runtime's crash handler would replace the mask's SIGSEGV handler.
  run=(env LD_PRELOAD="$out/cpuid_mask.so" OPENBLAS_CORETYPE=Haswell SWIFT_BACKTRACE=enable=no)
fi
# newsd first and the peer after, then newsd again: the machine's drift shows as a spread.
"${run[@]}" ./.build/release/newsd bench model --model "$student" --data "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --precisions "$precisions" --json > "$out/newsd1.json"
if [ -x "$peer" ]; then
  "${run[@]}" "$peer" "$model" "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --json > "$out/ort.json" 2> "$out/ort.log" || { cat "$out/ort.log" >&2; echo "ort-peer failed" >&2; }
else
  echo "no ONNX Runtime peer at $peer: printing newsd alone" >&2; : > "$out/ort.json"
fi
"${run[@]}" ./.build/release/newsd bench model --model "$student" --data "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --precisions "$precisions" --json > "$out/newsd2.json"
python3 - "$out" "$hide" <<'PY'
import json, sys, os
d = sys.argv[1]
def lines(name):
    return [json.loads(l) for l in open(os.path.join(d, name)) if l.strip()]
first, second = lines('newsd1.json'), lines('newsd2.json')
rows = []
for a, b in zip(first, second):
    rate = (a['sentences_per_second'] + b['sentences_per_second']) / 2
    rows.append((f"newsd {a['precision']}", rate, f"runs {a['sentences_per_second']:.1f} / {b['sentences_per_second']:.1f}; "
                 f"serving weights {a['serving_weights_mb']:.1f} MB ({100 * a['serving_share_of_fp32']:.1f}% of fp32's); same label as fp32 {100 * a['agreement_with_fp32']:.2f}%; "
                 f"{a['mean_layers']:.2f} layers per sentence; batch 1 p50 {a['p50_ms']:.2f} ms p99 {a['p99_ms']:.2f} ms"))
ort = []
for o in lines('ort.json'):
    variant = 'int8' if '.int8.' in o['model'] else 'fused' if '.fused.' in o['model'] else 'fp32'
    ort.append((f"{o['engine']} {variant}", o['sentences_per_second'], f"min {o['min']:.1f} max {o['max']:.1f}"))
best = max((r[1] for r in ort), default=None)
n = first[0]
print(f"CPU features: {n['cpu_features']}" + (" (AVX-512, VNNI and AMX hidden from both engines by CPUID faulting: as on an AVX2-only host)" if sys.argv[2] == '1' else ""))
print(f"threads={n['threads']} batch={n['batch']} sentences={n['n']} mean tokens={n['mean_tokens']}")
print(f"{'engine':<34}{'sentences/s':>12}{'vs ORT best':>13}  notes")
for name, rate, notes in rows + ort:
    ratio = f"{rate / best:>12.2f}x" if best else f"{'-':>13}"
    print(f"{name:<34}{rate:>12.1f}{ratio}  {notes}")
print(f"peak RSS {max(x['peak_rss_mb'] for x in first + second)} MB (all precisions in one process)")
PY
rm -rf "$out"
