#!/usr/bin/env bash
# Side-by-side student throughput: newsd's Swift encoder and the ONNX Runtime peer
# (../shared/bench/ort-peer: fp32, fused and int8 variants) on the same sentences, the same thread
# count and batch size, in rounds that alternate the engines: newsd fp32 and int8 on every kernel
# path this CPU runs. Prints
# each one's sentences/s and its ratio to ORT's best variant, and the CPU features. With a trained
# student (--student DIR, an artifact that carries early-exit classifiers), newsd's rows come from
# it, each precision also with early exit ("+exit"), while the peer runs the base checkpoint (the
# same encoder; ORT has no early exit).
# --hide-avx512 runs both engines as on an AVX2-only host (AMD Zen 3 class): scripts/cpuid_mask.c,
# preloaded into both, makes CPUID report no AVX-512, VNNI or AMX (Linux CPUID faulting; the host
# needs the cpuid_fault flag), so each engine's own dispatch picks its AVX2 kernels.
# usage: scripts/bench-model.sh [--data CSV] [--threads N] [--batch B] [--model DIR] [--student DIR] [--repeat R] [--precisions fp32,int8] [--hide-avx512] [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/fpb-mixtral-train.csv; threads=2; batch=32; repeat=2
model=.models/all-MiniLM-L6-v2; precisions=fp32,int8; student=; hide=0; rounds=3
while [ $# -gt 0 ]; do case $1 in
  --data) data=$2; shift 2;; --threads) threads=$2; shift 2;; --batch) batch=$2; shift 2;;
  --model) model=$2; shift 2;; --student) student=$2; shift 2;; --repeat) repeat=$2; shift 2;; --precisions) precisions=$2; shift 2;; --hide-avx512) hide=1; shift;; --rounds) rounds=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac; done
[ "$rounds" -ge 1 ] 2>/dev/null || { echo "--rounds must be at least 1, not $rounds" >&2; exit 2; }
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
# Rounds, each newsd then the peer (the order alternating from round to round): this host's speed
# drifts by a quarter within minutes, so each ratio is taken within its round, against the peer's
# best variant of that round, and the table gives the median of the rounds' ratios.
have_peer=1
[ -x "$peer" ] || { echo "no ONNX Runtime peer at $peer: printing newsd alone" >&2; have_peer=0; }
run_newsd() { "${run[@]}" ./.build/release/newsd bench model --model "$student" --data "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --precisions "$precisions" --json > "$out/newsd$1.json"; }
run_peer() {
  if [ "$have_peer" = 1 ]; then
    "${run[@]}" "$peer" "$model" "$data" --threads "$threads" --batch "$batch" --repeat "$repeat" --json > "$out/ort$1.json" 2> "$out/ort.log" || { cat "$out/ort.log" >&2; echo "ort-peer failed" >&2; : > "$out/ort$1.json"; }
  else : > "$out/ort$1.json"; fi
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run_newsd "$r"; run_peer "$r"; else run_peer "$r"; run_newsd "$r"; fi
done
python3 - "$out" "$hide" "$rounds" <<'PY'
import json, sys, os, statistics
d, rounds = sys.argv[1], int(sys.argv[3])
def lines(name):
    return [json.loads(l) for l in open(os.path.join(d, name)) if l.strip()]
def variant(o): return 'int8' if '.int8.' in o['model'] else 'fused' if '.fused.' in o['model'] else 'fp32'
newsd = [lines(f'newsd{r}.json') for r in range(1, rounds + 1)]
ort = [lines(f'ort{r}.json') for r in range(1, rounds + 1)]
best = [max((o['sentences_per_second'] for o in rnd), default=None) for rnd in ort]
def ratios(rates): return [x / b for x, b in zip(rates, best) if b]
def ratio_cell(rs):
    return f"{statistics.median(rs):>12.2f}x" if rs else f"{'-':>13}"
rows = []
for i, a in enumerate(newsd[0]):
    rates = [rnd[i]['sentences_per_second'] for rnd in newsd]
    rs = ratios(rates)
    rows.append((f"newsd {a['precision']}", statistics.mean(rates), ratio_cell(rs),
                 "rounds " + " / ".join(f"{x:.1f}" for x in rates) + (" (" + " ".join(f"{x:.2f}x" for x in rs) + ")" if rs else "") + "; "
                 f"serving weights {a['serving_weights_mb']:.1f} MB ({100 * a['serving_share_of_fp32']:.1f}% of fp32's); same label as fp32 {100 * a['agreement_with_fp32']:.2f}%; "
                 f"{a['mean_layers']:.2f} layers per sentence; batch 1 p50 {a['p50_ms']:.2f} ms p99 {a['p99_ms']:.2f} ms"))
complete = [rnd for rnd in ort if rnd]   # a round whose peer failed has no rows
for i, o in enumerate(complete[0] if complete else []):
    rates = [rnd[i]['sentences_per_second'] if len(rnd) > i else None for rnd in ort]
    rs = [x / b for x, b in zip(rates, best) if x is not None and b]
    rows.append((f"{o['engine']} {variant(o)}", statistics.mean(x for x in rates if x is not None), ratio_cell(rs),
                 "rounds " + " / ".join(f"{x:.1f}" if x is not None else "-" for x in rates)))
n = newsd[0][0]
print(f"CPU features: {n['cpu_features']}" + (" (AVX-512, VNNI and AMX hidden from both engines by CPUID faulting: as on an AVX2-only host)" if sys.argv[2] == '1' else ""))
print(f"threads={n['threads']} batch={n['batch']} sentences={n['n']} mean tokens={n['mean_tokens']} rounds={rounds}")
print(f"{'engine':<34}{'sentences/s':>12}{'vs ORT best':>13}  notes (sentences/s per round, and the ratio to the peer's best variant of that round)")
for name, rate, ratio, notes in rows:
    print(f"{name:<34}{rate:>12.1f}{ratio}  {notes}")
print(f"sentences/s: mean of the rounds; vs ORT best: median of the rounds' ratios")
print(f"peak RSS {max(x['peak_rss_mb'] for rnd in newsd for x in rnd)} MB (all precisions in one process)")
PY
rm -rf "$out"
