/*
 * numeric.h — small math shared verbatim by the C ops and their CUDA twins, so both back ends
 * agree bit for bit on the parts that are not floating-point reductions:
 * half/bfloat16 <-> float conversion, the resize tap tables and the dropout masks.
 */
#ifndef L2S_NUMERIC_H
#define L2S_NUMERIC_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include "l2s.h"

#ifdef __CUDACC__
#define L2S_HOSTDEV __host__ __device__ __forceinline__
#else
#define L2S_HOSTDEV static inline
#endif

/* ---- float <-> bits without aliasing trouble ---- */
L2S_HOSTDEV uint32_t l2s_f32_bits(float f) {
#ifdef __CUDA_ARCH__
    return (uint32_t)__float_as_uint(f);
#else
    uint32_t u; memcpy(&u, &f, 4); return u;
#endif
}
L2S_HOSTDEV float l2s_bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f; memcpy(&f, &u, 4); return f;
#endif
}

/* bfloat16 is the top half of a float32; round to nearest even on the way down. */
L2S_HOSTDEV float l2s_bf16_to_f32(uint16_t h) { return l2s_bits_f32((uint32_t)h << 16); }
L2S_HOSTDEV uint16_t l2s_f32_to_bf16(float f) {
    uint32_t u = l2s_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE binary16, with subnormals, round to nearest even. */
L2S_HOSTDEV float l2s_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return l2s_bits_f32(sign | 0x7f800000u | (man << 13));   /* inf / NaN */
    if (exp == 0) {                                                            /* zero / subnormal */
        float f = (float)man * 5.9604644775390625e-8f;                         /* man * 2^-24 */
        return sign ? -f : f;
    }
    return l2s_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}
L2S_HOSTDEV uint16_t l2s_f32_to_f16(float f) {
    uint32_t u = l2s_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;                    /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;                   /* overflow (>= 65520) -> inf */
    if (a < 0x38800000u) {                                         /* subnormal or zero in f16 */
        float m = l2s_bits_f32(a) * 16777216.0f;                   /* scale by 2^24: integer mantissa */
        uint32_t r = (uint32_t)m; float rem = m - (float)r;
        if (rem > 0.5f || (rem == 0.5f && (r & 1u))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t exp = (a >> 23) - 112u, man = a & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;     /* may carry into the exponent: fine */
    return sign | (uint16_t)h;
}

/* Load element i of a float32/float16/bfloat16 buffer as float. */
L2S_HOSTDEV float l2s_load(const void* p, int64_t i, l2s_dtype dt) {
    if (dt == L2S_F32) return ((const float*)p)[i];
    if (dt == L2S_F16) return l2s_f16_to_f32(((const uint16_t*)p)[i]);
    return l2s_bf16_to_f32(((const uint16_t*)p)[i]);
}
L2S_HOSTDEV void l2s_store(void* p, int64_t i, l2s_dtype dt, float v) {
    if (dt == L2S_F32) ((float*)p)[i] = v;
    else if (dt == L2S_F16) ((uint16_t*)p)[i] = l2s_f32_to_f16(v);
    else ((uint16_t*)p)[i] = l2s_f32_to_bf16(v);
}

/* ---- dropout masks: a hash of (seed, site, element) alone ----
 * Elements go in blocks of 2^30; each block gets a 64-bit key (splitmix64 of seed, site and block)
 * and each element a 32-bit mix of its index in the block (murmur3's finaliser: vectorises). The
 * element is kept, scaled by 1/(1-p), when the top 24 bits of the mix are >= p * 2^24.
 * l2s.authors_net.dropout_mask is the NumPy twin. */
#define L2S_DROPOUT_BLOCK ((int64_t)1 << 30)
L2S_HOSTDEV uint64_t l2s_splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
L2S_HOSTDEV uint64_t l2s_dropout_key(uint64_t seed, uint32_t site, int64_t block) {
    return l2s_splitmix64(seed ^ ((uint64_t)site << 40) ^ l2s_splitmix64((uint64_t)block));
}
L2S_HOSTDEV uint32_t l2s_dropout_cut(float p) { return (uint32_t)((double)p * (double)(1u << 24)); }
/* 1/(1-p) or 0 for element i of a block with this key */
L2S_HOSTDEV float l2s_dropout_factor(uint64_t key, uint32_t i, uint32_t cut, float keep) {
    uint32_t h = (i * 0x9E3779B1u + (uint32_t)key) ^ (uint32_t)(key >> 32);
    h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
    return (h >> 8) >= cut ? keep : 0.f;
}

/* ---- resize taps ----
 * Output index o of an axis of length n_out reads input indices [*first, *first + count) of an
 * axis of length n_in, with weights from l2s_resize_tap_weight. Bilinear follows torch's
 * interpolate(align_corners=False); area follows adaptive_avg_pool (floor/ceil windows). */
L2S_HOSTDEV int l2s_resize_taps(l2s_resize_mode mode, int n_in, int n_out, int o, int* first) {
    if (mode == L2S_RESIZE_AREA) {
        int start = (int)(((int64_t)o * n_in) / n_out);
        int end = (int)((((int64_t)o + 1) * n_in + n_out - 1) / n_out);
        *first = start;
        return end - start;
    }
    float src = ((float)o + 0.5f) * ((float)n_in / (float)n_out) - 0.5f;
    if (src < 0.f) src = 0.f;
    int i0 = (int)src;
    *first = i0;
    return (i0 < n_in - 1) ? 2 : 1;
}

L2S_HOSTDEV float l2s_resize_tap_weight(l2s_resize_mode mode, int n_in, int n_out, int o, int j) {
    if (mode == L2S_RESIZE_AREA) {
        int first;
        int count = l2s_resize_taps(mode, n_in, n_out, o, &first);
        return 1.0f / (float)count;
    }
    float src = ((float)o + 0.5f) * ((float)n_in / (float)n_out) - 0.5f;
    if (src < 0.f) src = 0.f;
    int i0 = (int)src;
    float lambda = src - (float)i0;
    if (i0 >= n_in - 1) return 1.0f;      /* single tap at the border */
    return j == 0 ? 1.0f - lambda : lambda;
}

#ifndef __CUDACC__
/* Hot CPU loops get an AVX2 clone picked at load time (GCC/Clang ifunc), so one portable build
 * still uses 8-wide SIMD where the machine has it. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define L2S_HOT __attribute__((target_clones("avx2", "default")))
#else
#define L2S_HOT
#endif

/* Dot product with 8 partial sums: a fixed reassociation the compiler can vectorise without
 * -ffast-math (which would also break the isfinite checks elsewhere). */
static inline float l2s_dot_f32(const float* a, const float* b, int64_t n) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Sum with the same 8 partial sums (layernorm's mean and variance). */
static inline float l2s_sum_f32(const float* a, int64_t n) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i];
    return s;
}
#endif

#endif /* L2S_NUMERIC_H */
