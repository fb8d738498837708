/*
 * rtp2ws._native, resampler part: the C twin of the 8 -> 16 kHz interpolator
 * core in rtp2ws.codec.resample.
 *
 *   upsample2x(phases, frac_bits, history, samples) -> (bytearray, bytes)
 *   simd_levels(), get_simd(), set_simd(name): which upsample2x kernel runs
 *
 * Bit-identical to the numpy code there; the same tests run against both.
 * Samples and taps are passed as raw buffers in native byte order (numpy
 * arrays or bytes); see rtp2ws/_native.pyi.  No external libraries.
 */
#include "native.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- 2x polyphase interpolator ---------------------------------------- */

/*
 * y[2j + p] = sum_k phases[p][k] * buf[j + K - 1 - k] for every j with a full
 * window (buf = history + samples), rounded half up and saturated.  With the
 * taps reversed, r[t] = phases[p][K - 1 - t], that is the forward dot product
 * sum_t r[t] * buf[j + t] over the window that starts at buf + j.
 *
 * The taps are turned once into a plan, cached because the Python side
 * passes the same PHASES on every call.  A scalar and two vector kernels
 * evaluate it, all to the same bits, all but one through the same trick:
 *
 * The split.  Each tap is split as r = hi * 2**SPLIT_BITS + lo with lo in
 * [-1024, 1024) and hi an int16, so that products of int16 samples and taps
 * are int16 x int16 -> int32, which every SIMD ISA multiplies and adds
 * fastest (pmaddwd: two products and their sum per int32 lane).  Then
 *     H = sum hi * x,  L = round + sum lo * x   (each in int32)
 *     y = floor((H + floor(L / 2**SPLIT_BITS)) / 2**(frac_bits - SPLIT_BITS))
 * which equals floor((round + sum r * x) / 2**frac_bits), the int64 result,
 * by floor(floor(a / m) / n) == floor(a / (m * n)).  The plan allows the
 * split only where it is exact: every hi fits int16 (and is not -32768, the
 * one pmaddwd overflow), frac_bits >= SPLIT_BITS, and no partial sum can
 * leave int32, i.e. 32768 * sum |hi| + 2**(31 - SPLIT_BITS) and
 * round + 32768 * sum |lo| are below 2**31.  For the Q24 taps these are
 * about 2**29.3 and 2**23 + 2**30.3.
 *
 * Vector kernels (AVX2, AVX-512), split taps only: 8 / 16 consecutive outputs
 * per register.  The window is laid out as int16 pairs (buf[k], buf[k + 1])
 * so that lane l of a load at k holds the two samples that taps r[t],
 * r[t + 1] of output k - t + l multiply: one pmaddwd covers two taps of 8 or
 * 16 outputs.  (Measured on Zen 4 this is about 1.5x faster than computing
 * in doubles with FMA, which would be exact too: it loads a quarter of the
 * bytes and needs no conversions.)
 *
 * Scalar kernel (portable C).  With split taps it is a dot product of int16
 * samples and int16 taps per output, into int32: the idiom compilers
 * vectorize on the baseline ISA (pmaddwd on any x86-64, NEON on arm64).
 * Otherwise, for any taps, int64 with the terms folded: zero taps dropped
 * (the half-band phase 0 is one term, the pure delay), and equal taps at
 * mirrored positions of a phase's non-zero span added first,
 * r * buf[a] + r * buf[b] == r * (buf[a] + buf[b]), so the symmetric phase 1
 * needs 20 multiplies for its 40 taps.  Folding only regroups an integer sum,
 * so it is right for any taps; taps without a mirror twin stay single terms.
 *
 * The module is compiled for the baseline ISA; only the vector kernels are
 * compiled for AVX2/AVX-512 (function target attributes) and the widest one
 * the CPU supports is chosen at import.  RTP2WS_NATIVE_SIMD=scalar|avx2|avx512
 * caps that choice, and set_simd() changes it at run time (tests, benchmarks).
 *
 * Input is not copied whole: kernels read windows of up to CHUNK outputs that
 * are copied from history/samples into a small scratch buffer (plus the pair
 * layout for the vector kernels), which stays in L1.
 */

/* GCC 8 and clang 8 know every target and intrinsic used here.  Building
 * with -DRTP2WS_NO_X86_KERNELS gives what other architectures get. */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(RTP2WS_NO_X86_KERNELS) \
    && ((defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && __GNUC__ >= 8))
#define HAVE_X86_KERNELS 1
#include <immintrin.h>
#else
#define HAVE_X86_KERNELS 0
#endif

enum { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512, SIMD_COUNT };
static const char *const simd_names[SIMD_COUNT] = {"scalar", "avx2", "avx512"};
static int simd_supported = SIMD_SCALAR;  /* widest kernel this CPU can run */
static int simd_level = SIMD_SCALAR;      /* kernel in use, <= simd_supported */

#define SPLIT_BITS 11
/* Outputs per window fill: about 3 KB of scratch for K = 40. */
#define CHUNK 512
/* Largest K whose scratch fits on the stack; larger K use the heap. */
#define STACK_K 256
/* Largest kernel block (the granularity of n), in outputs. */
#define MAX_BLOCK 16
/* Below this many outputs (about 150 us of work) the GIL is kept: handing it
 * over costs two context switches, and the decoder thread then waits for the
 * event-loop thread to give it back (up to the 5 ms switch interval when that
 * thread is busy), which at full speed cost more than the second of audio a
 * call filters.  Only long one-shot conversions let the other thread run. */
#define GIL_RELEASE_MIN (1 << 18)

typedef struct {
    Py_ssize_t a, b;  /* window offsets (b unused for a single term) */
    int64_t tap;
} term_t;

typedef struct {
    Py_ssize_t offset;  /* pair window offset: taps r[offset], r[offset + 1] */
    int32_t hi, lo;     /* the two taps' split halves, as packed int16 pairs */
} split_term_t;

typedef struct {
    term_t *pairs;        /* scalar, int64: tap * (w[a] + w[b]) */
    term_t *singles;      /* scalar, int64: tap * w[a] */
    split_term_t *split;  /* vector kernels */
    int16_t *dot_hi, *dot_lo;  /* scalar, split: the taps of the span, split */
    Py_ssize_t n_pairs, n_singles, n_split, dot_start, dot_len;
} phase_plan_t;

typedef struct {
    Py_ssize_t K;
    int frac_bits;
    int split_exact;  /* the vector kernels are exact for these taps */
    int refs;         /* holders: the cache and calls in flight; GIL-protected */
    int32_t *phases;  /* copy of the taps, to recognise them next time */
    phase_plan_t ph[2];
} plan_t;

/* floor(acc / 2**shift) without relying on >> of a negative number. */
static inline int64_t
floor_shift(int64_t acc, int shift)
{
    return acc >= 0 ? (acc >> shift) : ~((~acc) >> shift);
}

static inline int16_t
saturate16(int64_t v)
{
    if (v > 32767)
        return 32767;
    if (v < -32768)
        return -32768;
    return (int16_t)v;
}

static inline uint64_t
abs64(int64_t v)
{
    return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
}

static inline int32_t
pack16(int64_t first, int64_t second)
{
    return (int32_t)((uint32_t)(uint16_t)first | (uint32_t)(uint16_t)second << 16);
}

/* phases: 2*K int32 taps, possibly unaligned (any bytes-like object). */
static plan_t *
make_plan(const void *phases, Py_ssize_t K, int frac_bits)
{
    /* One allocation: the plan, per phase K pair, K single and K split
     * slots (enough: every tap is in at most one of each kind), the taps,
     * per phase K split taps for the scalar dot product. */
    size_t size = sizeof(plan_t) + (size_t)(4 * K) * sizeof(term_t)
                  + (size_t)(2 * K) * sizeof(split_term_t) + (size_t)(2 * K) * sizeof(int32_t)
                  + (size_t)(4 * K) * sizeof(int16_t);
    plan_t *pl = PyMem_Malloc(size);
    if (pl == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    term_t *terms = (term_t *)(pl + 1);
    split_term_t *split = (split_term_t *)(terms + 4 * K);
    pl->phases = (int32_t *)(split + 2 * K);
    int16_t *dot = (int16_t *)(pl->phases + 2 * K);
    memcpy(pl->phases, phases, (size_t)(2 * K) * sizeof(int32_t));
    pl->K = K;
    pl->frac_bits = frac_bits;
    pl->refs = 1;
    pl->split_exact = frac_bits >= SPLIT_BITS;

    const uint64_t int32_limit = ((uint64_t)1 << 31) - 1;
    const uint64_t round = (uint64_t)1 << (frac_bits - 1);
    for (int p = 0; p < 2; p++) {
        const int32_t *taps = pl->phases + p * K;  /* the aligned copy */
        phase_plan_t *ph = &pl->ph[p];
        ph->pairs = terms + 2 * p * K;
        ph->singles = ph->pairs + K;
        ph->split = split + p * K;
        ph->dot_hi = dot + 2 * p * K;
        ph->dot_lo = ph->dot_hi + K;
        ph->n_pairs = ph->n_singles = ph->n_split = 0;

        /* Non-zero span [lo, hi) of the reversed taps. */
        Py_ssize_t lo = K, hi = 0;
        for (Py_ssize_t t = 0; t < K; t++) {
            if (taps[K - 1 - t] != 0) {
                if (t < lo)
                    lo = t;
                hi = t + 1;
            }
        }

        /* Scalar terms: fold mirror twins. */
        for (Py_ssize_t t = lo; t < hi; t++) {
            int32_t r = taps[K - 1 - t];
            Py_ssize_t m = lo + hi - 1 - t;  /* mirror of t within the span */
            int twin = m != t && taps[K - 1 - m] == r;
            if (r == 0 || (twin && m < t))
                continue;  /* adds nothing, or already folded in at m */
            term_t *term = twin ? &ph->pairs[ph->n_pairs++] : &ph->singles[ph->n_singles++];
            term->a = t;
            term->b = twin ? m : t;
            term->tap = r;
        }

        /* Vector terms: taps two by two from the start of the span (a tap
         * past the end of the phase counts as zero), skipping all-zero
         * pairs; and the int32 bounds.  Sums stop growing once past the
         * limit, so they cannot overflow. */
        uint64_t sum_hi = 0, sum_lo = 0;
        for (Py_ssize_t t = lo; t < hi; t += 2) {
            int64_t r0 = taps[K - 1 - t], r1 = t + 1 < K ? taps[K - 2 - t] : 0;
            int64_t h0 = floor_shift(r0 + (1 << (SPLIT_BITS - 1)), SPLIT_BITS);
            int64_t h1 = floor_shift(r1 + (1 << (SPLIT_BITS - 1)), SPLIT_BITS);
            int64_t l0 = r0 - h0 * (1 << SPLIT_BITS), l1 = r1 - h1 * (1 << SPLIT_BITS);
            if (h0 < -32767 || h0 > 32767 || h1 < -32767 || h1 > 32767)
                pl->split_exact = 0;
            if (sum_hi <= int32_limit)
                sum_hi += abs64(h0) + abs64(h1);
            if (sum_lo <= int32_limit)
                sum_lo += abs64(l0) + abs64(l1);
            ph->dot_hi[t - lo] = (int16_t)h0;
            ph->dot_lo[t - lo] = (int16_t)l0;
            if (t + 1 < hi) {
                ph->dot_hi[t + 1 - lo] = (int16_t)h1;
                ph->dot_lo[t + 1 - lo] = (int16_t)l1;
            }
            if (r0 == 0 && r1 == 0)
                continue;
            split_term_t *term = &ph->split[ph->n_split++];
            term->offset = t;
            term->hi = pack16(h0, h1);
            term->lo = pack16(l0, l1);
        }
        ph->dot_start = lo;
        ph->dot_len = hi > lo ? hi - lo : 0;
        if (sum_hi * 32768 + ((uint64_t)1 << (31 - SPLIT_BITS)) > int32_limit
            || round + sum_lo * 32768 > int32_limit)
            pl->split_exact = 0;
    }
    return pl;
}

/* The last PLAN_CACHE plans made stay cached (the 2x filter; the 3x and 6x
 * interpolators of rtp2ws.codec.resample.Upsampler run their phases through
 * this core two at a time, so two or three plans take turns).  Plans are
 * reference counted (always with the GIL held) because a call filtering
 * without the GIL may still be using a plan that another thread's call
 * evicts from the cache. */
#define PLAN_CACHE 4
static plan_t *cached_plans[PLAN_CACHE];
static int next_evicted = 0;

static void
release_plan(plan_t *pl)
{
    if (--pl->refs == 0)
        PyMem_Free(pl);
}

static plan_t *
acquire_plan(const void *phases, Py_ssize_t K, int frac_bits)
{
    for (int i = 0; i < PLAN_CACHE; i++) {
        plan_t *pl = cached_plans[i];
        if (pl != NULL && pl->K == K && pl->frac_bits == frac_bits
            && memcmp(pl->phases, phases, (size_t)(2 * K) * sizeof(int32_t)) == 0) {
            pl->refs++;
            return pl;
        }
    }
    plan_t *pl = make_plan(phases, K, frac_bits);
    if (pl == NULL)
        return NULL;
    int slot = next_evicted;
    next_evicted = (next_evicted + 1) % PLAN_CACHE;
    if (cached_plans[slot] != NULL)
        release_plan(cached_plans[slot]);
    cached_plans[slot] = pl;
    pl->refs++;  /* one for the cache, one for the caller */
    return pl;
}

/* buf = history + samples, read in place (with memcpy: the buffers may come
 * from any bytes-like object, aligned or not). */
typedef struct {
    const char *hist, *in;
    Py_ssize_t n_hist, total;
} source_t;

/* dst[0 .. count) = buf[start .. start + count), zeros past the end of buf. */
static void
copy_samples(int16_t *dst, const source_t *s, Py_ssize_t start, Py_ssize_t count)
{
    const size_t size = sizeof(int16_t);
    if (count > 0 && start < s->n_hist) {
        Py_ssize_t len = s->n_hist - start < count ? s->n_hist - start : count;
        memcpy(dst, s->hist + (size_t)start * size, (size_t)len * size);
        dst += len;
        start += len;
        count -= len;
    }
    if (count > 0 && start < s->total) {
        Py_ssize_t len = s->total - start < count ? s->total - start : count;
        memcpy(dst, s->in + (size_t)(start - s->n_hist) * size, (size_t)len * size);
        dst += len;
        count -= len;
    }
    if (count > 0)
        memset(dst, 0, (size_t)count * size);
}

/*
 * A kernel computes the output pairs for window positions 0 .. n - 1 (n a
 * multiple of its block), y[2j], y[2j + 1] into dst[2j], dst[2j + 1], from a
 * window of n + K samples: int16 for the scalar kernel, int16 pairs
 * (packed in an int32, see make_pairs) for the vector ones.
 */
typedef void (*kernel_fn)(const plan_t *pl, const void *window, Py_ssize_t n, int16_t *dst);

/* Scalar, split taps: per output and phase, two int16 dot products over the
 * non-zero span (the int16 values are only meaningful when split_exact). */
static void
kernel_scalar_split(const plan_t *pl, const int16_t *w, Py_ssize_t n, int16_t *dst)
{
    const int f = pl->frac_bits;
    for (Py_ssize_t j = 0; j < n; j++) {
        for (int p = 0; p < 2; p++) {
            const phase_plan_t *ph = &pl->ph[p];
            const int16_t *x = w + j + ph->dot_start, *th = ph->dot_hi, *tl = ph->dot_lo;
            int32_t h = 0, l = (int32_t)1 << (f - 1);
            for (Py_ssize_t t = 0; t < ph->dot_len; t++) {
                h += th[t] * x[t];
                l += tl[t] * x[t];
            }
            int64_t y = (int64_t)h + floor_shift(l, SPLIT_BITS);
            dst[2 * j + p] = saturate16(floor_shift(y, f - SPLIT_BITS));
        }
    }
}

/* Scalar, any taps: int64, folded terms, in blocks of outputs with the term
 * loop outside so that the accumulators stay in registers. */
#define SCALAR_BLOCK 4

static void
kernel_scalar_int64(const plan_t *pl, const int16_t *w, Py_ssize_t n, int16_t *dst)
{
    const int f = pl->frac_bits;
    for (Py_ssize_t j = 0; j < n; j += SCALAR_BLOCK) {
        const int16_t *x = w + j;
        for (int p = 0; p < 2; p++) {
            const phase_plan_t *ph = &pl->ph[p];
            int64_t acc[SCALAR_BLOCK];
            for (int i = 0; i < SCALAR_BLOCK; i++)
                acc[i] = (int64_t)1 << (f - 1);
            for (Py_ssize_t t = 0; t < ph->n_pairs; t++) {
                const int16_t *u = x + ph->pairs[t].a, *v = x + ph->pairs[t].b;
                const int64_t tap = ph->pairs[t].tap;
                for (int i = 0; i < SCALAR_BLOCK; i++)
                    acc[i] += tap * (u[i] + v[i]);  /* int16 + int16 is exact in int */
            }
            for (Py_ssize_t t = 0; t < ph->n_singles; t++) {
                const int16_t *u = x + ph->singles[t].a;
                const int64_t tap = ph->singles[t].tap;
                for (int i = 0; i < SCALAR_BLOCK; i++)
                    acc[i] += tap * u[i];
            }
            for (int i = 0; i < SCALAR_BLOCK; i++)
                dst[2 * (j + i) + p] = saturate16(floor_shift(acc[i], f));
        }
    }
}

static void
kernel_scalar(const plan_t *pl, const void *window, Py_ssize_t n, int16_t *dst)
{
    if (pl->split_exact)
        kernel_scalar_split(pl, (const int16_t *)window, n, dst);
    else
        kernel_scalar_int64(pl, (const int16_t *)window, n, dst);
}

/* Pair layout for the vector kernels: pairs[k] holds buf[k] in its low and
 * buf[k + 1] in its high 16 bits, so a vector load at k gives lane l the two
 * samples that taps r[t], r[t + 1] of output k - t + l multiply. */
static void
make_pairs(int32_t *pairs, const int16_t *x, Py_ssize_t count)
{
    for (Py_ssize_t k = 0; k < count; k++)
        pairs[k] = pack16(x[k], x[k + 1]);
}

#if HAVE_X86_KERNELS
/*
 * A step computes R registers of consecutive outputs per phase: R = 3 or 4
 * in the main loop, so that 6 or 8 independent hi/lo accumulator chains hide
 * the latency, and R = 1 for what is left, so that a 20 ms chunk wastes no
 * work.  A term's pair load serves both halves of the split.  The result per
 * phase is the int32 y before saturation; the two phases are interleaved and
 * packed to int16 with signed saturation, which is saturate16.  Unpack and
 * pack work within 128-bit lanes, which keeps the order: lane 0 gives
 * e0 o0 .. e3 o3, lane 1 e4 o4 .. e7 o7, and so on.
 */
#define AVX2_BLOCK 8
#define AVX2_STEP 3  /* registers per main step: 4 would spill (16 ymm) */

__attribute__((target("avx2"), always_inline)) static inline void
step_avx2(const plan_t *pl, const int32_t *x, int16_t *dst, const int R)
{
    const __m256i round = _mm256_set1_epi32(1 << (pl->frac_bits - 1));
    const __m128i split = _mm_cvtsi32_si128(SPLIT_BITS);
    const __m128i rest = _mm_cvtsi32_si128(pl->frac_bits - SPLIT_BITS);
    __m256i y[2][4];
    for (int p = 0; p < 2; p++) {
        const phase_plan_t *ph = &pl->ph[p];
        __m256i h[4], l[4];
        for (int r = 0; r < R; r++) {
            h[r] = _mm256_setzero_si256();
            l[r] = round;
        }
        for (Py_ssize_t t = 0; t < ph->n_split; t++) {
            const int32_t *u = x + ph->split[t].offset;
            const __m256i th = _mm256_set1_epi32(ph->split[t].hi);
            const __m256i tl = _mm256_set1_epi32(ph->split[t].lo);
            for (int r = 0; r < R; r++) {
                __m256i d = _mm256_loadu_si256((const __m256i *)(u + 8 * r));
                h[r] = _mm256_add_epi32(h[r], _mm256_madd_epi16(d, th));
                l[r] = _mm256_add_epi32(l[r], _mm256_madd_epi16(d, tl));
            }
        }
        for (int r = 0; r < R; r++)
            y[p][r] = _mm256_sra_epi32(_mm256_add_epi32(h[r], _mm256_sra_epi32(l[r], split)), rest);
    }
    for (int r = 0; r < R; r++) {
        __m256i lo = _mm256_unpacklo_epi32(y[0][r], y[1][r]);
        __m256i hi = _mm256_unpackhi_epi32(y[0][r], y[1][r]);
        _mm256_storeu_si256((__m256i *)(dst + 16 * r), _mm256_packs_epi32(lo, hi));
    }
}

__attribute__((target("avx2"))) static void
kernel_avx2(const plan_t *pl, const void *window, Py_ssize_t n, int16_t *dst)
{
    const int32_t *w = (const int32_t *)window;
    Py_ssize_t j = 0;
    for (; j + AVX2_STEP * AVX2_BLOCK <= n; j += AVX2_STEP * AVX2_BLOCK)
        step_avx2(pl, w + j, dst + 2 * j, AVX2_STEP);
    for (; j < n; j += AVX2_BLOCK)
        step_avx2(pl, w + j, dst + 2 * j, 1);
}

/* The same with 16 outputs per register, and VNNI's vpdpwssd doing the
 * multiply-add and the accumulation in one instruction. */
#define AVX512_BLOCK 16
#define AVX512_STEP 4

__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void
step_avx512(const plan_t *pl, const int32_t *x, int16_t *dst, const int R)
{
    const __m512i round = _mm512_set1_epi32(1 << (pl->frac_bits - 1));
    const __m128i split = _mm_cvtsi32_si128(SPLIT_BITS);
    const __m128i rest = _mm_cvtsi32_si128(pl->frac_bits - SPLIT_BITS);
    __m512i y[2][4];
    for (int p = 0; p < 2; p++) {
        const phase_plan_t *ph = &pl->ph[p];
        __m512i h[4], l[4];
        for (int r = 0; r < R; r++) {
            h[r] = _mm512_setzero_si512();
            l[r] = round;
        }
        for (Py_ssize_t t = 0; t < ph->n_split; t++) {
            const int32_t *u = x + ph->split[t].offset;
            const __m512i th = _mm512_set1_epi32(ph->split[t].hi);
            const __m512i tl = _mm512_set1_epi32(ph->split[t].lo);
            for (int r = 0; r < R; r++) {
                __m512i d = _mm512_loadu_si512(u + 16 * r);
                h[r] = _mm512_dpwssd_epi32(h[r], d, th);
                l[r] = _mm512_dpwssd_epi32(l[r], d, tl);
            }
        }
        for (int r = 0; r < R; r++)
            y[p][r] = _mm512_sra_epi32(_mm512_add_epi32(h[r], _mm512_sra_epi32(l[r], split)), rest);
    }
    for (int r = 0; r < R; r++) {
        __m512i lo = _mm512_unpacklo_epi32(y[0][r], y[1][r]);
        __m512i hi = _mm512_unpackhi_epi32(y[0][r], y[1][r]);
        _mm512_storeu_si512(dst + 32 * r, _mm512_packs_epi32(lo, hi));
    }
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
kernel_avx512(const plan_t *pl, const void *window, Py_ssize_t n, int16_t *dst)
{
    const int32_t *w = (const int32_t *)window;
    Py_ssize_t j = 0;
    for (; j + AVX512_STEP * AVX512_BLOCK <= n; j += AVX512_STEP * AVX512_BLOCK)
        step_avx512(pl, w + j, dst + 2 * j, AVX512_STEP);
    for (; j < n; j += AVX512_BLOCK)
        step_avx512(pl, w + j, dst + 2 * j, 1);
}
#endif /* HAVE_X86_KERNELS */

static const struct {
    kernel_fn fn;
    Py_ssize_t block;  /* outputs per kernel step */
    int pairs;         /* window in the pair layout (else int16) */
} kernels[SIMD_COUNT] = {
    {kernel_scalar, SCALAR_BLOCK, 0},
#if HAVE_X86_KERNELS
    {kernel_avx2, AVX2_BLOCK, 1},
    {kernel_avx512, AVX512_BLOCK, 1},
#else
    {NULL, 1, 0},
    {NULL, 1, 0},
#endif
};

/* Output pairs 0 .. n - 1, a window of up to CHUNK at a time.  A last
 * partial block is computed whole (the window is zero-padded) into a small
 * buffer and only its valid part copied out.  samples and pairs are scratch
 * for CHUNK + K + MAX_BLOCK entries. */
static void
run_kernel(int level, const plan_t *pl, const source_t *s, Py_ssize_t n, int16_t *dst,
           int16_t *samples, int32_t *pairs)
{
    const kernel_fn fn = kernels[level].fn;
    const Py_ssize_t block = kernels[level].block, K = pl->K;
    const int use_pairs = kernels[level].pairs;
    for (Py_ssize_t j0 = 0; j0 < n; j0 += CHUNK) {
        Py_ssize_t count = n - j0 < CHUNK ? n - j0 : CHUNK;
        Py_ssize_t full = count - count % block;
        Py_ssize_t padded = full < count ? full + block : count;
        copy_samples(samples, s, j0, padded + K);
        const void *window = samples;
        size_t elem = sizeof(int16_t);
        if (use_pairs) {
            make_pairs(pairs, samples, padded + K - 1);
            window = pairs;
            elem = sizeof(int32_t);
        }
        if (full > 0)
            fn(pl, window, full, dst + 2 * j0);
        if (full < count) {
            int16_t tail[2 * MAX_BLOCK];
            fn(pl, (const char *)window + (size_t)full * elem, block, tail);
            memcpy(dst + 2 * (j0 + full), tail, (size_t)(count - full) * 2 * sizeof(int16_t));
        }
    }
}

/* The C-level entry (native.h): filter hist (n_hist int16) + x (nx int16) into
 * out, 2 * n_out int16 where n_out = max(0, n_hist + nx - (K - 1)), and the new
 * history into new_hist (n_hist + nx - n_out int16, at most K - 1 + ...: the
 * caller gives room for min(n_hist + nx, K - 1)).  phases: 2*K int32 taps.
 * Returns 0, or -1 with a Python exception set (no memory).  GIL held. */
int
rtp2ws_upsample2x(const void *phases, Py_ssize_t K, int frac_bits, const int16_t *hist, Py_ssize_t n_hist,
                  const int16_t *x, Py_ssize_t nx, int16_t *out, Py_ssize_t *n_out, int16_t *new_hist,
                  Py_ssize_t *n_new_hist)
{
    source_t src = {(const char *)hist, (const char *)x, n_hist, 0};
    src.total = n_hist + nx;
    Py_ssize_t n = src.total - (K - 1);
    if (n < 0)
        n = 0;
    *n_out = n;
    *n_new_hist = src.total - n;
    copy_samples(new_hist, &src, n, src.total - n);
    if (n == 0)
        return 0;
    plan_t *pl = acquire_plan(phases, K, frac_bits);
    if (pl == NULL)
        return -1;
    int level = pl->split_exact ? simd_level : SIMD_SCALAR;
    int16_t stack_samples[CHUNK + STACK_K + MAX_BLOCK];
    int32_t stack_pairs[CHUNK + STACK_K + MAX_BLOCK];
    void *heap_scratch = NULL;
    int16_t *scratch_samples = stack_samples;
    int32_t *scratch_pairs = stack_pairs;
    if (K > STACK_K) {
        size_t len = (size_t)(CHUNK + K + MAX_BLOCK);
        heap_scratch = PyMem_Malloc(len * (sizeof(int32_t) + sizeof(int16_t)));
        if (heap_scratch == NULL) {
            release_plan(pl);
            PyErr_NoMemory();
            return -1;
        }
        scratch_pairs = (int32_t *)heap_scratch;
        scratch_samples = (int16_t *)(scratch_pairs + len);
    }
    if (n >= GIL_RELEASE_MIN) {
        Py_BEGIN_ALLOW_THREADS
        run_kernel(level, pl, &src, n, out, scratch_samples, scratch_pairs);
        Py_END_ALLOW_THREADS
    } else {
        run_kernel(level, pl, &src, n, out, scratch_samples, scratch_pairs);
    }
    PyMem_Free(heap_scratch);
    release_plan(pl);
    return 0;
}

static PyObject *
native_upsample2x(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer phases, history, samples;
    int frac_bits;
    PyObject *out = NULL, *state = NULL, *result = NULL;

    if (!PyArg_ParseTuple(args, "y*iy*y*", &phases, &frac_bits, &history, &samples))
        return NULL;

    if (phases.len <= 0 || phases.len % (2 * (Py_ssize_t)sizeof(int32_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "phases must hold 2*K int32 taps");
        goto done;
    }
    if (history.len % 2 != 0 || samples.len % 2 != 0) {
        PyErr_SetString(PyExc_ValueError, "history and samples must hold int16 samples");
        goto done;
    }
    if (frac_bits < 1 || frac_bits > 48) {
        PyErr_SetString(PyExc_ValueError, "frac_bits must be in 1..48");
        goto done;
    }

    Py_ssize_t K = phases.len / (2 * (Py_ssize_t)sizeof(int32_t));
    Py_ssize_t total = history.len / 2 + samples.len / 2;
    Py_ssize_t n = total - (K - 1) > 0 ? total - (K - 1) : 0, n_out, n_hist;
    out = PyByteArray_FromStringAndSize(NULL, n * 2 * (Py_ssize_t)sizeof(int16_t));
    state = PyBytes_FromStringAndSize(NULL, (total - n) * (Py_ssize_t)sizeof(int16_t));
    if (out == NULL || state == NULL)
        goto done;
    /* the buffers may come from any bytes-like object: read with memcpy (source_t) */
    if (rtp2ws_upsample2x(phases.buf, K, frac_bits, (const int16_t *)history.buf, history.len / 2,
                          (const int16_t *)samples.buf, samples.len / 2,
                          (int16_t *)PyByteArray_AS_STRING(out), &n_out,
                          (int16_t *)PyBytes_AS_STRING(state), &n_hist) < 0)
        goto done;
    result = PyTuple_Pack(2, out, state);

done:
    Py_XDECREF(out);
    Py_XDECREF(state);
    PyBuffer_Release(&phases);
    PyBuffer_Release(&history);
    PyBuffer_Release(&samples);
    return result;
}

/* ---- choice of kernel ---------------------------------------------------- */

static int
simd_index(const char *name)
{
    for (int i = 0; i < SIMD_COUNT; i++)
        if (strcmp(name, simd_names[i]) == 0)
            return i;
    return -1;
}

/* At import: the widest kernel the CPU (and OS: the compiler's check covers
 * the saved register state) supports, capped by RTP2WS_NATIVE_SIMD. */
static int
detect_simd(void)
{
#if HAVE_X86_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        simd_supported = SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vnni"))
            simd_supported = SIMD_AVX512;
    }
#endif
    simd_level = simd_supported;
    const char *cap = getenv("RTP2WS_NATIVE_SIMD");
    if (cap != NULL && *cap != '\0') {
        int i = simd_index(cap);
        if (i < 0)
            return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                                    "RTP2WS_NATIVE_SIMD=%s is not one of scalar, avx2, "
                                    "avx512; ignored", cap);
        if (i < simd_level)
            simd_level = i;
    }
    return 0;
}

static PyObject *
native_simd_levels(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *names = PyTuple_New(simd_supported + 1);
    if (names == NULL)
        return NULL;
    for (int i = 0; i <= simd_supported; i++) {
        PyObject *name = PyUnicode_FromString(simd_names[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

static PyObject *
native_get_simd(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyUnicode_FromString(simd_names[simd_level]);
}

static PyObject *
native_set_simd(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "set_simd() expects a str");
        return NULL;
    }
    int i = simd_index(name);
    if (i < 0) {
        PyErr_Format(PyExc_ValueError, "unknown SIMD level %R (expected scalar, avx2 or avx512)",
                     arg);
        return NULL;
    }
    if (i > simd_supported) {
        PyErr_Format(PyExc_ValueError, "SIMD level %R is not supported by this CPU or build",
                     arg);
        return NULL;
    }
    int previous = simd_level;
    simd_level = i;
    return PyUnicode_FromString(simd_names[previous]);
}

PyMethodDef rtp2ws_resample_methods[] = {
    {"upsample2x", native_upsample2x, METH_VARARGS,
     "upsample2x(phases, frac_bits, history, samples) -> (out, new_history).\n\n"
     "phases: int32[2, K] polyphase taps in Q<frac_bits>; history, samples:\n"
     "int16.  Produces an output pair for every sample of history+samples\n"
     "with K-1 samples before it; the last K-1 samples (or all, if fewer)\n"
     "are returned as the new history."},
    {"simd_levels", native_simd_levels, METH_NOARGS,
     "simd_levels() -> tuple of the upsample2x kernels this CPU can run,\n"
     "narrowest first: 'scalar', then 'avx2', 'avx512' where supported."},
    {"get_simd", native_get_simd, METH_NOARGS,
     "get_simd() -> name of the upsample2x kernel in use."},
    {"set_simd", native_set_simd, METH_O,
     "set_simd(name) -> previous name.  Selects the upsample2x kernel, one of\n"
     "simd_levels(); all give identical output.  For tests and benchmarks."},
    {NULL, NULL, 0, NULL},
};

int
rtp2ws_resample_init(void)
{
    return detect_simd();
}
