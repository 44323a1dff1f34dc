/*
 * attn_maps.c — cross-attention maps for a few tokens without materialising [B, H, N, L].
 * The model keeps its fused attention for its own output; we recompute only softmax rows,
 * a block of ROWS image positions at a time, and keep the columns of the tokens we were asked for.
 */
#include <stdlib.h>
#include <string.h>
#include "l2s.h"
#include "numeric.h"
#include "simd.h"
#include "parallel.h"

/* ROWS query rows per block; LANES output columns per register tile (two SSE vectors). */
enum { ROWS = 4, LANES = 8 };

static inline int padded(int n) { return (n + LANES - 1) / LANES * LANES; }

/* Copy rows [row0, row0 + rows) of head (b, h) of a strided [B, H, R, D] tensor into dense floats
 * with row stride ld (>= D); columns D..ld and rows rows..pad_rows are zeroed. */
static void load_rows(const void* src, const int64_t st[4], l2s_dtype dt, int b, int h, int row0, int rows,
                      int pad_rows, int D, int ld, float* dst) {
    int64_t base = (int64_t)b * st[0] + (int64_t)h * st[1];
    for (int r = 0; r < pad_rows; r++) {
        float* out = dst + (int64_t)r * ld;
        int filled = r < rows ? D : 0;
        for (int d = 0; d < filled; d++)
            out[d] = l2s_load(src, base + (int64_t)(row0 + r) * st[2] + (int64_t)d * st[3], dt);
        for (int d = filled; d < ld; d++) out[d] = 0.f;
    }
}

/* Keys of head (b, h) as dense K^T [D, Lp], zero padded past L (the forward GEMM's right side). */
static void load_keys_t(const void* k, const int64_t st[4], l2s_dtype dt, int b, int h, int L, int Lp, int D,
                        float* kt) {
    int64_t base = (int64_t)b * st[0] + (int64_t)h * st[1];
    for (int d = 0; d < D; d++) {
        float* row = kt + (int64_t)d * Lp;
        for (int l = 0; l < L; l++) row[l] = l2s_load(k, base + (int64_t)l * st[2] + (int64_t)d * st[3], dt);
        for (int l = L; l < Lp; l++) row[l] = 0.f;
    }
}

/* out[r, j] = sum_{i < K} a[r, i] * bm[i, j] for r < ROWS, j < ncols (a multiple of LANES): the
 * logits (q . K^T) and dQ (dS . K) of a row block. Columns run along the inner loop, so there are
 * no horizontal sums, and the ROWS x LANES accumulators stay in registers while each row of bm
 * serves ROWS rows of a. (Row-at-a-time dot products ran 3x slower than torch on bench_core.) */
static void block_gemm(const float* a, int lda, int K, const float* bm, int ldb, int ncols, float* out, int ldo) {
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
static void block_rank_update(const float* ds, int lds, const float* q, int L, int Dp, float* dk) {
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
static void block_gemm_avx2(const float* a, int lda, int K, const float* bm, int ldb, int ncols, float* out, int ldo) {
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
static void block_rank_update_avx2(const float* ds, int lds, const float* q, int L, int Dp, float* dk) {
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

/* The widest variant this CPU runs (chosen once per op call). */
typedef struct {
    void (*gemm)(const float*, int, int, const float*, int, int, float*, int);
    void (*rank_update)(const float*, int, const float*, int, int, float*);
} block_ops;

static block_ops pick_block_ops(void) {
#ifdef L2S_AVX2_PATH
    if (l2s_use_avx2()) return (block_ops){block_gemm_avx2, block_rank_update_avx2};
#endif
    return (block_ops){block_gemm, block_rank_update};
}

/* In place: p[l] = exp(scale * (p[l] - max)) over the first L entries; returns 1 / sum, the
 * factor that makes them the softmax (the forward only needs it at the requested tokens). */
static float softmax_row_unnormalised(float* p, int L, float scale) {
    /* NaN when a logit is NaN or infinite (a NaN in Q or K): the maps must show it, so that the
     * steering loop sees it and skips the update (the exp reports NaN arguments; an infinite
     * logit becomes one there, inf - inf, or makes the sum infinite) */
    float sum = l2s_exp_shifted_inplace(p, L, l2s_max_f32(p, L), scale);
    return isfinite(sum) ? 1.f / sum : NAN;
}

typedef struct {
    const l2s_attn_shape* s;
    const void *q, *k;
    const int32_t* tokens;
    const float* dmaps;     /* backward only */
    float* maps;            /* forward only */
    void *dq, *dk;          /* backward only */
    block_ops ops;          /* SSE2 or AVX2+FMA block products */
    int failed;             /* a worker could not get scratch memory */
} attn_job;

/* Forward over flattened rows (b, n) in [begin, end): each worker owns its rows of maps. */
static void attn_forward_rows(void* vjob, int64_t begin, int64_t end) {
    attn_job* job = (attn_job*)vjob;
    const l2s_attn_shape* s = job->s;
    const int N = s->N, L = s->L, D = s->D, T = s->T, M = s->M, Lp = padded(L);
    float* kt = (float*)malloc(sizeof(float) * ((size_t)Lp * D + (size_t)ROWS * D + (size_t)ROWS * Lp));
    if (!kt) { job->failed = 1; return; }
    float* qb = kt + (size_t)Lp * D;
    float* p = qb + (size_t)ROWS * D;
    float tw[L2S_MAX_TOKEN_SLOTS];                      /* per object: head and token weights */
    for (int t = 0; t < T; t++) tw[t] = l2s_attn_token_weight(s, job->tokens, t);
    for (int64_t row = begin; row < end;) {
        int b = (int)(row / N), n0 = (int)(row % N);
        int n1 = (int)((end - row) < (N - n0) ? n0 + (end - row) : N);
        for (int t = 0; t < T && !s->per_head; t++)     /* the head mean accumulates; per head writes */
            memset(job->maps + ((int64_t)b * T + t) * N + n0, 0, sizeof(float) * (size_t)(n1 - n0));
        for (int h = 0; h < s->H; h++) {
            load_keys_t(job->k, s->k_strides, s->dtype, b, h, L, Lp, D, kt);
            for (int n = n0; n < n1; n += ROWS) {
                int rows = n1 - n < ROWS ? n1 - n : ROWS;
                load_rows(job->q, s->q_strides, s->dtype, b, h, n, rows, ROWS, D, D, qb);
                job->ops.gemm(qb, D, D, kt, Lp, Lp, p, Lp);
                for (int r = 0; r < rows; r++) {
                    float* pr = p + (int64_t)r * Lp;
                    float inv_sum = softmax_row_unnormalised(pr, L, s->scale);
                    for (int t = 0; t < T; t++) {
                        float acc = 0.f;
                        for (int m = 0; m < M; m++) {
                            int tok = job->tokens[t * M + m];
                            if (tok >= 0) acc += pr[tok];
                        }
                        float v = acc * inv_sum * tw[t];
                        float* dst = job->maps + l2s_attn_map_index(s, b, t, h, n + r);
                        *dst = s->per_head ? v : *dst + v;
                    }
                }
            }
        }
        row += n1 - n0;
    }
    free(kt);
}

int attn_maps_forward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                          const int32_t* tokens, float* maps) {
    attn_job job = {s, q, k, tokens, NULL, maps, NULL, NULL, pick_block_ops(), 0};
    l2s_parallel_for((int64_t)s->B * s->N, 64, attn_forward_rows, &job);
    return job.failed ? -1 : 0;
}

/* Backward over heads (b, h) in [begin, end): each worker owns dq[b, h] and dk[b, h]. Per block
 * of ROWS query rows: recompute the softmax, ds = p * (w - <p, w>) * scale with w = d maps / d p,
 * then dQ = dS K and dK += dS^T Q, both as register-tiled block products. */
static void attn_backward_heads(void* vjob, int64_t begin, int64_t end) {
    attn_job* job = (attn_job*)vjob;
    const l2s_attn_shape* s = job->s;
    const int H = s->H, N = s->N, L = s->L, D = s->D, T = s->T, M = s->M, Lp = padded(L), Dp = padded(D);
    const float scale = s->scale;             /* locals: float stores below cannot alias them */
    const l2s_dtype dt = s->dtype;
    const int32_t* tokens = job->tokens;
    const float* dmaps = job->dmaps;
    /* kh [L, Dp] and kt [D, Lp]: the head's keys both ways; dkh [L, Dp]: dK over all N rows;
     * qb, dqb [ROWS, Dp]: a row block and its dQ; p [ROWS, Lp]: probabilities, then ds; w [L]. */
    size_t nfl = (size_t)L * Dp * 2 + (size_t)Lp * D + (size_t)ROWS * Dp * 2 + (size_t)ROWS * Lp + (size_t)L;
    float* kh = (float*)malloc(sizeof(float) * nfl);
    if (!kh) { job->failed = 1; return; }
    float* dkh = kh + (size_t)L * Dp;
    float* kt = dkh + (size_t)L * Dp;
    float* qb = kt + (size_t)Lp * D;
    float* dqb = qb + (size_t)ROWS * Dp;
    float* p = dqb + (size_t)ROWS * Dp;
    float* w = p + (size_t)ROWS * Lp;
    float tw[L2S_MAX_TOKEN_SLOTS];
    for (int t = 0; t < T; t++) tw[t] = l2s_attn_token_weight(s, tokens, t);
    for (int64_t bh = begin; bh < end; bh++) {
        int b = (int)(bh / H), h = (int)(bh % H);
        load_rows(job->k, s->k_strides, dt, b, h, 0, L, L, D, Dp, kh);
        load_keys_t(job->k, s->k_strides, dt, b, h, L, Lp, D, kt);
        memset(dkh, 0, sizeof(float) * (size_t)L * Dp);
        for (int n0 = 0; n0 < N; n0 += ROWS) {
            int rows = N - n0 < ROWS ? N - n0 : ROWS;
            load_rows(job->q, s->q_strides, dt, b, h, n0, rows, ROWS, D, Dp, qb);
            job->ops.gemm(qb, Dp, D, kt, Lp, Lp, p, Lp);
            for (int r = 0; r < ROWS; r++) {
                float* pr = p + (int64_t)r * Lp;
                if (r >= rows) { memset(pr, 0, sizeof(float) * (size_t)Lp); continue; }   /* no row: no ds */
                float inv_sum = softmax_row_unnormalised(pr, L, scale);
                /* w[l] = d maps / d p[l] for this row: which maps read column l, and how hard. */
                memset(w, 0, sizeof(float) * L);
                for (int t = 0; t < T; t++) {
                    float g = dmaps[l2s_attn_map_index(s, b, t, h, n0 + r)] * tw[t];
                    for (int m = 0; m < M; m++) {
                        int tok = tokens[t * M + m];
                        if (tok >= 0) w[tok] += g;
                    }
                }
                float pw = 0.f;
                for (int l = 0; l < L; l++) { pr[l] *= inv_sum; pw += pr[l] * w[l]; }
                for (int l = 0; l < L; l++) pr[l] = pr[l] * (w[l] - pw) * scale;
                for (int l = L; l < Lp; l++) pr[l] = 0.f;
            }
            job->ops.gemm(p, Lp, L, kh, Dp, Dp, dqb, Dp);
            job->ops.rank_update(p, Lp, qb, L, Dp, dkh);
            for (int r = 0; r < rows; r++) {
                int64_t dq_base = (bh * N + n0 + r) * D;
                for (int d = 0; d < D; d++) l2s_store(job->dq, dq_base + d, dt, dqb[(int64_t)r * Dp + d]);
            }
        }
        for (int l = 0; l < L; l++)
            for (int d = 0; d < D; d++) l2s_store(job->dk, (bh * L + l) * D + d, dt, dkh[(int64_t)l * Dp + d]);
    }
    free(kh);
}

int attn_maps_backward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                           const int32_t* tokens, const float* dmaps, void* dq, void* dk) {
    attn_job job = {s, q, k, tokens, dmaps, NULL, dq, dk, pick_block_ops(), 0};
    l2s_parallel_for((int64_t)s->B * s->H, 1, attn_backward_heads, &job);
    return job.failed ? -1 : 0;
}
