/*
 * tiles.c — register-tiled block products shared by the attention-map extraction and the
 * classifier's linear layers: ROWS rows of a left matrix times a right matrix whose columns run
 * along the inner loop (no horizontal sums), SSE2 everywhere and AVX2+FMA picked at run time.
 */
#include "tiles.h"
#include "simd.h"

enum { ROWS = L2S_ROWS, LANES = L2S_LANES };

/* out[r, j] = sum_{i < K} a[r, i] * bm[i, j] for r < ROWS, j < ncols (a multiple of LANES): the
 * logits (q . K^T) and dQ (dS . K) of a row block. Columns run along the inner loop, so there are
 * no horizontal sums, and the ROWS x LANES accumulators stay in registers while each row of bm
 * serves ROWS rows of a. (Row-at-a-time dot products ran 3x slower than torch on bench_core.) */
void l2s_block_gemm_sse(const float* a, int lda, int K, const float* bm, int ldb, int ncols, float* out, int ldo) {
    for (int j0 = 0; j0 < ncols; j0 += LANES) {
#if defined(__SSE2__)
        __m128 acc[ROWS][2];
        for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm_setzero_ps();
        for (int i = 0; i < K; i++) {
            const float* bi = bm + (int64_t)i * ldb + j0;
            __m128 b0 = _mm_loadu_ps(bi), b1 = _mm_loadu_ps(bi + 4);
            for (int r = 0; r < ROWS; r++) {
                __m128 x = _mm_set1_ps(a[(int64_t)r * lda + i]);
                acc[r][0] = _mm_add_ps(acc[r][0], _mm_mul_ps(x, b0));
                acc[r][1] = _mm_add_ps(acc[r][1], _mm_mul_ps(x, b1));
            }
        }
        for (int r = 0; r < ROWS; r++) {
            _mm_storeu_ps(out + (int64_t)r * ldo + j0, acc[r][0]);
            _mm_storeu_ps(out + (int64_t)r * ldo + j0 + 4, acc[r][1]);
        }
#else
        float acc[ROWS][LANES] = {{0.f}};
        for (int i = 0; i < K; i++)
            for (int r = 0; r < ROWS; r++)
                for (int j = 0; j < LANES; j++) acc[r][j] += a[(int64_t)r * lda + i] * bm[(int64_t)i * ldb + j0 + j];
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < LANES; j++) out[(int64_t)r * ldo + j0 + j] = acc[r][j];
#endif
    }
}

/* dk[l, :] += sum_r ds[r, l] * q[r, :] for l < L: dK's rank-ROWS update from one row block
 * (Dp a multiple of LANES; the q tile stays in registers while l runs). */
void l2s_block_rank_update_sse(const float* ds, int lds, const float* q, int L, int Dp, float* dk) {
    for (int d0 = 0; d0 < Dp; d0 += LANES) {
#if defined(__SSE2__)
        __m128 q0[ROWS], q1[ROWS];
        for (int r = 0; r < ROWS; r++) {
            q0[r] = _mm_loadu_ps(q + (int64_t)r * Dp + d0);
            q1[r] = _mm_loadu_ps(q + (int64_t)r * Dp + d0 + 4);
        }
        for (int l = 0; l < L; l++) {
            float* dkl = dk + (int64_t)l * Dp + d0;
            __m128 a0 = _mm_loadu_ps(dkl), a1 = _mm_loadu_ps(dkl + 4);
            for (int r = 0; r < ROWS; r++) {
                __m128 x = _mm_set1_ps(ds[(int64_t)r * lds + l]);
                a0 = _mm_add_ps(a0, _mm_mul_ps(x, q0[r]));
                a1 = _mm_add_ps(a1, _mm_mul_ps(x, q1[r]));
            }
            _mm_storeu_ps(dkl, a0);
            _mm_storeu_ps(dkl + 4, a1);
        }
#else
        for (int l = 0; l < L; l++)
            for (int r = 0; r < ROWS; r++)
                for (int j = 0; j < LANES; j++)
                    dk[(int64_t)l * Dp + d0 + j] += ds[(int64_t)r * lds + l] * q[(int64_t)r * Dp + d0 + j];
#endif
    }
}

#ifdef L2S_AVX2_PATH
/* block_gemm and block_rank_update with 8-wide FMA tiles, two per row (8 independent accumulators
 * hide the FMA latency); a last odd tile of 8 columns runs alone. */
__attribute__((target("avx2,fma")))
void l2s_block_gemm_avx2(const float* a, int lda, int K, const float* bm, int ldb, int ncols, float* out, int ldo) {
    int j0 = 0;
    for (; j0 + 2 * LANES <= ncols; j0 += 2 * LANES) {
        __m256 acc[ROWS][2];
        for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (int i = 0; i < K; i++) {
            const float* bi = bm + (int64_t)i * ldb + j0;
            __m256 b0 = _mm256_loadu_ps(bi), b1 = _mm256_loadu_ps(bi + LANES);
            for (int r = 0; r < ROWS; r++) {
                __m256 x = _mm256_broadcast_ss(a + (int64_t)r * lda + i);
                acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
            }
        }
        for (int r = 0; r < ROWS; r++) {
            _mm256_storeu_ps(out + (int64_t)r * ldo + j0, acc[r][0]);
            _mm256_storeu_ps(out + (int64_t)r * ldo + j0 + LANES, acc[r][1]);
        }
    }
    if (j0 < ncols) {
        __m256 acc[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = _mm256_setzero_ps();
        for (int i = 0; i < K; i++) {
            __m256 b0 = _mm256_loadu_ps(bm + (int64_t)i * ldb + j0);
            for (int r = 0; r < ROWS; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (int64_t)r * lda + i), b0, acc[r]);
        }
        for (int r = 0; r < ROWS; r++) _mm256_storeu_ps(out + (int64_t)r * ldo + j0, acc[r]);
    }
}

__attribute__((target("avx2,fma")))
void l2s_block_rank_update_avx2(const float* ds, int lds, const float* q, int L, int Dp, float* dk) {
    for (int d0 = 0; d0 < Dp; d0 += LANES) {
        __m256 qt[ROWS];
        for (int r = 0; r < ROWS; r++) qt[r] = _mm256_loadu_ps(q + (int64_t)r * Dp + d0);
        for (int l = 0; l < L; l++) {
            float* dkl = dk + (int64_t)l * Dp + d0;
            __m256 acc = _mm256_loadu_ps(dkl);
            for (int r = 0; r < ROWS; r++)
                acc = _mm256_fmadd_ps(_mm256_broadcast_ss(ds + (int64_t)r * lds + l), qt[r], acc);
            _mm256_storeu_ps(dkl, acc);
        }
    }
}
#endif

l2s_block_ops l2s_pick_block_ops(void) {
#ifdef L2S_AVX2_PATH
    if (l2s_use_avx2()) return (l2s_block_ops){l2s_block_gemm_avx2, l2s_block_rank_update_avx2};
#endif
    return (l2s_block_ops){l2s_block_gemm_sse, l2s_block_rank_update_sse};
}
