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
#include "tiles.h"

/* Query rows per block: the row count of the register tiles (tiles.h). */
enum { ROWS = L2S_ROWS };

/* Copy rows [row0, row0 + rows) of head (b, h) of a strided [B, H, R, D] tensor into dense floats
 * with row stride ld (>= D); columns D..ld and rows rows..pad_rows are zeroed. */
static void load_rows(const void* src, const int64_t st[4], l2s_dtype dt, int b, int h, int row0, int rows,
                      int pad_rows, int D, int ld, float* dst) {
    int64_t base = (int64_t)b * st[0] + (int64_t)h * st[1];
    for (int r = 0; r < pad_rows; r++) {
        float* out = dst + (int64_t)r * ld;
        int filled = r < rows ? D : 0;
        int64_t at = base + (int64_t)(row0 + r) * st[2];
        if (filled && dt == L2S_F32 && st[3] == 1)      /* the common case: a plain copy, not D typed loads */
            memcpy(out, (const float*)src + at, sizeof(float) * (size_t)D);
        else
            for (int d = 0; d < filled; d++) out[d] = l2s_load(src, at + (int64_t)d * st[3], dt);
        for (int d = filled; d < ld; d++) out[d] = 0.f;
    }
}

/* Store n dense floats at element `at` of a contiguous output of type dt (dQ and dK rows). */
static void store_row(void* dst, int64_t at, l2s_dtype dt, const float* src, int n) {
    if (dt == L2S_F32) memcpy((float*)dst + at, src, sizeof(float) * (size_t)n);
    else for (int d = 0; d < n; d++) l2s_store(dst, at + d, dt, src[d]);
}

/* Keys of head (b, h) as dense K^T [D, Lp], zero padded past L (the forward GEMM's right side). */
static void load_keys_t(const void* k, const int64_t st[4], l2s_dtype dt, int b, int h, int L, int Lp, int D,
                        float* kt) {
    int64_t base = (int64_t)b * st[0] + (int64_t)h * st[1];
    for (int d = 0; d < D; d++) {
        float* row = kt + (int64_t)d * Lp;
        int64_t at = base + (int64_t)d * st[3];
        if (dt == L2S_F32)                              /* no per-element dtype dispatch */
            for (int l = 0; l < L; l++) row[l] = ((const float*)k)[at + (int64_t)l * st[2]];
        else
            for (int l = 0; l < L; l++) row[l] = l2s_load(k, at + (int64_t)l * st[2], dt);
        for (int l = L; l < Lp; l++) row[l] = 0.f;
    }
}


/* In place: p[l] = exp(scale * (p[l] - max)) over the first L entries; returns 1 / sum, the
 * factor that makes them the softmax (the forward only needs it at the requested tokens). */
static float softmax_row_unnormalised(int avx2, float* p, int L, float scale) {
    /* NaN when a logit is NaN or infinite (a NaN in Q or K): the maps must show it, so that the
     * steering loop sees it and skips the update (the exp reports NaN arguments; an infinite
     * logit becomes one there, inf - inf, or makes the sum infinite) */
    float sum = l2s_exp_shifted(avx2, p, L, l2s_max_f32(p, L), scale);
    return isfinite(sum) ? 1.f / sum : NAN;
}

typedef struct {
    const l2s_attn_shape* s;
    const void *q, *k;
    const int32_t* tokens;
    const float* dmaps;     /* backward only */
    float* maps;            /* forward only */
    void *dq, *dk;          /* backward only */
    l2s_block_ops ops;      /* SSE2 or AVX2+FMA block products */
    int avx2;               /* and the matching exp (simd.h) */
    int failed;             /* a worker could not get scratch memory */
} attn_job;

/* Forward over flattened rows (b, n) in [begin, end): each worker owns its rows of maps. */
static void attn_forward_rows(void* vjob, int64_t begin, int64_t end) {
    attn_job* job = (attn_job*)vjob;
    const l2s_attn_shape* s = job->s;
    const int N = s->N, L = s->L, D = s->D, T = s->T, M = s->M, Lp = l2s_padded(L);
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
                job->ops.gemm(qb, D, 1, D, kt, Lp, Lp, p, Lp, 0);
                for (int r = 0; r < rows; r++) {
                    float* pr = p + (int64_t)r * Lp;
                    float inv_sum = softmax_row_unnormalised(job->avx2, pr, L, s->scale);
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
    attn_job job = {s, q, k, tokens, NULL, maps, NULL, NULL, l2s_pick_block_ops(), l2s_use_avx2(), 0};
    l2s_parallel_for((int64_t)s->B * s->N, 64, attn_forward_rows, &job);
    return job.failed ? -1 : 0;
}

/* In place: the logits row pr [Lp] of query n of head (b, h) becomes ds = p * (w - <p, w>) * scale,
 * p its softmax, w[l] = d maps / d p[l] (which maps read column l, and how hard), zero past L.
 * w is non-zero only at the token columns, so <p, w> is summed there alone (a dense sum was a serial
 * chain of L adds per row: a tenth of the 64x64 layer's fwd+bwd). w [L] is scratch. */
static void softmax_row_backward(const attn_job* job, int b, int h, int n, const float* tw, float* pr, float* w) {
    const l2s_attn_shape* s = job->s;
    const int L = s->L, Lp = l2s_padded(L), T = s->T, M = s->M;
    const float scale = s->scale;             /* locals: float stores below cannot alias them */
    float inv_sum = softmax_row_unnormalised(job->avx2, pr, L, scale);
    memset(w, 0, sizeof(float) * L);
    float pw = 0.f;
    for (int t = 0; t < T; t++) {
        float g = job->dmaps[l2s_attn_map_index(s, b, t, h, n)] * tw[t];
        for (int m = 0; m < M; m++) {
            int tok = job->tokens[t * M + m];
            if (tok >= 0) { w[tok] += g; pw += g * pr[tok]; }
        }
    }
    pw *= inv_sum;
    for (int l = 0; l < L; l++) pr[l] = pr[l] * inv_sum * (w[l] - pw) * scale;
    for (int l = L; l < Lp; l++) pr[l] = 0.f;
}

/* Backward over heads (b, h) in [begin, end): each worker owns dq[b, h] and dk[b, h]. Per block
 * of ROWS query rows: recompute the softmax, ds = p * (w - <p, w>) * scale with w = d maps / d p,
 * then dQ = dS K; per group of GROUP blocks dK += dS^T Q (dS read transposed in place), so dK
 * passes through the registers once per GROUP * ROWS rows, not once per block (a rank-ROWS update
 * per block loaded and stored all of dK each time: it bounded the 16x16 and 32x32 layers). */
enum { GROUP = 8 };
static void attn_backward_heads(void* vjob, int64_t begin, int64_t end) {
    attn_job* job = (attn_job*)vjob;
    const l2s_attn_shape* s = job->s;
    const int H = s->H, N = s->N, L = s->L, D = s->D, T = s->T, Lp = l2s_padded(L), Dp = l2s_padded(D);
    const l2s_dtype dt = s->dtype;
    /* kh [L, Dp] and kt [D, Lp]: the head's keys both ways; dkh [Lp, Dp]: dK over all N rows (rows
     * past L stay zero: whole ROWS-row tiles); qb [GROUP * ROWS, Dp]: a group of row blocks;
     * dqb [ROWS, Dp]: a block's dQ; p [GROUP * ROWS, Lp]: probabilities, then ds; w [L]. */
    const int GR = GROUP * ROWS;
    size_t nfl = (size_t)L * Dp + (size_t)Lp * Dp + (size_t)Lp * D + (size_t)GR * Dp + (size_t)ROWS * Dp
                 + (size_t)GR * Lp + (size_t)L;
    float* kh = (float*)malloc(sizeof(float) * nfl);
    if (!kh) { job->failed = 1; return; }
    float* dkh = kh + (size_t)L * Dp;
    float* kt = dkh + (size_t)Lp * Dp;
    float* qb = kt + (size_t)Lp * D;
    float* dqb = qb + (size_t)GR * Dp;
    float* p = dqb + (size_t)ROWS * Dp;
    float* w = p + (size_t)GR * Lp;
    float tw[L2S_MAX_TOKEN_SLOTS];
    for (int t = 0; t < T; t++) tw[t] = l2s_attn_token_weight(s, job->tokens, t);
    for (int64_t bh = begin; bh < end; bh++) {
        int b = (int)(bh / H), h = (int)(bh % H);
        load_rows(job->k, s->k_strides, dt, b, h, 0, L, L, D, Dp, kh);
        load_keys_t(job->k, s->k_strides, dt, b, h, L, Lp, D, kt);
        memset(dkh, 0, sizeof(float) * (size_t)Lp * Dp);
        for (int g0 = 0; g0 < N; g0 += GR) {
            /* whole blocks: rows past N are zero in qb and p, so they add nothing to dK */
            int group_rows = N - g0 < GR ? l2s_round_up(N - g0, ROWS) : GR;
            for (int n0 = g0; n0 < g0 + group_rows; n0 += ROWS) {
                int rows = N - n0 < ROWS ? N - n0 : ROWS;
                float* qs = qb + (int64_t)(n0 - g0) * Dp;
                float* ps = p + (int64_t)(n0 - g0) * Lp;
                load_rows(job->q, s->q_strides, dt, b, h, n0, rows, ROWS, D, Dp, qs);
                job->ops.gemm(qs, Dp, 1, D, kt, Lp, Lp, ps, Lp, 0);
                for (int r = 0; r < ROWS; r++) {
                    float* pr = ps + (int64_t)r * Lp;
                    if (r < rows) softmax_row_backward(job, b, h, n0 + r, tw, pr, w);
                    else memset(pr, 0, sizeof(float) * (size_t)Lp);             /* no row: no ds */
                }
                job->ops.gemm(ps, Lp, 1, L, kh, Dp, Dp, dqb, Dp, 0);
                for (int r = 0; r < rows; r++) store_row(job->dq, (bh * N + n0 + r) * D, dt, dqb + (int64_t)r * Dp, D);
            }
            for (int l0 = 0; l0 < Lp; l0 += ROWS)     /* dK[l0 : l0 + ROWS] += dS^T Q over the group */
                job->ops.gemm(p + l0, 1, Lp, group_rows, qb, Dp, Dp, dkh + (int64_t)l0 * Dp, Dp, 1);
        }
        for (int l = 0; l < L; l++) store_row(job->dk, (bh * L + l) * D, dt, dkh + (int64_t)l * Dp, D);
    }
    free(kh);
}

int attn_maps_backward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                           const int32_t* tokens, const float* dmaps, void* dq, void* dk) {
    attn_job job = {s, q, k, tokens, dmaps, NULL, dq, dk, l2s_pick_block_ops(), l2s_use_avx2(), 0};
    l2s_parallel_for((int64_t)s->B * s->H, 1, attn_backward_heads, &job);
    return job.failed ? -1 : 0;
}
