/* The low-precision pass of exact neighbour search (see __init__.py): every row of a block of
 * embeddings (float16 or float32) made a unit vector and quantised to 16-bit integers, its dot
 * product with every seed (quantised the same way) taken exactly in 32-bit integers, and the pairs
 * whose similarity could reach the seed's threshold, given a proven bound on the quantisation's
 * error, handed back; all others are pruned here and never scored in floating point.
 *
 * A row x is quantised as xq_i = round(L x_i / max|x|), with L levels (the most that cannot
 * overflow: d L^2 < 2^31, so L = 1672 for d = 768), and s_x xq_i, with s_x = max|x| / (L |x|), is
 * x_i / |x| to within s_x / 2 for each i. With q~ the seed quantised likewise (scale s_q, to within
 * s_q / 2 of the unit seed q), the estimate s_x s_q (xq . qq) is the cosine similarity to within
 * (s_x / 2) |q|_1 + (s_q / 2) |x~|_1, plus the float32 rounding of the norm (at most 5e-5 of it:
 * d terms <= 1 summed) and of the products: SLACK covers those with room to spare. Eight bits
 * would double the speed of this pass and multiply its bound by 13: on embeddings that spread like
 * random ones, the pairs left to score in float64 then cost more than the pass saved.
 *
 * The integer dot products are exact, and every path below (AVX-512 VNNI, or plain C) finds the
 * same neighbours (the bound holds on each; their float32 norms may differ in the last bit).
 *
 * A row that is all zeros, or holds an infinity or a NaN, has no direction: it is nobody's
 * neighbour, here and in the exact scoring alike. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PRUNE_X86 1
#endif

#define SLACK 1e-4f
#define ROWS 4    /* rows whose dot products are taken together, sharing each load of the seeds */
#define GROUPS 6  /* groups of 16 seeds per pass over a row: 4 x 6 accumulators fit the registers */

typedef struct {
    const uint8_t *raw;       /* the block: n rows of d values, float16 or float32 */
    int half, d, d2, steps;   /* d2: d rounded up to even; steps = d2 / 2 */
    float levels;             /* L */
    const int16_t *seeds;     /* groups x steps x 16 seeds x 2 values */
    int m, groups;
    const float *seed_scale, *seed_l1, *tau;  /* per seed, padded to groups x 16 */
    int32_t *out_row, *out_seed;
    float *out_est, *out_err;
    Py_ssize_t cap, found;
} Job;

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp == 0) {
        float f = (float)man * 5.9604644775390625e-8f;  /* zero or subnormal: man x 2^-24 */
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* The portable paths are compiled for AVX2 too, and the one the CPU runs picked when loaded. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

/* A row whose largest value is under TINY, quantised in double precision: in float32, 1 / max|x|
 * and L / max|x| would overflow. Its values are in `values` already. */
#define TINY 1e-30f
static int quantise_tiny(const Job *job, const float *values, float peak, int16_t *q, float *scale, float *l1) {
    double inv = 1.0 / peak, mult = job->levels / (double)peak, sum = 0.0;
    int64_t total = 0;
    for (int i = 0; i < job->d; i++) {
        double v = values[i] * inv;
        sum += v * v;
        long k = lrint(values[i] * mult);
        k = k > (long)job->levels ? (long)job->levels : k < -(long)job->levels ? -(long)job->levels : k;
        total += k < 0 ? -k : k;
        q[i] = (int16_t)k;
    }
    for (int i = job->d; i < job->d2; i++) q[i] = 0;
    *scale = (float)(1.0 / (job->levels * sqrt(sum)));
    *l1 = *scale * (float)total;
    return 1;
}

/* One row, its values in `values` as float32, quantised: q (d2 values, the padding 0), its scale
 * s_x and |x~|_1. Returns 0 for a row with no direction. */
CLONES static int quantise_values(const Job *job, const float *values, int16_t *q, float *scale, float *l1) {
    const int d = job->d;
    float top = 0.0f;
    for (int i = 0; i < d; i++) {
        if (!isfinite(values[i])) return 0;
        float a = fabsf(values[i]);
        top = a > top ? a : top;
    }
    if (top == 0.0f) return 0;
    if (top < TINY) return quantise_tiny(job, values, top, q, scale, l1);
    float inv = 1.0f / top, sum = 0.0f, mult = job->levels / top;
    int64_t total = 0;
    for (int i = 0; i < d; i++) {
        float v = values[i] * inv;
        sum += v * v;
        int32_t k = (int32_t)lrintf(values[i] * mult);
        k = k > (int32_t)job->levels ? (int32_t)job->levels : k < -(int32_t)job->levels ? -(int32_t)job->levels : k;
        total += k < 0 ? -k : k;
        q[i] = (int16_t)k;
    }
    for (int i = d; i < job->d2; i++) q[i] = 0;
    *scale = 1.0f / (job->levels * sqrtf(sum));  /* max|x| / (L |x|), with |x| / max|x| = sqrt(sum) */
    *l1 = *scale * (float)total;
    return 1;
}

/* Row r quantised (see quantise_values). `values`: room for d rounded up to 16 floats. */
static int quantise_plain(const Job *job, Py_ssize_t r, float *values, int16_t *q, float *scale, float *l1) {
    const int d = job->d;
    if (job->half) {
        const uint16_t *h = (const uint16_t *)job->raw + (size_t)r * d;
        for (int i = 0; i < d; i++) values[i] = half_to_float(h[i]);
    } else {
        memcpy(values, (const float *)job->raw + (size_t)r * d, sizeof(float) * d);
    }
    return quantise_values(job, values, q, scale, l1);
}

/* The pairs of `count` quantised rows (from block row r0) and the seeds, whose dot products are in
 * `acc` (per row, groups x 16), that may reach their thresholds: appended to the output, or 0 if
 * they do not all fit. */
static int emit(Job *job, Py_ssize_t r0, int count, const int32_t *acc, const float *scale, const float *l1,
                const int *usable) {
    const int width = job->groups * 16;
    for (int r = 0; r < count; r++) {
        if (!usable[r]) continue;
        for (int j = 0; j < job->m; j++) {
            float est = (float)acc[r * width + j] * scale[r] * job->seed_scale[j];
            float err = 0.5001f * (scale[r] * job->seed_l1[j] + job->seed_scale[j] * l1[r]) + SLACK;
            if (est + err >= job->tau[j]) {
                if (job->found == job->cap) return 0;
                job->out_row[job->found] = (int32_t)(r0 + r);
                job->out_seed[job->found] = j;
                job->out_est[job->found] = est;
                job->out_err[job->found] = err;
                job->found++;
            }
        }
    }
    return 1;
}

CLONES static void dots_plain(const Job *job, const int16_t *q, int count, int32_t *acc) {
    const int width = job->groups * 16;
    for (int r = 0; r < count; r++) {
        const int16_t *row = q + (size_t)r * job->d2;
        for (int g = 0; g < job->groups; g++) {
            int32_t sums[16] = {0};
            const int16_t *s = job->seeds + (size_t)g * job->steps * 32;
            for (int t = 0; t < job->steps; t++, s += 32) {
                const int32_t a = row[2 * t], b = row[2 * t + 1];
                for (int k = 0; k < 16; k++) sums[k] += a * s[2 * k] + b * s[2 * k + 1];
            }
            memcpy(acc + r * width + g * 16, sums, sizeof(sums));
        }
    }
}

#ifdef PRUNE_X86
#define AVX2 __attribute__((target("avx2,f16c,fma")))

/* As quantise_plain, 8 values at a time. */
AVX2 static int quantise_avx2(const Job *job, Py_ssize_t r, float *values, int16_t *q, float *scale, float *l1) {
    const int d = job->d, padded = (d + 15) & ~15;
    if (job->half) {
        const uint16_t *h = (const uint16_t *)job->raw + (size_t)r * d;
        int i = 0;
        for (; i + 8 <= d; i += 8)
            _mm256_storeu_ps(values + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
        for (; i < d; i++) values[i] = half_to_float(h[i]);
    } else {
        memcpy(values, (const float *)job->raw + (size_t)r * d, sizeof(float) * d);
    }
    for (int i = d; i < padded; i++) values[i] = 0.0f;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 top = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int i = 0; i < padded; i += 8) {
        __m256 v = _mm256_loadu_ps(values + i);
        top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v));
        bad = _mm256_add_ps(bad, _mm256_sub_ps(v, v));  /* NaN where any value is not finite */
    }
    float lanes[8], wrong[8], peak = 0.0f, nan = 0.0f;
    _mm256_storeu_ps(lanes, top);
    _mm256_storeu_ps(wrong, bad);
    for (int k = 0; k < 8; k++) {
        peak = lanes[k] > peak ? lanes[k] : peak;
        nan += wrong[k];
    }
    if (peak == 0.0f || nan != 0.0f) return 0;
    if (peak < TINY) return quantise_tiny(job, values, peak, q, scale, l1);
    const __m256 inv = _mm256_set1_ps(1.0f / peak), mult = _mm256_set1_ps(job->levels / peak);
    const __m256i hi = _mm256_set1_epi32((int32_t)job->levels), lo = _mm256_set1_epi32(-(int32_t)job->levels);
    __m256 sum = _mm256_setzero_ps();
    __m256i total = _mm256_setzero_si256();
    int32_t ints[8];
    for (int i = 0; i < padded; i += 8) {
        __m256 v = _mm256_loadu_ps(values + i);
        __m256 w = _mm256_mul_ps(v, inv);
        sum = _mm256_fmadd_ps(w, w, sum);
        __m256i k = _mm256_cvtps_epi32(_mm256_mul_ps(v, mult));  /* rounds to nearest, ties to even */
        k = _mm256_min_epi32(_mm256_max_epi32(k, lo), hi);
        total = _mm256_add_epi32(total, _mm256_abs_epi32(k));
        _mm256_storeu_si256((__m256i *)ints, k);
        for (int j = 0; j < 8; j++) q[i + j] = (int16_t)ints[j];  /* q has room for `padded` */
    }
    for (int i = d; i < job->d2; i++) q[i] = 0;
    float sums[8];
    int32_t totals[8];
    _mm256_storeu_ps(sums, sum);
    _mm256_storeu_si256((__m256i *)totals, total);
    float s = 0.0f;
    int64_t t = 0;
    for (int k = 0; k < 8; k++) {
        s += sums[k];
        t += totals[k];
    }
    *scale = 1.0f / (job->levels * sqrtf(s));
    *l1 = *scale * (float)t;
    return 1;
}

/* ROWS rows against one group of 16 seeds at a time: each step broadcasts 2 values of each row
 * and multiplies them into the 2 dimensions of 8 seeds a 32-byte load holds (vpmaddwd), twice. */
AVX2 static void dots_avx2(const Job *job, const int16_t *q, int32_t *acc) {
    const int width = job->groups * 16;
    const size_t stride = (size_t)job->steps * 32;
    for (int g = 0; g < job->groups; g++) {
        __m256i lo[ROWS], hi[ROWS];
        for (int r = 0; r < ROWS; r++) lo[r] = hi[r] = _mm256_setzero_si256();
        const int16_t *base = job->seeds + g * stride;
        for (int t = 0; t < job->steps; t++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(base + (size_t)t * 32));
            __m256i b = _mm256_loadu_si256((const __m256i *)(base + (size_t)t * 32 + 16));
            for (int r = 0; r < ROWS; r++) {
                int32_t pair;
                memcpy(&pair, q + (size_t)r * job->d2 + 2 * t, 4);
                __m256i x = _mm256_set1_epi32(pair);
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(x, a));
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(x, b));
            }
        }
        for (int r = 0; r < ROWS; r++) {
            _mm256_storeu_si256((__m256i *)(acc + r * width + g * 16), lo[r]);
            _mm256_storeu_si256((__m256i *)(acc + r * width + g * 16 + 8), hi[r]);
        }
    }
}

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))

/* As quantise_plain, 16 values at a time. */
VNNI static int quantise_vnni(const Job *job, Py_ssize_t r, float *values, int16_t *q, float *scale, float *l1) {
    const int d = job->d, whole = d & ~15, padded = (d + 15) & ~15;
    if (job->half) {
        const uint16_t *h = (const uint16_t *)job->raw + (size_t)r * d;
        int i = 0;
        for (; i < whole; i += 16)
            _mm512_storeu_ps(values + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
        for (; i < d; i++) values[i] = half_to_float(h[i]);
    } else {
        memcpy(values, (const float *)job->raw + (size_t)r * d, sizeof(float) * d);
    }
    for (int i = d; i < padded; i++) values[i] = 0.0f;
    __m512 top = _mm512_setzero_ps(), bad = _mm512_setzero_ps();
    for (int i = 0; i < padded; i += 16) {
        __m512 v = _mm512_loadu_ps(values + i);
        top = _mm512_max_ps(top, _mm512_abs_ps(v));
        bad = _mm512_add_ps(bad, _mm512_sub_ps(v, v));  /* NaN where any value is not finite */
    }
    float peak = _mm512_reduce_max_ps(top);
    if (peak == 0.0f || _mm512_reduce_add_ps(bad) != 0.0f) return 0;
    if (peak < TINY) return quantise_tiny(job, values, peak, q, scale, l1);
    const __m512 inv = _mm512_set1_ps(1.0f / peak), mult = _mm512_set1_ps(job->levels / peak);
    const __m512i hi = _mm512_set1_epi32((int32_t)job->levels), lo = _mm512_set1_epi32(-(int32_t)job->levels);
    __m512 sum = _mm512_setzero_ps();
    __m512i total = _mm512_setzero_si512();
    for (int i = 0; i < padded; i += 16) {
        __m512 v = _mm512_loadu_ps(values + i);
        __m512 w = _mm512_mul_ps(v, inv);
        sum = _mm512_fmadd_ps(w, w, sum);
        __m512i k = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v, mult), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        k = _mm512_min_epi32(_mm512_max_epi32(k, lo), hi);
        total = _mm512_add_epi32(total, _mm512_abs_epi32(k));
        _mm256_storeu_si256((__m256i *)(q + i), _mm512_cvtepi32_epi16(k));  /* q has room for `padded` */
    }
    for (int i = d; i < job->d2; i++) q[i] = 0;
    *scale = 1.0f / (job->levels * sqrtf(_mm512_reduce_add_ps(sum)));
    *l1 = *scale * (float)_mm512_reduce_add_epi32(total);  /* d L < 2^31 */
    return 1;
}

/* ROWS rows against seed groups g0 .. g0 + GN - 1: each step broadcasts 2 values of each row and
 * multiplies them into the 2 dimensions of 16 seeds that a 64-byte load holds (vpdpwssd). */
#define DOTS_GROUPS(GN)                                                                                  \
    VNNI static void dots_vnni_##GN(const Job *job, const int16_t *q, int g0, int32_t *acc) {            \
        __m512i sums[ROWS][GN];                                                                          \
        for (int r = 0; r < ROWS; r++)                                                                   \
            for (int g = 0; g < GN; g++) sums[r][g] = _mm512_setzero_si512();                            \
        const int16_t *base = job->seeds + (size_t)g0 * job->steps * 32;                                 \
        const size_t stride = (size_t)job->steps * 32;                                                   \
        for (int t = 0; t < job->steps; t++) {                                                           \
            __m512i b[ROWS];                                                                             \
            for (int r = 0; r < ROWS; r++) {                                                             \
                int32_t pair;                                                                            \
                memcpy(&pair, q + (size_t)r * job->d2 + 2 * t, 4);                                       \
                b[r] = _mm512_set1_epi32(pair);                                                          \
            }                                                                                            \
            for (int g = 0; g < GN; g++) {                                                               \
                __m512i s = _mm512_loadu_si512(base + g * stride + (size_t)t * 32);                      \
                for (int r = 0; r < ROWS; r++) sums[r][g] = _mm512_dpwssd_epi32(sums[r][g], b[r], s);    \
            }                                                                                            \
        }                                                                                                \
        const int width = job->groups * 16;                                                              \
        for (int r = 0; r < ROWS; r++)                                                                   \
            for (int g = 0; g < GN; g++) _mm512_storeu_si512(acc + r * width + (g0 + g) * 16, sums[r][g]); \
    }
DOTS_GROUPS(1)
DOTS_GROUPS(2)
DOTS_GROUPS(3)
DOTS_GROUPS(4)
DOTS_GROUPS(5)
DOTS_GROUPS(6)

VNNI static void dots_vnni(const Job *job, const int16_t *q, int32_t *acc) {
    for (int g0 = 0; g0 < job->groups; g0 += GROUPS) {
        switch (job->groups - g0 < GROUPS ? job->groups - g0 : GROUPS) {
            case 1: dots_vnni_1(job, q, g0, acc); break;
            case 2: dots_vnni_2(job, q, g0, acc); break;
            case 3: dots_vnni_3(job, q, g0, acc); break;
            case 4: dots_vnni_4(job, q, g0, acc); break;
            case 5: dots_vnni_5(job, q, g0, acc); break;
            default: dots_vnni_6(job, q, g0, acc); break;
        }
    }
}
#endif

/* The path this CPU runs: 2 AVX-512 VNNI, 1 AVX2, 0 plain C. SAFESET_SIMD=avx2 or =none asks
 * for less (the tests compare the paths' answers). */
static int simd_level(void) {
#ifdef PRUNE_X86
    static int known = -1;
    if (known < 0) {
        const char *asked = getenv("SAFESET_SIMD");
        __builtin_cpu_init();
        int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        int vnni = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
        known = vnni ? 2 : avx2 ? 1 : 0;
        if (asked && strcmp(asked, "none") == 0) known = 0;
        if (asked && strcmp(asked, "avx2") == 0 && known > 1) known = 1;
    }
    return known;
#else
    return 0;
#endif
}

/* Rows start .. n-1 of the block; returns the row to resume from (n when done), or -1 if memory
 * ran out. Stops early, before a group of rows whose pairs would not all fit, when out is full. */
static Py_ssize_t run(Job *job, Py_ssize_t start, Py_ssize_t n) {
    const int width = job->groups * 16, level = simd_level(), padded = (job->d + 15) & ~15;
    float *values = malloc(sizeof(float) * (size_t)padded);
    int16_t *q = calloc((size_t)ROWS * job->d2 + padded, sizeof(int16_t));  /* room for the last 16-wide store */
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)ROWS * width);
    Py_ssize_t r = start;
    if (!values || !q || !acc) {
        r = -1;
        goto done;
    }
    while (r < n) {
        int count = n - r < ROWS ? (int)(n - r) : ROWS, usable[ROWS] = {0};
        float scale[ROWS] = {0}, l1[ROWS] = {0};
        for (int k = 0; k < count; k++) {
            int16_t *row = q + (size_t)k * job->d2;
#ifdef PRUNE_X86
            if (level == 2)
                usable[k] = quantise_vnni(job, r + k, values, row, &scale[k], &l1[k]);
            else if (level == 1)
                usable[k] = quantise_avx2(job, r + k, values, row, &scale[k], &l1[k]);
            else
#endif
                usable[k] = quantise_plain(job, r + k, values, row, &scale[k], &l1[k]);
        }
        for (int k = count; k < ROWS; k++) memset(q + (size_t)k * job->d2, 0, sizeof(int16_t) * job->d2);
#ifdef PRUNE_X86
        if (level == 2)
            dots_vnni(job, q, acc);
        else if (level == 1)
            dots_avx2(job, q, acc);
        else
#endif
            dots_plain(job, q, count, acc);
        Py_ssize_t before = job->found;
        if (!emit(job, r, count, acc, scale, l1, usable)) {
            job->found = before;  /* this group of rows again, in the next call */
            break;
        }
        r += count;
    }
done:
    free(values);
    free(q);
    free(acc);
    return r;
}

static int sized(Py_buffer *view, Py_ssize_t items, Py_ssize_t size, const char *what) {
    if (view->len != items * size) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, items * size, view->len);
        return 0;
    }
    return 1;
}

/* prune(block, half, n, d, levels, seeds, m, scale, l1, tau, start, out_row, out_seed, out_est, out_err)
 * -> (resume_row, pairs_found) */
static PyObject *prune(PyObject *self, PyObject *args) {
    Py_buffer block, seeds, scale, l1, tau, orow, oseed, oest, oerr;
    int half, d, m, levels;
    Py_ssize_t n, start;
    if (!PyArg_ParseTuple(args, "y*inii" "y*iy*y*y*n" "w*w*w*w*", &block, &half, &n, &d, &levels, &seeds, &m, &scale,
                          &l1, &tau, &start, &orow, &oseed, &oest, &oerr))
        return NULL;
    PyObject *result = NULL;
    Job job = {0};
    job.raw = block.buf;
    job.half = half;
    job.d = d;
    job.d2 = (d + 1) & ~1;
    job.steps = job.d2 / 2;
    job.levels = (float)levels;
    job.m = m;
    job.groups = (m + 15) / 16;
    const Py_ssize_t width = (Py_ssize_t)job.groups * 16;
    job.cap = orow.len / 4;
    if (d <= 0 || m <= 0 || n < 0 || start < 0 || start > n || n > INT32_MAX || levels < 1 || levels > 32767 ||
        (double)job.d2 * levels * levels >= 2147483648.0 || !sized(&block, n * d, half ? 2 : 4, "block") ||
        !sized(&seeds, width * job.d2, 2, "seeds") || !sized(&scale, width, 4, "seed scales") ||
        !sized(&l1, width, 4, "seed l1 norms") || !sized(&tau, width, 4, "thresholds") ||
        !sized(&oseed, job.cap, 4, "out seeds") || !sized(&oest, job.cap, 4, "out estimates") ||
        !sized(&oerr, job.cap, 4, "out errors") || job.cap < (Py_ssize_t)ROWS * m) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "bad shapes or levels, or room for fewer than 4 rows of pairs");
        goto done;
    }
    job.seeds = seeds.buf;
    job.seed_scale = scale.buf;
    job.seed_l1 = l1.buf;
    job.tau = tau.buf;
    job.out_row = orow.buf;
    job.out_seed = oseed.buf;
    job.out_est = oest.buf;
    job.out_err = oerr.buf;
    Py_ssize_t resume;
    Py_BEGIN_ALLOW_THREADS
    resume = run(&job, start, n);
    Py_END_ALLOW_THREADS
    if (resume < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_BuildValue("(nn)", resume, job.found);
done:
    PyBuffer_Release(&block);
    PyBuffer_Release(&seeds);
    PyBuffer_Release(&scale);
    PyBuffer_Release(&l1);
    PyBuffer_Release(&tau);
    PyBuffer_Release(&orow);
    PyBuffer_Release(&oseed);
    PyBuffer_Release(&oest);
    PyBuffer_Release(&oerr);
    return result;
}

static PyObject *simd(PyObject *self, PyObject *args) {
    static const char *names[] = {"none", "avx2", "avx512-vnni"};
    return PyUnicode_FromString(names[simd_level()]);
}

static PyMethodDef methods[] = {
    {"prune", prune, METH_VARARGS, "The pairs of a block's rows and the seeds that may reach their thresholds."},
    {"simd", simd, METH_NOARGS, "The path the kernel runs here: avx512-vnni, avx2 or none (the same answers)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_prune", NULL, -1, methods};

PyMODINIT_FUNC PyInit__prune(void) { return PyModule_Create(&module); }
