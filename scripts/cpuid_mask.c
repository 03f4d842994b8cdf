// An LD_PRELOAD library that makes this host look like an AVX2-only CPU to the process it is
// loaded into: every CPUID instruction executed after it loads reports no AVX-512, VNNI
// (512- or 256-bit), AMX or AVX-512 BF16/FP16. It lets `scripts/bench-model.sh --hide-avx512`
// compare newsd and ONNX Runtime side by side as both would run on an AVX2-only host (AMD Zen 3
// class), on hardware that has AVX-512: each engine's own dispatch chooses its AVX2 kernels.
//
// How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID 0, where the CPU and hypervisor offer
// it: the `cpuid_fault` flag) makes CPUID raise SIGSEGV. The handler runs the real CPUID with
// faulting briefly lifted on its own thread, clears the feature bits, writes the registers and
// steps over the instruction. The setting is per thread and inherited by threads created later;
// exec clears it (LD_PRELOAD loads this again in the new image).
//
// Limits: code that ran CPUID before this library's constructor (the dynamic loader, and
// libraries initialised earlier, such as OpenBLAS, which therefore gets OPENBLAS_CORETYPE from the
// script) saw the real flags; a process that installs its own SIGSEGV handler replaces this one
// (the Swift runtime's backtracer does: the script sets SWIFT_BACKTRACE=enable=no).
// Build: cc -O2 -shared -fPIC -o cpuid_mask.so cpuid_mask.c
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

// Leaf 7 sub-leaf 0: EBX AVX512 F(16) DQ(17) IFMA(21) PF(26) ER(27) CD(28) BW(30) VL(31);
// ECX VBMI(1) VBMI2(6) VNNI(11) BITALG(12) VPOPCNTDQ(14); EDX 4VNNIW(2) 4FMAPS(3)
// VP2INTERSECT(8) AMX-BF16(22) FP16(23) AMX-TILE(24) AMX-INT8(25).
// Leaf 7 sub-leaf 1: EAX AVX-VNNI(4) AVX512-BF16(5) AMX-FP16(21); EDX AVX-VNNI-INT8(4)
// AVX10(19). Leaf 0x24 (AVX10 versions) reads as absent.
static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 0x24) { r[0] = r[1] = r[2] = r[3] = 0; return; }
    if (leaf != 7) return;
    if (sub == 0) {
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (sub == 1) {
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21));
        r[3] &= ~((1u << 4) | (1u << 19));
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    // A faulting CPUID arrives as a general-protection fault (SI_KERNEL). Anything else is a real
    // fault (or a signal sent by another process): restore the default action and let it act.
    // The instruction bytes are read only then: a fault fetching them would fault again here.
    const uint8_t *ip = (const uint8_t *)g[REG_RIP];
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        signal(sig, SIG_DFL);
        if (info->si_code <= 0) raise(sig);   // sent, not a fault: nothing re-executes to raise it again
        return;                               // a fault: the instruction runs again and faults
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    real_cpuid(leaf, sub, r);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    mask(leaf, sub, r);
    g[REG_RAX] = r[0]; g[REG_RBX] = r[1]; g[REG_RCX] = r[2]; g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "cpuid_mask: CPUID faulting is not available here (no cpuid_fault flag?); refusing to run unmasked\n");
        _exit(3);
    }
}
