/*
 * simd.h — SSE2 forms of CPU hot loops the compiler will not vectorise by itself (without
 * -ffast-math it keeps max and exp scalar). SSE2 is in every x86-64 CPU, so the portable build
 * uses it unconditionally; other targets take the scalar loops, which compute the same values.
 */
#ifndef L2S_SIMD_H
#define L2S_SIMD_H

#include <stdlib.h>
#include <string.h>
#include "numeric.h"
#include "parallel.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define L2S_AVX2_PATH 1     /* AVX2+FMA variants compiled with target attributes, picked at run time */
#endif

/* Whether to take the AVX2+FMA variants: the CPU has both and L2S_SIMD is not "sse2" (which forces
 * the portable SSE2 path, e.g. to test it on a machine that has AVX2). The setting is read by the
 * binding with the GIL held (parallel.h). */
static inline int l2s_use_avx2(void) {
#ifdef L2S_AVX2_PATH
    if (l2s_simd_sse2_forced()) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* exp(x) for x <= 0, the softmax exponent after the max is subtracted: the scalar form of the
 * loop below (glibc's expf is a scalar call the compiler cannot vectorise; it was most of the maps time):
 * x = k ln2 + r with |r| <= ln2/2 (k by truncation: cvttps2dq is plain SSE2), exp(r) by its
 * degree-6 Taylor polynomial (truncation error < 1.3e-7 relative), 2^k built in the exponent bits.
 * Below -87 the result is clamped to exp(-87) ~ 1.6e-38: invisible next to the row maximum's 1. */
static inline float l2s_exp_nonpos(float x) {
    x = x < -87.f ? -87.f : x;
    float t = x * 1.44269504088896341f - 0.5f;
    int k = (int)t;                                  /* t < 0: truncation rounds up, k = round(x log2 e) */
    float r = x - (float)k * 0.693145751953125f - (float)k * 1.428606765330187e-06f;   /* ln2, split */
    float p = 1.f + r * (1.f + r * (0.5f + r * (0.166666667f + r * (0.0416666667f + r * (0.00833333333f
                                                                                    + r * 0.00138888889f)))));
    return p * l2s_bits_f32((uint32_t)(k + 127) << 23);
}

/* max of x[0..n) (n >= 1). */
static inline float l2s_max_f32(const float* x, int n) {
    int i = 0;
    float mx = x[0];
#if defined(__SSE2__)
    if (n >= 4) {
        __m128 m = _mm_loadu_ps(x);
        for (i = 4; i + 4 <= n; i += 4) m = _mm_max_ps(m, _mm_loadu_ps(x + i));
        float lanes[4];
        _mm_storeu_ps(lanes, m);
        mx = lanes[0] > lanes[1] ? lanes[0] : lanes[1];
        mx = mx > lanes[2] ? mx : lanes[2];
        mx = mx > lanes[3] ? mx : lanes[3];
    }
#endif
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* x[i] = exp(scale * (x[i] - shift)) where that is <= 0 (scale > 0, shift = the max); returns the
 * sum of the results, or NaN when an argument was NaN (a NaN or infinite logit: the clamp below
 * would otherwise hide it as a finite exp). The same steps as l2s_exp_nonpos, four at a time. */
static inline float l2s_exp_shifted_inplace(float* x, int n, float shift, float scale) {
    int i = 0;
    float sum = 0.f;
#if defined(__SSE2__)
    const __m128 lo = _mm_set1_ps(-87.f), log2e = _mm_set1_ps(1.44269504088896341f), half = _mm_set1_ps(0.5f);
    const __m128 ln2_hi = _mm_set1_ps(0.693145751953125f), ln2_lo = _mm_set1_ps(1.428606765330187e-06f);
    const __m128 c6 = _mm_set1_ps(0.00138888889f), c5 = _mm_set1_ps(0.00833333333f), c4 = _mm_set1_ps(0.0416666667f);
    const __m128 c3 = _mm_set1_ps(0.166666667f), one = _mm_set1_ps(1.f), sh = _mm_set1_ps(shift);
    const __m128 sc = _mm_set1_ps(scale);
    __m128 acc = _mm_setzero_ps(), bad = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
        __m128 raw = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(x + i), sh), sc);
        bad = _mm_or_ps(bad, _mm_cmpunord_ps(raw, raw));      /* lanes that met a NaN */
        __m128 v = _mm_max_ps(raw, lo);
        __m128i k = _mm_cvttps_epi32(_mm_sub_ps(_mm_mul_ps(v, log2e), half));
        __m128 kf = _mm_cvtepi32_ps(k);
        __m128 r = _mm_sub_ps(_mm_sub_ps(v, _mm_mul_ps(kf, ln2_hi)), _mm_mul_ps(kf, ln2_lo));
        __m128 p = _mm_add_ps(c5, _mm_mul_ps(r, c6));
        p = _mm_add_ps(c4, _mm_mul_ps(r, p));
        p = _mm_add_ps(c3, _mm_mul_ps(r, p));
        p = _mm_add_ps(half, _mm_mul_ps(r, p));
        p = _mm_add_ps(one, _mm_mul_ps(r, p));
        p = _mm_add_ps(one, _mm_mul_ps(r, p));
        __m128 two_k = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(k, _mm_set1_epi32(127)), 23));
        __m128 e = _mm_mul_ps(p, two_k);
        _mm_storeu_ps(x + i, e);
        acc = _mm_add_ps(acc, e);
    }
    float lanes[4];
    _mm_storeu_ps(lanes, acc);
    sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    if (_mm_movemask_ps(bad)) return NAN;
#endif
    for (; i < n; i++) {
        float raw = (x[i] - shift) * scale;
        if (raw != raw) return NAN;
        x[i] = l2s_exp_nonpos(raw);
        sum += x[i];
    }
    return sum;
}

#ifdef L2S_AVX2_PATH
/* l2s_exp_shifted_inplace eight at a time with FMA (the softmax of every attention row runs it: on
 * the SSE2 form it was the largest share of the maps forward); the last n % 8 go to the SSE2 form. */
__attribute__((target("avx2,fma")))
static float l2s_exp_shifted_inplace_avx2(float* x, int n, float shift, float scale) {
    const __m256 lo = _mm256_set1_ps(-87.f), log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693145751953125f), ln2_lo = _mm256_set1_ps(1.428606765330187e-06f);
    const __m256 c6 = _mm256_set1_ps(0.00138888889f), c5 = _mm256_set1_ps(0.00833333333f);
    const __m256 c4 = _mm256_set1_ps(0.0416666667f), c3 = _mm256_set1_ps(0.166666667f);
    const __m256 sh = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale);
    __m256 acc = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 raw = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh), sc);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(raw, raw, _CMP_UNORD_Q));
        __m256 v = _mm256_max_ps(raw, lo);
        __m256i k = _mm256_cvttps_epi32(_mm256_fmsub_ps(v, log2e, half));
        __m256 kf = _mm256_cvtepi32_ps(k);
        __m256 r = _mm256_fnmadd_ps(kf, ln2_lo, _mm256_fnmadd_ps(kf, ln2_hi, v));
        __m256 p = _mm256_fmadd_ps(r, c6, c5);
        p = _mm256_fmadd_ps(r, p, c4);
        p = _mm256_fmadd_ps(r, p, c3);
        p = _mm256_fmadd_ps(r, p, half);
        p = _mm256_fmadd_ps(r, p, one);
        p = _mm256_fmadd_ps(r, p, one);
        __m256 two_k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
        __m256 e = _mm256_mul_ps(p, two_k);
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    float sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    if (_mm256_movemask_ps(bad)) return NAN;
    return sum + l2s_exp_shifted_inplace(x + i, n - i, shift, scale);
}
#endif

/* The widest exp above this CPU runs (L2S_SIMD=sse2 forces the SSE2 one). */
static inline float l2s_exp_shifted(int avx2, float* x, int n, float shift, float scale) {
#ifdef L2S_AVX2_PATH
    if (avx2) return l2s_exp_shifted_inplace_avx2(x, n, shift, scale);
#endif
    (void)avx2;
    return l2s_exp_shifted_inplace(x, n, shift, scale);
}

#endif /* L2S_SIMD_H */
