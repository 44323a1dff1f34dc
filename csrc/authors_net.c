/*
 * authors_net.c — the authors' relation classifier (a transformer over per-(layer, head) map
 * stacks, shared/authors-format.md §3) as one fused C pass: forward, loss, input gradient for
 * steering and weight gradients with dropout for training. The layers come from layers.c; this
 * file holds the layout, the attention and the order in which the network strings them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "l2s.h"
#include "layers.h"
#include "parallel.h"
#include "simd.h"
#include "tiles.h"

#define GRAD(off) (G ? G + (off) : NULL)    /* a gradient slot, or NULL: input gradient only */

/* dropout sites: one mask stream per place the network drops (layers.h) */
enum { SITE_EX = 16, SITE_CL = 128, SITE_FC0 = 250, SITE_FC4 = 251 };

/* ---- layout ---- */
const char* authors_config_error(const l2s_authors_config* c) {
    if (c->d < 2 || c->d > 8192) return "d_model must be in [2, 8192]";
    if (c->map_pixels < 1 || c->map_pixels > 65536) return "map_pixels must be in [1, 65536]";
    if (c->max_channels < 1 || c->max_channels > (1 << 16)) return "max_channels must be in [1, 65536]";
    if (c->n_steps < 1 || c->n_steps > (1 << 20)) return "n_steps must be in [1, 2^20]";
    if (c->ex_layers < 0 || c->ex_layers > L2S_AUTHORS_MAX_LAYERS || c->cl_layers < 0 ||
        c->cl_layers > L2S_AUTHORS_MAX_LAYERS)
        return "layer counts must be in [0, 16]";
    if (c->ex_heads < 1 || c->d % c->ex_heads) return "ex_heads must divide d_model";
    if (c->cl_heads < 1 || c->d % c->cl_heads) return "cl_heads must divide d_model";
    if (c->pool_heads < 1 || c->d % c->pool_heads) return "pool_heads must divide d_model";
    if (c->ex_ff < 1 || c->ex_ff > (1 << 16) || c->cl_ff < 1 || c->cl_ff > (1 << 16)) return "feed-forward widths must be in [1, 65536]";
    if (c->step_dim < 0 || c->step_dim > 8192) return "step_dim must be in [0, 8192]";
    if (c->n_relations < 2 || c->n_relations > 65536) return "n_relations must be in [2, 65536]";
    if (!(c->ln_eps > 0.f) || !isfinite(c->ln_eps)) return "ln_eps must be > 0";
    if (!isfinite(c->leaky_slope)) return "leaky_slope must be finite";
    if (authors_param_offsets(c).total > INT32_MAX) return "the parameter count exceeds 2^31 - 1";
    return NULL;
}

/* Sizes are bounded by authors_config_error, so these int64 sums cannot overflow (< 2^50). */
static int64_t encoder_params(l2s_encoder_offsets* e, int64_t at, int64_t d, int64_t ff) {
    e->in_w = at; at += 3 * d * d; e->in_b = at; at += 3 * d;
    e->out_w = at; at += d * d; e->out_b = at; at += d;
    e->l1_w = at; at += ff * d; e->l1_b = at; at += ff;
    e->l2_w = at; at += d * ff; e->l2_b = at; at += d;
    e->n1_g = at; at += d; e->n1_b = at; at += d; e->n2_g = at; at += d; e->n2_b = at; at += d;
    return at;
}

l2s_authors_offsets authors_param_offsets(const l2s_authors_config* c) {
    l2s_authors_offsets o;
    memset(&o, 0, sizeof(o));
    const int64_t d = c->d, S2 = c->map_pixels, E = c->step_dim, h = d / 2;
    int64_t at = 0;
    o.query = at; at += d;
    o.in_w = at; at += d * S2; o.in_b = at; at += d;
    o.ex_emb = at; at += (int64_t)c->n_steps * d;
    for (int l = 0; l < c->ex_layers && l < L2S_AUTHORS_MAX_LAYERS; l++) at = encoder_params(&o.ex[l], at, d, c->ex_ff);
    o.pool_in_w = at; at += 3 * d * d; o.pool_in_b = at; at += 3 * d;
    o.pool_out_w = at; at += d * d; o.pool_out_b = at; at += d;
    o.out_w = at; at += S2 * d; o.out_b = at; at += S2;
    o.cl_emb = at; at += (int64_t)c->n_steps * E;
    o.proj_w = at; at += d * 2 * S2; o.proj_b = at; at += d;
    for (int l = 0; l < c->cl_layers && l < L2S_AUTHORS_MAX_LAYERS; l++) at = encoder_params(&o.cl[l], at, d, c->cl_ff);
    o.fc0_w = at; at += d * (d + E); o.fc0_b = at; at += d;
    o.fc1_g = at; at += d; o.fc1_b = at; at += d;
    o.fc4_w = at; at += h * d; o.fc4_b = at; at += h;
    o.fc5_g = at; at += h; o.fc5_b = at; at += h;
    o.fc8_w = at; at += (int64_t)c->n_relations * h; o.fc8_b = at; at += c->n_relations;
    o.n_trained = at;
    o.ex_pe = at; at += (int64_t)c->max_channels * d;
    o.cl_pe = at; at += d * d;                      /* the authors' table has d rows; row 0 is used */
    o.total = at;
    return o;
}

/* ---- the state-dict names, in buffer order ---- */
typedef struct { char name[80]; int64_t offset, numel; } param_span;
enum { MAX_TENSORS = 4 + 12 * L2S_AUTHORS_MAX_LAYERS + 6 + 3 + 12 * L2S_AUTHORS_MAX_LAYERS + 10 + 2 };

static void span(param_span* t, int* n, const char* name, int64_t offset, int64_t numel) {
    snprintf(t[*n].name, sizeof(t[*n].name), "%s", name);
    t[*n].offset = offset; t[*n].numel = numel;
    (*n)++;
}

static void encoder_spans(param_span* t, int* n, const char* prefix, int layer, const l2s_encoder_offsets* e,
                          int64_t d, int64_t ff) {
    static const char* NAMES[12] = {"self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                                    "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
                                    "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"};
    const int64_t sizes[12] = {3 * d * d, 3 * d, d * d, d, ff * d, ff, d * ff, d, d, d, d, d};
    const int64_t* offs = &e->in_w;                 /* the struct's fields are in NAMES' order */
    for (int j = 0; j < 12; j++) {
        char name[80];
        snprintf(name, sizeof(name), "%s.transformer.layers.%d.%s", prefix, layer, NAMES[j]);
        span(t, n, name, offs[j], sizes[j]);
    }
}

static int param_spans(const l2s_authors_config* c, param_span* t) {
    const l2s_authors_offsets o = authors_param_offsets(c);
    const int64_t d = c->d, S2 = c->map_pixels, E = c->step_dim, h = d / 2, T = c->n_steps, K = c->n_relations;
    int n = 0;
    span(t, &n, "object_extractor.query_vector", o.query, d);
    span(t, &n, "object_extractor.input_projection.weight", o.in_w, d * S2);
    span(t, &n, "object_extractor.input_projection.bias", o.in_b, d);
    span(t, &n, "object_extractor.timestep_embedding.weight", o.ex_emb, T * d);
    for (int l = 0; l < c->ex_layers; l++) encoder_spans(t, &n, "object_extractor", l, &o.ex[l], d, c->ex_ff);
    span(t, &n, "object_extractor.layer_attention.in_proj_weight", o.pool_in_w, 3 * d * d);
    span(t, &n, "object_extractor.layer_attention.in_proj_bias", o.pool_in_b, 3 * d);
    span(t, &n, "object_extractor.layer_attention.out_proj.weight", o.pool_out_w, d * d);
    span(t, &n, "object_extractor.layer_attention.out_proj.bias", o.pool_out_b, d);
    span(t, &n, "object_extractor.output_projection.weight", o.out_w, S2 * d);
    span(t, &n, "object_extractor.output_projection.bias", o.out_b, S2);
    span(t, &n, "relation_classifier.timestep_embedding.weight", o.cl_emb, T * E);
    span(t, &n, "relation_classifier.projection.weight", o.proj_w, d * 2 * S2);
    span(t, &n, "relation_classifier.projection.bias", o.proj_b, d);
    for (int l = 0; l < c->cl_layers; l++) encoder_spans(t, &n, "relation_classifier", l, &o.cl[l], d, c->cl_ff);
    span(t, &n, "relation_classifier.fc.0.weight", o.fc0_w, d * (d + E));
    span(t, &n, "relation_classifier.fc.0.bias", o.fc0_b, d);
    span(t, &n, "relation_classifier.fc.1.weight", o.fc1_g, d);
    span(t, &n, "relation_classifier.fc.1.bias", o.fc1_b, d);
    span(t, &n, "relation_classifier.fc.4.weight", o.fc4_w, h * d);
    span(t, &n, "relation_classifier.fc.4.bias", o.fc4_b, h);
    span(t, &n, "relation_classifier.fc.5.weight", o.fc5_g, h);
    span(t, &n, "relation_classifier.fc.5.bias", o.fc5_b, h);
    span(t, &n, "relation_classifier.fc.8.weight", o.fc8_w, K * h);
    span(t, &n, "relation_classifier.fc.8.bias", o.fc8_b, K);
    span(t, &n, "object_extractor.positional_encoding.pe", o.ex_pe, (int64_t)c->max_channels * d);
    span(t, &n, "relation_classifier.positional_encoding.pe", o.cl_pe, d * d);
    return n;
}

int authors_param_entry(const l2s_authors_config* c, int i, char* name, int cap, int64_t* offset, int64_t* numel) {
    param_span t[MAX_TENSORS];
    int n = param_spans(c, t);
    if (i >= 0 && i < n) {
        snprintf(name, (size_t)cap, "%s", t[i].name);
        *offset = t[i].offset; *numel = t[i].numel;
    }
    return n;
}

/* Activations of one encoder layer over `rows` = items * seq rows (float offsets). */
typedef struct { int64_t x0, h1, mean1, rstd1, qkv, p, o, y, h2, mean2, rstd2, r; } enc_acts;

typedef struct {
    enc_acts ex[L2S_AUTHORS_MAX_LAYERS], cl[L2S_AUTHORS_MAX_LAYERS];
    int64_t maps, xl, kv, q, alpha, op, ap, A, hout, z0, a1, n1, r1, mf1, rf1, a2, n2, r2, mf2, rf2, logits, probs;
    int64_t sA, sB, sC, dX1, dX2, de, dq, dquery, dz0, dh1, dh2, total;
} ws_layout;

typedef struct { int64_t at; int bad; } cursor;
static int64_t take(cursor* k, int64_t a, int64_t b) {             /* a * b floats, checked */
    int64_t n, at = k->at;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_add_overflow(k->at, n, &k->at)) k->bad = 1;
    return at;
}

static enc_acts encoder_acts(cursor* k, int64_t items, int64_t seq, int64_t d, int64_t heads, int64_t ff) {
    const int64_t rows = items * seq;
    enc_acts a;
    a.x0 = take(k, rows, d); a.h1 = take(k, rows, d); a.mean1 = take(k, rows, 1); a.rstd1 = take(k, rows, 1);
    a.qkv = take(k, rows, 3 * d); a.p = take(k, items * heads, seq * seq); a.o = take(k, rows, d);
    a.y = take(k, rows, d); a.h2 = take(k, rows, d); a.mean2 = take(k, rows, 1); a.rstd2 = take(k, rows, 1);
    a.r = take(k, rows, ff);
    return a;
}

static ws_layout workspace_layout(const l2s_authors_config* c, int64_t B, int64_t C) {
    ws_layout w;
    cursor k = {0, 0};
    const int64_t d = c->d, S2 = c->map_pixels, N = 2 * B, R = N * C, E = c->step_dim, K = c->n_relations;
    for (int l = 0; l < c->ex_layers; l++) w.ex[l] = encoder_acts(&k, N, C, d, c->ex_heads, c->ex_ff);
    for (int l = 0; l < c->cl_layers; l++) w.cl[l] = encoder_acts(&k, B, 1, d, c->cl_heads, c->cl_ff);
    w.maps = take(&k, R, S2); w.xl = take(&k, R, d); w.kv = take(&k, R, 2 * d); w.q = take(&k, d, 1);
    w.alpha = take(&k, N * c->pool_heads, C); w.op = take(&k, N, d); w.ap = take(&k, N, d); w.A = take(&k, N, S2);
    w.hout = take(&k, B, d); w.z0 = take(&k, B, d + E);
    w.a1 = take(&k, B, d); w.n1 = take(&k, B, d); w.r1 = take(&k, B, d); w.mf1 = take(&k, B, 1); w.rf1 = take(&k, B, 1);
    w.a2 = take(&k, B, d / 2); w.n2 = take(&k, B, d / 2); w.r2 = take(&k, B, d / 2);
    w.mf2 = take(&k, B, 1); w.rf2 = take(&k, B, 1);
    w.logits = take(&k, B, K); w.probs = take(&k, B, K);
    int64_t wide = 3 * d;                               /* widest backward row: qkv, ff, maps, kv */
    if (c->ex_ff > wide) wide = c->ex_ff;
    if (c->cl_ff > wide) wide = c->cl_ff;
    if (S2 > wide) wide = S2;
    w.sA = take(&k, R > B ? R : B, wide); w.sB = take(&k, R, d); w.sC = take(&k, R, d);
    w.dX1 = take(&k, R, d); w.dX2 = take(&k, R, d); w.de = take(&k, N, d); w.dq = take(&k, d, 1);
    w.dquery = take(&k, d, 1); w.dz0 = take(&k, B, d + E);
    int64_t head_wide = 2 * S2 > d + E ? 2 * S2 : d + E;
    if (K > head_wide) head_wide = K;
    w.dh1 = take(&k, B, head_wide); w.dh2 = take(&k, B, head_wide);
    w.total = k.bad ? -1 : k.at;
    return w;
}

int64_t authors_workspace_size(const l2s_authors_config* c, int B, int C) {
    if (B < 1 || C < 1 || (int64_t)2 * B * C > INT32_MAX / 4) return -1;   /* rows * 3d must stay int-indexable per op */
    return workspace_layout(c, B, C).total;
}

/* ---- self-attention over `seq` tokens of `items` sequences, `heads` heads, no mask ----
 * qkv [items*seq, 3d] (q | k | v, head h = columns [h*hd, (h+1)*hd) of each), p [items, heads,
 * seq, seq] kept for backward, o [items*seq, d]. Items x heads go to threads. */
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
        for (int r = 0; r < S; r++) {
            float* row = P + (int64_t)r * S;
            float sum = l2s_exp_shifted(avx2, row, S, l2s_max_f32(row, S), scale);
            float inv = 1.f / sum;
            for (int c = 0; c < S; c++) row[c] *= inv;
        }
        l2s_matmul(P, S, 1, S, S, q + 2 * d, 3 * d, hd, j->o + n * S * d + h * hd, d, 0);   /* P V */
    }
}

/* dqkv from dout [items*seq, d]; p is turned into dS (so backward runs once per forward). */
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
    /* one thread per item when a (seq x seq) product is worth a thread start */
    int64_t n = (int64_t)items * j->heads;
    l2s_parallel_for(n, j->seq >= 32 ? 1 : n, fn, j);
    return j->failed ? -1 : 0;
}

/* ---- encoder layer (pre-norm): y = x0 + drop(MHA(LN1 x0)); out = y + drop(W2 drop(relu(W1 LN2 y))) ---- */
typedef struct { int items, seq, heads, ff; uint32_t site; } enc_shape;

static void add_rows(float* out, const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static int encoder_forward(const l2s_authors_config* c, const float* P, const l2s_encoder_offsets* e, enc_shape s,
                           float* ws, const enc_acts* a, l2s_dropout_config drop, float* tmp, float* out) {
    const int d = c->d, rows = s.items * s.seq;
    const int64_t n = (int64_t)rows * d;
    float* h1 = ws + a->h1; float* qkv = ws + a->qkv; float* o = ws + a->o; float* y = ws + a->y;
    float* h2 = ws + a->h2; float* r = ws + a->r;
    l2s_layernorm_forward(ws + a->x0, P + e->n1_g, P + e->n1_b, rows, d, c->ln_eps, h1, ws + a->mean1, ws + a->rstd1);
    l2s_linear_forward(h1, P + e->in_w, P + e->in_b, rows, d, 3 * d, qkv);
    attn_job j = {.qkv = qkv, .p = ws + a->p, .o = o, .seq = s.seq, .d = d, .heads = s.heads};
    if (attention_run(&j, s.items, attention_forward_items) < 0) return -1;
    l2s_linear_forward(o, P + e->out_w, P + e->out_b, rows, d, d, tmp);
    l2s_dropout(tmp, n, drop.p, drop.seed, s.site);
    add_rows(y, ws + a->x0, tmp, n);
    l2s_layernorm_forward(y, P + e->n2_g, P + e->n2_b, rows, d, c->ln_eps, h2, ws + a->mean2, ws + a->rstd2);
    l2s_linear_forward(h2, P + e->l1_w, P + e->l1_b, rows, d, s.ff, r);
    for (int64_t i = 0; i < (int64_t)rows * s.ff; i++) r[i] = r[i] > 0.f ? r[i] : 0.f;
    l2s_dropout(r, (int64_t)rows * s.ff, drop.p, drop.seed, s.site + 1);
    l2s_linear_forward(r, P + e->l2_w, P + e->l2_b, rows, s.ff, d, tmp);
    l2s_dropout(tmp, n, drop.p, drop.seed, s.site + 2);
    add_rows(out, y, tmp, n);
    return 0;
}

/* dout [rows, d] -> dx0 [rows, d] (distinct buffers); sA [rows, max(3d, ff)], sB, sC [rows, d]. */
typedef struct { float *sA, *sB, *sC; } enc_scratch;

static int encoder_backward(const l2s_authors_config* c, const float* P, float* G, const l2s_encoder_offsets* e,
                            enc_shape s, float* ws, const enc_acts* a, l2s_dropout_config drop, const float* dout,
                            enc_scratch t, float* dx0) {
    const int d = c->d, rows = s.items * s.seq;
    const int64_t n = (int64_t)rows * d, nf = (int64_t)rows * s.ff;
    memcpy(t.sB, dout, sizeof(float) * (size_t)n);                                     /* dFF out */
    l2s_dropout(t.sB, n, drop.p, drop.seed, s.site + 2);
    l2s_linear_backward(ws + a->r, P + e->l2_w, t.sB, rows, s.ff, d, 0, t.sA, GRAD(e->l2_w), GRAD(e->l2_b));
    const float keep = drop.p > 0.f ? 1.f / (1.f - drop.p) : 1.f;                     /* relu and its dropout */
    const float* r = ws + a->r;
    for (int64_t i = 0; i < nf; i++) t.sA[i] = r[i] > 0.f ? t.sA[i] * keep : 0.f;
    l2s_linear_backward(ws + a->h2, P + e->l1_w, t.sA, rows, d, s.ff, 0, t.sB, GRAD(e->l1_w), GRAD(e->l1_b));
    l2s_layernorm_backward(ws + a->y, ws + a->mean2, ws + a->rstd2, P + e->n2_g, t.sB, rows, d, t.sC,
                           GRAD(e->n2_g), GRAD(e->n2_b));
    add_rows(dx0, t.sC, dout, n);                                                      /* dy */
    memcpy(t.sB, dx0, sizeof(float) * (size_t)n);
    l2s_dropout(t.sB, n, drop.p, drop.seed, s.site);
    l2s_linear_backward(ws + a->o, P + e->out_w, t.sB, rows, d, d, 0, t.sC, GRAD(e->out_w), GRAD(e->out_b));
    attn_job j = {.qkv = ws + a->qkv, .p = ws + a->p, .dout = t.sC, .dqkv = t.sA, .seq = s.seq, .d = d, .heads = s.heads};
    if (attention_run(&j, s.items, attention_backward_items) < 0) return -1;
    l2s_linear_backward(ws + a->h1, P + e->in_w, t.sA, rows, d, 3 * d, 0, t.sB, GRAD(e->in_w), GRAD(e->in_b));
    l2s_layernorm_backward(ws + a->x0, ws + a->mean1, ws + a->rstd1, P + e->n1_g, t.sB, rows, d, t.sC,
                           GRAD(e->n1_g), GRAD(e->n1_b));
    for (int64_t i = 0; i < n; i++) dx0[i] += t.sC[i];
    return 0;
}

/* ---- attention pooling: one learned query over each object's C rows ---- */
static void pool_forward(const l2s_authors_config* c, const float* P, const l2s_authors_offsets* o, int N, int C,
                         float* ws, const ws_layout* w) {
    const int d = c->d, hd = d / c->pool_heads, avx2 = l2s_use_avx2();
    const float scale = 1.f / sqrtf((float)hd);
    float* q = ws + w->q; float* kv = ws + w->kv; float* op = ws + w->op;
    l2s_linear_forward(P + o->query, P + o->pool_in_w, P + o->pool_in_b, 1, d, d, q);
    l2s_linear_forward(ws + w->xl, P + o->pool_in_w + (int64_t)d * d, P + o->pool_in_b + d, N * C, d, 2 * d, kv);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < c->pool_heads; h++) {
            float* al = ws + w->alpha + ((int64_t)n * c->pool_heads + h) * C;
            const float* k = kv + (int64_t)n * C * 2 * d + h * hd;
            l2s_matmul_bt(q + h * hd, hd, 1, hd, k, 2 * d, C, al, C);
            float sum = l2s_exp_shifted(avx2, al, C, l2s_max_f32(al, C), scale), inv = 1.f / sum;
            for (int i = 0; i < C; i++) al[i] *= inv;
            l2s_matmul(al, C, 1, 1, C, k + d, 2 * d, hd, op + (int64_t)n * d + h * hd, d, 0);
        }
    l2s_linear_forward(op, P + o->pool_out_w, P + o->pool_out_b, N, d, d, ws + w->ap);
    l2s_linear_forward(ws + w->ap, P + o->out_w, P + o->out_b, N, d, c->map_pixels, ws + w->A);
}

/* dA [N, S2] -> dX [N*C, d]. */
static void pool_backward(const l2s_authors_config* c, const float* P, float* G, const l2s_authors_offsets* o, int N,
                          int C, float* ws, const ws_layout* w, const float* dA, float* dX) {
    const int d = c->d, hd = d / c->pool_heads;
    const float scale = 1.f / sqrtf((float)hd);
    float* dap = ws + w->sB; float* dop = ws + w->sC; float* dkv = ws + w->sA; float* dq = ws + w->dq;
    const float* q = ws + w->q; const float* kv = ws + w->kv;
    l2s_linear_backward(ws + w->ap, P + o->out_w, dA, N, d, c->map_pixels, 0, dap, GRAD(o->out_w), GRAD(o->out_b));
    l2s_linear_backward(ws + w->op, P + o->pool_out_w, dap, N, d, d, 0, dop, GRAD(o->pool_out_w), GRAD(o->pool_out_b));
    memset(dq, 0, sizeof(float) * (size_t)d);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < c->pool_heads; h++) {
            const float* al = ws + w->alpha + ((int64_t)n * c->pool_heads + h) * C;
            const float* k = kv + (int64_t)n * C * 2 * d + h * hd;
            const float* g = dop + (int64_t)n * d + h * hd;
            float* dk = dkv + (int64_t)n * C * 2 * d + h * hd;
            float dot = 0.f;
            for (int i = 0; i < C; i++) {                                      /* dV, dalpha */
                const float* v = k + (int64_t)i * 2 * d + d;
                float* dv = dk + (int64_t)i * 2 * d + d;
                float da = 0.f;
                for (int x = 0; x < hd; x++) { dv[x] = al[i] * g[x]; da += g[x] * v[x]; }
                dk[(int64_t)i * 2 * d] = da;                                   /* parked until dS is known */
                dot += al[i] * da;
            }
            for (int i = 0; i < C; i++) {
                float* dki = dk + (int64_t)i * 2 * d;
                const float* ki = k + (int64_t)i * 2 * d;
                float ds = al[i] * (dki[0] - dot) * scale;
                for (int x = 0; x < hd; x++) { dq[h * hd + x] += ds * ki[x]; dki[x] = ds * q[h * hd + x]; }
            }
        }
    l2s_linear_backward(ws + w->xl, P + o->pool_in_w + (int64_t)d * d, dkv, N * C, d, 2 * d, 0, dX,
                        GRAD(o->pool_in_w + (int64_t)d * d), GRAD(o->pool_in_b + d));
    if (G) {
        float* dquery = ws + w->dquery;
        l2s_linear_backward(P + o->query, P + o->pool_in_w, dq, 1, d, d, 0, dquery, G + o->pool_in_w, G + o->pool_in_b);
        for (int x = 0; x < d; x++) G[o->query + x] += dquery[x];
    }
}

/* ---- the fused passes ---- */
int authors_forward_cpu(const l2s_authors_config* c, const float* P, int B, int C, const float* maps,
                        const int32_t* steps, const int32_t* labels, l2s_dropout_config drop, float* ws,
                        float* probs, float* losses) {
    const l2s_authors_offsets o = authors_param_offsets(c);
    const ws_layout w = workspace_layout(c, B, C);
    const int d = c->d, S2 = c->map_pixels, N = 2 * B, R = N * C, E = c->step_dim, K = c->n_relations, h = d / 2;
    float* X = ws + (c->ex_layers ? w.ex[0].x0 : w.xl);
    memcpy(ws + w.maps, maps, sizeof(float) * (size_t)R * (size_t)S2);
    l2s_linear_forward(ws + w.maps, P + o.in_w, P + o.in_b, R, S2, d, X);          /* object rows n = 2b + slot */
    for (int n = 0; n < N; n++)
        for (int ch = 0; ch < C; ch++) {
            float* x = X + ((int64_t)n * C + ch) * d;
            const float* pe = P + o.ex_pe + (int64_t)ch * d;
            for (int i = 0; i < d; i++) x[i] += pe[i];
        }
    for (int l = 0; l < c->ex_layers; l++) {
        float* x0 = ws + w.ex[l].x0;                                                /* x0 = X + step embedding */
        for (int n = 0; n < N; n++) {
            const float* e = P + o.ex_emb + (int64_t)steps[n / 2] * d;
            for (int ch = 0; ch < C; ch++)
                for (int i = 0; i < d; i++) x0[((int64_t)n * C + ch) * d + i] += e[i];
        }
        float* out = ws + (l + 1 < c->ex_layers ? w.ex[l + 1].x0 : w.xl);
        enc_shape s = {N, C, c->ex_heads, c->ex_ff, SITE_EX + 4u * (uint32_t)l};
        if (encoder_forward(c, P, &o.ex[l], s, ws, &w.ex[l], drop, ws + w.sB, out) < 0) return -1;
    }
    pool_forward(c, P, &o, N, C, ws, &w);
    float* hin = ws + (c->cl_layers ? w.cl[0].x0 : w.hout);                         /* A viewed [B, 2 S2] */
    l2s_linear_forward(ws + w.A, P + o.proj_w, P + o.proj_b, B, 2 * S2, d, hin);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < d; i++) hin[(int64_t)b * d + i] += P[o.cl_pe + i];
    for (int l = 0; l < c->cl_layers; l++) {
        float* out = ws + (l + 1 < c->cl_layers ? w.cl[l + 1].x0 : w.hout);
        enc_shape s = {B, 1, c->cl_heads, c->cl_ff, SITE_CL + 4u * (uint32_t)l};
        if (encoder_forward(c, P, &o.cl[l], s, ws, &w.cl[l], drop, ws + w.sB, out) < 0) return -1;
    }
    float* z0 = ws + w.z0;
    for (int b = 0; b < B; b++) {
        memcpy(z0 + (int64_t)b * (d + E), ws + w.hout + (int64_t)b * d, sizeof(float) * (size_t)d);
        if (E) memcpy(z0 + (int64_t)b * (d + E) + d, P + o.cl_emb + (int64_t)steps[b] * E, sizeof(float) * (size_t)E);
    }
    l2s_linear_forward(z0, P + o.fc0_w, P + o.fc0_b, B, d + E, d, ws + w.a1);
    l2s_layernorm_forward(ws + w.a1, P + o.fc1_g, P + o.fc1_b, B, d, c->ln_eps, ws + w.n1, ws + w.mf1, ws + w.rf1);
    l2s_leaky_forward(ws + w.n1, (int64_t)B * d, c->leaky_slope, ws + w.r1);
    l2s_dropout(ws + w.r1, (int64_t)B * d, drop.p, drop.seed, SITE_FC0);
    l2s_linear_forward(ws + w.r1, P + o.fc4_w, P + o.fc4_b, B, d, h, ws + w.a2);
    l2s_layernorm_forward(ws + w.a2, P + o.fc5_g, P + o.fc5_b, B, h, c->ln_eps, ws + w.n2, ws + w.mf2, ws + w.rf2);
    l2s_leaky_forward(ws + w.n2, (int64_t)B * h, c->leaky_slope, ws + w.r2);
    l2s_dropout(ws + w.r2, (int64_t)B * h, drop.p, drop.seed, SITE_FC4);
    l2s_linear_forward(ws + w.r2, P + o.fc8_w, P + o.fc8_b, B, h, K, ws + w.logits);
    l2s_softmax_ce_forward(ws + w.logits, labels, B, K, ws + w.probs, losses);
    memcpy(probs, ws + w.probs, sizeof(float) * (size_t)B * (size_t)K);
    return 0;
}

int authors_backward_cpu(const l2s_authors_config* c, const float* P, int B, int C, const int32_t* steps,
                         const int32_t* labels, l2s_dropout_config drop, float* ws, float* dmaps, float* G) {
    const l2s_authors_offsets o = authors_param_offsets(c);
    const ws_layout w = workspace_layout(c, B, C);
    const int d = c->d, S2 = c->map_pixels, N = 2 * B, R = N * C, E = c->step_dim, K = c->n_relations, h = d / 2;
    float* d1 = ws + w.dh1; float* d2 = ws + w.dh2;
    /* relation head, from the loss down to its input h */
    l2s_softmax_ce_backward(ws + w.probs, labels, B, K, d1);
    l2s_linear_backward(ws + w.r2, P + o.fc8_w, d1, B, h, K, 0, d2, GRAD(o.fc8_w), GRAD(o.fc8_b));
    l2s_dropout(d2, (int64_t)B * h, drop.p, drop.seed, SITE_FC4);
    l2s_leaky_backward(ws + w.n2, (int64_t)B * h, c->leaky_slope, d2);
    l2s_layernorm_backward(ws + w.a2, ws + w.mf2, ws + w.rf2, P + o.fc5_g, d2, B, h, d1, GRAD(o.fc5_g), GRAD(o.fc5_b));
    l2s_linear_backward(ws + w.r1, P + o.fc4_w, d1, B, d, h, 0, d2, GRAD(o.fc4_w), GRAD(o.fc4_b));
    l2s_dropout(d2, (int64_t)B * d, drop.p, drop.seed, SITE_FC0);
    l2s_leaky_backward(ws + w.n1, (int64_t)B * d, c->leaky_slope, d2);
    l2s_layernorm_backward(ws + w.a1, ws + w.mf1, ws + w.rf1, P + o.fc1_g, d2, B, d, d1, GRAD(o.fc1_g), GRAD(o.fc1_b));
    float* dz0 = ws + w.dz0;
    l2s_linear_backward(ws + w.z0, P + o.fc0_w, d1, B, d + E, d, 0, dz0, GRAD(o.fc0_w), GRAD(o.fc0_b));
    float* dh = ws + w.dX1; float* dh_next = ws + w.dX2;
    for (int b = 0; b < B; b++) {
        memcpy(dh + (int64_t)b * d, dz0 + (int64_t)b * (d + E), sizeof(float) * (size_t)d);
        if (G)
            for (int i = 0; i < E; i++) G[o.cl_emb + (int64_t)steps[b] * E + i] += dz0[(int64_t)b * (d + E) + d + i];
    }
    enc_scratch t = {ws + w.sA, ws + w.sB, ws + w.sC};
    for (int l = c->cl_layers - 1; l >= 0; l--) {
        enc_shape s = {B, 1, c->cl_heads, c->cl_ff, SITE_CL + 4u * (uint32_t)l};
        if (encoder_backward(c, P, G, &o.cl[l], s, ws, &w.cl[l], drop, dh, t, dh_next) < 0) return -1;
        float* swap = dh; dh = dh_next; dh_next = swap;
    }
    float* dA = d1;                                                                   /* [B, 2 S2] = [N, S2] */
    l2s_linear_backward(ws + w.A, P + o.proj_w, dh, B, 2 * S2, d, 0, dA, GRAD(o.proj_w), GRAD(o.proj_b));
    /* pooling and the extractor layers, from the pooled map down to the maps */
    float* dX = ws + w.dX1; float* dX_next = ws + w.dX2;
    pool_backward(c, P, G, &o, N, C, ws, &w, dA, dX);
    float* de = ws + w.de;
    memset(de, 0, sizeof(float) * (size_t)N * (size_t)d);
    for (int l = c->ex_layers - 1; l >= 0; l--) {
        enc_shape s = {N, C, c->ex_heads, c->ex_ff, SITE_EX + 4u * (uint32_t)l};
        if (encoder_backward(c, P, G, &o.ex[l], s, ws, &w.ex[l], drop, dX, t, dX_next) < 0) return -1;
        float* swap = dX; dX = dX_next; dX_next = swap;
        for (int n = 0; G && n < N; n++)                                             /* x0 = X + e: de += sum over c */
            for (int ch = 0; ch < C; ch++)
                for (int i = 0; i < d; i++) de[(int64_t)n * d + i] += dX[((int64_t)n * C + ch) * d + i];
    }
    if (G)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < d; i++) G[o.ex_emb + (int64_t)steps[n / 2] * d + i] += de[(int64_t)n * d + i];
    /* input projection: dmaps when asked for, else only its weights */
    float* din = dmaps ? dmaps : ws + w.sA;
    l2s_linear_backward(ws + w.maps, P + o.in_w, dX, R, S2, d, dmaps ? 0 : S2, din, GRAD(o.in_w), GRAD(o.in_b));
    return 0;
}
