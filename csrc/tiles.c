/*
 * tiles.c — register-tiled block products shared by the attention-map extraction and the
 * classifier's linear layers: ROWS rows of a left matrix times a right matrix whose columns run
 * along the inner loop (no horizontal sums), SSE2 everywhere and AVX2+FMA picked at run time.
 */
#include "tiles.h"
#include "simd.h"

enum { ROWS = L2S_ROWS, LANES = L2S_LANES };

/* out[r, j] (+)= sum_{i < K} a[r, i] * bm[i, j] for r < ROWS, j < ncols (a multiple of LANES), with
 * a[r, i] at a[r * a_row + i * a_col] (a_col != 1 reads a transposed: dK = dS^T Q, the classifier's
 * dW = dout^T in): also the logits (q . K^T), dQ (dS . K) and the classifier's dX. Columns run along
 * the inner loop, so there are no horizontal sums, and the ROWS x LANES accumulators stay in registers while each row of bm
 * serves ROWS rows of a. (Row-at-a-time dot products ran 3x slower than torch on bench_core.) */
void l2s_block_gemm_sse(const float* a, int a_row, int a_col, int K, const float* bm, int ldb, int ncols,
                        float* out, int ldo, int accumulate) {
    for (int j0 = 0; j0 < ncols; j0 += LANES) {
#if defined(__SSE2__)
        __m128 acc[ROWS][2];
        for (int r = 0; r < ROWS; r++) {
            acc[r][0] = accumulate ? _mm_loadu_ps(out + (int64_t)r * ldo + j0) : _mm_setzero_ps();
            acc[r][1] = accumulate ? _mm_loadu_ps(out + (int64_t)r * ldo + j0 + 4) : _mm_setzero_ps();
        }
        for (int i = 0; i < K; i++) {
            const float* bi = bm + (int64_t)i * ldb + j0;
            __m128 b0 = _mm_loadu_ps(bi), b1 = _mm_loadu_ps(bi + 4);
            for (int r = 0; r < ROWS; r++) {
                __m128 x = _mm_set1_ps(a[(int64_t)r * a_row + (int64_t)i * a_col]);
                acc[r][0] = _mm_add_ps(acc[r][0], _mm_mul_ps(x, b0));
                acc[r][1] = _mm_add_ps(acc[r][1], _mm_mul_ps(x, b1));
            }
        }
        for (int r = 0; r < ROWS; r++) {
            _mm_storeu_ps(out + (int64_t)r * ldo + j0, acc[r][0]);
            _mm_storeu_ps(out + (int64_t)r * ldo + j0 + 4, acc[r][1]);
        }
#else
        float acc[ROWS][LANES];
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < LANES; j++) acc[r][j] = accumulate ? out[(int64_t)r * ldo + j0 + j] : 0.f;
        for (int i = 0; i < K; i++)
            for (int r = 0; r < ROWS; r++)
                for (int j = 0; j < LANES; j++)
                    acc[r][j] += a[(int64_t)r * a_row + (int64_t)i * a_col] * bm[(int64_t)i * ldb + j0 + j];
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < LANES; j++) out[(int64_t)r * ldo + j0 + j] = acc[r][j];
#endif
    }
}

/* out[r, o] = sum_{i < K} a[r, i] * w[o, i] for r < ROWS, o < nw: the classifier's in W^T, whose
 * rows of W run along i, so each W row loaded serves ROWS rows of a and the sums end horizontal. */
void l2s_block_dots_sse(const float* a, int lda, const float* w, int ldw, int K, int nw, float* out, int ldo) {
    for (int o = 0; o < nw; o++) {
        const float* wo = w + (int64_t)o * ldw;
        int i = 0;
        float s[ROWS];
#if defined(__SSE2__)
        __m128 acc[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = _mm_setzero_ps();
        for (; i + 4 <= K; i += 4) {
            __m128 wv = _mm_loadu_ps(wo + i);
            for (int r = 0; r < ROWS; r++)
                acc[r] = _mm_add_ps(acc[r], _mm_mul_ps(_mm_loadu_ps(a + (int64_t)r * lda + i), wv));
        }
        for (int r = 0; r < ROWS; r++) {
            float t[4];
            _mm_storeu_ps(t, acc[r]);
            s[r] = (t[0] + t[2]) + (t[1] + t[3]);
        }
#else
        for (int r = 0; r < ROWS; r++) s[r] = 0.f;
#endif
        for (; i < K; i++)
            for (int r = 0; r < ROWS; r++) s[r] += a[(int64_t)r * lda + i] * wo[i];
        for (int r = 0; r < ROWS; r++) out[(int64_t)r * ldo + o] = s[r];
    }
}

#ifdef L2S_AVX2_PATH
/* block_gemm with 8-wide FMA tiles, two per row (8 independent accumulators
 * hide the FMA latency); a last odd tile of 8 columns runs alone. */
__attribute__((target("avx2,fma")))
void l2s_block_gemm_avx2(const float* a, int a_row, int a_col, int K, const float* bm, int ldb, int ncols,
                         float* out, int ldo, int accumulate) {
    int j0 = 0;
    for (; j0 + 2 * LANES <= ncols; j0 += 2 * LANES) {
        __m256 acc[ROWS][2];
        for (int r = 0; r < ROWS; r++) {
            acc[r][0] = accumulate ? _mm256_loadu_ps(out + (int64_t)r * ldo + j0) : _mm256_setzero_ps();
            acc[r][1] = accumulate ? _mm256_loadu_ps(out + (int64_t)r * ldo + j0 + LANES) : _mm256_setzero_ps();
        }
        for (int i = 0; i < K; i++) {
            const float* bi = bm + (int64_t)i * ldb + j0;
            __m256 b0 = _mm256_loadu_ps(bi), b1 = _mm256_loadu_ps(bi + LANES);
            for (int r = 0; r < ROWS; r++) {
                __m256 x = _mm256_broadcast_ss(a + (int64_t)r * a_row + (int64_t)i * a_col);
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
        for (int r = 0; r < ROWS; r++)
            acc[r] = accumulate ? _mm256_loadu_ps(out + (int64_t)r * ldo + j0) : _mm256_setzero_ps();
        for (int i = 0; i < K; i++) {
            __m256 b0 = _mm256_loadu_ps(bm + (int64_t)i * ldb + j0);
            for (int r = 0; r < ROWS; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (int64_t)r * a_row + (int64_t)i * a_col), b0, acc[r]);
        }
        for (int r = 0; r < ROWS; r++) _mm256_storeu_ps(out + (int64_t)r * ldo + j0, acc[r]);
    }
}

__attribute__((target("avx2,fma")))
static inline float hsum256(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    return _mm_cvtss_f32(_mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1)));
}

/* block_dots with 8-wide FMA, two W rows at a time (ROWS x 2 accumulators). */
__attribute__((target("avx2,fma")))
void l2s_block_dots_avx2(const float* a, int lda, const float* w, int ldw, int K, int nw, float* out, int ldo) {
    int o = 0;
    for (; o + 2 <= nw; o += 2) {
        const float* w0 = w + (int64_t)o * ldw;
        const float* w1 = w0 + ldw;
        __m256 acc[ROWS][2];
        for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        int i = 0;
        for (; i + LANES <= K; i += LANES) {
            __m256 v0 = _mm256_loadu_ps(w0 + i), v1 = _mm256_loadu_ps(w1 + i);
            for (int r = 0; r < ROWS; r++) {
                __m256 x = _mm256_loadu_ps(a + (int64_t)r * lda + i);
                acc[r][0] = _mm256_fmadd_ps(x, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x, v1, acc[r][1]);
            }
        }
        for (int r = 0; r < ROWS; r++) {
            float s0 = hsum256(acc[r][0]), s1 = hsum256(acc[r][1]);
            for (int k = i; k < K; k++) {
                s0 += a[(int64_t)r * lda + k] * w0[k];
                s1 += a[(int64_t)r * lda + k] * w1[k];
            }
            out[(int64_t)r * ldo + o] = s0;
            out[(int64_t)r * ldo + o + 1] = s1;
        }
    }
    if (o < nw) l2s_block_dots_sse(a, lda, w + (int64_t)o * ldw, ldw, K, nw - o, out + o, ldo);
}

#endif

l2s_block_ops l2s_pick_block_ops(void) {
#ifdef L2S_AVX2_PATH
    if (l2s_use_avx2()) return (l2s_block_ops){l2s_block_gemm_avx2, l2s_block_dots_avx2};
#endif
    return (l2s_block_ops){l2s_block_gemm_sse, l2s_block_dots_sse};
}
