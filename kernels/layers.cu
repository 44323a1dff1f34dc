/*
 * layers.cu — CUDA twins of csrc/layers.c, the layers both classifiers share (layers.cuh): linear
 * layers as GEMMs (cuBLASLt with a fused bias epilogue on the forward), LayerNorm, LeakyReLU and
 * softmax-cross-entropy as small kernels. Row-major X[r, c] is column-major X^T, which is how each
 * GEMM below is set up.
 */
#include "layers.cuh"
#include "gemm.cuh"

/* ---- linear: out[B,O] = in[B,I] W[O,I]^T + b ---- */
int cu_linear_forward(const float* in, const float* W, const float* b, int B, int I, int O, float* out, cudaStream_t st) {
    /* out^T (O x B) = op(W as stored I x O)^T (O x I) . in^T (I x B) */
    return l2s_gemm(1, 0, O, B, I, W, I, in, I, 0.f, out, O, b, st);
}

static __global__ void bias_grad_kernel(const float* dout, int B, int O, float* db) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= O) return;
    float acc = 0.f;
    for (int r = 0; r < B; r++) acc += dout[(int64_t)r * O + o];
    db[o] += acc;
}

/* din[B, din_from:I] = (dout W)[:, din_from:] (overwritten; earlier columns untouched); dW += dout^T in;
 * db += column sums of dout (when dW). */
int cu_linear_backward(const float* in, const float* W, const float* dout, int B, int I, int O, int din_from, float* din,
                       float* dW, float* db, cudaStream_t st) {
    int err;
    /* din[:, din_from:]^T ((I - din_from) x B) = W[:, din_from:] stored ((I - din_from) x O, ld I) . dout^T (O x B) */
    if (din_from < I && (err = l2s_gemm(0, 0, I - din_from, B, O, W + din_from, I, dout, O, 0.f, din + din_from, I,
                                        NULL, st)))
        return err;
    if (!dW) return 0;
    /* dW^T (I x O) += in^T (I x B) . (dout^T stored O x B)^T */
    if ((err = l2s_gemm(0, 1, I, O, B, in, I, dout, O, 1.f, dW, I, NULL, st))) return err;
    bias_grad_kernel<<<blocks_for(O, 128), 128, 0, st>>>(dout, B, O, db);
    return launch_status();
}

/* ---- layernorm: one warp per row ---- */
static __global__ void layernorm_forward_kernel(const float* a, const float* g, const float* be, int B, int C, float eps,
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

static __global__ void layernorm_backward_kernel(const float* a, const float* mean, const float* rstd, const float* g,
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
static __global__ void leaky_forward_kernel(const float* x, int64_t n, float slope, float* y) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.f ? x[i] : slope * x[i];
}
static __global__ void leaky_backward_kernel(const float* x, int64_t n, float slope, float* dy) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !(x[i] > 0.f)) dy[i] *= slope;
}

/* ---- softmax + cross-entropy: one thread per row (R is a handful of relations) ---- */
static __global__ void softmax_ce_forward_kernel(const float* logits, const int32_t* labels, int B, int R, float* probs, float* losses) {
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
static __global__ void softmax_ce_backward_kernel(const float* probs, const int32_t* labels, int B, int R, float* dlogits) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)B * R) return;
    int r = (int)(i / R), j = (int)(i % R);
    dlogits[i] = (probs[i] - (j == labels[r] ? 1.f : 0.f)) / (float)B;
}

static const int LN_ROWS_PER_BLOCK = 4;   /* layernorm: one warp per row */

int cu_layernorm_forward(const float* a, const float* g, const float* be, int B, int C, float eps, float* out,
                         float* mean, float* rstd, cudaStream_t st) {
    layernorm_forward_kernel<<<blocks_for(B, LN_ROWS_PER_BLOCK), LN_ROWS_PER_BLOCK * L2S_WARP, 0, st>>>(
        a, g, be, B, C, eps, out, mean, rstd);
    return launch_status();
}
int cu_layernorm_backward(const float* a, const float* mean, const float* rstd, const float* g, const float* dout,
                          int B, int C, float* da, float* dg, float* dbe, cudaStream_t st) {
    layernorm_backward_kernel<<<blocks_for(B, LN_ROWS_PER_BLOCK), LN_ROWS_PER_BLOCK * L2S_WARP, 0, st>>>(
        a, mean, rstd, g, dout, B, C, da, dg, dbe);
    return launch_status();
}
int cu_leaky_forward(const float* x, int64_t n, float slope, float* y, cudaStream_t st) {
    leaky_forward_kernel<<<blocks_for(n, 256), 256, 0, st>>>(x, n, slope, y);
    return launch_status();
}
int cu_leaky_backward(const float* x, int64_t n, float slope, float* dy, cudaStream_t st) {
    leaky_backward_kernel<<<blocks_for(n, 256), 256, 0, st>>>(x, n, slope, dy);
    return launch_status();
}
int cu_softmax_ce_forward(const float* logits, const int32_t* labels, int B, int R, float* probs, float* losses,
                          cudaStream_t st) {
    softmax_ce_forward_kernel<<<blocks_for(B, 128), 128, 0, st>>>(logits, labels, B, R, probs, losses);
    return launch_status();
}
int cu_softmax_ce_backward(const float* probs, const int32_t* labels, int B, int R, float* dlogits, cudaStream_t st) {
    softmax_ce_backward_kernel<<<blocks_for((int64_t)B * R, 256), 256, 0, st>>>(probs, labels, B, R, dlogits);
    return launch_status();
}
