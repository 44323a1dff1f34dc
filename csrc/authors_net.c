/*
 * authors_net.c — the authors' relation classifier (a transformer over per-(layer, head) map
 * stacks, shared/authors-format.md §3) as one fused pass: forward, loss, input gradient for
 * steering and weight gradients with dropout for training. This file holds the layout and the
 * order in which the network strings its steps (authors_ops.h), once for every back end: the C
 * steps are in authors_net_cpu.c, the CUDA ones in kernels/authors_net.cu.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include "l2s.h"
#include "authors_ops.h"

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

/* Sizes are bounded by authors_config_error, so these int64 sums cannot overflow (< 2^50). Every
 * tensor starts on a 256-byte boundary (64 floats), as cuBLASLt assumes of operands and bias vectors. */
static int64_t place(int64_t* at, int64_t n) {
    int64_t start = (*at + 63) / 64 * 64;
    *at = start + n;
    return start;
}

static int64_t encoder_params(l2s_encoder_offsets* e, int64_t at, int64_t d, int64_t ff) {
    e->in_w = place(&at, 3 * d * d); e->in_b = place(&at, 3 * d);
    e->out_w = place(&at, d * d); e->out_b = place(&at, d);
    e->l1_w = place(&at, ff * d); e->l1_b = place(&at, ff);
    e->l2_w = place(&at, d * ff); e->l2_b = place(&at, d);
    e->n1_g = place(&at, d); e->n1_b = place(&at, d); e->n2_g = place(&at, d); e->n2_b = place(&at, d);
    return at;
}

l2s_authors_offsets authors_param_offsets(const l2s_authors_config* c) {
    l2s_authors_offsets o;
    memset(&o, 0, sizeof(o));
    const int64_t d = c->d, S2 = c->map_pixels, E = c->step_dim, h = d / 2;
    int64_t at = 0;
    o.query = place(&at, d);
    o.in_w = place(&at, d * S2); o.in_b = place(&at, d);
    o.ex_emb = place(&at, (int64_t)c->n_steps * d);
    for (int l = 0; l < c->ex_layers && l < L2S_AUTHORS_MAX_LAYERS; l++) at = encoder_params(&o.ex[l], at, d, c->ex_ff);
    o.pool_in_w = place(&at, 3 * d * d); o.pool_in_b = place(&at, 3 * d);
    o.pool_out_w = place(&at, d * d); o.pool_out_b = place(&at, d);
    o.out_w = place(&at, S2 * d); o.out_b = place(&at, S2);
    o.cl_emb = place(&at, (int64_t)c->n_steps * E);
    o.proj_w = place(&at, d * 2 * S2); o.proj_b = place(&at, d);
    for (int l = 0; l < c->cl_layers && l < L2S_AUTHORS_MAX_LAYERS; l++) at = encoder_params(&o.cl[l], at, d, c->cl_ff);
    o.fc0_w = place(&at, d * (d + E)); o.fc0_b = place(&at, d);
    o.fc1_g = place(&at, d); o.fc1_b = place(&at, d);
    o.fc4_w = place(&at, h * d); o.fc4_b = place(&at, h);
    o.fc5_g = place(&at, h); o.fc5_b = place(&at, h);
    o.fc8_w = place(&at, (int64_t)c->n_relations * h); o.fc8_b = place(&at, c->n_relations);
    o.n_trained = at;
    o.ex_pe = place(&at, (int64_t)c->max_channels * d);
    o.cl_pe = place(&at, d * d);                      /* the authors' table has d rows; row 0 is used */
    o.total = at;
    return o;
}

/* ---- the state-dict names, in buffer order ---- */
static void span(l2s_authors_tensor* t, int* n, const char* name, int64_t offset, int64_t numel) {
    snprintf(t[*n].name, sizeof(t[*n].name), "%s", name);
    t[*n].offset = offset; t[*n].numel = numel;
    (*n)++;
}

static void encoder_spans(l2s_authors_tensor* t, int* n, const char* prefix, int layer, const l2s_encoder_offsets* e,
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

int authors_param_table(const l2s_authors_config* c, l2s_authors_tensor* t) {
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

/* Activations of one encoder layer over `rows` = items * seq rows (float offsets). */
typedef struct { int64_t x0, h1, mean1, rstd1, qkv, p, o, y, h2, mean2, rstd2, r; } enc_acts;

typedef struct {
    enc_acts ex[L2S_AUTHORS_MAX_LAYERS], cl[L2S_AUTHORS_MAX_LAYERS];
    int64_t maps, xl, kv, q, alpha, op, ap, A, hout, z0, a1, n1, r1, mf1, rf1, a2, n2, r2, mf2, rf2, logits, probs;
    int64_t sA, sB, sC, dX1, dX2, de, dq, dquery, dz0, dh1, dh2, dalpha, scratch, idx, total;
} ws_layout;

typedef struct { int64_t at; int bad; } cursor;
static int64_t take(cursor* k, int64_t a, int64_t b) {     /* a * b floats on a 256-byte boundary, checked */
    int64_t n;
    if (k->bad || __builtin_add_overflow(k->at, 63, &k->at)) { k->bad = 1; return 0; }
    k->at = k->at / 64 * 64;
    int64_t at = k->at;
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
    w.dalpha = take(&k, N * c->pool_heads, C); w.scratch = take(&k, C, C);
    w.idx = take(&k, 2, B);                             /* int32 steps and labels, uploaded per pass */
    w.total = k.bad ? -1 : k.at;
    return w;
}

int64_t authors_workspace_size(const l2s_authors_config* c, int B, int C) {
    if (B < 1 || C < 1 || (int64_t)2 * B * C > INT32_MAX / 4) return -1;   /* rows * 3d must stay int-indexable per op */
    return workspace_layout(c, B, C).total;
}

/* ---- encoder layer (pre-norm): y = x0 + drop(MHA(LN1 x0)); out = y + drop(W2 drop(relu(W1 LN2 y))) ---- */
typedef struct { int items, seq, heads, ff; uint32_t site; } enc_shape;
#define RUN(call) do { int e_ = (call); if (e_) return e_; } while (0)

static int encoder_forward(const l2s_authors_ops* o, void* x, const l2s_authors_config* c, const float* P,
                           const l2s_encoder_offsets* e, enc_shape s, float* ws, const enc_acts* a,
                           l2s_dropout_config drop, float* tmp, float* out) {
    const int d = c->d, rows = s.items * s.seq;
    const int64_t n = (int64_t)rows * d, nf = (int64_t)rows * s.ff;
    float* h1 = ws + a->h1; float* qkv = ws + a->qkv; float* att = ws + a->o; float* y = ws + a->y;
    float* h2 = ws + a->h2; float* r = ws + a->r;
    RUN(o->layernorm_forward(x, ws + a->x0, P + e->n1_g, P + e->n1_b, rows, d, c->ln_eps, h1, ws + a->mean1, ws + a->rstd1));
    RUN(o->linear_forward(x, h1, P + e->in_w, P + e->in_b, rows, d, 3 * d, qkv));
    RUN(o->attention_forward(x, qkv, s.items, s.seq, s.heads, d, ws + a->p, att));
    RUN(o->linear_forward(x, att, P + e->out_w, P + e->out_b, rows, d, d, tmp));
    RUN(o->dropout(x, tmp, n, drop.p, drop.seed, s.site));
    RUN(o->add(x, y, ws + a->x0, tmp, n));
    RUN(o->layernorm_forward(x, y, P + e->n2_g, P + e->n2_b, rows, d, c->ln_eps, h2, ws + a->mean2, ws + a->rstd2));
    RUN(o->linear_forward(x, h2, P + e->l1_w, P + e->l1_b, rows, d, s.ff, r));
    RUN(o->relu_forward(x, r, nf));
    RUN(o->dropout(x, r, nf, drop.p, drop.seed, s.site + 1));
    RUN(o->linear_forward(x, r, P + e->l2_w, P + e->l2_b, rows, s.ff, d, tmp));
    RUN(o->dropout(x, tmp, n, drop.p, drop.seed, s.site + 2));
    return o->add(x, out, y, tmp, n);
}

/* dout [rows, d] -> dx0 [rows, d] (distinct buffers); sA [rows, max(3d, ff)], sB, sC [rows, d]. */
typedef struct { float *sA, *sB, *sC, *scratch; } enc_scratch;

static int encoder_backward(const l2s_authors_ops* o, void* x, const l2s_authors_config* c, const float* P, float* G,
                            const l2s_encoder_offsets* e, enc_shape s, float* ws, const enc_acts* a,
                            l2s_dropout_config drop, const float* dout, enc_scratch t, float* dx0) {
    const int d = c->d, rows = s.items * s.seq;
    const int64_t n = (int64_t)rows * d, nf = (int64_t)rows * s.ff;
    RUN(o->copy(x, t.sB, dout, n));                                                    /* dFF out */
    RUN(o->dropout(x, t.sB, n, drop.p, drop.seed, s.site + 2));
    RUN(o->linear_backward(x, ws + a->r, P + e->l2_w, t.sB, rows, s.ff, d, 0, t.sA, GRAD(e->l2_w), GRAD(e->l2_b)));
    RUN(o->relu_backward(x, ws + a->r, t.sA, nf, drop.p > 0.f ? 1.f / (1.f - drop.p) : 1.f));   /* relu, its dropout */
    RUN(o->linear_backward(x, ws + a->h2, P + e->l1_w, t.sA, rows, d, s.ff, 0, t.sB, GRAD(e->l1_w), GRAD(e->l1_b)));
    RUN(o->layernorm_backward(x, ws + a->y, ws + a->mean2, ws + a->rstd2, P + e->n2_g, t.sB, rows, d, t.sC,
                              GRAD(e->n2_g), GRAD(e->n2_b)));
    RUN(o->add(x, dx0, t.sC, dout, n));                                                /* dy */
    RUN(o->copy(x, t.sB, dx0, n));
    RUN(o->dropout(x, t.sB, n, drop.p, drop.seed, s.site));
    RUN(o->linear_backward(x, ws + a->o, P + e->out_w, t.sB, rows, d, d, 0, t.sC, GRAD(e->out_w), GRAD(e->out_b)));
    RUN(o->attention_backward(x, ws + a->qkv, ws + a->p, t.sC, s.items, s.seq, s.heads, d, t.scratch, t.sA));
    RUN(o->linear_backward(x, ws + a->h1, P + e->in_w, t.sA, rows, d, 3 * d, 0, t.sB, GRAD(e->in_w), GRAD(e->in_b)));
    RUN(o->layernorm_backward(x, ws + a->x0, ws + a->mean1, ws + a->rstd1, P + e->n1_g, t.sB, rows, d, t.sC,
                              GRAD(e->n1_g), GRAD(e->n1_b)));
    return o->add(x, dx0, dx0, t.sC, n);
}

/* ---- attention pooling: one learned query over each object's C rows ---- */
static int pool_forward(const l2s_authors_ops* o, void* x, const l2s_authors_config* c, const float* P,
                        const l2s_authors_offsets* po, int N, int C, float* ws, const ws_layout* w) {
    const int d = c->d;
    RUN(o->linear_forward(x, P + po->query, P + po->pool_in_w, P + po->pool_in_b, 1, d, d, ws + w->q));
    RUN(o->linear_forward(x, ws + w->xl, P + po->pool_in_w + (int64_t)d * d, P + po->pool_in_b + d, N * C, d, 2 * d,
                          ws + w->kv));
    RUN(o->pool_forward(x, ws + w->q, ws + w->kv, N, C, c->pool_heads, d, ws + w->alpha, ws + w->op));
    RUN(o->linear_forward(x, ws + w->op, P + po->pool_out_w, P + po->pool_out_b, N, d, d, ws + w->ap));
    return o->linear_forward(x, ws + w->ap, P + po->out_w, P + po->out_b, N, d, c->map_pixels, ws + w->A);
}

/* dA [N, S2] -> dX [N*C, d]. */
static int pool_backward(const l2s_authors_ops* o, void* x, const l2s_authors_config* c, const float* P, float* G,
                         const l2s_authors_offsets* po, int N, int C, float* ws, const ws_layout* w, const float* dA,
                         float* dX) {
    const int d = c->d;
    float* dap = ws + w->sB; float* dop = ws + w->sC; float* dkv = ws + w->sA; float* dq = ws + w->dq;
    RUN(o->linear_backward(x, ws + w->ap, P + po->out_w, dA, N, d, c->map_pixels, 0, dap, GRAD(po->out_w),
                           GRAD(po->out_b)));
    RUN(o->linear_backward(x, ws + w->op, P + po->pool_out_w, dap, N, d, d, 0, dop, GRAD(po->pool_out_w),
                           GRAD(po->pool_out_b)));
    RUN(o->pool_backward(x, ws + w->q, ws + w->kv, ws + w->alpha, dop, N, C, c->pool_heads, d, ws + w->dalpha, dkv, dq));
    RUN(o->linear_backward(x, ws + w->xl, P + po->pool_in_w + (int64_t)d * d, dkv, N * C, d, 2 * d, 0, dX,
                           GRAD(po->pool_in_w + (int64_t)d * d), GRAD(po->pool_in_b + d)));
    if (!G) return 0;
    float* dquery = ws + w->dquery;                       /* q = query W_q^T + b_q: its weights and the query */
    RUN(o->linear_backward(x, P + po->query, P + po->pool_in_w, dq, 1, d, d, 0, dquery, G + po->pool_in_w,
                           G + po->pool_in_b));
    return o->add(x, G + po->query, G + po->query, dquery, d);
}

/* ---- the fused passes ---- */
int authors_forward_run(const l2s_authors_ops* o, void* x, const l2s_authors_config* c, const float* P, int B, int C,
                        const float* maps, const int32_t* steps_host, const int32_t* labels_host,
                        l2s_dropout_config drop, float* ws, float* probs, float* losses) {
    const l2s_authors_offsets po = authors_param_offsets(c);
    const ws_layout w = workspace_layout(c, B, C);
    const int d = c->d, S2 = c->map_pixels, N = 2 * B, R = N * C, E = c->step_dim, K = c->n_relations, h = d / 2;
    int32_t* steps = (int32_t*)(ws + w.idx);
    int32_t* labels = labels_host ? steps + B : NULL;
    RUN(o->upload(x, steps, steps_host, B));
    if (labels) RUN(o->upload(x, labels, labels_host, B));
    float* X = ws + (c->ex_layers ? w.ex[0].x0 : w.xl);
    RUN(o->copy(x, ws + w.maps, maps, (int64_t)R * S2));
    RUN(o->linear_forward(x, ws + w.maps, P + po.in_w, P + po.in_b, R, S2, d, X));      /* object rows n = 2b + slot */
    RUN(o->add_positions(x, X, P + po.ex_pe, N, C, d));
    for (int l = 0; l < c->ex_layers; l++) {
        RUN(o->add_step_rows(x, ws + w.ex[l].x0, P + po.ex_emb, steps, N, C, d, 2));     /* x0 = X + step embedding */
        float* out = ws + (l + 1 < c->ex_layers ? w.ex[l + 1].x0 : w.xl);
        enc_shape s = {N, C, c->ex_heads, c->ex_ff, SITE_EX + 4u * (uint32_t)l};
        RUN(encoder_forward(o, x, c, P, &po.ex[l], s, ws, &w.ex[l], drop, ws + w.sB, out));
    }
    RUN(pool_forward(o, x, c, P, &po, N, C, ws, &w));
    float* hin = ws + (c->cl_layers ? w.cl[0].x0 : w.hout);                             /* A viewed [B, 2 S2] */
    RUN(o->linear_forward(x, ws + w.A, P + po.proj_w, P + po.proj_b, B, 2 * S2, d, hin));
    RUN(o->add_positions(x, hin, P + po.cl_pe, B, 1, d));
    for (int l = 0; l < c->cl_layers; l++) {
        float* out = ws + (l + 1 < c->cl_layers ? w.cl[l + 1].x0 : w.hout);
        enc_shape s = {B, 1, c->cl_heads, c->cl_ff, SITE_CL + 4u * (uint32_t)l};
        RUN(encoder_forward(o, x, c, P, &po.cl[l], s, ws, &w.cl[l], drop, ws + w.sB, out));
    }
    RUN(o->concat_steps(x, ws + w.hout, P + po.cl_emb, steps, B, d, E, ws + w.z0));
    RUN(o->linear_forward(x, ws + w.z0, P + po.fc0_w, P + po.fc0_b, B, d + E, d, ws + w.a1));
    RUN(o->layernorm_forward(x, ws + w.a1, P + po.fc1_g, P + po.fc1_b, B, d, c->ln_eps, ws + w.n1, ws + w.mf1, ws + w.rf1));
    RUN(o->leaky_forward(x, ws + w.n1, (int64_t)B * d, c->leaky_slope, ws + w.r1));
    RUN(o->dropout(x, ws + w.r1, (int64_t)B * d, drop.p, drop.seed, SITE_FC0));
    RUN(o->linear_forward(x, ws + w.r1, P + po.fc4_w, P + po.fc4_b, B, d, h, ws + w.a2));
    RUN(o->layernorm_forward(x, ws + w.a2, P + po.fc5_g, P + po.fc5_b, B, h, c->ln_eps, ws + w.n2, ws + w.mf2, ws + w.rf2));
    RUN(o->leaky_forward(x, ws + w.n2, (int64_t)B * h, c->leaky_slope, ws + w.r2));
    RUN(o->dropout(x, ws + w.r2, (int64_t)B * h, drop.p, drop.seed, SITE_FC4));
    RUN(o->linear_forward(x, ws + w.r2, P + po.fc8_w, P + po.fc8_b, B, h, K, ws + w.logits));
    RUN(o->softmax_ce_forward(x, ws + w.logits, labels, B, K, ws + w.probs, losses));
    return o->copy(x, probs, ws + w.probs, (int64_t)B * K);
}

int authors_backward_run(const l2s_authors_ops* o, void* x, const l2s_authors_config* c, const float* P, int B, int C,
                         const int32_t* steps_host, const int32_t* labels_host, l2s_dropout_config drop, float* ws,
                         float* dmaps, float* G) {
    const l2s_authors_offsets po = authors_param_offsets(c);
    const ws_layout w = workspace_layout(c, B, C);
    const int d = c->d, S2 = c->map_pixels, N = 2 * B, R = N * C, E = c->step_dim, K = c->n_relations, h = d / 2;
    int32_t* steps = (int32_t*)(ws + w.idx);
    int32_t* labels = steps + B;
    RUN(o->upload(x, steps, steps_host, B));
    RUN(o->upload(x, labels, labels_host, B));
    float* d1 = ws + w.dh1; float* d2 = ws + w.dh2;
    /* relation head, from the loss down to its input h */
    RUN(o->softmax_ce_backward(x, ws + w.probs, labels, B, K, d1));
    RUN(o->linear_backward(x, ws + w.r2, P + po.fc8_w, d1, B, h, K, 0, d2, GRAD(po.fc8_w), GRAD(po.fc8_b)));
    RUN(o->dropout(x, d2, (int64_t)B * h, drop.p, drop.seed, SITE_FC4));
    RUN(o->leaky_backward(x, ws + w.n2, (int64_t)B * h, c->leaky_slope, d2));
    RUN(o->layernorm_backward(x, ws + w.a2, ws + w.mf2, ws + w.rf2, P + po.fc5_g, d2, B, h, d1, GRAD(po.fc5_g),
                              GRAD(po.fc5_b)));
    RUN(o->linear_backward(x, ws + w.r1, P + po.fc4_w, d1, B, d, h, 0, d2, GRAD(po.fc4_w), GRAD(po.fc4_b)));
    RUN(o->dropout(x, d2, (int64_t)B * d, drop.p, drop.seed, SITE_FC0));
    RUN(o->leaky_backward(x, ws + w.n1, (int64_t)B * d, c->leaky_slope, d2));
    RUN(o->layernorm_backward(x, ws + w.a1, ws + w.mf1, ws + w.rf1, P + po.fc1_g, d2, B, d, d1, GRAD(po.fc1_g),
                              GRAD(po.fc1_b)));
    RUN(o->linear_backward(x, ws + w.z0, P + po.fc0_w, d1, B, d + E, d, 0, ws + w.dz0, GRAD(po.fc0_w), GRAD(po.fc0_b)));
    float* dh = ws + w.dX1; float* dh_next = ws + w.dX2;
    RUN(o->split_steps(x, ws + w.dz0, steps, B, d, E, dh, GRAD(po.cl_emb)));
    enc_scratch t = {ws + w.sA, ws + w.sB, ws + w.sC, ws + w.scratch};
    for (int l = c->cl_layers - 1; l >= 0; l--) {
        enc_shape s = {B, 1, c->cl_heads, c->cl_ff, SITE_CL + 4u * (uint32_t)l};
        RUN(encoder_backward(o, x, c, P, G, &po.cl[l], s, ws, &w.cl[l], drop, dh, t, dh_next));
        float* swap = dh; dh = dh_next; dh_next = swap;
    }
    float* dA = d1;                                                                   /* [B, 2 S2] = [N, S2] */
    RUN(o->linear_backward(x, ws + w.A, P + po.proj_w, dh, B, 2 * S2, d, 0, dA, GRAD(po.proj_w), GRAD(po.proj_b)));
    /* pooling and the extractor layers, from the pooled map down to the maps */
    float* dX = ws + w.dX1; float* dX_next = ws + w.dX2;
    RUN(pool_backward(o, x, c, P, G, &po, N, C, ws, &w, dA, dX));
    for (int l = c->ex_layers - 1; l >= 0; l--) {
        enc_shape s = {N, C, c->ex_heads, c->ex_ff, SITE_EX + 4u * (uint32_t)l};
        RUN(encoder_backward(o, x, c, P, G, &po.ex[l], s, ws, &w.ex[l], drop, dX, t, dX_next));
        float* swap = dX; dX = dX_next; dX_next = swap;
        if (G) RUN(o->step_rows_grad(x, dX, steps, N, C, d, 2, G + po.ex_emb));   /* x0 = X + e: sum over c */
    }
    /* input projection: dmaps when asked for, else only its weights */
    return o->linear_backward(x, ws + w.maps, P + po.in_w, dX, R, S2, d, dmaps ? 0 : S2, dmaps ? dmaps : ws + w.sA,
                              GRAD(po.in_w), GRAD(po.in_b));
}

int authors_forward_cpu(const l2s_authors_config* c, const float* params, int B, int C, const float* maps,
                        const int32_t* steps, const int32_t* labels, l2s_dropout_config drop, float* workspace,
                        float* probs, float* losses) {
    return authors_forward_run(&l2s_authors_cpu_ops, NULL, c, params, B, C, maps, steps, labels, drop, workspace,
                               probs, losses);
}

int authors_backward_cpu(const l2s_authors_config* c, const float* params, int B, int C, const int32_t* steps,
                         const int32_t* labels, l2s_dropout_config drop, float* workspace, float* dmaps, float* grads) {
    return authors_backward_run(&l2s_authors_cpu_ops, NULL, c, params, B, C, steps, labels, drop, workspace, dmaps,
                                grads);
}
