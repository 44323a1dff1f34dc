/*
 * classifier.c — the relation classifier's layers, forward and backward side by side,
 * and the fused pass that strings them together. Shapes are in the comments; all row-major.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "l2s.h"
#include "numeric.h"
#include "parallel.h"
#include "tiles.h"

/* ---- linear: out[B,O] = in[B,I] W[O,I]^T + b[O] ----
 * Batches of at least TILED_MIN_ROWS rows (training) go through the register tiles of tiles.c in
 * ROWS-row blocks; smaller ones (steering, B = 1) keep the plain loops. The loops run over slices of
 * W (OUT_SLICE rows, COL_SLICE columns) outermost so a slice stays in cache while every row block
 * passes it (one row block at a time streamed all of W from L3 and ran at 0.4x torch), and the
 * slices go to threads only for products large enough to repay a thread start (~50 us). */
enum { ROWS = L2S_ROWS, TILED_MIN_ROWS = 2 * L2S_ROWS, OUT_SLICE = 16, COL_SLICE = 8 * L2S_LANES };
#define PARALLEL_MIN_MACS (16 << 20)   /* B = 64 on the authors' widths ran slower on two threads */

typedef struct {
    const float *in, *W, *b, *dout;
    float *out, *din, *dW;
    int B, I, O, tiled_rows, tiled_cols;
    int din_tiles_from;      /* first din column the tiles write: din_from rounded down to LANES */
    l2s_block_ops ops;
} linear_job;

static int64_t slices_per_thread(const linear_job* j, int64_t slices) {
    return (int64_t)j->B * j->I * j->O >= PARALLEL_MIN_MACS ? 1 : slices;
}

static void linear_forward_slices(void* ctx, int64_t begin, int64_t end) {
    const linear_job* j = ctx;
    for (int64_t sl = begin; sl < end; sl++) {
        int o0 = (int)sl * OUT_SLICE, nw = j->O - o0 < OUT_SLICE ? j->O - o0 : OUT_SLICE;
        const int I = j->I, O = j->O;          /* locals: stores through out may not alias them */
        const float* b = j->b + o0;
        for (int r0 = 0; r0 < j->tiled_rows; r0 += ROWS) {
            float* out = j->out + (int64_t)r0 * O + o0;
            j->ops.dots(j->in + (int64_t)r0 * I, I, j->W + (int64_t)o0 * I, I, I, nw, out, O);
            for (int r = 0; r < ROWS; r++)
                for (int o = 0; o < nw; o++) out[(int64_t)r * O + o] += b[o];
        }
    }
}
L2S_HOT static void linear_forward(const float* in, const float* W, const float* b, int B, int I, int O,
                                   float* out) {
    linear_job j = {.in = in, .W = W, .b = b, .out = out, .B = B, .I = I, .O = O,
                    .tiled_rows = B >= TILED_MIN_ROWS ? B / ROWS * ROWS : 0};
    if (j.tiled_rows) {
        j.ops = l2s_pick_block_ops();
        int64_t slices = (O + OUT_SLICE - 1) / OUT_SLICE;
        l2s_parallel_for(slices, slices_per_thread(&j, slices), linear_forward_slices, &j);
    }
    for (int r = j.tiled_rows; r < B; r++) {
        const float* x = in + (int64_t)r * I;
        for (int o = 0; o < O; o++) out[(int64_t)r * O + o] = b[o] + l2s_dot_f32(x, W + (int64_t)o * I, I);
    }
}

/* din[r, i] = sum_o dout[r, o] W[o, i] for rows [r0, r1), columns [c0, I) (plain loops). */
L2S_HOT static void linear_din_plain(const linear_job* j, int r0, int r1, int c0) {
    const int I = j->I, O = j->O;          /* locals: stores through dx may not alias them */
    const float *W = j->W, *dout = j->dout;
    for (int r = r0; r < r1; r++) {
        float* dx = j->din + (int64_t)r * I;
        memset(dx + c0, 0, sizeof(float) * (size_t)(I - c0));
        for (int o = 0; o < O; o++) {
            float g = dout[(int64_t)r * O + o];
            const float* w = W + (int64_t)o * I;
            for (int i = c0; i < I; i++) dx[i] += g * w[i];
        }
    }
}
static void linear_din_slices(void* ctx, int64_t begin, int64_t end) {
    const linear_job* j = ctx;
    for (int64_t sl = begin; sl < end; sl++) {
        int c0 = j->din_tiles_from + (int)sl * COL_SLICE;
        int nc = j->tiled_cols - c0 < COL_SLICE ? j->tiled_cols - c0 : COL_SLICE;
        for (int r0 = 0; r0 < j->tiled_rows; r0 += ROWS)
            j->ops.gemm(j->dout + (int64_t)r0 * j->O, j->O, 1, j->O, j->W + c0, j->I, nc,
                        j->din + (int64_t)r0 * j->I + c0, j->I, 0);
    }
}
/* dW[o, i] += sum_r dout[r, o] in[r, i] for outputs [o0, o1), columns [c0, I) (plain loops). */
L2S_HOT static void linear_dw_plain(const linear_job* j, int o0, int o1, int c0) {
    const int B = j->B, I = j->I, O = j->O;   /* locals: stores through dw may not alias them */
    for (int o = o0; o < o1; o++) {
        float* dw = j->dW + (int64_t)o * I;
        for (int r = 0; r < B; r++) {
            float g = j->dout[(int64_t)r * O + o];
            const float* x = j->in + (int64_t)r * I;
            for (int i = c0; i < I; i++) dw[i] += g * x[i];
        }
    }
}
/* dW rows [o0, o0 + ROWS) += dout^T in, reading dout transposed in place (a_col = O). */
static void linear_dw_blocks(void* ctx, int64_t begin, int64_t end) {
    const linear_job* j = ctx;
    for (int64_t blk = begin; blk < end; blk++) {
        int o0 = (int)blk * ROWS;
        if (j->tiled_cols)
            j->ops.gemm(j->dout + o0, 1, j->O, j->B, j->in, j->I, j->tiled_cols, j->dW + (int64_t)o0 * j->I, j->I, 1);
        linear_dw_plain(j, o0, o0 + ROWS, j->tiled_cols);              /* columns past the last tile */
    }
}
/* din[B, din_from:I] = (dout W)[:, din_from:] (overwritten; columns before din_from are left as they
 * are: the first layer's map columns when no map gradient is asked for); dW[O,I] += dout^T in;
 * db[O] += sum_r dout (if dW). */
L2S_HOT static void linear_backward(const float* in, const float* W, const float* dout, int B, int I, int O,
                                    int din_from, float* din, float* dW, float* db) {
    linear_job j = {.in = in, .W = W, .dout = dout, .din = din, .dW = dW, .B = B, .I = I, .O = O,
                    .tiled_rows = B >= TILED_MIN_ROWS ? B / ROWS * ROWS : 0, .tiled_cols = I / L2S_LANES * L2S_LANES,
                    .din_tiles_from = din_from / L2S_LANES * L2S_LANES, .ops = l2s_pick_block_ops()};
    if (j.tiled_rows && j.din_tiles_from < j.tiled_cols) {
        int64_t slices = (j.tiled_cols - j.din_tiles_from + COL_SLICE - 1) / COL_SLICE;
        l2s_parallel_for(slices, slices_per_thread(&j, slices), linear_din_slices, &j);
        linear_din_plain(&j, 0, j.tiled_rows, j.tiled_cols);         /* columns past the last tile */
    } else {
        linear_din_plain(&j, 0, j.tiled_rows, din_from);
    }
    linear_din_plain(&j, j.tiled_rows, B, din_from);                 /* rows past the last block */
    if (!dW) return;
    int tiled_outs = j.tiled_rows ? O / ROWS * ROWS : 0;
    if (tiled_outs) l2s_parallel_for(tiled_outs / ROWS, slices_per_thread(&j, tiled_outs / ROWS), linear_dw_blocks, &j);
    linear_dw_plain(&j, tiled_outs, O, 0);                            /* outputs past the last block */
    for (int o = 0; o < O; o++)
        for (int r = 0; r < B; r++) db[o] += dout[(int64_t)r * O + o];
}

/* ---- layernorm over the last dim C: out = (a - mean) * rstd * g + be ----
 * Reductions go through 8 partial sums (numeric.h) and the rows are built in place in out/da, so
 * every loop vectorises without -ffast-math (the scalar chains were a fifth of the B=64 pass). */
L2S_HOT static void layernorm_forward(const float* a, const float* g, const float* be, int B, int C, float eps,
                                      float* out, float* mean, float* rstd) {
    for (int r = 0; r < B; r++) {
        const float* x = a + (int64_t)r * C;
        float* y = out + (int64_t)r * C;
        float mu = l2s_sum_f32(x, C) / C;
        for (int c = 0; c < C; c++) y[c] = x[c] - mu;
        float rs = 1.f / sqrtf(l2s_dot_f32(y, y, C) / C + eps);
        for (int c = 0; c < C; c++) y[c] = y[c] * rs * g[c] + be[c];
        mean[r] = mu; rstd[r] = rs;
    }
}
/* da[B,C] overwritten; dg, dbe accumulated when dg is not NULL. */
L2S_HOT static void layernorm_backward(const float* a, const float* mean, const float* rstd, const float* g,
                                       const float* dout, int B, int C, float* da, float* dg, float* dbe) {
    for (int r = 0; r < B; r++) {
        const float* x = a + (int64_t)r * C; const float* dy = dout + (int64_t)r * C;
        float* d = da + (int64_t)r * C;
        float mu = mean[r], rs = rstd[r];
        for (int c = 0; c < C; c++) d[c] = (x[c] - mu) * rs;                 /* xhat */
        if (dg)
            for (int c = 0; c < C; c++) { dg[c] += dy[c] * d[c]; dbe[c] += dy[c]; }
        float mean_dx = 0.f, acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  /* mean of dnorm * xhat */
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int k = 0; k < 8; k++) acc[k] += dy[c + k] * g[c + k] * d[c + k];
        for (; c < C; c++) mean_dx += dy[c] * g[c] * d[c];
        mean_dx = (mean_dx + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) / C;
        float mean_d = l2s_dot_f32(dy, g, C) / C;                           /* mean of dnorm */
        for (c = 0; c < C; c++) d[c] = dy[c] * g[c] - d[c] * mean_dx;     /* d = dnorm - xhat mean_dx */
        for (c = 0; c < C; c++) d[c] = rs * (d[c] - mean_d);
    }
}

/* ---- leaky relu, elementwise; backward in place on the gradient ---- */
L2S_HOT static void leaky_forward(const float* x, int64_t n, float slope, float* y) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.f ? x[i] : slope * x[i];
}
L2S_HOT static void leaky_backward(const float* x, int64_t n, float slope, float* dy) {
    for (int64_t i = 0; i < n; i++) dy[i] = x[i] > 0.f ? dy[i] : dy[i] * slope;
}

/* ---- softmax + cross-entropy over R classes; dlogits of the batch-mean loss ---- */
static void softmax_ce_forward(const float* logits, const int32_t* labels, int B, int R,
                               float* probs, float* losses) {
    for (int r = 0; r < B; r++) {
        const float* z = logits + (int64_t)r * R; float* p = probs + (int64_t)r * R;
        float mx = z[0];
        for (int j = 1; j < R; j++) if (z[j] > mx) mx = z[j];
        float sum = 0.f;
        for (int j = 0; j < R; j++) { p[j] = expf(z[j] - mx); sum += p[j]; }
        for (int j = 0; j < R; j++) p[j] /= sum;
        if (labels) losses[r] = -(z[labels[r]] - mx - logf(sum));   /* log-sum-exp form: no log(0) */
    }
}
static void softmax_ce_backward(const float* probs, const int32_t* labels, int B, int R, float* dlogits) {
    const float inv_b = 1.f / (float)B;
    for (int r = 0; r < B; r++)
        for (int j = 0; j < R; j++)
            dlogits[(int64_t)r * R + j] = (probs[(int64_t)r * R + j] - (j == labels[r] ? 1.f : 0.f)) * inv_b;
}

/* ---- hidden layer: r = leaky(LN(in W^T + b)); a, n keep what backward needs ---- */
typedef struct { int64_t w, b, g, be; } layer_params;               /* offsets into params/grads */
typedef struct { float *a, *n, *r, *mean, *rstd; } layer_acts;

static void hidden_layer_forward(const l2s_classifier_config* c, const float* params, layer_params lp,
                                 const float* in, int B, int I, int O, layer_acts z) {
    linear_forward(in, params + lp.w, params + lp.b, B, I, O, z.a);
    layernorm_forward(z.a, params + lp.g, params + lp.be, B, O, c->ln_eps, z.n, z.mean, z.rstd);
    leaky_forward(z.n, (int64_t)B * O, c->leaky_slope, z.r);
}
/* dr [B,O] in (clobbered), din [B, din_from:I] out; scratch [B,O]; grads accumulated when not NULL. */
static void hidden_layer_backward(const l2s_classifier_config* c, const float* params, float* grads, layer_params lp,
                                  const float* in, int B, int I, int O, layer_acts z, float* dr, float* scratch,
                                  int din_from, float* din) {
    leaky_backward(z.n, (int64_t)B * O, c->leaky_slope, dr);
    layernorm_backward(z.a, z.mean, z.rstd, params + lp.g, dr, B, O, scratch,
                       grads ? grads + lp.g : NULL, grads ? grads + lp.be : NULL);
    linear_backward(in, params + lp.w, scratch, B, I, O, din_from, din, grads ? grads + lp.w : NULL,
                    grads ? grads + lp.b : NULL);
}

/* ---- layout ---- */
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
    if (total > INT32_MAX) return "the parameter count exceeds 2^31 - 1";
    return NULL;
}

l2s_classifier_offsets classifier_param_offsets(const l2s_classifier_config* c) {
    l2s_classifier_offsets o;
    int64_t D0 = classifier_input_dim(c), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    int64_t at = 0;
    o.emb = at; at += c->step_dim > 0 ? (int64_t)c->n_steps * c->step_dim : 0;
    o.w1 = at; at += H1 * D0; o.b1 = at; at += H1; o.g1 = at; at += H1; o.be1 = at; at += H1;
    o.w2 = at; at += H2 * H1; o.b2 = at; at += H2; o.g2 = at; at += H2; o.be2 = at; at += H2;
    o.w3 = at; at += R * H2;  o.b3 = at; at += R;
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
    l2s_classifier_workspace w;
    int64_t D0 = classifier_input_dim(c), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    int64_t widest = H1 > H2 ? H1 : H2;
    if (R > widest) widest = R;
    int64_t at = 0;
    w.h0 = at; at += B * D0;
    w.a1 = at; at += B * H1; w.n1 = at; at += B * H1; w.r1 = at; at += B * H1;
    w.mean1 = at; at += B; w.rstd1 = at; at += B;
    w.a2 = at; at += B * H2; w.n2 = at; at += B * H2; w.r2 = at; at += B * H2;
    w.mean2 = at; at += B; w.rstd2 = at; at += B;
    w.logits = at; at += B * R; w.probs = at; at += B * R;
    w.dh0 = at; at += B * D0; w.dbuf1 = at; at += B * widest; w.dbuf2 = at; at += B * widest;
    w.steps = at; at += B; w.labels = at; at += B;
    w.total = at;
    return w;
}

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
    linear_forward(ws + wo.r2, params + po.w3, params + po.b3, B, H2, R, ws + wo.logits);
    softmax_ce_forward(ws + wo.logits, labels, B, R, ws + wo.probs, losses);
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
    softmax_ce_backward(ws + wo.probs, labels, B, R, d1);                                       /* d1 = dlogits [B,R] */
    linear_backward(ws + wo.r2, params + po.w3, d1, B, H2, R, 0, d2, g ? g + po.w3 : NULL, g ? g + po.b3 : NULL); /* d2 = dr2 */
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
