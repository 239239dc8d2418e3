/* Native CPU kernels for the firing types (B, T, TS families, with or without D and R; S runs before them): one
 * pass over the whole sequence, forward and backward, for float32 and float64; and the streaming step of
 * LIB/SLIB.
 *
 * Compiled on first use by tracetorch/ops/native.py with the system C compiler (-O3 -march=native
 * -ffp-contract=off) and loaded with ctypes; without a compiler the pure-torch kernels of torch_kernel.py run.
 * Reference: the step loop over tracetorch.functional.neuron_step; tests compare outputs (bit for bit),
 * final states and gradients.
 *
 * Layout. A step's elements are O * P * J (C order), the rows of one step n apart (n = O * P * J, or more when a
 * caller runs a range of O on its own thread with pointers offset to it); parameters are arrays of length P: element
 * (o, p, j) uses parameter p. J == 1 covers per-neuron parameters of dense layers (vectors over p), J > 1
 * per-channel parameters of conv layouts and scalars (P == 1): there a parameter is constant over a run of
 * J elements. Work goes in blocks of at most CH elements, time inside: a block's membrane (and in the
 * backward its adjoint and parameter-gradient partial sums) stays in L1 for all T steps.
 *
 * The forward repeats the reference's floating-point operations (m = u + beta * mem as torch's addcmul
 * rounds it; s = m >= thr_e; mem = m + s * (-thr)); -ffp-contract=off keeps the compiler from fusing
 * anything else, so outputs and states are bit-identical to the torch kernels.
 *
 * Surrogates (d spike / d v, v = m - thr_e): 0 sigmoid k s (1 - s), s = sigmoid(k v); 1 atan
 * (k / 2) / (1 + (pi k v / 2)^2); 2 fast sigmoid 1 / (1 + k |v|)^2; 3 triangle max(0, 1 - k |v|).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#define CH 512

/* exp for float32 that the compiler can vectorise (Cephes' expf: range reduction by ln 2 and a degree-5
 * polynomial; relative error about 2e-7 over the clamped range). Used only by the sigmoid surrogate. */
static inline float tt_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

static inline double tt_exp(double x) { return exp(x); }

#define TT_PI 3.14159265358979323846

/* torch's addcmul (the reference's membrane update u + beta * mem) rounds once, as a fused multiply-add,
 * on CPUs with FMA; a * b + c elsewhere. The membrane update here does the same. */
#ifdef __FMA__
#define TT_MADDF(a, b, c) fmaf(a, b, c)
#define TT_MADD(a, b, c) fma(a, b, c)
#else
#define TT_MADDF(a, b, c) ((a) * (b) + (c))
#define TT_MADD(a, b, c) ((a) * (b) + (c))
#endif

/* One streaming step in place: mem <- reset(u + beta * mem), y <- spikes. plan = {O, P, J, beta, thr_e, neg_thr}
 * (the last three are addresses), prepared once per stream, so that a call passes four arguments. */
#define DEFINE_STEP(real, sfx, MADD)                                                                            \
    void tt_lif_step_##sfx(const int64_t *plan, const real *u, real *mem, real *y) {                          \
        const int64_t O = plan[0], P = plan[1], J = plan[2];                                                    \
        const real *beta = (const real *)(intptr_t)plan[3], *thr_e = (const real *)(intptr_t)plan[4];           \
        const real *neg_thr = (const real *)(intptr_t)plan[5];                                                  \
        if (J == 1) {                                                                                           \
            for (int64_t o = 0; o < O; ++o) {                                                                   \
                const real *uo = u + o * P;                                                                     \
                real *mo = mem + o * P, *yo = y + o * P;                                                        \
                for (int64_t p = 0; p < P; ++p) {                                                               \
                    real m = MADD(beta[p], mo[p], uo[p]);                                                       \
                    real s = m >= thr_e[p] ? (real)1 : (real)0;                                                 \
                    yo[p] = s;                                                                                  \
                    mo[p] = m + s * neg_thr[p];                                                                 \
                }                                                                                               \
            }                                                                                                   \
        } else {                                                                                                \
            for (int64_t op = 0; op < O * P; ++op) {                                                            \
                const int64_t p = op % P;                                                                       \
                const real b = beta[p], te = thr_e[p], nt = neg_thr[p];                                         \
                const real *uo = u + op * J;                                                                    \
                real *mo = mem + op * J, *yo = y + op * J;                                                      \
                for (int64_t j = 0; j < J; ++j) {                                                               \
                    real m = MADD(b, mo[j], uo[j]);                                                             \
                    real s = m >= te ? (real)1 : (real)0;                                                       \
                    yo[j] = s;                                                                                  \
                    mo[j] = m + s * nt;                                                                         \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
    }

DEFINE_STEP(float, f32, TT_MADDF)
DEFINE_STEP(double, f64, TT_MADD)

/* The whole-sequence kernels of the firing types (native_fire.inc), one dtype and variant per build: the loader
 * compiles this file again with -DTT_NAME=<variant> (b: LIB, SLIB; br: RLIB, SRLIB; t: LIT, SLIT; tr: RLIT, SRLIT;
 * ts: LITS, SLITS; tsr: RLITS, SRLITS; the same with a leading d for the D types), -DTT_DUAL/-DTT_TERN/-DTT_TS/
 * -DTT_REC = 0 or 1 and -DTT_F64 for float64, the first time a layer of that kind runs: one such build takes a few
 * seconds, all of them at once several times longer. Without TT_NAME the library holds the streaming step and the
 * helpers only. */
#ifdef TT_NAME
#ifdef TT_F64
#define REAL double
#define SFX f64
#define MADD TT_MADD
#define EXPF tt_exp
#else
#define REAL float
#define SFX f32
#define MADD TT_MADDF
#define EXPF tt_expf
#endif
#define DUAL TT_DUAL
#define TERN TT_TERN
#define TS TT_TS
#define REC TT_REC
#define NAME TT_NAME
#include "native_fire.inc"
#endif

/* The trace op's kernels (ops/trace/native_trace.inc: the LI membranes and the synaptic traces), one variant per
 * build: -DTT_TNAME=<variant> (li, lie, dli, dlie: plain or EMA, single or dual) with -DTT_DUAL/-DTT_EMA. */
#ifdef TT_TNAME
#ifdef TT_F64
#define REAL double
#define SFX f64
#define MADD TT_MADD
#else
#define REAL float
#define SFX f32
#define MADD TT_MADDF
#endif
#define DUAL TT_DUAL
#define EMA TT_EMA
#define TNAME TT_TNAME
#include "native_trace.inc"
#endif

/* Ask for transparent huge pages on the 2 MiB-aligned part of a fresh buffer (before its first touch):
 * large buffers come straight from mmap, and faulting them in 4 KiB at a time costs more than the kernels
 * themselves (a [500, 16, 4096] float32 tensor is 32,000 faults). Advice only: errors are ignored, and
 * where huge pages are off or "always" it changes nothing. */
void tt_advise_huge(void *p, int64_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), b = ((uintptr_t)p + (uintptr_t)nbytes) & ~(huge - 1);
    if (b > a) (void)madvise((void *)a, (size_t)(b - a), MADV_HUGEPAGE);
#else
    (void)p;
    (void)nbytes;
#endif
}

/* A version number the loader checks, so a stale cached library is never used with newer Python code. */
int tt_native_abi(void) { return 5; }
