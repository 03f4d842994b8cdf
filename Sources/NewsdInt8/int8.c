// The int8 kernels (see include/newsd_int8.h). The element-wise parts (quantisation, LayerNorm,
// epilogue, attention) are written once as always-inline generic C and instantiated inside
// functions compiled for each path's target features, where the compiler vectorises them; the
// GEMM inner kernels are written with intrinsics per path.
#include "newsd_int8.h"
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
// The 64-byte vector helpers below are always inlined into their caller, so the calling
// convention clang warns about for the AVX2 and portable instantiations never applies.
#pragma clang diagnostic ignored "-Wpsabi"
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,avx2")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))

// MARK: CPU features

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

unsigned newsd_cpu_features(void) {
    unsigned f = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1;
    if (!osxsave) return 0;
    uint64_t xcr0 = xgetbv0();
    int ymm = (xcr0 & 0x6) == 0x6, zmm = ymm && (xcr0 & 0xE0) == 0xE0, tiles = (xcr0 & 0x60000) == 0x60000;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (ymm && ((b >> 5) & 1)) f |= NEWSD_CPU_AVX2;
    if (ymm && fma) f |= NEWSD_CPU_FMA;
    if (zmm && ((b >> 16) & 1)) f |= NEWSD_CPU_AVX512F;
    if (zmm && ((b >> 17) & 1)) f |= NEWSD_CPU_AVX512DQ;
    if (zmm && ((b >> 30) & 1)) f |= NEWSD_CPU_AVX512BW;
    if (zmm && ((b >> 31) & 1)) f |= NEWSD_CPU_AVX512VL;
    if (zmm && ((c >> 11) & 1)) f |= NEWSD_CPU_AVX512VNNI;
    if (tiles && ((d >> 25) & 1)) f |= NEWSD_CPU_AMX_INT8;
    unsigned a1, b1, c1, d1;
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) {
        if (ymm && ((a1 >> 4) & 1)) f |= NEWSD_CPU_AVXVNNI;
        if (zmm && ((a1 >> 5) & 1)) f |= NEWSD_CPU_AVX512BF16;
    }
#endif
    return f;
}

int newsd_int8_activation_max(int path) { return path == NEWSD_PATH_AVX2 ? 63 : 255; }
int newsd_int8_weight_max(int path) { (void)path; return 64; }

#define MR 6          // rows per GEMM tile
#define ROW_TILE 12   // activation buffers are padded to a multiple of this (a multiple of every path's tile)
#define NB 64         // outputs per GEMM tile (4 blocks of 16)

int newsd_int8_padded_rows(int n) { return (n + ROW_TILE - 1) / ROW_TILE * ROW_TILE; }
int newsd_int8_row_bytes(int in) { return (in + 3) & ~3; }
size_t newsd_int8_packed_size(int out, int in) {
    return (size_t)((out + NB - 1) / NB * NB) * (size_t)newsd_int8_row_bytes(in);
}

/// The symmetric scale of a row: max|row| / wmax, or 1 for an all-zero (or subnormal) row, which
/// then quantises to zeros.
static inline float symmetric_scale(const float *row, int in, int wmax) {
    float m = 0;
    for (int k = 0; k < in; k++) m = fmaxf(m, fabsf(row[k]));
    return m > 1e-30f ? m / (float)wmax : 1.0f;
}

/// round(x / s) (to nearest, ties to even) within +-wmax.
static inline int8_t symmetric_value(float x, float s, int wmax) {
    long v = lrintf(x / s);
    return (int8_t)(v > wmax ? wmax : (v < -wmax ? -wmax : v));
}

float newsd_int8_quantize_symmetric(const float *row, int in, int wmax, int8_t *q) {
    float s = symmetric_scale(row, in, wmax);
    for (int k = 0; k < in; k++) q[k] = symmetric_value(row[k], s, wmax);
    return s;
}

// Packed layout: for each tile of 64 outputs, for each group of 4 inputs, four blocks of 16
// outputs x 4 inputs (output-major inside a block): one vpdpbusd operand per 64 bytes, and the
// four operands of a tile's step side by side (one pointer, one stream).
void newsd_int8_pack_weights(const float *w, int out, int in, int wmax, int8_t *packed, float *scale, int32_t *colsum) {
    int k4 = newsd_int8_row_bytes(in) / 4, outPadded = (out + NB - 1) / NB * NB;
    memset(packed, 0, newsd_int8_packed_size(out, in));
    for (int o = 0; o < outPadded; o++) {
        if (o >= out) continue;
        const float *row = w + (size_t)o * in;
        float s = symmetric_scale(row, in, wmax);
        scale[o] = s;
        int32_t sum = 0;
        int8_t *tile = packed + (size_t)(o / NB) * k4 * 4 * 64 + ((o % NB) / 16) * 64;
        for (int k = 0; k < in; k++) {
            int8_t v = symmetric_value(row[k], s, wmax);
            tile[(size_t)(k / 4) * 256 + (o % 16) * 4 + (k % 4)] = v;
            sum += v;
        }
        colsum[o] = sum;
    }
}

// MARK: Generic element-wise code (instantiated per path)

/// e^x for x <= 0 mostly (softmax, erf), Cephes polynomial with the exponent built from bits.
INLINE float fast_exp(float x) {
    x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float shifted = x * 1.44269504088896341f + 12582912.0f;
    float n = shifted - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits;
    memcpy(&bits, &shifted, 4);
    bits = ((bits - 0x4B400000) + 127) << 23;
    float two;
    memcpy(&two, &bits, 4);
    return p * two;
}

/// gelu(x) = x/2 (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (|error| < 2e-7): the
/// same formula as NewsdKernels.FastMath.gelu.
INLINE float fast_gelu(float x) {
    float v = x * 0.70710678118654752f;
    float a = fabsf(v);
    a = a > 4.5f ? 4.5f : a;
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float e = 1.0f - p * t * fast_exp(-a * a);
    e = v < 0 ? -e : e;
    return 0.5f * x * (1.0f + e);
}

/// Round to nearest (even) without a libm call, for |v| < 2^22: vectorises.
INLINE float round_nearest(float v) { return (v + 12582912.0f) - 12582912.0f; }

/// Minimum and maximum of x[count] (and 0), with 16 independent lanes so the loop vectorises.
INLINE void min_max(const float *x, int count, float *lo, float *hi) {
    float l[16] = {0}, h[16] = {0};
    int k = 0;
    for (; k + 16 <= count; k += 16)
        for (int i = 0; i < 16; i++) { float v = x[k + i]; l[i] = v < l[i] ? v : l[i]; h[i] = v > h[i] ? v : h[i]; }
    for (; k < count; k++) { float v = x[k]; l[0] = v < l[0] ? v : l[0]; h[0] = v > h[0] ? v : h[0]; }
    float a = l[0], b = h[0];
    for (int i = 1; i < 16; i++) { a = l[i] < a ? l[i] : a; b = h[i] > b ? h[i] : b; }
    *lo = a; *hi = b;
}

INLINE float sum16(const float *x, int count) {
    float acc[16] = {0};
    int k = 0;
    for (; k + 16 <= count; k += 16) for (int i = 0; i < 16; i++) acc[i] += x[k + i];
    for (; k < count; k++) acc[0] += x[k];
    float s = 0;
    for (int i = 0; i < 16; i++) s += acc[i];
    return s;
}

INLINE void quantize_rows_generic(const float *x, int n, int in, int ldx, int qmax, uint8_t *q, float *scale, int32_t *zp) {
    int rb = newsd_int8_row_bytes(in);
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * ldx;
        float lo, hi;   // 0 is always within [lo, hi], so it is represented exactly (by zp)
        min_max(xr, in, &lo, &hi);
        float s = hi - lo > 1e-30f ? (hi - lo) / (float)qmax : 1.0f;   // a constant row: any scale is exact
        float inv = 1.0f / s;
        float zf = round_nearest(-lo * inv);
        zf = zf < 0 ? 0 : (zf > (float)qmax ? (float)qmax : zf);
        float top = (float)qmax;
        uint8_t *qr = q + (size_t)r * rb;
        for (int k = 0; k < in; k++) {
            float v = round_nearest(xr[k] * inv) + zf;
            v = v < 0 ? 0 : (v > top ? top : v);
            qr[k] = (uint8_t)(int32_t)v;
        }
        int32_t z = (int32_t)zf;
        for (int k = in; k < rb; k++) qr[k] = (uint8_t)z;
        scale[r] = s;
        zp[r] = z;
    }
    int padded = newsd_int8_padded_rows(n);
    if (padded > n) memset(q + (size_t)n * rb, 0, (size_t)(padded - n) * rb);
}

INLINE void layernorm_generic(const float *x, int n, int d, const float *g, const float *b, float eps, float *y) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        float mean = sum16(xr, d) / (float)d;
        float dev[16] = {0};
        int i = 0;
        for (; i + 16 <= d; i += 16) for (int j = 0; j < 16; j++) { float c = xr[i + j] - mean; dev[j] += c * c; }
        for (; i < d; i++) { float c = xr[i] - mean; dev[0] += c * c; }
        float var = sum16(dev, 16);
        float rs = 1.0f / sqrtf(var / (float)d + eps);
        for (int i = 0; i < d; i++) yr[i] = (xr[i] - mean) * rs * g[i] + b[i];
    }
}

/// Turns a tile of int32 sums (rows x cols, stride NB) into floats.
INLINE void epilogue_generic(const int32_t *acc, int rows, int cols, const float *ascale, const int32_t *azp,
                             const float *wscale, const int32_t *colsum, const float *bias, int epilogue,
                             const float *residual, float *y, int ldy) {
    for (int r = 0; r < rows; r++) {
        const int32_t *ar = acc + r * NB;
        float *yr = y + (size_t)r * ldy;
        float as = ascale[r];
        int32_t z = azp[r];
        if (epilogue == NEWSD_EPILOGUE_BIAS_GELU) {
            for (int o = 0; o < cols; o++) yr[o] = fast_gelu((float)(ar[o] - z * colsum[o]) * (as * wscale[o]) + bias[o]);
        } else if (epilogue == NEWSD_EPILOGUE_BIAS_RESIDUAL) {
            const float *rr = residual + (size_t)r * ldy;
            for (int o = 0; o < cols; o++) yr[o] = (float)(ar[o] - z * colsum[o]) * (as * wscale[o]) + bias[o] + rr[o];
        } else {
            for (int o = 0; o < cols; o++) yr[o] = (float)(ar[o] - z * colsum[o]) * (as * wscale[o]) + bias[o];
        }
    }
}

/// 16 floats: clang's vector extension, compiled to one zmm, two ymm or four xmm per operation
/// depending on the path's target features.
typedef float v16f __attribute__((vector_size(64), aligned(4)));

INLINE v16f load16(const float *p) { v16f v; memcpy(&v, p, 64); return v; }
INLINE void store16(float *p, v16f v) { memcpy(p, &v, 64); }
INLINE v16f splat16(float x) { return (v16f){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

INLINE void attention_generic(const float *qkv, int t, int heads, int d, float scale, float *ctx, float *scratch) {
    // Keys and scores are padded to a multiple of 16 columns (zero keys, zero probabilities), and
    // the accumulators are whole vectors in registers: at T of about 30, scalar remainders and
    // accumulating through memory cost more than the arithmetic.
    int h = heads * d, stride = 3 * h, tp = (t + 15) & ~15;
    float *kt = scratch, *s = scratch + (size_t)d * tp;
    for (int hd = 0; hd < heads; hd++) {
        // K^T of this head, [d][tp], so the scores of one query are d vector FMAs per 16 keys.
        // Key by key (contiguous reads, one store per element; the column-first form compiles to
        // gathers or scatters, which cost more than the scores themselves).
        for (int j = 0; j < t; j++) {
            const float *k = qkv + (size_t)j * stride + h + hd * d;
#pragma clang loop vectorize(disable)
            for (int c = 0; c < d; c++) kt[(size_t)c * tp + j] = k[c];
        }
        for (int c = 0; c < d; c++) for (int j = t; j < tp; j++) kt[(size_t)c * tp + j] = 0;
        for (int i = 0; i < t; i++) {
            const float *q = qkv + (size_t)i * stride + hd * d;
            for (int j0 = 0; j0 < tp; j0 += 16) {
                v16f acc = splat16(0);
                for (int c = 0; c < d; c++) acc += splat16(q[c]) * load16(kt + (size_t)c * tp + j0);
                store16(s + j0, acc * splat16(scale));
            }
            for (int j = t; j < tp; j++) s[j] = -1e30f;   // padding: exp gives 0
            v16f mx = load16(s);
            for (int j0 = 16; j0 < tp; j0 += 16) { mx = __builtin_elementwise_max(mx, load16(s + j0)); }
            float top = mx[0];
            for (int k = 1; k < 16; k++) top = mx[k] > top ? mx[k] : top;
            for (int j = 0; j < tp; j++) s[j] = fast_exp(s[j] - top);
            float inv = 1.0f / sum16(s, tp);
            float *out = ctx + (size_t)i * h + hd * d;
            if (d % 16 == 0) {
                for (int c0 = 0; c0 < d; c0 += 16) {
                    v16f acc = splat16(0);
                    for (int j = 0; j < t; j++) acc += splat16(s[j]) * load16(qkv + (size_t)j * stride + 2 * h + hd * d + c0);
                    store16(out + c0, acc * splat16(inv));
                }
            } else {
                for (int c = 0; c < d; c++) out[c] = 0;
                for (int j = 0; j < t; j++) {
                    float p = s[j] * inv;
                    const float *v = qkv + (size_t)j * stride + 2 * h + hd * d;
                    for (int c = 0; c < d; c++) out[c] += p * v[c];
                }
            }
        }
    }
}

// MARK: GEMM inner kernels: acc[MR or 4][NB] = q[rows][k] x W block^T, whole K.

static void tile_portable(const uint8_t *q, int rb, int rows, const int8_t *w, int k4, int32_t *acc) {
    for (int r = 0; r < rows; r++) {
        const uint8_t *qr = q + (size_t)r * rb;
        for (int ob = 0; ob < NB / 16; ob++) {
            const int8_t *blk = w + ob * 64;
            int32_t sums[16] = {0};
            for (int g = 0; g < k4; g++) {
                const int8_t *wg = blk + (size_t)g * 256;
                const uint8_t *a = qr + g * 4;
                for (int o = 0; o < 16; o++)
                    sums[o] += a[0] * wg[o * 4] + a[1] * wg[o * 4 + 1] + a[2] * wg[o * 4 + 2] + a[3] * wg[o * 4 + 3];
            }
            for (int o = 0; o < 16; o++) acc[r * NB + ob * 16 + o] = sums[o];
        }
    }
}

#if defined(__x86_64__)
TARGET_AVX512 static void tile_vnni(const uint8_t *q, int rb, const int8_t *w, int k4, int32_t *acc) {
    __m512i c[MR][4];
    for (int r = 0; r < MR; r++) for (int j = 0; j < 4; j++) c[r][j] = _mm512_setzero_si512();
    for (int g = 0; g < k4; g++) {
        const int8_t *wg = w + (size_t)g * 256;
        __m512i b0 = _mm512_load_si512((const void *)wg);
        __m512i b1 = _mm512_load_si512((const void *)(wg + 64));
        __m512i b2 = _mm512_load_si512((const void *)(wg + 128));
        __m512i b3 = _mm512_load_si512((const void *)(wg + 192));
        for (int r = 0; r < MR; r++) {
            int32_t four;
            memcpy(&four, q + (size_t)r * rb + g * 4, 4);
            __m512i a = _mm512_set1_epi32(four);
            c[r][0] = _mm512_dpbusd_epi32(c[r][0], a, b0);
            c[r][1] = _mm512_dpbusd_epi32(c[r][1], a, b1);
            c[r][2] = _mm512_dpbusd_epi32(c[r][2], a, b2);
            c[r][3] = _mm512_dpbusd_epi32(c[r][3], a, b3);
        }
    }
    for (int r = 0; r < MR; r++) for (int j = 0; j < 4; j++) _mm512_storeu_si512((void *)(acc + r * NB + j * 16), c[r][j]);
}

// AVX2: vpmaddubsw multiplies u8 activations by s8 weights and adds adjacent pairs into 16 bits
// with saturation. With 6-bit activations (at most 63, the path's own range,
// `newsd_int8_activation_max`) and weights within +-64, a pair is at most 2 x 63 x 64 = 8064, and
// the pairs of four groups of 4 inputs, added in 16 bits (vpaddw), at most 32256: nothing
// saturates and the sums are exact. vpmaddwd with ones then widens into the int32 lanes once
// per four groups (16 inputs of one output per lane, 8 outputs per ymm), and vpaddd accumulates:
// per 32 products 1.25 multiplies and 2.25 vector instructions in all, against 2 and 3 when
// every pair is widened at once (`tile_avx2_u8`) and 1.5 and 2.5 with 7-bit activations and two
// groups (the kernel this one replaced: +15 % on the whole encoder); the vector ports bound this
// loop. Per pass, 2 rows x 16 outputs: 4 int32 accumulators and 4 16-bit partial sums live
// across the groups, beside `ones`, two broadcast activations and two weight vectors; four
// passes for a tile's 64.
// One group of 4 inputs (J of the four) for both rows, added into the 16-bit partial sums (uses
// the kernel's locals: wg, g, q0, q1, s00..s11).
#define U6_GROUP(J)                                                                                      \
    {                                                                                                    \
        const int8_t *wj = wg + (J) * 256;                                                               \
        __m256i b0 = _mm256_load_si256((const __m256i *)wj), b1 = _mm256_load_si256((const __m256i *)(wj + 32)); \
        int32_t f0, f1;                                                                                  \
        memcpy(&f0, q0 + (g + (J)) * 4, 4); memcpy(&f1, q1 + (g + (J)) * 4, 4);                          \
        __m256i a0 = _mm256_set1_epi32(f0), a1 = _mm256_set1_epi32(f1);                                  \
        s00 = _mm256_add_epi16(s00, _mm256_maddubs_epi16(a0, b0)); s01 = _mm256_add_epi16(s01, _mm256_maddubs_epi16(a0, b1)); \
        s10 = _mm256_add_epi16(s10, _mm256_maddubs_epi16(a1, b0)); s11 = _mm256_add_epi16(s11, _mm256_maddubs_epi16(a1, b1)); \
    }
// Widens the four 16-bit partial sums into the int32 accumulators.
#define U6_WIDEN()                                                                                       \
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(s00, ones)); c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(s01, ones)); \
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(s10, ones)); c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(s11, ones));
TARGET_AVX2 static void tile_avx2_u6(const uint8_t *q, int rb, int rows, const int8_t *w, int k4, int32_t *acc) {
    const __m256i ones = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
    for (int r0 = 0; r0 < rows; r0 += 2) {
        const uint8_t *q0 = q + (size_t)r0 * rb, *q1 = q0 + rb;
        for (int ob = 0; ob < NB / 16; ob++) {
            const int8_t *blk = w + ob * 64;
            __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero;
            int g = 0;
            for (; g + 4 <= k4; g += 4) {
                const int8_t *wg = blk + (size_t)g * 256;
                __m256i s00 = zero, s01 = zero, s10 = zero, s11 = zero;
                U6_GROUP(0) U6_GROUP(1) U6_GROUP(2) U6_GROUP(3)
                U6_WIDEN()
            }
            if (g < k4) {   // the last one to three groups
                const int8_t *wg = blk + (size_t)g * 256;
                __m256i s00 = zero, s01 = zero, s10 = zero, s11 = zero;
                U6_GROUP(0)
                if (g + 1 < k4) U6_GROUP(1)
                if (g + 2 < k4) U6_GROUP(2)
                U6_WIDEN()
            }
            int32_t *o = acc + r0 * NB + ob * 16;
            _mm256_storeu_si256((__m256i *)o, c00); _mm256_storeu_si256((__m256i *)(o + 8), c01);
            _mm256_storeu_si256((__m256i *)(o + NB), c10); _mm256_storeu_si256((__m256i *)(o + NB + 8), c11);
        }
    }
}
#undef U6_GROUP
#undef U6_WIDEN

// Wider activations (any up to 255, for callers other than the encoder): one group at a time,
// each vpmaddubsw pair widened at once (2 x 255 x 64 < 32767). Per pass, 4 rows x 16 outputs.
TARGET_AVX2 static void tile_avx2_u8(const uint8_t *q, int rb, int rows, const int8_t *w, int k4, int32_t *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const uint8_t *q0 = q + (size_t)r0 * rb, *q1 = q0 + rb, *q2 = q1 + rb, *q3 = q2 + rb;
        for (int ob = 0; ob < NB / 16; ob++) {
            const int8_t *blk = w + ob * 64;
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            for (int g = 0; g < k4; g++) {
                __m256i b0 = _mm256_load_si256((const __m256i *)(blk + (size_t)g * 256));
                __m256i b1 = _mm256_load_si256((const __m256i *)(blk + (size_t)g * 256 + 32));
                int32_t f0, f1, f2, f3;
                memcpy(&f0, q0 + g * 4, 4); memcpy(&f1, q1 + g * 4, 4); memcpy(&f2, q2 + g * 4, 4); memcpy(&f3, q3 + g * 4, 4);
                __m256i a0 = _mm256_set1_epi32(f0), a1 = _mm256_set1_epi32(f1), a2 = _mm256_set1_epi32(f2), a3 = _mm256_set1_epi32(f3);
                c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, b0), ones));
                c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, b1), ones));
                c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(_mm256_maddubs_epi16(a1, b0), ones));
                c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(_mm256_maddubs_epi16(a1, b1), ones));
                c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(_mm256_maddubs_epi16(a2, b0), ones));
                c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(_mm256_maddubs_epi16(a2, b1), ones));
                c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(_mm256_maddubs_epi16(a3, b0), ones));
                c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(_mm256_maddubs_epi16(a3, b1), ones));
            }
            int32_t *o = acc + r0 * NB + ob * 16;
            _mm256_storeu_si256((__m256i *)o, c00); _mm256_storeu_si256((__m256i *)(o + 8), c01);
            _mm256_storeu_si256((__m256i *)(o + NB), c10); _mm256_storeu_si256((__m256i *)(o + NB + 8), c11);
            _mm256_storeu_si256((__m256i *)(o + 2 * NB), c20); _mm256_storeu_si256((__m256i *)(o + 2 * NB + 8), c21);
            _mm256_storeu_si256((__m256i *)(o + 3 * NB), c30); _mm256_storeu_si256((__m256i *)(o + 3 * NB + 8), c31);
        }
    }
}
#endif

/// Runs the tiles of one output block of NB columns over all rows; `finish` consumes each tile.
#define GEMM_LOOP(TILE_CALL, FINISH)                                                              \
    int rb = newsd_int8_row_bytes(in), k4 = rb / 4;                                               \
    int32_t acc[ROW_TILE * NB] __attribute__((aligned(64)));                                      \
    for (int o0 = 0; o0 < out; o0 += NB) {                                                        \
        const int8_t *w = packed + (size_t)(o0 / NB) * k4 * 256;                                  \
        int cols = out - o0 < NB ? out - o0 : NB;                                                 \
        for (int r0 = 0; r0 < n; r0 += TILE_ROWS) {                                               \
            const uint8_t *qt = q + (size_t)r0 * rb;                                              \
            int rows = n - r0 < TILE_ROWS ? n - r0 : TILE_ROWS;                                   \
            TILE_CALL;                                                                            \
            FINISH;                                                                               \
        }                                                                                         \
    }

#define FINISH_FLOAT epilogue_generic(acc, rows, cols, ascale + r0, azp + r0, wscale + o0, colsum + o0, bias + o0, \
                                      epilogue, residual ? residual + (size_t)r0 * out + o0 : 0, y + (size_t)r0 * out + o0, out)
#define FINISH_RAW for (int r = 0; r < rows; r++) for (int o = 0; o < cols; o++) raw[(size_t)(r0 + r) * out + o0 + o] = acc[r * NB + o]

#define TILE_ROWS ROW_TILE
static void gemm_portable(const uint8_t *q, const float *ascale, const int32_t *azp, int n, int in, const int8_t *packed,
                          const float *wscale, const int32_t *colsum, const float *bias, int out, int epilogue,
                          const float *residual, float *y) {
    GEMM_LOOP(tile_portable(qt, rb, rows, w, k4, acc), FINISH_FLOAT)
}
static void raw_portable(const uint8_t *q, int n, int in, const int8_t *packed, int out, int32_t *raw) {
    GEMM_LOOP(tile_portable(qt, rb, rows, w, k4, acc), FINISH_RAW)
}
#if defined(__x86_64__)
// Rows are padded to ROW_TILE (12), a multiple of both kernels' row counts (2 and 4).
#define AVX2_TILE                                                                    \
    if (amax <= 63) tile_avx2_u6(qt, rb, (rows + 1) & ~1, w, k4, acc);               \
    else tile_avx2_u8(qt, rb, (rows + 3) & ~3, w, k4, acc)
TARGET_AVX2 static void gemm_avx2(const uint8_t *q, int amax, const float *ascale, const int32_t *azp, int n, int in, const int8_t *packed,
                                  const float *wscale, const int32_t *colsum, const float *bias, int out, int epilogue,
                                  const float *residual, float *y) {
    GEMM_LOOP(AVX2_TILE, FINISH_FLOAT)
}
TARGET_AVX2 static void raw_avx2(const uint8_t *q, int amax, int n, int in, const int8_t *packed, int out, int32_t *raw) {
    GEMM_LOOP(AVX2_TILE, FINISH_RAW)
}
#undef TILE_ROWS
#define TILE_ROWS MR
TARGET_AVX512 static void gemm_vnni(const uint8_t *q, const float *ascale, const int32_t *azp, int n, int in, const int8_t *packed,
                                    const float *wscale, const int32_t *colsum, const float *bias, int out, int epilogue,
                                    const float *residual, float *y) {
    GEMM_LOOP(tile_vnni(qt, rb, w, k4, acc), FINISH_FLOAT)
}
TARGET_AVX512 static void raw_vnni(const uint8_t *q, int n, int in, const int8_t *packed, int out, int32_t *raw) {
    GEMM_LOOP(tile_vnni(qt, rb, w, k4, acc), FINISH_RAW)
}
#endif

// MARK: Dispatch

void newsd_int8_gemm(int path, const uint8_t *q, int amax, const float *ascale, const int32_t *azp, int n, int in,
                     const int8_t *packed, const float *wscale, const int32_t *colsum, const float *bias, int out,
                     int epilogue, const float *residual, float *y) {
#if defined(__x86_64__)
    if (path == NEWSD_PATH_AVX512_VNNI) { gemm_vnni(q, ascale, azp, n, in, packed, wscale, colsum, bias, out, epilogue, residual, y); return; }
    if (path == NEWSD_PATH_AVX2) { gemm_avx2(q, amax, ascale, azp, n, in, packed, wscale, colsum, bias, out, epilogue, residual, y); return; }
#endif
    gemm_portable(q, ascale, azp, n, in, packed, wscale, colsum, bias, out, epilogue, residual, y);
}

void newsd_int8_gemm_raw(int path, const uint8_t *q, int amax, int n, int in, const int8_t *packed, int out, int32_t *acc) {
#if defined(__x86_64__)
    if (path == NEWSD_PATH_AVX512_VNNI) { raw_vnni(q, n, in, packed, out, acc); return; }
    if (path == NEWSD_PATH_AVX2) { raw_avx2(q, amax, n, in, packed, out, acc); return; }
#endif
    raw_portable(q, n, in, packed, out, acc);
}

#define ELEMENTWISE(SUFFIX, ATTR)                                                                                        \
    ATTR static void quantize_##SUFFIX(const float *x, int n, int in, int ldx, int qmax, uint8_t *q, float *s, int32_t *z) { \
        quantize_rows_generic(x, n, in, ldx, qmax, q, s, z);                                                            \
    }                                                                                                                    \
    ATTR static void attention_##SUFFIX(const float *qkv, int t, int heads, int d, float scale, float *ctx, float *sc) {   \
        attention_generic(qkv, t, heads, d, scale, ctx, sc);                                                             \
    }                                                                                                                    \
    ATTR static void layernorm_##SUFFIX(const float *x, int n, int d, const float *g, const float *b, float eps, float *y) { \
        layernorm_generic(x, n, d, g, b, eps, y);                                                                        \
    }
ELEMENTWISE(portable, )
#if defined(__x86_64__)
ELEMENTWISE(avx2, TARGET_AVX2)
ELEMENTWISE(vnni, TARGET_AVX512)
#define PICK(NAME, ...)                                                                   \
    do {                                                                                  \
        if (path == NEWSD_PATH_AVX512_VNNI) NAME##_vnni(__VA_ARGS__);                     \
        else if (path == NEWSD_PATH_AVX2) NAME##_avx2(__VA_ARGS__);                       \
        else NAME##_portable(__VA_ARGS__);                                                \
    } while (0)
#else
#define PICK(NAME, ...) NAME##_portable(__VA_ARGS__)
#endif

void newsd_int8_quantize_rows(int path, const float *x, int n, int in, int ldx, int qmax, uint8_t *q, float *scale, int32_t *zp) {
    PICK(quantize, x, n, in, ldx, qmax, q, scale, zp);
}

void newsd_attention(int path, const float *qkv, int t, int heads, int d, float scale, float *ctx, float *scratch) {
    PICK(attention, qkv, t, heads, d, scale, ctx, scratch);
}

void newsd_layernorm_quantize(int path, const float *x, int n, int d, const float *g, const float *b, float eps,
                              float *y, int qmax, uint8_t *q, float *scale, int32_t *zp) {
    PICK(layernorm, x, n, d, g, b, eps, y);
    if (q) PICK(quantize, y, n, d, d, qmax, q, scale, zp);
}
