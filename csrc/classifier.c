/*
 * classifier.c — the MLP relation classifier: its hidden layer, layout and the fused passes that
 * string the shared layers (layers.c) together. Shapes are in the comments; all row-major.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "l2s.h"
#include "numeric.h"
#include "layers.h"

/* ---- hidden layer: r = leaky(LN(in W^T + b)); a, n keep what backward needs ---- */
typedef struct { int64_t w, b, g, be; } layer_params;               /* offsets into params/grads */
typedef struct { float *a, *n, *r, *mean, *rstd; } layer_acts;

static void hidden_layer_forward(const l2s_classifier_config* c, const float* params, layer_params lp,
                                 const float* in, int B, int I, int O, layer_acts z) {
    l2s_linear_forward(in, params + lp.w, params + lp.b, B, I, O, z.a);
    l2s_layernorm_forward(z.a, params + lp.g, params + lp.be, B, O, c->ln_eps, z.n, z.mean, z.rstd);
    l2s_leaky_forward(z.n, (int64_t)B * O, c->leaky_slope, z.r);
}
/* dr [B,O] in (clobbered), din [B, din_from:I] out; scratch [B,O]; grads accumulated when not NULL. */
static void hidden_layer_backward(const l2s_classifier_config* c, const float* params, float* grads, layer_params lp,
                                  const float* in, int B, int I, int O, layer_acts z, float* dr, float* scratch,
                                  int din_from, float* din) {
    l2s_leaky_backward(z.n, (int64_t)B * O, c->leaky_slope, dr);
    l2s_layernorm_backward(z.a, z.mean, z.rstd, params + lp.g, dr, B, O, scratch,
                       grads ? grads + lp.g : NULL, grads ? grads + lp.be : NULL);
    l2s_linear_backward(in, params + lp.w, scratch, B, I, O, din_from, din, grads ? grads + lp.w : NULL,
                    grads ? grads + lp.b : NULL);
}

/* ---- layout ----
 * Every tensor starts on a 256-byte boundary (64 floats): cuBLASLt's kernels assume that alignment
 * of their operands and of the bias vector unless told otherwise, and B = 1 slices were 8-byte aligned. */
enum { ALIGN_FLOATS = 64 };
int64_t classifier_input_dim(const l2s_classifier_config* c) {
    return (int64_t)c->n_maps * c->map_pixels + c->step_dim;
}

const char* classifier_config_error(const l2s_classifier_config* c) {
    if (c->n_maps < 1) return "n_maps must be >= 1";
    if (c->map_pixels < 1) return "map_pixels must be >= 1";
    if (c->step_dim < 0) return "step_dim must be >= 0";
    if (c->step_dim > 0 && c->n_steps < 1) return "n_steps must be >= 1 when step_dim > 0";
    if (c->hidden1 < 1 || c->hidden2 < 1) return "hidden sizes must be >= 1";
    if (c->n_relations < 2) return "n_relations must be >= 2";
    if (!(c->ln_eps > 0.f)) return "ln_eps must be > 0";
    if (!isfinite(c->leaky_slope)) return "leaky_slope must be finite";
    if ((int64_t)c->n_maps * c->map_pixels > (1 << 24)) return "n_maps * map_pixels is too large";
    /* bound every size so that no offset, count or loop index can overflow (2^31 parameters at most) */
    if (c->hidden1 > (1 << 20) || c->hidden2 > (1 << 20)) return "hidden sizes must be <= 2^20";
    if (c->n_relations > (1 << 20)) return "n_relations must be <= 2^20";
    if (c->step_dim > (1 << 20) || c->n_steps > (1 << 24)) return "step_dim must be <= 2^20 and n_steps <= 2^24";
    int64_t total = 0, term;
    const int64_t D0 = classifier_input_dim(c);
    const int64_t terms[][2] = {{c->step_dim > 0 ? c->n_steps : 0, c->step_dim}, {c->hidden1, D0 + 3},
                                {c->hidden2, (int64_t)c->hidden1 + 3}, {c->n_relations, (int64_t)c->hidden2 + 1}};
    for (size_t i = 0; i < sizeof(terms) / sizeof(terms[0]); i++) {
        if (__builtin_mul_overflow(terms[i][0], terms[i][1], &term) || __builtin_add_overflow(total, term, &total))
            return "the parameter count overflows";
    }
    if (total > INT32_MAX - 16 * ALIGN_FLOATS) return "the parameter count exceeds 2^31 - 1";   /* with the padding */
    return NULL;
}

static int64_t aligned(int64_t at) { return (at + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }
#define TAKE(field, n) (o.field = at = aligned(at), at += (n))

l2s_classifier_offsets classifier_param_offsets(const l2s_classifier_config* c) {
    l2s_classifier_offsets o;
    int64_t D0 = classifier_input_dim(c), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    int64_t at = 0;
    TAKE(emb, c->step_dim > 0 ? (int64_t)c->n_steps * c->step_dim : 0);
    TAKE(w1, H1 * D0); TAKE(b1, H1); TAKE(g1, H1); TAKE(be1, H1);
    TAKE(w2, H2 * H1); TAKE(b2, H2); TAKE(g2, H2); TAKE(be2, H2);
    TAKE(w3, R * H2); TAKE(b3, R);
    o.total = at;
    return o;
}

void classifier_param_table(const l2s_classifier_config* c, l2s_param_entry out[L2S_CLASSIFIER_N_TENSORS]) {
    l2s_classifier_offsets o = classifier_param_offsets(c);
    int64_t D0 = classifier_input_dim(c), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    int64_t n_emb = c->step_dim > 0 ? c->n_steps : 0;
    const l2s_param_entry t[L2S_CLASSIFIER_N_TENSORS] = {
        {"step_embedding", o.emb, 2, {n_emb, c->step_dim}, L2S_INIT_NORMAL, 0},
        {"fc1.weight", o.w1, 2, {H1, D0}, L2S_INIT_FAN_IN_UNIFORM, D0},
        {"fc1.bias", o.b1, 1, {H1, 0}, L2S_INIT_FAN_IN_UNIFORM, D0},
        {"ln1.weight", o.g1, 1, {H1, 0}, L2S_INIT_ONES, 0},
        {"ln1.bias", o.be1, 1, {H1, 0}, L2S_INIT_ZEROS, 0},
        {"fc2.weight", o.w2, 2, {H2, H1}, L2S_INIT_FAN_IN_UNIFORM, H1},
        {"fc2.bias", o.b2, 1, {H2, 0}, L2S_INIT_FAN_IN_UNIFORM, H1},
        {"ln2.weight", o.g2, 1, {H2, 0}, L2S_INIT_ONES, 0},
        {"ln2.bias", o.be2, 1, {H2, 0}, L2S_INIT_ZEROS, 0},
        {"fc3.weight", o.w3, 2, {R, H2}, L2S_INIT_FAN_IN_UNIFORM, H2},
        {"fc3.bias", o.b3, 1, {R, 0}, L2S_INIT_FAN_IN_UNIFORM, H2},
    };
    memcpy(out, t, sizeof(t));
}

static layer_params layer1(const l2s_classifier_offsets* o) { layer_params p = {o->w1, o->b1, o->g1, o->be1}; return p; }
static layer_params layer2(const l2s_classifier_offsets* o) { layer_params p = {o->w2, o->b2, o->g2, o->be2}; return p; }
static layer_acts acts1(float* ws, const l2s_classifier_workspace* w) {
    layer_acts z = {ws + w->a1, ws + w->n1, ws + w->r1, ws + w->mean1, ws + w->rstd1}; return z;
}
static layer_acts acts2(float* ws, const l2s_classifier_workspace* w) {
    layer_acts z = {ws + w->a2, ws + w->n2, ws + w->r2, ws + w->mean2, ws + w->rstd2}; return z;
}

l2s_classifier_workspace classifier_workspace_offsets(const l2s_classifier_config* c, int B) {
    l2s_classifier_workspace o;
    int64_t D0 = classifier_input_dim(c), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    int64_t widest = H1 > H2 ? H1 : H2;
    if (R > widest) widest = R;
    int64_t at = 0;
    TAKE(h0, B * D0);
    TAKE(a1, B * H1); TAKE(n1, B * H1); TAKE(r1, B * H1); TAKE(mean1, B); TAKE(rstd1, B);
    TAKE(a2, B * H2); TAKE(n2, B * H2); TAKE(r2, B * H2); TAKE(mean2, B); TAKE(rstd2, B);
    TAKE(logits, B * R); TAKE(probs, B * R);
    TAKE(dh0, B * D0); TAKE(dbuf1, B * widest); TAKE(dbuf2, B * widest);
    TAKE(steps, B); TAKE(labels, B);
    o.total = at;
    return o;
}
#undef TAKE

/* ---- the fused passes ---- */
void classifier_forward_cpu(const l2s_classifier_config* c, const float* params, int B,
                            const float* x, const int32_t* steps, const int32_t* labels,
                            float* ws, float* probs, float* losses) {
    l2s_classifier_offsets po = classifier_param_offsets(c);
    l2s_classifier_workspace wo = classifier_workspace_offsets(c, B);
    const int64_t X = (int64_t)c->n_maps * c->map_pixels, E = c->step_dim;
    const int D0 = (int)(X + E), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    float* h0 = ws + wo.h0;
    for (int r = 0; r < B; r++) {            /* h0 = [x, step_emb[steps]] */
        memcpy(h0 + (int64_t)r * D0, x + (int64_t)r * X, sizeof(float) * X);
        if (E > 0) memcpy(h0 + (int64_t)r * D0 + X, params + po.emb + (int64_t)steps[r] * E, sizeof(float) * E);
    }
    hidden_layer_forward(c, params, layer1(&po), h0, B, D0, H1, acts1(ws, &wo));
    hidden_layer_forward(c, params, layer2(&po), ws + wo.r1, B, H1, H2, acts2(ws, &wo));
    l2s_linear_forward(ws + wo.r2, params + po.w3, params + po.b3, B, H2, R, ws + wo.logits);
    l2s_softmax_ce_forward(ws + wo.logits, labels, B, R, ws + wo.probs, losses);
    memcpy(probs, ws + wo.probs, sizeof(float) * (size_t)B * R);
}

void classifier_backward_cpu(const l2s_classifier_config* c, const float* params, int B,
                             const int32_t* steps, const int32_t* labels,
                             float* ws, float* dx, float* grads) {
    l2s_classifier_offsets po = classifier_param_offsets(c);
    l2s_classifier_workspace wo = classifier_workspace_offsets(c, B);
    const int64_t X = (int64_t)c->n_maps * c->map_pixels, E = c->step_dim;
    const int D0 = (int)(X + E), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    float* g = grads;                                   /* NULL: input gradient only */
    float* d1 = ws + wo.dbuf1; float* d2 = ws + wo.dbuf2; float* dh0 = ws + wo.dh0;
    l2s_softmax_ce_backward(ws + wo.probs, labels, B, R, d1);                                       /* d1 = dlogits [B,R] */
    l2s_linear_backward(ws + wo.r2, params + po.w3, d1, B, H2, R, 0, d2, g ? g + po.w3 : NULL, g ? g + po.b3 : NULL); /* d2 = dr2 */
    hidden_layer_backward(c, params, g, layer2(&po), ws + wo.r1, B, H1, H2, acts2(ws, &wo), d2, d1, 0, d2);   /* d2 = dr1 */
    /* dh0: its map columns only when the map gradient is asked for (training skips a third of layer 1) */
    hidden_layer_backward(c, params, g, layer1(&po), ws + wo.h0, B, D0, H1, acts1(ws, &wo), d2, d1, dx ? 0 : (int)X, dh0);
    for (int r = 0; r < B; r++) {
        if (dx) memcpy(dx + (int64_t)r * X, dh0 + (int64_t)r * D0, sizeof(float) * X);
        if (g && E > 0) {
            float* de = g + po.emb + (int64_t)steps[r] * E;
            for (int64_t e = 0; e < E; e++) de[e] += dh0[(int64_t)r * D0 + X + e];
        }
    }
}
