// Side-by-side int8 GEMM benchmark (figures, not a test): newsd's own kernels (Sources/NewsdInt8,
// the path this CPU's flags choose) against oneDNN's matmul (Debian's libdnnl 2.6, its own ISA
// dispatch: VNNI / AMX where present), on the student's four linear-layer shapes at the row count
// of one thread's sub-batch. Both compute y = dequantise(u8 activations x s8 weights) + bias in
// float, one thread each (the encoder runs one GEMM per thread; threads split the batch).
// oneDNN's src zero point is one per tensor (2.6 has no per-row zero points); newsd's is per row.
// Built and run by scripts/bench-gemm.sh.
#include <dnnl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "newsd_int8.h"

#define CHECK(call) do { dnnl_status_t s_ = (call); if (s_ != dnnl_success) { fprintf(stderr, "%s: status %d\n", #call, (int)s_); exit(1); } } while (0)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static float frand(unsigned *s) { *s = *s * 1664525u + 1013904223u; return ((*s >> 8) / 16777216.0f) * 2 - 1; }

/// Median seconds per call of `body` over `reps` timed calls after warm-up, in runs of `inner`.
#define TIME(result, inner, body) do { \
    double best_[7]; for (int r_ = 0; r_ < 7; r_++) { double t0_ = now(); for (int i_ = 0; i_ < (inner); i_++) { body; } best_[r_] = (now() - t0_) / (inner); } \
    for (int a_ = 0; a_ < 7; a_++) for (int b_ = a_ + 1; b_ < 7; b_++) if (best_[b_] < best_[a_]) { double t_ = best_[a_]; best_[a_] = best_[b_]; best_[b_] = t_; } \
    result = best_[3]; } while (0)

int main(int argc, char **argv) {
    int rows = argc > 1 ? atoi(argv[1]) : 480;   // 16 sentences x 30 tokens: one thread's sub-batch
    const int shapes[4][2] = {{1152, 384}, {384, 384}, {1536, 384}, {384, 1536}};   // out, in
    const char *names[4] = {"qkv 1152x384", "attn-out 384x384", "ffn-up 1536x384", "ffn-down 384x1536"};
    unsigned cpu = newsd_cpu_features();
    int path = (cpu & NEWSD_CPU_AVX512VNNI) && (cpu & NEWSD_CPU_AVX512BW) ? NEWSD_PATH_AVX512_VNNI : (cpu & NEWSD_CPU_AVX2) ? NEWSD_PATH_AVX2 : NEWSD_PATH_PORTABLE;
    const char *pathName[3] = {"portable", "avx2", "avx512-vnni"};
    printf("rows=%d (one thread's sub-batch), 1 thread each; newsd path %s; oneDNN %d.%d.%d (ISA: its own dispatch)\n",
           rows, pathName[path], dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch);
    printf("GOP/s of the GEMM alone, and (after /) with the activations' quantisation\n");
    printf("%-20s %18s %18s %8s  %s\n", "shape (out x in)", "newsd", "oneDNN", "ratio", "oneDNN kernel");
    dnnl_engine_t engine; CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    dnnl_stream_t stream; CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    double totalNewsd = 0, totalOnednn = 0;
    for (int s = 0; s < 4; s++) {
        int out = shapes[s][0], in = shapes[s][1];
        unsigned seed = 42 + s;
        float *w = malloc(sizeof(float) * out * in), *x = malloc(sizeof(float) * rows * in), *bias = malloc(sizeof(float) * out);
        for (int i = 0; i < out * in; i++) w[i] = frand(&seed) * 0.1f;
        for (int i = 0; i < rows * in; i++) x[i] = frand(&seed);
        for (int i = 0; i < out; i++) bias[i] = frand(&seed) * 0.01f;
        // newsd: pack once, quantise activations per row, GEMM with the bias epilogue.
        int8_t *packed = aligned_alloc(64, (newsd_int8_packed_size(out, in) + 63) / 64 * 64);
        float *wscale = malloc(sizeof(float) * out); int32_t *colsum = malloc(sizeof(int32_t) * out);
        newsd_int8_pack_weights(w, out, in, newsd_int8_weight_max(path), packed, wscale, colsum);
        int prow = newsd_int8_padded_rows(rows), rb = newsd_int8_row_bytes(in);
        uint8_t *q = aligned_alloc(64, ((size_t)prow * rb + 63) / 64 * 64);
        float *ascale = malloc(sizeof(float) * prow); int32_t *azp = malloc(sizeof(int32_t) * prow);
        float *y = malloc(sizeof(float) * rows * out);
        double tNewsd, tNewsdGemm;
        int amax = newsd_int8_activation_max(path);   // the path's own range, as the encoder quantises
        newsd_int8_quantize_rows(path, x, rows, in, in, amax, q, ascale, azp);
        TIME(tNewsdGemm, 20, newsd_int8_gemm(path, q, amax, ascale, azp, rows, in, packed, wscale, colsum, bias, out, NEWSD_EPILOGUE_BIAS, NULL, y));
        TIME(tNewsd, 20, {
            newsd_int8_quantize_rows(path, x, rows, in, in, amax, q, ascale, azp);
            newsd_int8_gemm(path, q, amax, ascale, azp, rows, in, packed, wscale, colsum, bias, out, NEWSD_EPILOGUE_BIAS, NULL, y);
        });
        // oneDNN: weights s8 (in x out, reordered once to the layout it prefers), activations u8
        // with one zero point, output scales per output channel, f32 bias and f32 output.
        int8_t *wq = malloc(in * out);   // [in][out]
        float *oscale = malloc(sizeof(float) * out);
        for (int o = 0; o < out; o++) {
            float m = 0; for (int k = 0; k < in; k++) m = fmaxf(m, fabsf(w[o * in + k]));
            float sc = m > 0 ? m / 127 : 1;
            for (int k = 0; k < in; k++) wq[k * out + o] = (int8_t)lrintf(w[o * in + k] / sc);
            oscale[o] = sc;
        }
        uint8_t *xq = malloc((size_t)rows * in);
        float xmin = 0, xmax = 0;
        for (int i = 0; i < rows * in; i++) { xmin = fminf(xmin, x[i]); xmax = fmaxf(xmax, x[i]); }
        float xs = (xmax - xmin) / 255; int32_t zp = (int32_t)lrintf(-xmin / xs);
        for (int i = 0; i < rows * in; i++) { long v = lrintf(x[i] / xs) + zp; xq[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }
        for (int o = 0; o < out; o++) oscale[o] *= xs;
        dnnl_dims_t adims = {rows, in}, bdims = {in, out}, cdims = {rows, out}, biasdims = {1, out};
        dnnl_memory_desc_t amd, bmdAny, bmdPlain, cmd, biasmd;
        CHECK(dnnl_memory_desc_init_by_tag(&amd, 2, adims, dnnl_u8, dnnl_ab));
        CHECK(dnnl_memory_desc_init_by_tag(&bmdAny, 2, bdims, dnnl_s8, dnnl_format_tag_any));
        CHECK(dnnl_memory_desc_init_by_tag(&bmdPlain, 2, bdims, dnnl_s8, dnnl_ab));
        CHECK(dnnl_memory_desc_init_by_tag(&cmd, 2, cdims, dnnl_f32, dnnl_ab));
        CHECK(dnnl_memory_desc_init_by_tag(&biasmd, 2, biasdims, dnnl_f32, dnnl_ab));
        dnnl_matmul_desc_t mmd; CHECK(dnnl_matmul_desc_init(&mmd, &amd, &bmdAny, &biasmd, &cmd));
        dnnl_primitive_attr_t attr; CHECK(dnnl_primitive_attr_create(&attr));
        CHECK(dnnl_primitive_attr_set_output_scales(attr, out, 1 << 1, oscale));
        const int32_t zps[1] = {zp};
        CHECK(dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, zps));
        dnnl_primitive_desc_t pd; CHECK(dnnl_primitive_desc_create(&pd, &mmd, attr, engine, NULL));
        const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        dnnl_memory_t amem, bmemPlain, bmem, cmem, biasmem;
        float *yd = malloc(sizeof(float) * rows * out);
        CHECK(dnnl_memory_create(&amem, &amd, engine, xq));
        CHECK(dnnl_memory_create(&bmemPlain, &bmdPlain, engine, wq));
        CHECK(dnnl_memory_create(&bmem, bmd, engine, DNNL_MEMORY_ALLOCATE));
        CHECK(dnnl_memory_create(&cmem, &cmd, engine, yd));
        CHECK(dnnl_memory_create(&biasmem, &biasmd, engine, bias));
        dnnl_primitive_desc_t rpd; CHECK(dnnl_reorder_primitive_desc_create(&rpd, &bmdPlain, engine, bmd, engine, NULL));
        dnnl_primitive_t reorder; CHECK(dnnl_primitive_create(&reorder, rpd));
        dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, bmemPlain}, {DNNL_ARG_TO, bmem}};
        CHECK(dnnl_primitive_execute(reorder, stream, 2, rargs)); CHECK(dnnl_stream_wait(stream));
        dnnl_primitive_t matmul; CHECK(dnnl_primitive_create(&matmul, pd));
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, amem}, {DNNL_ARG_WEIGHTS, bmem}, {DNNL_ARG_BIAS, biasmem}, {DNNL_ARG_DST, cmem}};
        double tOnednn, tOnednnGemm;
        TIME(tOnednnGemm, 20, { CHECK(dnnl_primitive_execute(matmul, stream, 4, args)); CHECK(dnnl_stream_wait(stream)); });
        const char *impl = "?";
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        // The activation quantisation is timed too (a per-tensor pass), as newsd's per-row one is.
        TIME(tOnednn, 20, {
            for (int i = 0; i < rows * in; i++) { long v = lrintf(x[i] / xs) + zp; xq[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }
            CHECK(dnnl_primitive_execute(matmul, stream, 4, args)); CHECK(dnnl_stream_wait(stream));
        });
        // Both approximate the float product; report how far each is from it.
        double errN = 0, errD = 0, ref2 = 0;
        for (int r = 0; r < rows; r += 7) for (int o = 0; o < out; o++) {
            double ref = bias[o]; for (int k = 0; k < in; k++) ref += (double)x[r * in + k] * w[o * in + k];
            errN += (y[r * out + o] - ref) * (y[r * out + o] - ref); errD += (yd[r * out + o] - ref) * (yd[r * out + o] - ref); ref2 += ref * ref;
        }
        double ops = 2.0 * rows * in * out;
        printf("%-20s %8.1f / %7.1f %8.1f / %7.1f %7.2fx  %s; relative error newsd %.4f, oneDNN %.4f\n", names[s],
               ops / tNewsdGemm * 1e-9, ops / tNewsd * 1e-9, ops / tOnednnGemm * 1e-9, ops / tOnednn * 1e-9,
               tOnednnGemm / tNewsdGemm, impl, sqrt(errN / ref2), sqrt(errD / ref2));
        totalNewsd += tNewsdGemm; totalOnednn += tOnednnGemm;
        dnnl_primitive_destroy(matmul); dnnl_primitive_destroy(reorder); dnnl_primitive_desc_destroy(rpd); dnnl_primitive_desc_destroy(pd);
        dnnl_primitive_attr_destroy(attr);
        dnnl_memory_destroy(amem); dnnl_memory_destroy(bmemPlain); dnnl_memory_destroy(bmem); dnnl_memory_destroy(cmem); dnnl_memory_destroy(biasmem);
        free(w); free(x); free(bias); free(packed); free(wscale); free(colsum); free(q); free(ascale); free(azp); free(y);
        free(wq); free(oscale); free(xq); free(yd);
    }
    printf("one layer's four GEMMs alone: newsd %.3f ms, oneDNN %.3f ms (oneDNN takes %.2fx newsd's time)\n", totalNewsd * 1e3, totalOnednn * 1e3, totalOnednn / totalNewsd);
    dnnl_stream_destroy(stream); dnnl_engine_destroy(engine);
    return 0;
}
