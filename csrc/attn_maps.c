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

/* Copy head (b, h) of a strided [B, H, rows, D] tensor into a dense float [rows, D] buffer. */
static void load_head(const void* src, const int64_t st[4], l2s_dtype dt, int b, int h,
                      int rows, int D, float* dst) {
    int64_t base = (int64_t)b * st[0] + (int64_t)h * st[1];
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < D; d++)
            dst[(int64_t)r * D + d] = l2s_load(src, base + (int64_t)r * st[2] + (int64_t)d * st[3], dt);
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

L2S_HOT int attn_maps_forward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                           const int32_t* tokens, float* maps) {
    const int B = s->B, H = s->H, N = s->N, L = s->L, D = s->D, T = s->T, M = s->M;
    float* kh = (float*)malloc(sizeof(float) * ((size_t)L * D + (size_t)N * D + L));
    if (!kh) return -1;
    float* qh = kh + (size_t)L * D;
    float* p = qh + (size_t)N * D;
    memset(maps, 0, sizeof(float) * (size_t)B * T * N);
    const float inv_heads = 1.f / (float)H;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            load_head(k, s->k_strides, s->dtype, b, h, L, D, kh);
            load_head(q, s->q_strides, s->dtype, b, h, N, D, qh);
            for (int n = 0; n < N; n++) {
                softmax_row(qh + (int64_t)n * D, kh, L, D, s->scale, p);
                for (int t = 0; t < T; t++) {
                    float acc = 0.f;
                    for (int m = 0; m < M; m++) {
                        int tok = tokens[t * M + m];
                        if (tok >= 0) acc += p[tok];
                    }
                    maps[((int64_t)b * T + t) * N + n] += acc * inv_heads;
                }
            }
        }
    }
    free(kh);
    return 0;
}

L2S_HOT int attn_maps_backward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                            const int32_t* tokens, const float* dmaps, void* dq, void* dk) {
    const int B = s->B, H = s->H, N = s->N, L = s->L, D = s->D, T = s->T, M = s->M;
    /* kh, qh: the head as floats; dkh: dK accumulator (sums over all N rows); p, w: per row. */
    size_t nfl = (size_t)L * D * 2 + (size_t)N * D + (size_t)L * 2 + (size_t)D;
    float* kh = (float*)malloc(sizeof(float) * nfl);
    if (!kh) return -1;
    float* dkh = kh + (size_t)L * D;
    float* qh = dkh + (size_t)L * D;
    float* p = qh + (size_t)N * D;
    float* w = p + L;
    float* dq_row = w + L;
    const float inv_heads = 1.f / (float)H;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            load_head(k, s->k_strides, s->dtype, b, h, L, D, kh);
            load_head(q, s->q_strides, s->dtype, b, h, N, D, qh);
            memset(dkh, 0, sizeof(float) * (size_t)L * D);
            int64_t dq_base = ((int64_t)b * H + h) * N * D;
            for (int n = 0; n < N; n++) {
                const float* qr = qh + (int64_t)n * D;
                softmax_row(qr, kh, L, D, s->scale, p);
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
                    float ds = p[l] * (w[l] - pw) * s->scale;
                    if (ds == 0.f) continue;
                    const float* kr = kh + (int64_t)l * D;
                    float* dkr = dkh + (int64_t)l * D;
                    for (int d = 0; d < D; d++) { dq_row[d] += ds * kr[d]; dkr[d] += ds * qr[d]; }
                }
                for (int d = 0; d < D; d++) l2s_store(dq, dq_base + (int64_t)n * D + d, s->dtype, dq_row[d]);
            }
            int64_t dk_base = ((int64_t)b * H + h) * L * D;
            for (int64_t i = 0; i < (int64_t)L * D; i++) l2s_store(dk, dk_base + i, s->dtype, dkh[i]);
        }
    }
    free(kh);
    return 0;
}
