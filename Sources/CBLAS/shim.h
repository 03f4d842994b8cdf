#ifndef NEWSD_CBLAS_SHIM_H
#define NEWSD_CBLAS_SHIM_H
// Debian's OpenBLAS: cblas.h also declares openblas_set_num_threads / openblas_get_num_threads.
#include <cblas.h>

/// 1 when the CPU has AVX2 and FMA (x86-64-v3), so the vector kernels built for it may run.
static inline int newsd_cpu_has_avx2_fma(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
#endif
