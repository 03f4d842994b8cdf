#!/usr/bin/env bash
# libFuzzer on newsd's parsers of untrusted input (the Fuzz/ package):
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default 600 s each, every target
# Targets: FuzzMessageParser, FuzzCompanyLinker, FuzzConfiguration, FuzzAnswerParser.
# Seeds come from Fuzz/Corpus/<target> (small, committed; regenerate with scripts/make_fuzz_seeds.py);
# what libFuzzer finds goes to .build-fuzz/corpus/<target>, crashes to .build-fuzz/crashes/.
# Exit status 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(FuzzMessageParser FuzzCompanyLinker FuzzConfiguration FuzzAnswerParser)
scratch=$PWD/.build-fuzz
(cd Fuzz && swift build --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >&2)
bin=$(cd Fuzz && swift build --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --show-bin-path)
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/corpus/$t" "$scratch/crashes/$t"
  echo "== $t for $seconds s" >&2
  extra=(); leaks=1
  # TOMLKit (not newsd) leaks a few hundred bytes per parsed document (TOMLTable(string:) and
  # tableGetKeys in its C++ bridge allocate without freeing); newsd parses its configuration once
  # per start, so leak detection is off for this target only. Crashes and hangs still count.
  [ "$t" = FuzzConfiguration ] && { extra=(-detect_leaks=0); leaks=0; }
  if ASAN_OPTIONS="detect_leaks=$leaks" "$bin/$t" "${extra[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$scratch/crashes/$t/" "$scratch/corpus/$t" "Fuzz/Corpus/$t" > "$scratch/$t.log" 2>&1; then
    echo "$t: no crash; $(grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$scratch/$t.log" | tr '\n' ' ')" >&2
  else
    status=1; echo "$t: CRASH, see $scratch/$t.log and $scratch/crashes/$t" >&2; tail -30 "$scratch/$t.log" >&2
  fi
done
exit $status
