/*
 * classifier.cu — CUDA twin of csrc/classifier.c, same layer names, forward and backward side by side;
 * its layers are the shared ones of layers.cu (cuBLASLt GEMMs, LayerNorm, LeakyReLU, softmax-CE).
 */
#include "common.cuh"
#include "layers.cuh"

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

static int hidden_layer_forward(const l2s_classifier_config* c, const float* params, layer_params lp,
                                const float* in, int B, int I, int O, layer_acts z, cudaStream_t st) {
    CHECK(cu_linear_forward(in, params + lp.w, params + lp.b, B, I, O, z.a, st));
    CHECK(cu_layernorm_forward(z.a, params + lp.g, params + lp.be, B, O, c->ln_eps, z.n, z.mean, z.rstd, st));
    return cu_leaky_forward(z.n, (int64_t)B * O, c->leaky_slope, z.r, st);
}

/* dr [B,O] in (clobbered), din [B,I] out; scratch [B,O]; grads accumulated when not NULL. */
static int hidden_layer_backward(const l2s_classifier_config* c, const float* params, float* grads, layer_params lp,
                                 const float* in, int B, int I, int O, layer_acts z, float* dr, float* scratch,
                                 float* din, cudaStream_t st) {
    CHECK(cu_leaky_backward(z.n, (int64_t)B * O, c->leaky_slope, dr, st));
    CHECK(cu_layernorm_backward(z.a, z.mean, z.rstd, params + lp.g, dr, B, O, scratch, grads ? grads + lp.g : NULL,
                                grads ? grads + lp.be : NULL, st));
    return cu_linear_backward(in, params + lp.w, scratch, B, I, O, 0, din, grads ? grads + lp.w : NULL,
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
    CHECK(cu_linear_forward(ws + wo.r2, params + po.w3, params + po.b3, B, H2, R, ws + wo.logits, st));
    CHECK(cu_softmax_ce_forward(ws + wo.logits, d_labels, B, R, ws + wo.probs, losses, st));
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
    CHECK(cu_softmax_ce_backward(ws + wo.probs, d_labels, B, R, d1, st));                  /* d1 = dlogits */
    CHECK(cu_linear_backward(ws + wo.r2, params + po.w3, d1, B, H2, R, 0, d2, g ? g + po.w3 : NULL, g ? g + po.b3 : NULL,
                             st));
    CHECK(hidden_layer_backward(c, params, g, layer_params{po.w2, po.b2, po.g2, po.be2}, ws + wo.r1, B, H1, H2, z2,
                                d2, d1, d2, st));                                             /* d2 = dr1 */
    CHECK(hidden_layer_backward(c, params, g, layer_params{po.w1, po.b1, po.g1, po.be1}, ws + wo.h0, B, D0, H1, z1,
                                d2, d1, dh0, st));                                            /* dh0 */
    scatter_input_grad_kernel<<<blocks_for((int64_t)B * D0, 256), 256, 0, st>>>(dh0, d_steps, B, X, E, dx,
                                                                                 (g && E > 0) ? g + po.emb : NULL);
    return launch_status();
}
