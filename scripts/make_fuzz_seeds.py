#!/usr/bin/env python3
"""Writes the small seed corpora of the fuzz targets (Fuzz/Corpus/<target>/seed-N)."""
import os
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fuzz", "Corpus")
seeds = {
    "FuzzMessageParser": [
        b'{"id": "1", "text": "Profit rose 5 %", "published_at": "2026-12-01T02:40:00Z", "source": "wire", "companies": ["nokia"]}',
        b'plain text sentence about Nokia', b'{"text": "a\\u0000b"}', b'{"id": 7, "text": "x"}', b'{"text": "\\ud83d\\ude00"}',
        b'{"text": "ok", "companies": []}', b'{', b'  ', b'\xff\xfe', b'{"text": "\xe2\x80\x8b"}',
    ],
    "FuzzCompanyLinker": [b"Nokia Oyj said ON rose", b"Societe Generale and SocGen", "ソシエテ GLE".encode(), b"A A A AA", b"onsemi NOK1V"],
    "FuzzConfiguration": [
        b'[kafka]\nbrokers = "a:1"\ntopics = ["news"]\n[kafka.properties]\n"security.protocol" = "SSL"\n',
        b'[teacher]\nselection = "entropy"\nsamples = 5\n', b"[trainer]\ncheck_seconds = 1e11\n", b"[kafka]\n[kafka]\n",
        b"[ingest]\nmax_text_bytes = 2.5\n", b"x = 1\n", b'[log]\nlevel = "debug"\n', b"[metrics]\nlisten = ''\n",
        # Regression: toml++ aborted on a table header without a key (found by scripts/fuzz.sh).
        b"[= ''&etrimetrics]\nlisten = ''&etrics]\nlist",
        b"[kafka]\n[\n \x00\x00\x00\x00X]\n = 0\nX]\n", b"[kafka]\n[\n  X]\n", b"\xef\xbb\xbf[[\naka]\n\n", b'\r\n[\n["\r\n["\n["', b"\t[[\rk\n",
    ],
    "FuzzAnswerParser": [
        b'{"reason": "sales rose", "label": "positive"}', b'```json\n{"label": "Negative", "reason": "loss"}\n```',
        b"The sentiment is neutral.", b'{"label": "neutral leaning towards positive"}', b'{label: positive,}', b"",
    ],
}
for target, items in seeds.items():
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for i, data in enumerate(items):
        with open(os.path.join(d, f"seed-{i}"), "wb") as f:
            f.write(data)
