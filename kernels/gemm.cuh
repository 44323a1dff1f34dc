/* gemm.cuh — the one GEMM the classifier needs, column-major like BLAS:
 *   C[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C (+ bias[m] broadcast over columns if bias)
 * cuBLASLt when it can be loaded (lazily, with dlopen), else a tiled fallback kernel. */
#ifndef L2S_GEMM_CUH
#define L2S_GEMM_CUH
#include "common.cuh"

int l2s_gemm(int trans_a, int trans_b, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc, const float* bias, cudaStream_t stream);
#endif
