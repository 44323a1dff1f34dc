/*
 * authors_net_cpu.c — the steps of the authors' network (authors_ops.h) on the CPU: the shared
 * layers of layers.c, per-head attention on the register tiles and the packed product, threads over
 * (sequence, head) pairs. kernels/authors_net.cu is the CUDA twin of this file.
 */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "authors_ops.h"
#include "layers.h"
#include "parallel.h"
#include "simd.h"
#include "tiles.h"

static int linear_forward(void* x, const float* in, const float* W, const float* b, int rows, int I, int O, float* out) {
    (void)x;
    l2s_linear_forward(in, W, b, rows, I, O, out);
    return 0;
}
static int linear_backward(void* x, const float* in, const float* W, const float* dout, int rows, int I, int O,
                           int din_from, float* din, float* dW, float* db) {
    (void)x;
    l2s_linear_backward(in, W, dout, rows, I, O, din_from, din, dW, db);
    return 0;
}
static int layernorm_forward(void* x, const float* a, const float* g, const float* be, int rows, int C, float eps,
                             float* out, float* mean, float* rstd) {
    (void)x;
    l2s_layernorm_forward(a, g, be, rows, C, eps, out, mean, rstd);
    return 0;
}
static int layernorm_backward(void* x, const float* a, const float* mean, const float* rstd, const float* g,
                              const float* dout, int rows, int C, float* da, float* dg, float* dbe) {
    (void)x;
    l2s_layernorm_backward(a, mean, rstd, g, dout, rows, C, da, dg, dbe);
    return 0;
}

/* x := softmax(scale * x) over n values. */
static void softmax_inplace(int avx2, float* x, int n, float scale) {
    const float inv = 1.f / l2s_exp_shifted(avx2, x, n, l2s_max_f32(x, n), scale);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* ---- self-attention: items x heads go to threads ---- */
typedef struct {
    const float* qkv; float* p; float* o; const float* dout; float* dqkv;
    int seq, d, heads, failed;
} attn_job;

static void attention_forward_items(void* ctx, int64_t begin, int64_t end) {
    attn_job* j = ctx;
    const int S = j->seq, d = j->d, hd = d / j->heads, avx2 = l2s_use_avx2();
    const float scale = 1.f / sqrtf((float)hd);
    for (int64_t it = begin; it < end; it++) {
        const int64_t n = it / j->heads, h = it % j->heads;
        const float* q = j->qkv + n * S * 3 * d + h * hd;
        float* P = j->p + it * S * S;
        l2s_matmul_bt(q, 3 * d, S, hd, q + d, 3 * d, S, P, S);                   /* logits Q K^T */
        for (int r = 0; r < S; r++) softmax_inplace(avx2, P + (int64_t)r * S, S, scale);
        l2s_matmul(P, S, 1, S, S, q + 2 * d, 3 * d, hd, j->o + n * S * d + h * hd, d, 0);   /* P V */
    }
}

/* p is turned into dS (so backward runs once per forward); dP rows go through a per-thread scratch. */
static void attention_backward_items(void* ctx, int64_t begin, int64_t end) {
    attn_job* j = ctx;
    const int S = j->seq, d = j->d, hd = d / j->heads;
    const float scale = 1.f / sqrtf((float)hd);
    float* dp = malloc(sizeof(float) * (size_t)L2S_ROWS * (size_t)S);
    if (!dp) { __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED); return; }
    for (int64_t it = begin; it < end; it++) {
        const int64_t n = it / j->heads, h = it % j->heads;
        const float* q = j->qkv + n * S * 3 * d + h * hd;
        const float* dO = j->dout + n * S * d + h * hd;
        float* dq = j->dqkv + n * S * 3 * d + h * hd;
        float* P = j->p + it * S * S;
        l2s_matmul(P, 1, S, S, S, dO, d, hd, dq + 2 * d, 3 * d, 0);                /* dV = P^T dO */
        for (int r0 = 0; r0 < S; r0 += L2S_ROWS) {                                  /* dS = P (dP - rowsum(dP P)) */
            int rows = S - r0 < L2S_ROWS ? S - r0 : L2S_ROWS;
            l2s_matmul_bt(dO + (int64_t)r0 * d, d, rows, hd, q + 2 * d, 3 * d, S, dp, S);   /* dP = dO V^T */
            for (int r = 0; r < rows; r++) {
                float* pr = P + (int64_t)(r0 + r) * S;
                const float* g = dp + (int64_t)r * S;
                float dot = 0.f;
                for (int c = 0; c < S; c++) dot += g[c] * pr[c];
                for (int c = 0; c < S; c++) pr[c] = pr[c] * (g[c] - dot) * scale;
            }
        }
        l2s_matmul(P, S, 1, S, S, q + d, 3 * d, hd, dq, 3 * d, 0);                 /* dQ = dS K */
        l2s_matmul(P, 1, S, S, S, q, 3 * d, hd, dq + d, 3 * d, 0);                 /* dK = dS^T Q */
    }
    free(dp);
}

static int attention_run(attn_job* j, int items, l2s_range_fn fn) {
    int64_t n = (int64_t)items * j->heads;
    l2s_parallel_for(n, j->seq >= 32 ? 1 : n, fn, j);      /* threads when a (seq x seq) product repays one */
    return j->failed ? -1 : 0;
}
static int attention_forward(void* x, const float* qkv, int items, int seq, int heads, int d, float* p, float* o) {
    (void)x;
    attn_job j = {.qkv = qkv, .p = p, .o = o, .seq = seq, .d = d, .heads = heads};
    return attention_run(&j, items, attention_forward_items);
}
static int attention_backward(void* x, const float* qkv, float* p, const float* dout, int items, int seq, int heads,
                              int d, float* scratch, float* dqkv) {
    (void)x; (void)scratch;
    attn_job j = {.qkv = qkv, .p = p, .dout = dout, .dqkv = dqkv, .seq = seq, .d = d, .heads = heads};
    return attention_run(&j, items, attention_backward_items);
}

/* ---- pooling by one query ---- */
static int pool_forward(void* x, const float* q, const float* kv, int N, int C, int heads, int d, float* alpha,
                        float* op) {
    (void)x;
    const int hd = d / heads, avx2 = l2s_use_avx2();
    const float scale = 1.f / sqrtf((float)hd);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < heads; h++) {
            float* al = alpha + ((int64_t)n * heads + h) * C;
            const float* k = kv + (int64_t)n * C * 2 * d + h * hd;
            l2s_matmul_bt(q + h * hd, hd, 1, hd, k, 2 * d, C, al, C);
            softmax_inplace(avx2, al, C, scale);
            l2s_matmul(al, C, 1, 1, C, k + d, 2 * d, hd, op + (int64_t)n * d + h * hd, d, 0);
        }
    return 0;
}
static int pool_backward(void* x, const float* q, const float* kv, const float* alpha, const float* dop, int N, int C,
                         int heads, int d, float* dalpha, float* dkv, float* dq) {
    (void)x;
    const int hd = d / heads;
    const float scale = 1.f / sqrtf((float)hd);
    memset(dq, 0, sizeof(float) * (size_t)d);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < heads; h++) {
            const float* al = alpha + ((int64_t)n * heads + h) * C;
            float* da = dalpha + ((int64_t)n * heads + h) * C;
            const float* k = kv + (int64_t)n * C * 2 * d + h * hd;
            const float* g = dop + (int64_t)n * d + h * hd;
            float* dk = dkv + (int64_t)n * C * 2 * d + h * hd;
            float dot = 0.f;
            for (int i = 0; i < C; i++) {                                      /* dV, dalpha */
                const float* v = k + (int64_t)i * 2 * d + d;
                float* dv = dk + (int64_t)i * 2 * d + d;
                float s = 0.f;
                for (int c = 0; c < hd; c++) { dv[c] = al[i] * g[c]; s += g[c] * v[c]; }
                da[i] = s;
                dot += al[i] * s;
            }
            for (int i = 0; i < C; i++) {                                      /* dS, then dK and dq */
                const float* ki = k + (int64_t)i * 2 * d;
                float* dki = dk + (int64_t)i * 2 * d;
                float ds = al[i] * (da[i] - dot) * scale;
                for (int c = 0; c < hd; c++) { dq[h * hd + c] += ds * ki[c]; dki[c] = ds * q[h * hd + c]; }
            }
        }
    return 0;
}

/* ---- elementwise and gathers ---- */
static int dropout(void* x, float* v, int64_t n, float p, uint64_t seed, uint32_t site) {
    (void)x;
    l2s_dropout(v, n, p, seed, site);
    return 0;
}
static int add(void* x, float* out, const float* a, const float* b, int64_t n) {
    (void)x;
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
    return 0;
}
static int relu_forward(void* x, float* v, int64_t n) {
    (void)x;
    for (int64_t i = 0; i < n; i++) v[i] = v[i] > 0.f ? v[i] : 0.f;
    return 0;
}
/* r = dropout(relu(f)): r > 0 exactly where f > 0 and the element was kept. */
static int relu_backward(void* x, const float* r, float* dr, int64_t n, float keep) {
    (void)x;
    for (int64_t i = 0; i < n; i++) dr[i] = r[i] > 0.f ? dr[i] * keep : 0.f;
    return 0;
}
static int add_positions(void* x, float* v, const float* pe, int groups, int rows, int d) {
    (void)x;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t r = 0; r < rows; r++)
            for (int i = 0; i < d; i++) v[(g * rows + r) * d + i] += pe[r * d + i];
    return 0;
}
static int add_step_rows(void* x, float* v, const float* emb, const int32_t* steps, int groups, int rows, int d,
                         int per_step) {
    (void)x;
    for (int64_t g = 0; g < groups; g++) {
        const float* e = emb + (int64_t)steps[g / per_step] * d;
        for (int64_t r = 0; r < rows; r++)
            for (int i = 0; i < d; i++) v[(g * rows + r) * d + i] += e[i];
    }
    return 0;
}
static int step_rows_grad(void* x, const float* dv, const int32_t* steps, int groups, int rows, int d, int per_step,
                          float* demb) {
    (void)x;
    for (int64_t g = 0; g < groups; g++) {
        float* de = demb + (int64_t)steps[g / per_step] * d;
        for (int64_t r = 0; r < rows; r++)
            for (int i = 0; i < d; i++) de[i] += dv[(g * rows + r) * d + i];
    }
    return 0;
}
static int concat_steps(void* x, const float* h, const float* emb, const int32_t* steps, int B, int d, int E, float* z) {
    (void)x;
    for (int64_t b = 0; b < B; b++) {
        memcpy(z + b * (d + E), h + b * d, sizeof(float) * (size_t)d);
        if (E) memcpy(z + b * (d + E) + d, emb + (int64_t)steps[b] * E, sizeof(float) * (size_t)E);
    }
    return 0;
}
static int split_steps(void* x, const float* dz, const int32_t* steps, int B, int d, int E, float* dh, float* demb) {
    (void)x;
    for (int64_t b = 0; b < B; b++) {
        memcpy(dh + b * d, dz + b * (d + E), sizeof(float) * (size_t)d);
        for (int i = 0; demb && i < E; i++) demb[(int64_t)steps[b] * E + i] += dz[b * (d + E) + d + i];
    }
    return 0;
}
static int leaky_forward(void* x, const float* v, int64_t n, float slope, float* y) {
    (void)x;
    l2s_leaky_forward(v, n, slope, y);
    return 0;
}
static int leaky_backward(void* x, const float* v, int64_t n, float slope, float* dy) {
    (void)x;
    l2s_leaky_backward(v, n, slope, dy);
    return 0;
}
static int softmax_ce_forward(void* x, const float* logits, const int32_t* labels, int B, int K, float* probs,
                              float* losses) {
    (void)x;
    l2s_softmax_ce_forward(logits, labels, B, K, probs, losses);
    return 0;
}
static int softmax_ce_backward(void* x, const float* probs, const int32_t* labels, int B, int K, float* dlogits) {
    (void)x;
    l2s_softmax_ce_backward(probs, labels, B, K, dlogits);
    return 0;
}
static int copy(void* x, float* dst, const float* src, int64_t n) {
    (void)x;
    if (dst != src) memcpy(dst, src, sizeof(float) * (size_t)n);
    return 0;
}
static int upload(void* x, int32_t* dst, const int32_t* host, int n) {
    (void)x;
    memcpy(dst, host, sizeof(int32_t) * (size_t)n);
    return 0;
}

const l2s_authors_ops l2s_authors_cpu_ops = {
    linear_forward, linear_backward, layernorm_forward, layernorm_backward, attention_forward, attention_backward,
    pool_forward, pool_backward, dropout, add, relu_forward, relu_backward, add_positions, add_step_rows,
    step_rows_grad, concat_steps, split_steps, leaky_forward, leaky_backward, softmax_ce_forward,
    softmax_ce_backward, copy, upload,
};
