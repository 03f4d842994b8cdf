#!/usr/bin/env python3
"""Reference outputs for newsd's student engine tests (tokenizer and forward-pass parity).

Writes, into Tests/NewsdModelTests/Fixtures/:
  tokenizer_parity.json  texts and the ids the Hugging Face `tokenizers` library gives them
                         (tokenizer.json of the checkpoint, truncation at 128 as configured there);
  forward_golden.json    for a few sentences: ids, and the mean-pooled encoder output of a plain
                         numpy BERT written here from the paper's equations (float64 arithmetic
                         over the checkpoint's float32 weights), so the Swift encoder is checked
                         against an implementation that shares no code with it.

Reproducible: no randomness; inputs are written below. Needs numpy, safetensors, tokenizers.
usage: scripts/make_goldens.py MODEL_DIR
"""
import json, math, os, sys
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

model_dir = sys.argv[1]
out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'Tests', 'NewsdModelTests', 'Fixtures')

LONG_WORD = 'supercalifragilistic' * 6            # 120 characters: over WordPiece's 100-char limit
LONG_TEXT = ' '.join(['Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period.'] * 12)
TOKENIZER_TEXTS = [
    '',
    '   ',
    'Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 .',
    "The company's net sales fell by 5 % to $ 1,234.56 million, (down from 1,300) ; Q3/2009!",
    'Prices: €100, £75.5, ¥1,000, ₹250, $3.2bn and 12½ % — up 3‰ “quoted” ‘text’ … done?!',
    'Café Müller, naïve façade, Ångström, Øresund, São Paulo, İstanbul, ŞIRKET, Straße, ΣΊΣΥΦΟΣ.',
    'Москва: «Газпром» увеличил прибыль на 20%. 日本の株価は上昇した。삼성전자 실적 발표. 腾讯控股',
    'العربية: ارتفعت الأرباح ٣٪ — हिन्दी: लाभ बढ़ा — ภาษาไทย กำไรเพิ่มขึ้น',
    'Emoji 📈📉 🚀 shares 👍🏽 family 👨‍👩‍👧 flag 🇫🇮 ✔️ done',
    'tab\there\nnew line\r\ncarriage\x00null\x07bell\x1bescape\u200bzero\u200dwidth\ufeffbom\ufffdreplacement',
    'soft\u00adhyphen non\u00a0breaking\u2003em-space\u3000ideographic\u2028line-sep',
    'A ' + LONG_WORD + ' word, and ' + LONG_WORD[:99] + 'X at the 100-character limit.',
    'unaffable unbelievable tokenization WordPiece ##hash [CLS] [SEP] [UNK] <html> a@b.com http://x.fi/a?b=c',
    'Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ﬁ ligature, ⅷ roman, x² superscript, ① circled',
    'Nokia Oyj (NOK1V) / Elisa & Fortum, Stora-Enso; UPM_Kymmene — Q4 EBIT +12.5 %/-3 %',
    LONG_TEXT,
]
FORWARD_TEXTS = [
    'Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 .',
    'The company will cut 300 jobs after a sharp fall in orders .',
    'The annual general meeting will be held in Helsinki on 15 March .',
    'Net sales decreased by 5 % to $ 1,234.56 million, Café Müller said.',
    'x',
    LONG_TEXT,
]

tok = Tokenizer.from_file(os.path.join(model_dir, 'tokenizer.json'))
tok.no_padding()
tok.enable_truncation(128)

def ids_of(text):
    return tok.encode(text).ids

w = {k[5:] if k.startswith('bert.') else k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, 'model.safetensors')).items()}
cfg = json.load(open(os.path.join(model_dir, 'config.json')))
H, NH, L, eps = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_hidden_layers'], cfg['layer_norm_eps']
D = H // NH
erf = np.vectorize(math.erf)

def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True); var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b

def linear(x, name):
    return x @ w[name + '.weight'].T + w[name + '.bias']

def encode(ids):
    T = len(ids)
    x = w['embeddings.word_embeddings.weight'][ids] + w['embeddings.position_embeddings.weight'][:T] \
        + w['embeddings.token_type_embeddings.weight'][0]
    x = layer_norm(x, w['embeddings.LayerNorm.weight'], w['embeddings.LayerNorm.bias'])
    for l in range(L):
        p = f'encoder.layer.{l}.'
        q = linear(x, p + 'attention.self.query').reshape(T, NH, D).transpose(1, 0, 2)
        k = linear(x, p + 'attention.self.key').reshape(T, NH, D).transpose(1, 0, 2)
        v = linear(x, p + 'attention.self.value').reshape(T, NH, D).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(D)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(T, H)
        x = layer_norm(x + linear(ctx, p + 'attention.output.dense'),
                       w[p + 'attention.output.LayerNorm.weight'], w[p + 'attention.output.LayerNorm.bias'])
        h = linear(x, p + 'intermediate.dense'); h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = layer_norm(x + linear(h, p + 'output.dense'),
                       w[p + 'output.LayerNorm.weight'], w[p + 'output.LayerNorm.bias'])
    return x.mean(0)     # no padding here, so the mean over real tokens is the plain mean

os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, 'tokenizer_parity.json'), 'w') as f:
    json.dump({'max_length': 128, 'cases': [{'text': t, 'ids': ids_of(t)} for t in TOKENIZER_TEXTS]},
              f, ensure_ascii=True, indent=0)
with open(os.path.join(out_dir, 'forward_golden.json'), 'w') as f:
    json.dump({'model': cfg.get('_name_or_path', ''), 'hidden_size': H,
               'cases': [{'text': t, 'ids': ids_of(t), 'pooled': [round(float(v), 7) for v in encode(ids_of(t))]}
                         for t in FORWARD_TEXTS]}, f, ensure_ascii=True)
print('wrote', out_dir)
