/*
 * attn_maps.c — cross-attention maps for a few tokens without materialising [B, H, N, L].
 * The model keeps its fused attention for its own output; we recompute only softmax rows,
 * one image position at a time, and keep the columns of the tokens we were asked for.
 */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "l2s.h"
#include "numeric.h"
#include "parallel.h"

/* Copy rows [row0, row0 + rows) of head (b, h) of a strided [B, H, R, D] tensor into dense floats. */
static void load_rows(const void* src, const int64_t st[4], l2s_dtype dt, int b, int h, int row0, int rows,
                      int D, float* dst) {
    int64_t base = (int64_t)b * st[0] + (int64_t)h * st[1];
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < D; d++)
            dst[(int64_t)r * D + d] = l2s_load(src, base + (int64_t)(row0 + r) * st[2] + (int64_t)d * st[3], dt);
}

/* p[l] = softmax_l(scale * q . k[l]) for one query row. */
static void softmax_row(const float* q, const float* kh, int L, int D, float scale, float* p) {
    float mx = -INFINITY;
    for (int l = 0; l < L; l++) {
        p[l] = l2s_dot_f32(q, kh + (int64_t)l * D, D) * scale;
        if (p[l] > mx) mx = p[l];
    }
    float sum = 0.f;
    for (int l = 0; l < L; l++) { p[l] = expf(p[l] - mx); sum += p[l]; }
    float inv = 1.f / sum;
    for (int l = 0; l < L; l++) p[l] *= inv;
}

/* dq += a * k and dk += a * q over D: the two rank-1 updates of the softmax backward.
 * restrict: the four rows are disjoint slices of one scratch block. */
static inline void axpy2(int D, float a, const float* restrict k, float* restrict dq,
                         const float* restrict q, float* restrict dk) {
    for (int d = 0; d < D; d++) { dq[d] += a * k[d]; dk[d] += a * q[d]; }
}

typedef struct {
    const l2s_attn_shape* s;
    const void *q, *k;
    const int32_t* tokens;
    const float* dmaps;     /* backward only */
    float* maps;            /* forward only */
    void *dq, *dk;          /* backward only */
    int failed;             /* a worker could not get scratch memory */
} attn_job;

/* No L2S_HOT here: on the AMD EPYC of our CI machines the AVX2 clone ran these loops 1.1x (forward)
 * and 2.4x (backward) SLOWER than the baseline build (benchmarks/bench_core.py), so none is made. */

/* Forward over flattened rows (b, n) in [begin, end): each worker owns its rows of maps. */
static void attn_forward_rows(void* vjob, int64_t begin, int64_t end) {
    attn_job* job = (attn_job*)vjob;
    const l2s_attn_shape* s = job->s;
    const int N = s->N, L = s->L, D = s->D, T = s->T, M = s->M;
    float* kh = (float*)malloc(sizeof(float) * ((size_t)L * D + D + L));
    if (!kh) { job->failed = 1; return; }
    float* qr = kh + (size_t)L * D;
    float* p = qr + D;
    const float inv_heads = 1.f / (float)s->H;
    for (int64_t row = begin; row < end;) {
        int b = (int)(row / N), n0 = (int)(row % N);
        int n1 = (int)((end - row) < (N - n0) ? n0 + (end - row) : N);
        for (int t = 0; t < T; t++)
            memset(job->maps + ((int64_t)b * T + t) * N + n0, 0, sizeof(float) * (size_t)(n1 - n0));
        for (int h = 0; h < s->H; h++) {
            load_rows(job->k, s->k_strides, s->dtype, b, h, 0, L, D, kh);
            for (int n = n0; n < n1; n++) {
                load_rows(job->q, s->q_strides, s->dtype, b, h, n, 1, D, qr);
                softmax_row(qr, kh, L, D, s->scale, p);
                for (int t = 0; t < T; t++) {
                    float acc = 0.f;
                    for (int m = 0; m < M; m++) {
                        int tok = job->tokens[t * M + m];
                        if (tok >= 0) acc += p[tok];
                    }
                    job->maps[((int64_t)b * T + t) * N + n] += acc * inv_heads;
                }
            }
        }
        row += n1 - n0;
    }
    free(kh);
}

int attn_maps_forward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                          const int32_t* tokens, float* maps) {
    attn_job job = {s, q, k, tokens, NULL, maps, NULL, NULL, 0};
    l2s_parallel_for((int64_t)s->B * s->N, 64, attn_forward_rows, &job);
    return job.failed ? -1 : 0;
}

/* Backward over heads (b, h) in [begin, end): each worker owns dq[b, h] and dk[b, h]. */
static void attn_backward_heads(void* vjob, int64_t begin, int64_t end) {
    attn_job* job = (attn_job*)vjob;
    const l2s_attn_shape* s = job->s;
    const int H = s->H, N = s->N, L = s->L, D = s->D, T = s->T, M = s->M;
    const float scale = s->scale;             /* locals: float stores below cannot alias them */
    const l2s_dtype dt = s->dtype;
    const int32_t* tokens = job->tokens;
    const float* dmaps = job->dmaps;
    /* kh: the head's keys; dkh: dK accumulator over all N rows; qr, p, w, dq_row: per row. */
    size_t nfl = (size_t)L * D * 2 + (size_t)D * 2 + (size_t)L * 2;
    float* kh = (float*)malloc(sizeof(float) * nfl);
    if (!kh) { job->failed = 1; return; }
    float* dkh = kh + (size_t)L * D;
    float* qr = dkh + (size_t)L * D;
    float* dq_row = qr + D;
    float* p = dq_row + D;
    float* w = p + L;
    const float inv_heads = 1.f / (float)H;
    for (int64_t bh = begin; bh < end; bh++) {
        int b = (int)(bh / H), h = (int)(bh % H);
        load_rows(job->k, s->k_strides, s->dtype, b, h, 0, L, D, kh);
        memset(dkh, 0, sizeof(float) * (size_t)L * D);
        for (int n = 0; n < N; n++) {
            load_rows(job->q, s->q_strides, dt, b, h, n, 1, D, qr);
            softmax_row(qr, kh, L, D, scale, p);
            /* w[l] = d maps / d p[l] for this row: which maps read column l, and how hard. */
            memset(w, 0, sizeof(float) * L);
            for (int t = 0; t < T; t++) {
                float g = dmaps[((int64_t)b * T + t) * N + n] * inv_heads;
                for (int m = 0; m < M; m++) {
                    int tok = tokens[t * M + m];
                    if (tok >= 0) w[tok] += g;
                }
            }
            /* softmax backward: ds = p * (w - <p, w>), then ds flows into q and k. */
            float pw = 0.f;
            for (int l = 0; l < L; l++) pw += p[l] * w[l];
            memset(dq_row, 0, sizeof(float) * D);
            for (int l = 0; l < L; l++) {
                float ds = p[l] * (w[l] - pw) * scale;
                if (ds == 0.f) continue;
                axpy2(D, ds, kh + (int64_t)l * D, dq_row, qr, dkh + (int64_t)l * D);
            }
            int64_t dq_base = (bh * N + n) * D;
            for (int d = 0; d < D; d++) l2s_store(job->dq, dq_base + d, dt, dq_row[d]);
        }
        for (int64_t i = 0; i < (int64_t)L * D; i++) l2s_store(job->dk, bh * L * D + i, dt, dkh[i]);
    }
    free(kh);
}

int attn_maps_backward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                           const int32_t* tokens, const float* dmaps, void* dq, void* dk) {
    attn_job job = {s, q, k, tokens, dmaps, NULL, dq, dk, 0};
    l2s_parallel_for((int64_t)s->B * s->H, 1, attn_backward_heads, &job);
    return job.failed ? -1 : 0;
}
