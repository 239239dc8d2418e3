/* Native CPU kernels for the binary firing core (LIB and, after its synaptic stage, SLIB): one pass over
 * the whole sequence, forward and backward, for float32 and float64.
 *
 * Compiled on first use by tracetorch/ops/native.py with the system C compiler (-O3 -march=native
 * -ffp-contract=off) and loaded with ctypes; without a compiler the pure-torch kernels in snn/fused.py run.
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

#define DEFINE_KERNELS(real, sfx, EXP, MADD)                                                                          \
    static inline __attribute__((always_inline)) real surrogate_##sfx(real v, real k, int kind) {              \
        if (kind == 0) {                                                                                        \
            real s = (real)1 / ((real)1 + EXP(-(k * v)));                                                       \
            return k * s * ((real)1 - s);                                                                       \
        }                                                                                                       \
        if (kind == 1) {                                                                                        \
            real z = (real)(TT_PI / 2) * k * v;                                                                 \
            return (k / (real)2) / ((real)1 + z * z);                                                           \
        }                                                                                                       \
        if (kind == 2) {                                                                                        \
            real z = (real)1 + k * (v < 0 ? -v : v);                                                            \
            return (real)1 / (z * z);                                                                           \
        }                                                                                                       \
        real z = (real)1 - k * (v < 0 ? -v : v);                                                                \
        return z > 0 ? z : (real)0;                                                                             \
    }                                                                                                           \
                                                                                                                \
    /* Forward over one block: elements [off, off + len) of every step; parameters at beta[0..] etc.,      \
     * indexed by k when vec, else constant. M (pre-reset membranes) may be NULL. memT may alias mem0. */       \
    static inline __attribute__((always_inline)) void fwd_block_##sfx(                                         \
        int64_t T, int64_t n, int64_t off, int64_t len, const real *u, const real *mem0, const real *beta,     \
        const real *thr_e, const real *neg_thr, real *Y, real *M, real *memT, const int vec) {                 \
        real mem[CH];                                                                                           \
        memcpy(mem, mem0 + off, (size_t)len * sizeof(real));                                                    \
        for (int64_t t = 0; t < T; ++t) {                                                                       \
            const real *ut = u + t * n + off;                                                                   \
            real *yt = Y + t * n + off;                                                                         \
            if (M) {                                                                                            \
                real *mt = M + t * n + off;                                                                     \
                for (int64_t k = 0; k < len; ++k) {                                                             \
                    real b = vec ? beta[k] : beta[0], te = vec ? thr_e[k] : thr_e[0];                           \
                    real nt = vec ? neg_thr[k] : neg_thr[0];                                                    \
                    real m = MADD(b, mem[k], ut[k]);                                                                  \
                    real s = m >= te ? (real)1 : (real)0;                                                       \
                    yt[k] = s;                                                                                  \
                    mt[k] = m;                                                                                  \
                    mem[k] = m + s * nt;                                                                        \
                }                                                                                               \
            } else {                                                                                            \
                for (int64_t k = 0; k < len; ++k) {                                                             \
                    real b = vec ? beta[k] : beta[0], te = vec ? thr_e[k] : thr_e[0];                           \
                    real nt = vec ? neg_thr[k] : neg_thr[0];                                                    \
                    real m = MADD(b, mem[k], ut[k]);                                                                  \
                    real s = m >= te ? (real)1 : (real)0;                                                       \
                    yt[k] = s;                                                                                  \
                    mem[k] = m + s * nt;                                                                        \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        memcpy(memT + off, mem, (size_t)len * sizeof(real));                                                    \
    }                                                                                                           \
                                                                                                                \
    void tt_lif_fwd_##sfx(int64_t T, int64_t O, int64_t P, int64_t J, int64_t n, const real *u,                \
                          const real *mem0,                                                                     \
                          const real *beta, const real *thr_e, const real *neg_thr, real *Y, real *M,           \
                          real *memT) {                                                                         \
        for (int64_t o = 0; o < O; ++o) {                                                                       \
            if (J == 1) {                                                                                       \
                for (int64_t p0 = 0; p0 < P; p0 += CH) {                                                        \
                    int64_t len = P - p0 < CH ? P - p0 : CH;                                                    \
                    fwd_block_##sfx(T, n, o * P + p0, len, u, mem0, beta + p0, thr_e + p0, neg_thr + p0, Y, M,  \
                                    memT, 1);                                                                   \
                }                                                                                               \
            } else {                                                                                            \
                for (int64_t p = 0; p < P; ++p)                                                                 \
                    for (int64_t j0 = 0; j0 < J; j0 += CH) {                                                    \
                        int64_t len = J - j0 < CH ? J - j0 : CH;                                                \
                        fwd_block_##sfx(T, n, (o * P + p) * J + j0, len, u, mem0, beta + p, thr_e + p,          \
                                        neg_thr + p, Y, M, memT, 0);                                            \
                    }                                                                                           \
            }                                                                                                   \
        }                                                                                                       \
    }                                                                                                           \
                                                                                                                \
    /* Backward over one block, in reverse time. gmemT (adjoint of the final membrane) may be NULL (zero);  \
     * the accumulators (length P, added to) may be NULL when not wanted. */                                    \
    static inline __attribute__((always_inline)) void bwd_block_##sfx(                                         \
        int64_t T, int64_t n, int64_t off, int64_t len, const real *gY, const real *M,                         \
        const real *mem0, const real *beta, const real *thr_e, const real *neg_thr, real slope, const int kind, \
        real reset_on, const real *gmemT, real *gU, real *gmem0, real *acc_beta, real *acc_v, real *acc_r,     \
        const int vec) {                                                                                        \
        real G[CH], ab[CH], av[CH], ar[CH];                                                                     \
        for (int64_t k = 0; k < len; ++k) {                                                                     \
            G[k] = gmemT ? gmemT[off + k] : (real)0;                                                            \
            ab[k] = av[k] = ar[k] = 0;                                                                          \
        }                                                                                                       \
        for (int64_t t = T - 1; t >= 0; --t) {                                                                  \
            const real *mt = M + t * n + off, *gyt = gY + t * n + off;                                         \
            const real *mp = t > 0 ? M + (t - 1) * n + off : mem0 + off;                                        \
            const real has_prev = t > 0 ? (real)1 : (real)0; /* no reset before the first step */               \
            real *gut = gU ? gU + t * n + off : 0; /* NULL: the drive needs no gradient */                    \
            for (int64_t k = 0; k < len; ++k) {                                                                 \
                real b = vec ? beta[k] : beta[0], te = vec ? thr_e[k] : thr_e[0];                               \
                real nt = vec ? neg_thr[k] : neg_thr[0];                                                        \
                real g = G[k];                                                                                  \
                real gs = gyt[k] + reset_on * (g * nt); /* reset_on 0: detached reset */                        \
                real sg = gs * surrogate_##sfx(mt[k] - te, slope, kind);                                        \
                real gm = g + sg;                                                                               \
                if (gut) gut[k] = gm;                                                                           \
                av[k] += sg;                                                                                    \
                /* the spikes, recomputed from the saved membrane exactly as the forward fired them */         \
                real s = mt[k] >= te ? (real)1 : (real)0;                                                       \
                real s_prev = mp[k] >= te ? has_prev : (real)0;                                                 \
                ar[k] += s * g;                                                                                 \
                /* the membrane after step t-1's reset (mem0 at t = 0) */                                       \
                real prev = mp[k] + s_prev * nt;                                                                \
                ab[k] += gm * prev;                                                                             \
                G[k] = b * gm;                                                                                  \
            }                                                                                                   \
        }                                                                                                       \
        for (int64_t k = 0; k < len; ++k) gmem0[off + k] = G[k];                                                \
        if (vec) {                                                                                              \
            for (int64_t k = 0; k < len; ++k) {                                                                 \
                if (acc_beta) acc_beta[k] += ab[k];                                                             \
                if (acc_v) acc_v[k] += av[k];                                                                   \
                if (acc_r) acc_r[k] += ar[k];                                                                   \
            }                                                                                                   \
        } else {                                                                                                \
            real sb = 0, sv = 0, sr = 0;                                                                        \
            for (int64_t k = 0; k < len; ++k) {                                                                 \
                sb += ab[k];                                                                                    \
                sv += av[k];                                                                                    \
                sr += ar[k];                                                                                    \
            }                                                                                                   \
            if (acc_beta) acc_beta[0] += sb;                                                                    \
            if (acc_v) acc_v[0] += sv;                                                                          \
            if (acc_r) acc_r[0] += sr;                                                                          \
        }                                                                                                       \
    }                                                                                                           \
                                                                                                                \
    static inline __attribute__((always_inline)) void bwd_all_##sfx(                                           \
        int64_t T, int64_t O, int64_t P, int64_t J, int64_t n, const real *gY, const real *M,                  \
        const real *mem0, const real *beta, const real *thr_e, const real *neg_thr, real k_, const int kind,    \
        real reset_on, const real *gmemT, real *gU, real *gmem0, real *acc_beta, real *acc_v, real *acc_r) {   \
        for (int64_t o = 0; o < O; ++o) {                                                                       \
            if (J == 1) {                                                                                       \
                for (int64_t p0 = 0; p0 < P; p0 += CH) {                                                        \
                    int64_t len = P - p0 < CH ? P - p0 : CH;                                                    \
                    bwd_block_##sfx(T, n, o * P + p0, len, gY, M, mem0, beta + p0, thr_e + p0, neg_thr + p0, \
                                    k_, kind, reset_on, gmemT, gU, gmem0, acc_beta ? acc_beta + p0 : 0,         \
                                    acc_v ? acc_v + p0 : 0, acc_r ? acc_r + p0 : 0, 1);                         \
                }                                                                                               \
            } else {                                                                                            \
                for (int64_t p = 0; p < P; ++p)                                                                 \
                    for (int64_t j0 = 0; j0 < J; j0 += CH) {                                                    \
                        int64_t len = J - j0 < CH ? J - j0 : CH;                                                \
                        bwd_block_##sfx(T, n, (o * P + p) * J + j0, len, gY, M, mem0, beta + p, thr_e + p,   \
                                        neg_thr + p, k_, kind, reset_on, gmemT, gU, gmem0,                      \
                                        acc_beta ? acc_beta + p : 0, acc_v ? acc_v + p : 0,                     \
                                        acc_r ? acc_r + p : 0, 0);                                              \
                    }                                                                                           \
            }                                                                                                   \
        }                                                                                                       \
    }                                                                                                           \
                                                                                                                \
    /* kind (the surrogate) is dispatched here so that each inner loop is compiled for one constant kind. */   \
    void tt_lif_bwd_##sfx(int64_t T, int64_t O, int64_t P, int64_t J, int64_t n, const real *gY,               \
                          const real *M, const real *mem0, const real *beta, const real *thr_e,                 \
                          const real *neg_thr, double slope, int kind, int detach_reset, const real *gmemT,     \
                          real *gU, real *gmem0, real *acc_beta, real *acc_v, real *acc_r) {                    \
        real r = detach_reset ? (real)0 : (real)1;                                                              \
        switch (kind) {                                                                                         \
        case 0:                                                                                                 \
            bwd_all_##sfx(T, O, P, J, n, gY, M, mem0, beta, thr_e, neg_thr, (real)slope, 0, r, gmemT, gU,       \
                          gmem0, acc_beta, acc_v, acc_r);                                                       \
            break;                                                                                              \
        case 1:                                                                                                 \
            bwd_all_##sfx(T, O, P, J, n, gY, M, mem0, beta, thr_e, neg_thr, (real)slope, 1, r, gmemT, gU,       \
                          gmem0, acc_beta, acc_v, acc_r);                                                       \
            break;                                                                                              \
        case 2:                                                                                                 \
            bwd_all_##sfx(T, O, P, J, n, gY, M, mem0, beta, thr_e, neg_thr, (real)slope, 2, r, gmemT, gU,       \
                          gmem0, acc_beta, acc_v, acc_r);                                                       \
            break;                                                                                              \
        default:                                                                                                \
            bwd_all_##sfx(T, O, P, J, n, gY, M, mem0, beta, thr_e, neg_thr, (real)slope, 3, r, gmemT, gU,       \
                          gmem0, acc_beta, acc_v, acc_r);                                                       \
        }                                                                                                       \
    }

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

DEFINE_KERNELS(float, f32, tt_expf, TT_MADDF)
DEFINE_KERNELS(double, f64, tt_exp, TT_MADD)

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
int tt_native_abi(void) { return 3; }
