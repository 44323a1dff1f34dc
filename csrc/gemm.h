/*
 * gemm.h — the CPU's large matrix product (gemm.c): C[M,N] (+)= A[M,K] B[K,N] with any element
 * strides, so one routine serves x W^T, dY W and dY^T X without transposing anything first.
 */
#ifndef L2S_GEMM_H
#define L2S_GEMM_H
#include <stdint.h>

typedef struct {
    const float* a; int64_t a_m, a_k;     /* A[m, k] at a[m * a_m + k * a_k] */
    const float* b; int64_t b_k, b_n;     /* B[k, n] at b[k * b_k + n * b_n] */
    float* c; int64_t ldc;                /* C[m, n] at c[m * ldc + n] */
    int M, N, K;
    int accumulate;                       /* 1: C += A B; 0: C = A B */
} l2s_gemm_cpu_args;

/* Worth the packing: products at least this large go through l2s_gemm_cpu. */
#define L2S_GEMM_CPU_MIN_MACS (1 << 18)

/* Packed, cache-blocked, threaded over column panels (l2s_parallel_for). Returns 0, or -1 when its
 * packing buffers could not be allocated (C is then unspecified). */
int l2s_gemm_cpu(const l2s_gemm_cpu_args* g);

#endif
