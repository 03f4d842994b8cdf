#ifndef NEWSD_INT8_H
#define NEWSD_INT8_H
// The student's int8 inference kernels: per-channel symmetric int8 weights, per-row asymmetric u8
// activations, int32 accumulation, a float epilogue (dequantise + bias, then GELU or + residual).
// Each kernel exists for three paths, chosen at run time from the CPU's feature flags (never from
// a model-number table): AVX-512 VNNI (vpdpbusd), AVX2 (vpmaddubsw + vpmaddwd) and portable C.
// Every path computes exact int32 products of the packed weights and the quantised activations
// (the float parts, epilogue, attention and LayerNorm, differ only in rounding: fused
// multiply-adds). Weights are kept within +-64 (`newsd_int8_weight_max`) on every path, so a model
// packs alike everywhere; measured on the held-out shared sentences, the same accuracy as fp32 and
// 0.3 points less macro-F1 than +-127 weights. Activations are 8-bit (0..255) on the VNNI and
// portable paths and 6-bit (0..63, `newsd_int8_activation_max`) on AVX2: vpmaddubsw adds pairs of
// u8 x s8 products into 16 bits with saturation, and with 6-bit activations the pairs of four
// groups of four inputs still add in 16 bits exactly (4 x 2 x 63 x 64 < 32767) and are widened
// to 32 bits once per four groups: a quarter fewer vector instructions and three eighths fewer
// multiplies than widening every pair, on the ports that bound that path (+15 % on the whole
// encoder against 7-bit activations and two groups: docs/operations.md). The price: larger hidden-state error (at
// most 15 % after any layer against 7 % with 8 bits), yet a student gave fp32's label on 99.83 % of
// the shared sentences on AVX2 against 99.89 % on VNNI (scripts/bench-model.sh and
// scripts/experiment-precision.sh measure each path against fp32).
#include <stddef.h>
#include <stdint.h>

/// Kernel paths, fastest last.
enum newsd_int8_path { NEWSD_PATH_PORTABLE = 0, NEWSD_PATH_AVX2 = 1, NEWSD_PATH_AVX512_VNNI = 2 };

/// CPU feature bits reported by `newsd_cpu_features`.
enum newsd_cpu_feature {
    NEWSD_CPU_AVX2 = 1 << 0, NEWSD_CPU_FMA = 1 << 1, NEWSD_CPU_AVX512F = 1 << 2, NEWSD_CPU_AVX512BW = 1 << 3,
    NEWSD_CPU_AVX512VL = 1 << 4, NEWSD_CPU_AVX512DQ = 1 << 5, NEWSD_CPU_AVX512VNNI = 1 << 6,
    NEWSD_CPU_AVXVNNI = 1 << 7, NEWSD_CPU_AMX_INT8 = 1 << 8, NEWSD_CPU_AVX512BF16 = 1 << 9,
};

/// The feature bits of this CPU (CPUID, with the OS's register-state support checked).
unsigned newsd_cpu_features(void);

/// The largest quantised activation value on `path`: 255, or 63 on AVX2 (see above).
int newsd_int8_activation_max(int path);
/// The largest absolute quantised weight (64 on every path; see above).
int newsd_int8_weight_max(int path);

/// Rows of activations a GEMM call reads: buffers of quantised activations must hold
/// `newsd_int8_padded_rows(n)` rows (the kernels work on whole row tiles).
int newsd_int8_padded_rows(int n);
/// Bytes per quantised activation row (`in` rounded up to 4).
int newsd_int8_row_bytes(int in);
/// Bytes of a packed weight matrix of `out` x `in` (out rounded up to 64, in to 4).
size_t newsd_int8_packed_size(int out, int in);

/// Quantises W[out][in] (row-major, as Hugging Face stores linear weights) per output channel,
/// symmetric: w_q = round(w / scale[o]), scale[o] = max|W[o,:]| / wmax; writes the packed blocks
/// (16 outputs x 4 inputs per 64 bytes), scale[out] and colsum[out] = sum_k w_q[o][k].
void newsd_int8_pack_weights(const float *w, int out, int in, int wmax, int8_t *packed, float *scale, int32_t *colsum);

/// Quantises one row symmetric, as `newsd_int8_pack_weights` quantises each output channel:
/// q[k] = round(row[k] / scale) within +-wmax (ties to even); returns scale = max|row| / wmax (1
/// for an all-zero row, which quantises to zeros); wmax <= 127. Unpacked, for tables read a row
/// at a time.
float newsd_int8_quantize_symmetric(const float *row, int in, int wmax, int8_t *q);

/// Quantises rows x[n][in] (row stride ldx) to u8 with a per-row scale and zero point:
/// q = clamp(round(x / scale) + zp, 0, qmax); rows are `newsd_int8_row_bytes(in)` apart, and the
/// padding rows up to `newsd_int8_padded_rows(n)` are filled with zeros.
void newsd_int8_quantize_rows(int path, const float *x, int n, int in, int ldx, int qmax,
                              uint8_t *q, float *scale, int32_t *zp);

/// Epilogue after the integer product: none, GELU (erf form), or + residual[n][out].
enum newsd_int8_epilogue { NEWSD_EPILOGUE_BIAS = 0, NEWSD_EPILOGUE_BIAS_GELU = 1, NEWSD_EPILOGUE_BIAS_RESIDUAL = 2 };

/// y[n][out] = epilogue((q - zp) W_q^T * scale_a * scale_w + bias), row-major with stride `out`.
/// `amax` is the qmax q was quantised with (at most 255): AVX2 runs its fast kernel when it is at
/// most 63 (its own range), else its 8-bit one; the other paths ignore it.
void newsd_int8_gemm(int path, const uint8_t *q, int amax, const float *ascale, const int32_t *azp, int n, int in,
                     const int8_t *packed, const float *wscale, const int32_t *colsum, const float *bias, int out,
                     int epilogue, const float *residual, float *y);

/// The integer part alone, for tests: acc[n][out] = sum_k q[r][k] * w_q[o][k] (no zero point).
void newsd_int8_gemm_raw(int path, const uint8_t *q, int amax, int n, int in, const int8_t *packed, int out, int32_t *acc);

/// Self-attention of one sequence, all heads: qkv[T][3H] (query, key, value thirds, each head's
/// `d` columns together), ctx[T][H] = softmax(Q K^T * scale) V per head. `scratch` holds
/// (d + 1) * roundup(T, 16) floats.
void newsd_attention(int path, const float *qkv, int t, int heads, int d, float scale, float *ctx, float *scratch);

/// y[n][d] = LayerNorm(x) * g + b (float), then quantised like `newsd_int8_quantize_rows` into q
/// (when q is not NULL).
void newsd_layernorm_quantize(int path, const float *x, int n, int d, const float *g, const float *b, float eps,
                              float *y, int qmax, uint8_t *q, float *scale, int32_t *zp);
#endif
