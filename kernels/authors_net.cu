/*
 * authors_net.cu — CUDA twin of csrc/authors_net_cpu.c: the steps of the authors' network
 * (csrc/authors_ops.h) as kernels and cuBLASLt GEMMs on one stream; csrc/authors_net.c strings them
 * into the passes, the same code that drives the CPU. Per-head attention products are GEMMs per
 * (sequence, head) with the softmax rows of all of them in one launch. Dropout masks come from
 * numeric.h, as on the CPU, so a GPU step drops exactly what a CPU step drops.
 */
#include "authors_ops.h"
#include "common.cuh"
#include "gemm.cuh"
#include "layers.cuh"

#define CHECK(call) do { int e_ = (call); if (e_) return e_; } while (0)
static inline cudaStream_t S(void* ctx) { return as_stream(ctx); }
static const int T = 256;   /* threads per block of the elementwise kernels */

/* ---- the shared layers ---- */
static int linear_forward(void* x, const float* in, const float* W, const float* b, int rows, int I, int O, float* out) {
    return cu_linear_forward(in, W, b, rows, I, O, out, S(x));
}
static int linear_backward(void* x, const float* in, const float* W, const float* dout, int rows, int I, int O,
                           int din_from, float* din, float* dW, float* db) {
    return cu_linear_backward(in, W, dout, rows, I, O, din_from, din, dW, db, S(x));
}
static int layernorm_forward(void* x, const float* a, const float* g, const float* be, int rows, int C, float eps,
                             float* out, float* mean, float* rstd) {
    return cu_layernorm_forward(a, g, be, rows, C, eps, out, mean, rstd, S(x));
}
static int layernorm_backward(void* x, const float* a, const float* mean, const float* rstd, const float* g,
                              const float* dout, int rows, int C, float* da, float* dg, float* dbe) {
    return cu_layernorm_backward(a, mean, rstd, g, dout, rows, C, da, dg, dbe, S(x));
}
static int leaky_forward(void* x, const float* v, int64_t n, float slope, float* y) {
    return cu_leaky_forward(v, n, slope, y, S(x));
}
static int leaky_backward(void* x, const float* v, int64_t n, float slope, float* dy) {
    return cu_leaky_backward(v, n, slope, dy, S(x));
}
static int softmax_ce_forward(void* x, const float* logits, const int32_t* labels, int B, int K, float* probs,
                              float* losses) {
    return cu_softmax_ce_forward(logits, labels, B, K, probs, losses, S(x));
}
static int softmax_ce_backward(void* x, const float* probs, const int32_t* labels, int B, int K, float* dlogits) {
    return cu_softmax_ce_backward(probs, labels, B, K, dlogits, S(x));
}

/* ---- self-attention ----
 * Row-major Q_h [seq, hd] (rows 3d apart) is column-major hd x seq with ld 3d: each product below is
 * the transposed one, as l2s_gemm (column-major) takes it. */
__global__ void softmax_rows_kernel(float* p, int64_t rows, int cols, float scale) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x / L2S_WARP) + threadIdx.x / L2S_WARP;
    int lane = threadIdx.x % L2S_WARP;
    if (r >= rows) return;
    float* row = p + r * cols;
    float mx = -INFINITY;
    for (int c = lane; c < cols; c += L2S_WARP) mx = fmaxf(mx, row[c]);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int c = lane; c < cols; c += L2S_WARP) { float e = expf(scale * (row[c] - mx)); row[c] = e; sum += e; }
    float inv = 1.f / warp_sum(sum);
    for (int c = lane; c < cols; c += L2S_WARP) row[c] *= inv;
}
/* p := p (dp - rowsum(dp p)) scale: the softmax backward, in place. */
__global__ void softmax_rows_backward_kernel(float* p, const float* dp, int64_t rows, int cols, float scale) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x / L2S_WARP) + threadIdx.x / L2S_WARP;
    int lane = threadIdx.x % L2S_WARP;
    if (r >= rows) return;
    float* row = p + r * cols; const float* g = dp + r * cols;
    float dot = 0.f;
    for (int c = lane; c < cols; c += L2S_WARP) dot += g[c] * row[c];
    dot = warp_sum(dot);
    for (int c = lane; c < cols; c += L2S_WARP) row[c] = row[c] * (g[c] - dot) * scale;
}
static const int ROWS_PER_BLOCK = 8;   /* one warp per row */

static int attention_forward(void* x, const float* qkv, int items, int seq, int heads, int d, float* p, float* o) {
    const int hd = d / heads;
    for (int n = 0; n < items; n++)
        for (int h = 0; h < heads; h++) {           /* logits^T (seq_k x seq_q) = K_h^T-stored . Q_h */
            const float* q = qkv + (int64_t)n * seq * 3 * d + h * hd;
            CHECK(l2s_gemm(1, 0, seq, seq, hd, q + d, 3 * d, q, 3 * d, 0.f, p + ((int64_t)n * heads + h) * seq * seq,
                           seq, NULL, S(x)));
        }
    int64_t rows = (int64_t)items * heads * seq;
    softmax_rows_kernel<<<blocks_for(rows, ROWS_PER_BLOCK), ROWS_PER_BLOCK * L2S_WARP, 0, S(x)>>>(
        p, rows, seq, 1.f / sqrtf((float)hd));
    CHECK(launch_status());
    for (int n = 0; n < items; n++)
        for (int h = 0; h < heads; h++) {           /* O_h^T (hd x seq) = V_h^T . P^T */
            const float* v = qkv + (int64_t)n * seq * 3 * d + 2 * d + h * hd;
            CHECK(l2s_gemm(0, 0, hd, seq, seq, v, 3 * d, p + ((int64_t)n * heads + h) * seq * seq, seq, 0.f,
                           o + (int64_t)n * seq * d + h * hd, d, NULL, S(x)));
        }
    return 0;
}

static int attention_backward(void* x, const float* qkv, float* p, const float* dout, int items, int seq, int heads,
                              int d, float* scratch, float* dqkv) {
    const int hd = d / heads;
    const float scale = 1.f / sqrtf((float)hd);
    for (int n = 0; n < items; n++)
        for (int h = 0; h < heads; h++) {
            const float* q = qkv + (int64_t)n * seq * 3 * d + h * hd;
            const float* dO = dout + (int64_t)n * seq * d + h * hd;
            float* dq = dqkv + (int64_t)n * seq * 3 * d + h * hd;
            float* P = p + ((int64_t)n * heads + h) * seq * seq;
            CHECK(l2s_gemm(0, 1, hd, seq, seq, dO, d, P, seq, 0.f, dq + 2 * d, 3 * d, NULL, S(x)));   /* dV = P^T dO */
            CHECK(l2s_gemm(1, 0, seq, seq, hd, q + 2 * d, 3 * d, dO, d, 0.f, scratch, seq, NULL, S(x)));  /* dP = dO V^T */
            softmax_rows_backward_kernel<<<blocks_for(seq, ROWS_PER_BLOCK), ROWS_PER_BLOCK * L2S_WARP, 0, S(x)>>>(
                P, scratch, seq, seq, scale);                                                       /* dS, in P */
            CHECK(launch_status());
            CHECK(l2s_gemm(0, 0, hd, seq, seq, q + d, 3 * d, P, seq, 0.f, dq, 3 * d, NULL, S(x)));     /* dQ = dS K */
            CHECK(l2s_gemm(0, 1, hd, seq, seq, q, 3 * d, P, seq, 0.f, dq + d, 3 * d, NULL, S(x)));     /* dK = dS^T Q */
        }
    return 0;
}

/* ---- pooling by one query: a block per (object, head) ---- */
__device__ float block_max(float v, float* shared32) {
    int lane = threadIdx.x % L2S_WARP, w = threadIdx.x / L2S_WARP, nw = blockDim.x / L2S_WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    v = lane < nw ? shared32[lane] : -INFINITY;
    return warp_max(v);
}

__global__ void pool_forward_kernel(const float* q, const float* kv, int C, int heads, int d, float* alpha, float* op) {
    __shared__ float sh[32];
    const int n = blockIdx.x / heads, h = blockIdx.x % heads, hd = d / heads;
    const float scale = rsqrtf((float)hd);
    const float* k = kv + (int64_t)n * C * 2 * d + h * hd;
    float* al = alpha + (int64_t)blockIdx.x * C;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.f;
        for (int i = 0; i < hd; i++) s += q[h * hd + i] * k[(int64_t)c * 2 * d + i];
        al[c] = s * scale;
        mx = fmaxf(mx, al[c]);
    }
    mx = block_max(mx, sh);
    float sum = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { al[c] = expf(al[c] - mx); sum += al[c]; }
    float inv = 1.f / block_sum(sum, sh);
    for (int c = threadIdx.x; c < C; c += blockDim.x) al[c] *= inv;
    __syncthreads();                                     /* every alpha written before the weighted sum */
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float s = 0.f;
        for (int c = 0; c < C; c++) s += al[c] * k[(int64_t)c * 2 * d + d + i];
        op[(int64_t)n * d + h * hd + i] = s;
    }
}
static int pool_forward(void* x, const float* q, const float* kv, int N, int C, int heads, int d, float* alpha,
                        float* op) {
    pool_forward_kernel<<<(unsigned)(N * heads), T, 0, S(x)>>>(q, kv, C, heads, d, alpha, op);
    return launch_status();
}

/* dalpha := dS = alpha (dalpha - sum alpha dalpha) scale, dalpha_c = dop_h . v_c */
__global__ void pool_scores_backward_kernel(const float* kv, const float* alpha, const float* dop, int C, int heads,
                                            int d, float* dalpha) {
    __shared__ float sh[32];
    const int n = blockIdx.x / heads, h = blockIdx.x % heads, hd = d / heads;
    const float* v = kv + (int64_t)n * C * 2 * d + d + h * hd;
    const float* g = dop + (int64_t)n * d + h * hd;
    const float* al = alpha + (int64_t)blockIdx.x * C;
    float* da = dalpha + (int64_t)blockIdx.x * C;
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.f;
        for (int i = 0; i < hd; i++) s += g[i] * v[(int64_t)c * 2 * d + i];
        da[c] = s;
        dot += al[c] * s;
    }
    dot = block_sum(dot, sh);
    for (int c = threadIdx.x; c < C; c += blockDim.x) da[c] = al[c] * (da[c] - dot) * rsqrtf((float)hd);
}
/* dkv[n, c, :d] = dS q_h, dkv[n, c, d:] = alpha dop_h */
__global__ void pool_kv_backward_kernel(const float* q, const float* alpha, const float* ds, const float* dop, int N,
                                        int C, int heads, int d, float* dkv) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)N * C * 2 * d) return;
    int col = (int)(i % (2 * d));
    int64_t nc = i / (2 * d);
    int n = (int)(nc / C), c = (int)(nc % C), hd = d / heads;
    if (col < d) dkv[i] = ds[((int64_t)n * heads + col / hd) * C + c] * q[col];
    else dkv[i] = alpha[((int64_t)n * heads + (col - d) / hd) * C + c] * dop[(int64_t)n * d + (col - d)];
}
/* dq[col] = sum over objects and channels of dS k */
__global__ void pool_query_backward_kernel(const float* kv, const float* ds, int N, int C, int heads, int d, float* dq) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    int h = col / (d / heads);
    float s = 0.f;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            s += ds[((int64_t)n * heads + h) * C + c] * kv[((int64_t)n * C + c) * 2 * d + col];
    dq[col] = s;
}
static int pool_backward(void* x, const float* q, const float* kv, const float* alpha, const float* dop, int N, int C,
                         int heads, int d, float* dalpha, float* dkv, float* dq) {
    pool_scores_backward_kernel<<<(unsigned)(N * heads), T, 0, S(x)>>>(kv, alpha, dop, C, heads, d, dalpha);
    CHECK(launch_status());
    pool_kv_backward_kernel<<<blocks_for((int64_t)N * C * 2 * d, T), T, 0, S(x)>>>(q, alpha, dalpha, dop, N, C, heads, d,
                                                                                   dkv);
    CHECK(launch_status());
    pool_query_backward_kernel<<<blocks_for(d, 128), 128, 0, S(x)>>>(kv, dalpha, N, C, heads, d, dq);
    return launch_status();
}

/* ---- dropout: the masks of numeric.h, block by block ---- */
__global__ void dropout_kernel(float* x, int m, uint64_t key, uint32_t cut, float keep) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m) x[i] *= l2s_dropout_factor(key, (uint32_t)i, cut, keep);
}
static int dropout(void* x, float* v, int64_t n, float p, uint64_t seed, uint32_t site) {
    if (!(p > 0.f)) return 0;
    for (int64_t block = 0; block * L2S_DROPOUT_BLOCK < n; block++) {
        int64_t left = n - block * L2S_DROPOUT_BLOCK;
        int m = (int)(left < L2S_DROPOUT_BLOCK ? left : L2S_DROPOUT_BLOCK);
        dropout_kernel<<<blocks_for(m, T), T, 0, S(x)>>>(v + block * L2S_DROPOUT_BLOCK, m, l2s_dropout_key(seed, site, block),
                                                          l2s_dropout_cut(p), 1.f / (1.f - p));
        CHECK(launch_status());
    }
    return 0;
}

/* ---- elementwise and gathers ---- */
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}
static int add(void* x, float* out, const float* a, const float* b, int64_t n) {
    add_kernel<<<blocks_for(n, T), T, 0, S(x)>>>(out, a, b, n);
    return launch_status();
}
__global__ void relu_kernel(float* v, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = v[i] > 0.f ? v[i] : 0.f;
}
static int relu_forward(void* x, float* v, int64_t n) {
    relu_kernel<<<blocks_for(n, T), T, 0, S(x)>>>(v, n);
    return launch_status();
}
__global__ void relu_backward_kernel(const float* r, float* dr, int64_t n, float keep) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dr[i] = r[i] > 0.f ? dr[i] * keep : 0.f;
}
static int relu_backward(void* x, const float* r, float* dr, int64_t n, float keep) {
    relu_backward_kernel<<<blocks_for(n, T), T, 0, S(x)>>>(r, dr, n, keep);
    return launch_status();
}
__global__ void add_rows_kernel(float* v, const float* table, const int32_t* steps, int64_t groups, int rows, int d,
                                int per_step) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= groups * rows * d) return;
    int64_t row = i / d, g = row / rows;
    int col = (int)(i % d);
    v[i] += steps ? table[(int64_t)steps[g / per_step] * d + col] : table[(row % rows) * d + col];
}
static int add_positions(void* x, float* v, const float* pe, int groups, int rows, int d) {
    add_rows_kernel<<<blocks_for((int64_t)groups * rows * d, T), T, 0, S(x)>>>(v, pe, NULL, groups, rows, d, 1);
    return launch_status();
}
static int add_step_rows(void* x, float* v, const float* emb, const int32_t* steps, int groups, int rows, int d,
                         int per_step) {
    add_rows_kernel<<<blocks_for((int64_t)groups * rows * d, T), T, 0, S(x)>>>(v, emb, steps, groups, rows, d, per_step);
    return launch_status();
}
__global__ void step_rows_grad_kernel(const float* dv, const int32_t* steps, int groups, int rows, int d, int per_step,
                                      float* demb) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)groups * d) return;
    int64_t g = i / d;
    int col = (int)(i % d);
    float s = 0.f;
    for (int r = 0; r < rows; r++) s += dv[(g * rows + r) * d + col];
    atomicAdd(demb + (int64_t)steps[g / per_step] * d + col, s);
}
static int step_rows_grad(void* x, const float* dv, const int32_t* steps, int groups, int rows, int d, int per_step,
                          float* demb) {
    step_rows_grad_kernel<<<blocks_for((int64_t)groups * d, T), T, 0, S(x)>>>(dv, steps, groups, rows, d, per_step, demb);
    return launch_status();
}
__global__ void concat_steps_kernel(const float* h, const float* emb, const int32_t* steps, int B, int d, int E, float* z) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)B * (d + E)) return;
    int64_t b = i / (d + E);
    int col = (int)(i % (d + E));
    z[i] = col < d ? h[b * d + col] : emb[(int64_t)steps[b] * E + (col - d)];
}
static int concat_steps(void* x, const float* h, const float* emb, const int32_t* steps, int B, int d, int E, float* z) {
    concat_steps_kernel<<<blocks_for((int64_t)B * (d + E), T), T, 0, S(x)>>>(h, emb, steps, B, d, E, z);
    return launch_status();
}
__global__ void split_steps_kernel(const float* dz, const int32_t* steps, int B, int d, int E, float* dh, float* demb) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)B * (d + E)) return;
    int64_t b = i / (d + E);
    int col = (int)(i % (d + E));
    if (col < d) dh[b * d + col] = dz[i];
    else if (demb) atomicAdd(demb + (int64_t)steps[b] * E + (col - d), dz[i]);
}
static int split_steps(void* x, const float* dz, const int32_t* steps, int B, int d, int E, float* dh, float* demb) {
    split_steps_kernel<<<blocks_for((int64_t)B * (d + E), T), T, 0, S(x)>>>(dz, steps, B, d, E, dh, demb);
    return launch_status();
}
static int copy(void* x, float* dst, const float* src, int64_t n) {
    if (dst == src) return 0;
    return (int)cudaMemcpyAsync(dst, src, sizeof(float) * (size_t)n, cudaMemcpyDeviceToDevice, S(x));
}
/* host is the binding's private, pageable copy: CUDA stages it before the call returns */
static int upload(void* x, int32_t* dst, const int32_t* host, int n) {
    return (int)cudaMemcpyAsync(dst, host, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice, S(x));
}

static const l2s_authors_ops cuda_ops = {
    linear_forward, linear_backward, layernorm_forward, layernorm_backward, attention_forward, attention_backward,
    pool_forward, pool_backward, dropout, add, relu_forward, relu_backward, add_positions, add_step_rows,
    step_rows_grad, concat_steps, split_steps, leaky_forward, leaky_backward, softmax_ce_forward,
    softmax_ce_backward, copy, upload,
};

extern "C" int authors_forward_cuda(const l2s_authors_config* c, const float* params, int B, int C, const float* maps,
                                    const int32_t* steps, const int32_t* labels, l2s_dropout_config drop,
                                    float* workspace, float* probs, float* losses, void* stream) {
    return authors_forward_run(&cuda_ops, stream, c, params, B, C, maps, steps, labels, drop, workspace, probs, losses);
}

extern "C" int authors_backward_cuda(const l2s_authors_config* c, const float* params, int B, int C,
                                     const int32_t* steps, const int32_t* labels, l2s_dropout_config drop,
                                     float* workspace, float* dmaps, float* grads, void* stream) {
    return authors_backward_run(&cuda_ops, stream, c, params, B, C, steps, labels, drop, workspace, dmaps, grads);
}
