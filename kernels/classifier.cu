/*
 * classifier.cu — CUDA twin of csrc/classifier.c, same layer names, forward and backward side by side.
 * The three linear layers are GEMMs (cuBLASLt with a fused bias epilogue on the forward); LayerNorm,
 * LeakyReLU and softmax-cross-entropy have no cuBLASLt epilogue, so they are small kernels here.
 * Row-major X[r, c] is column-major X^T, which is how each GEMM below is set up.
 */
#include "common.cuh"
#include "gemm.cuh"

/* ---- linear: out[B,O] = in[B,I] W[O,I]^T + b ---- */
static int linear_forward(const float* in, const float* W, const float* b, int B, int I, int O, float* out, cudaStream_t st) {
    /* out^T (O x B) = op(W as stored I x O)^T (O x I) . in^T (I x B) */
    return l2s_gemm(1, 0, O, B, I, W, I, in, I, 0.f, out, O, b, st);
}

__global__ void bias_grad_kernel(const float* dout, int B, int O, float* db) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= O) return;
    float acc = 0.f;
    for (int r = 0; r < B; r++) acc += dout[(int64_t)r * O + o];
    db[o] += acc;
}

/* din[B,I] = dout W (overwritten); dW += dout^T in; db += column sums of dout (when dW). */
static int linear_backward(const float* in, const float* W, const float* dout, int B, int I, int O, float* din,
                           float* dW, float* db, cudaStream_t st) {
    int err;
    /* din^T (I x B) = W stored (I x O) . dout^T (O x B) */
    if ((err = l2s_gemm(0, 0, I, B, O, W, I, dout, O, 0.f, din, I, NULL, st))) return err;
    if (!dW) return 0;
    /* dW^T (I x O) += in^T (I x B) . (dout^T stored O x B)^T */
    if ((err = l2s_gemm(0, 1, I, O, B, in, I, dout, O, 1.f, dW, I, NULL, st))) return err;
    bias_grad_kernel<<<blocks_for(O, 128), 128, 0, st>>>(dout, B, O, db);
    return launch_status();
}

/* ---- layernorm: one warp per row ---- */
__global__ void layernorm_forward_kernel(const float* a, const float* g, const float* be, int B, int C, float eps,
                                         float* out, float* mean, float* rstd) {
    int r = blockIdx.x * (blockDim.x / L2S_WARP) + threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    if (r >= B) return;
    const float* x = a + (int64_t)r * C;
    float s = 0.f;
    for (int c = lane; c < C; c += L2S_WARP) s += x[c];
    float mu = warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane; c < C; c += L2S_WARP) v += (x[c] - mu) * (x[c] - mu);
    float rs = rsqrtf(warp_sum(v) / C + eps);
    for (int c = lane; c < C; c += L2S_WARP) out[(int64_t)r * C + c] = (x[c] - mu) * rs * g[c] + be[c];
    if (lane == 0) { mean[r] = mu; rstd[r] = rs; }
}

__global__ void layernorm_backward_kernel(const float* a, const float* mean, const float* rstd, const float* g,
                                          const float* dout, int B, int C, float* da, float* dg, float* dbe) {
    int r = blockIdx.x * (blockDim.x / L2S_WARP) + threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    if (r >= B) return;
    const float* x = a + (int64_t)r * C; const float* dy = dout + (int64_t)r * C;
    float mu = mean[r], rs = rstd[r];
    float md = 0.f, mdx = 0.f;
    for (int c = lane; c < C; c += L2S_WARP) {
        float xh = (x[c] - mu) * rs, dn = dy[c] * g[c];
        md += dn; mdx += dn * xh;
        if (dg) { atomicAdd(dg + c, dy[c] * xh); atomicAdd(dbe + c, dy[c]); }
    }
    md = warp_sum(md) / C; mdx = warp_sum(mdx) / C;
    for (int c = lane; c < C; c += L2S_WARP) {
        float xh = (x[c] - mu) * rs;
        da[(int64_t)r * C + c] = rs * (dy[c] * g[c] - md - xh * mdx);
    }
}

/* ---- leaky relu ---- */
__global__ void leaky_forward_kernel(const float* x, int64_t n, float slope, float* y) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.f ? x[i] : slope * x[i];
}
__global__ void leaky_backward_kernel(const float* x, int64_t n, float slope, float* dy) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !(x[i] > 0.f)) dy[i] *= slope;
}

/* ---- softmax + cross-entropy: one thread per row (R is a handful of relations) ---- */
__global__ void softmax_ce_forward_kernel(const float* logits, const int32_t* labels, int B, int R, float* probs, float* losses) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= B) return;
    const float* z = logits + (int64_t)r * R; float* p = probs + (int64_t)r * R;
    float mx = z[0];
    for (int j = 1; j < R; j++) mx = fmaxf(mx, z[j]);
    float sum = 0.f;
    for (int j = 0; j < R; j++) { p[j] = expf(z[j] - mx); sum += p[j]; }
    for (int j = 0; j < R; j++) p[j] /= sum;
    if (labels) losses[r] = -(z[labels[r]] - mx - logf(sum));
}
__global__ void softmax_ce_backward_kernel(const float* probs, const int32_t* labels, int B, int R, float* dlogits) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)B * R) return;
    int r = (int)(i / R), j = (int)(i % R);
    dlogits[i] = (probs[i] - (j == labels[r] ? 1.f : 0.f)) / (float)B;
}

/* ---- input assembly: h0 = [x, emb[steps]] and its backward ---- */
__global__ void gather_input_kernel(const float* x, const float* emb, const int32_t* steps, int B, int64_t X, int E, float* h0) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, D0 = X + E;
    if (i >= (int64_t)B * D0) return;
    int64_t r = i / D0, c = i % D0;
    h0[i] = c < X ? x[r * X + c] : emb[(int64_t)steps[r] * E + (c - X)];
}
__global__ void scatter_input_grad_kernel(const float* dh0, const int32_t* steps, int B, int64_t X, int E, float* dx, float* demb) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, D0 = X + E;
    if (i >= (int64_t)B * D0) return;
    int64_t r = i / D0, c = i % D0;
    if (c < X) { if (dx) dx[r * X + c] = dh0[i]; }
    else if (demb) atomicAdd(demb + (int64_t)steps[r] * E + (c - X), dh0[i]);
}

#define CHECK(call) do { int e_ = (call); if (e_) return e_; } while (0)
#define LAUNCH_CHECK() CHECK(launch_status())

/* ---- hidden layer: r = leaky(LN(in W^T + b)), the same pair as in csrc/classifier.c ---- */
struct layer_params { int64_t w, b, g, be; };
struct layer_acts { float *a, *n, *r, *mean, *rstd; };
static const int LN_ROWS_PER_BLOCK = 4;   /* layernorm: one warp per row */

static int hidden_layer_forward(const l2s_classifier_config* c, const float* params, layer_params lp,
                                const float* in, int B, int I, int O, layer_acts z, cudaStream_t st) {
    CHECK(linear_forward(in, params + lp.w, params + lp.b, B, I, O, z.a, st));
    layernorm_forward_kernel<<<blocks_for(B, LN_ROWS_PER_BLOCK), LN_ROWS_PER_BLOCK * L2S_WARP, 0, st>>>(
        z.a, params + lp.g, params + lp.be, B, O, c->ln_eps, z.n, z.mean, z.rstd);
    LAUNCH_CHECK();
    leaky_forward_kernel<<<blocks_for((int64_t)B * O, 256), 256, 0, st>>>(z.n, (int64_t)B * O, c->leaky_slope, z.r);
    return launch_status();
}

/* dr [B,O] in (clobbered), din [B,I] out; scratch [B,O]; grads accumulated when not NULL. */
static int hidden_layer_backward(const l2s_classifier_config* c, const float* params, float* grads, layer_params lp,
                                 const float* in, int B, int I, int O, layer_acts z, float* dr, float* scratch,
                                 float* din, cudaStream_t st) {
    leaky_backward_kernel<<<blocks_for((int64_t)B * O, 256), 256, 0, st>>>(z.n, (int64_t)B * O, c->leaky_slope, dr);
    LAUNCH_CHECK();
    layernorm_backward_kernel<<<blocks_for(B, LN_ROWS_PER_BLOCK), LN_ROWS_PER_BLOCK * L2S_WARP, 0, st>>>(
        z.a, z.mean, z.rstd, params + lp.g, dr, B, O, scratch, grads ? grads + lp.g : NULL, grads ? grads + lp.be : NULL);
    LAUNCH_CHECK();
    return linear_backward(in, params + lp.w, scratch, B, I, O, din, grads ? grads + lp.w : NULL,
                           grads ? grads + lp.b : NULL, st);
}

/* Host index arrays -> int32 slots of the workspace. */
static int upload_indices(float* ws, const l2s_classifier_workspace* wo, const int32_t* steps, const int32_t* labels,
                          int B, int32_t** d_steps, int32_t** d_labels, cudaStream_t st) {
    *d_steps = (int32_t*)(ws + wo->steps);
    *d_labels = labels ? (int32_t*)(ws + wo->labels) : NULL;
    if (steps) CHECK((int)cudaMemcpyAsync(*d_steps, steps, sizeof(int32_t) * B, cudaMemcpyHostToDevice, st));
    if (labels) CHECK((int)cudaMemcpyAsync(*d_labels, labels, sizeof(int32_t) * B, cudaMemcpyHostToDevice, st));
    return 0;
}

extern "C" int classifier_forward_cuda(const l2s_classifier_config* c, const float* params, int B,
                                       const float* x, const int32_t* steps, const int32_t* labels,
                                       float* ws, float* probs, float* losses, void* stream) {
    cudaStream_t st = as_stream(stream);
    l2s_classifier_offsets po = classifier_param_offsets(c);
    l2s_classifier_workspace wo = classifier_workspace_offsets(c, B);
    const int64_t X = (int64_t)c->n_maps * c->map_pixels; const int E = c->step_dim;
    const int D0 = (int)(X + E), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    int32_t *d_steps, *d_labels;
    CHECK(upload_indices(ws, &wo, E > 0 ? steps : NULL, labels, B, &d_steps, &d_labels, st));
    gather_input_kernel<<<blocks_for((int64_t)B * D0, 256), 256, 0, st>>>(x, params + po.emb, d_steps, B, X, E, ws + wo.h0);
    LAUNCH_CHECK();
    layer_acts z1 = {ws + wo.a1, ws + wo.n1, ws + wo.r1, ws + wo.mean1, ws + wo.rstd1};
    layer_acts z2 = {ws + wo.a2, ws + wo.n2, ws + wo.r2, ws + wo.mean2, ws + wo.rstd2};
    CHECK(hidden_layer_forward(c, params, layer_params{po.w1, po.b1, po.g1, po.be1}, ws + wo.h0, B, D0, H1, z1, st));
    CHECK(hidden_layer_forward(c, params, layer_params{po.w2, po.b2, po.g2, po.be2}, ws + wo.r1, B, H1, H2, z2, st));
    CHECK(linear_forward(ws + wo.r2, params + po.w3, params + po.b3, B, H2, R, ws + wo.logits, st));
    softmax_ce_forward_kernel<<<blocks_for(B, 128), 128, 0, st>>>(ws + wo.logits, d_labels, B, R, ws + wo.probs, losses);
    LAUNCH_CHECK();
    return (int)cudaMemcpyAsync(probs, ws + wo.probs, sizeof(float) * (size_t)B * R, cudaMemcpyDeviceToDevice, st);
}

extern "C" int classifier_backward_cuda(const l2s_classifier_config* c, const float* params, int B,
                                        const int32_t* steps, const int32_t* labels,
                                        float* ws, float* dx, float* grads, void* stream) {
    cudaStream_t st = as_stream(stream);
    l2s_classifier_offsets po = classifier_param_offsets(c);
    l2s_classifier_workspace wo = classifier_workspace_offsets(c, B);
    const int64_t X = (int64_t)c->n_maps * c->map_pixels; const int E = c->step_dim;
    const int D0 = (int)(X + E), H1 = c->hidden1, H2 = c->hidden2, R = c->n_relations;
    float* g = grads;
    float *d1 = ws + wo.dbuf1, *d2 = ws + wo.dbuf2, *dh0 = ws + wo.dh0;
    layer_acts z1 = {ws + wo.a1, ws + wo.n1, ws + wo.r1, ws + wo.mean1, ws + wo.rstd1};
    layer_acts z2 = {ws + wo.a2, ws + wo.n2, ws + wo.r2, ws + wo.mean2, ws + wo.rstd2};
    int32_t *d_steps, *d_labels;
    CHECK(upload_indices(ws, &wo, E > 0 ? steps : NULL, labels, B, &d_steps, &d_labels, st));
    softmax_ce_backward_kernel<<<blocks_for((int64_t)B * R, 256), 256, 0, st>>>(ws + wo.probs, d_labels, B, R, d1);
    LAUNCH_CHECK();                                                                           /* d1 = dlogits */
    CHECK(linear_backward(ws + wo.r2, params + po.w3, d1, B, H2, R, d2, g ? g + po.w3 : NULL, g ? g + po.b3 : NULL, st));
    CHECK(hidden_layer_backward(c, params, g, layer_params{po.w2, po.b2, po.g2, po.be2}, ws + wo.r1, B, H1, H2, z2,
                                d2, d1, d2, st));                                             /* d2 = dr1 */
    CHECK(hidden_layer_backward(c, params, g, layer_params{po.w1, po.b1, po.g1, po.be1}, ws + wo.h0, B, D0, H1, z1,
                                d2, d1, dh0, st));                                            /* dh0 */
    scatter_input_grad_kernel<<<blocks_for((int64_t)B * D0, 256), 256, 0, st>>>(dh0, d_steps, B, X, E, dx,
                                                                                 (g && E > 0) ? g + po.emb : NULL);
    return launch_status();
}
