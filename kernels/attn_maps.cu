/*
 * attn_maps.cu — CUDA twin of csrc/attn_maps.c. One warp per (b, n) image position loops over the
 * heads: lanes split the L text tokens for the logits, the warp reduces max and sum, and the lanes
 * then sum the requested token columns. The [B, H, N, L] probabilities never leave shared memory.
 */
#include "common.cuh"
#include "parallel.h"

/* travels by value in the kernel params: the token table and each object's weight (head mean
 * 1/H unless per head, token mean 1/valid tokens when asked) */
struct TokenTable { int32_t tok[L2S_MAX_TOKEN_SLOTS]; float w[L2S_MAX_TOKEN_SLOTS]; };

__device__ __forceinline__ int64_t map_index(const l2s_attn_shape& s, int b, int t, int h, int n) {
    return s.per_head ? (((int64_t)b * s.T + t) * s.H + h) * s.N + n : ((int64_t)b * s.T + t) * s.N + n;
}

static const int WARPS_PER_BLOCK = 4;

/* p[l] = softmax_l(scale * q[b,h,n] . k[b,h,l]) into shared p (one warp); returns nothing, p ready. */
__device__ void softmax_row_warp(const l2s_attn_shape& s, const void* q, const void* k, int b, int h, int n, float* p) {
    const int lane = threadIdx.x % L2S_WARP;
    const int64_t qb = (int64_t)b * s.q_strides[0] + (int64_t)h * s.q_strides[1] + (int64_t)n * s.q_strides[2];
    const int64_t kb = (int64_t)b * s.k_strides[0] + (int64_t)h * s.k_strides[1];
    float mx = -INFINITY;
    for (int l = lane; l < s.L; l += L2S_WARP) {
        float dot = 0.f;
        const int64_t kr = kb + (int64_t)l * s.k_strides[2];
        for (int d = 0; d < s.D; d++)
            dot += l2s_load(q, qb + (int64_t)d * s.q_strides[3], s.dtype) * l2s_load(k, kr + (int64_t)d * s.k_strides[3], s.dtype);
        p[l] = dot * s.scale;
        mx = fmaxf(mx, p[l]);
    }
    mx = warp_max(mx);
    float sum = 0.f;
    for (int l = lane; l < s.L; l += L2S_WARP) { p[l] = __expf(p[l] - mx); sum += p[l]; }
    sum = warp_sum(sum);
    float inv = 1.f / sum;
    for (int l = lane; l < s.L; l += L2S_WARP) p[l] *= inv;
    __syncwarp();
}

__global__ void attn_maps_forward_kernel(l2s_attn_shape s, TokenTable tt, const void* q, const void* k, float* maps) {
    extern __shared__ float smem[];
    const int w = threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    const int64_t row = (int64_t)blockIdx.x * WARPS_PER_BLOCK + w;      /* = b * N + n */
    if (row >= (int64_t)s.B * s.N) return;                              /* whole warp leaves together */
    const int b = (int)(row / s.N), n = (int)(row % s.N);
    float* p = smem + (size_t)w * s.L;
    float acc[2] = {0.f, 0.f};                                          /* objects lane and lane + 32 */
    for (int h = 0; h < s.H; h++) {
        softmax_row_warp(s, q, k, b, h, n, p);
        for (int j = 0; j < 2; j++) {
            int t = lane + j * L2S_WARP;
            if (t >= s.T) continue;
            float head = 0.f;
            for (int m = 0; m < s.M; m++) { int tok = tt.tok[t * s.M + m]; if (tok >= 0) head += p[tok]; }
            if (s.per_head) maps[map_index(s, b, t, h, n)] = head * tt.w[t];
            else acc[j] += head;
        }
        __syncwarp();
    }
    for (int j = 0; j < 2 && !s.per_head; j++) {
        int t = lane + j * L2S_WARP;
        if (t < s.T) maps[map_index(s, b, t, 0, n)] = acc[j] * tt.w[t];
    }
}

/* dq row written directly; dk accumulated with atomics into float dk_acc [B,H,L,D]. */
__global__ void attn_maps_backward_kernel(l2s_attn_shape s, TokenTable tt, const void* q, const void* k,
                                          const float* dmaps, void* dq, float* dk_acc) {
    extern __shared__ float smem[];
    const int w = threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    const int64_t row = (int64_t)blockIdx.x * WARPS_PER_BLOCK + w;
    if (row >= (int64_t)s.B * s.N) return;
    const int b = (int)(row / s.N), n = (int)(row % s.N);
    float* p = smem + (size_t)w * 2 * s.L;
    float* wt = p + s.L;
    for (int h = 0; h < s.H; h++) {
        softmax_row_warp(s, q, k, b, h, n, p);
        for (int l = lane; l < s.L; l += L2S_WARP) wt[l] = 0.f;
        __syncwarp();
        if (lane == 0) {                                                /* tiny: T*M <= 64 slots */
            for (int t = 0; t < s.T; t++) {
                float g = dmaps[map_index(s, b, t, h, n)] * tt.w[t];
                for (int m = 0; m < s.M; m++) { int tok = tt.tok[t * s.M + m]; if (tok >= 0) wt[tok] += g; }
            }
        }
        __syncwarp();
        float pw = 0.f;
        for (int l = lane; l < s.L; l += L2S_WARP) pw += p[l] * wt[l];
        pw = warp_sum(pw);
        for (int l = lane; l < s.L; l += L2S_WARP) p[l] = p[l] * (wt[l] - pw) * s.scale;   /* p := ds */
        __syncwarp();
        const int64_t qb = (int64_t)b * s.q_strides[0] + (int64_t)h * s.q_strides[1] + (int64_t)n * s.q_strides[2];
        const int64_t kb = (int64_t)b * s.k_strides[0] + (int64_t)h * s.k_strides[1];
        const int64_t dq_row = (((int64_t)b * s.H + h) * s.N + n) * s.D;
        const int64_t dk_head = ((int64_t)b * s.H + h) * s.L * s.D;
        for (int d = lane; d < s.D; d += L2S_WARP) {
            float qd = l2s_load(q, qb + (int64_t)d * s.q_strides[3], s.dtype);
            float acc = 0.f;
            for (int l = 0; l < s.L; l++) {
                float kd = l2s_load(k, kb + (int64_t)l * s.k_strides[2] + (int64_t)d * s.k_strides[3], s.dtype);
                acc += p[l] * kd;
                atomicAdd(dk_acc + dk_head + (int64_t)l * s.D + d, p[l] * qd);
            }
            l2s_store(dq, dq_row + d, s.dtype, acc);
        }
        __syncwarp();
    }
}

__global__ void store_converted_kernel(const float* src, int64_t n, l2s_dtype dt, void* dst) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) l2s_store(dst, i, dt, src[i]);
}

static TokenTable copy_tokens(const l2s_attn_shape* s, const int32_t* tokens) {
    TokenTable tt;
    for (int i = 0; i < L2S_MAX_TOKEN_SLOTS; i++) tt.tok[i] = i < s->T * s->M ? tokens[i] : -1;
    for (int t = 0; t < L2S_MAX_TOKEN_SLOTS; t++) tt.w[t] = t < s->T ? l2s_attn_token_weight(s, tokens, t) : 0.f;
    return tt;
}

/* ---- tiled kernels (L2S_ATTN_KERNEL=tiled; not yet measured on a GPU, so not the default) ----
 * A block takes TN image rows of one (b, h); K comes through shared memory LC tokens at a time, read
 * coalesced and reused by every row of the tile; softmax statistics are kept online (running max and
 * sum), so only the logits of the requested tokens are stored. The backward sums a chunk's dK over
 * the block's rows before one atomic per (token, column): TN times fewer atomics than one per row. */
static const int TN = 16, LC = 32, TILED_THREADS = 256, RPW = TN / (TILED_THREADS / L2S_WARP);

/* the distinct requested tokens, and each table slot's index among them */
struct Wanted { int32_t tok[L2S_MAX_TOKEN_SLOTS]; int32_t slot[L2S_MAX_TOKEN_SLOTS]; int W; };

static Wanted wanted_tokens(const l2s_attn_shape* s, const int32_t* tokens) {
    Wanted wt;
    wt.W = 0;
    for (int e = 0; e < L2S_MAX_TOKEN_SLOTS; e++) {
        wt.slot[e] = -1;
        if (e >= s->T * s->M || tokens[e] < 0) continue;
        int w = 0;
        while (w < wt.W && wt.tok[w] != tokens[e]) w++;
        if (w == wt.W) wt.tok[wt.W++] = tokens[e];
        wt.slot[e] = w;
    }
    return wt;
}

__device__ __forceinline__ void load_rows(const l2s_attn_shape& s, const void* x, const int64_t* st, int b, int h, int r0,
                                          int rows, int limit, float* dst) {
    const int Dp = s.D + 1;
    for (int i = threadIdx.x; i < rows * s.D; i += blockDim.x) {
        int r = i / s.D, d = i % s.D, n = r0 + r;
        dst[r * Dp + d] = n < limit ? l2s_load(x, (int64_t)b * st[0] + (int64_t)h * st[1] + (int64_t)n * st[2] +
                                                   (int64_t)d * st[3], s.dtype) : 0.f;
    }
}

/* Pass over every K chunk: each warp's rows get their running max m and sum z, and wl the logits of
 * the wanted tokens. Qs holds the tile's rows, Ks is the chunk buffer. */
__device__ void softmax_stats_tiled(const l2s_attn_shape& s, const Wanted& wt, const void* k, int b, int h,
                                    const float* Qs, float* Ks, float* wl, float* m, float* z) {
    const int Dp = s.D + 1, warp = threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    for (int rr = 0; rr < RPW; rr++) { m[rr] = -INFINITY; z[rr] = 0.f; }
    for (int l0 = 0; l0 < s.L; l0 += LC) {
        __syncthreads();                                    /* the last chunk is consumed */
        load_rows(s, k, s.k_strides, b, h, l0, LC, s.L, Ks);
        __syncthreads();
        const int l = l0 + lane;
        for (int rr = 0; rr < RPW; rr++) {
            const int r = warp + rr * (TILED_THREADS / L2S_WARP);
            float dot = 0.f;
            for (int d = 0; d < s.D; d++) dot += Qs[r * Dp + d] * Ks[lane * Dp + d];
            const float logit = l < s.L ? dot * s.scale : -INFINITY;
            const float mn = fmaxf(m[rr], warp_max(logit));
            const float e = l < s.L ? __expf(logit - mn) : 0.f;
            z[rr] = z[rr] * __expf(m[rr] - mn) + warp_sum(e);
            m[rr] = mn;
            for (int w = 0; w < wt.W && l < s.L; w++)
                if (wt.tok[w] == l) wl[r * wt.W + w] = logit;
        }
    }
    __syncthreads();
}

__global__ void attn_maps_forward_tiled_kernel(l2s_attn_shape s, TokenTable tt, Wanted wt, const void* q, const void* k,
                                               float* maps) {
    extern __shared__ float smem[];
    const int Dp = s.D + 1, b = blockIdx.z, h = blockIdx.y, n0 = blockIdx.x * TN;
    const int warp = threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    float* Qs = smem; float* Ks = Qs + TN * Dp; float* wl = Ks + LC * Dp;
    load_rows(s, q, s.q_strides, b, h, n0, TN, s.N, Qs);
    float m[RPW], z[RPW];
    softmax_stats_tiled(s, wt, k, b, h, Qs, Ks, wl, m, z);
    for (int rr = 0; rr < RPW; rr++) {
        const int r = warp + rr * (TILED_THREADS / L2S_WARP), n = n0 + r;
        if (n >= s.N) continue;
        for (int t = lane; t < s.T; t += L2S_WARP) {
            float v = 0.f;
            for (int j = 0; j < s.M; j++)
                if (wt.slot[t * s.M + j] >= 0) v += __expf(wl[r * wt.W + wt.slot[t * s.M + j]] - m[rr]) / z[rr];
            v *= tt.w[t];
            if (s.per_head) maps[map_index(s, b, t, h, n)] = v;
            else atomicAdd(maps + map_index(s, b, t, 0, n), v);          /* heads meet in the zeroed maps */
        }
    }
}

__global__ void attn_maps_backward_tiled_kernel(l2s_attn_shape s, TokenTable tt, Wanted wt, const void* q,
                                                const void* k, const float* dmaps, void* dq, float* dk_acc) {
    extern __shared__ float smem[];
    const int Dp = s.D + 1, W = wt.W, b = blockIdx.z, h = blockIdx.y, n0 = blockIdx.x * TN;
    const int warp = threadIdx.x / L2S_WARP, lane = threadIdx.x % L2S_WARP;
    float* Qs = smem; float* Ks = Qs + TN * Dp; float* wl = Ks + LC * Dp; float* wg = wl + TN * W;
    float* ds = wg + TN * W; float* dQs = ds + TN * LC;
    load_rows(s, q, s.q_strides, b, h, n0, TN, s.N, Qs);
    for (int i = threadIdx.x; i < TN * W; i += blockDim.x) wg[i] = 0.f;
    for (int i = threadIdx.x; i < TN * s.D; i += blockDim.x) dQs[i] = 0.f;
    __syncthreads();
    /* wg[r][w]: the map gradient each wanted token of row r receives (its objects' weights) */
    for (int i = threadIdx.x; i < TN * s.T * s.M; i += blockDim.x) {
        const int r = i / (s.T * s.M), e = i % (s.T * s.M), t = e / s.M, n = n0 + r;
        if (n < s.N && wt.slot[e] >= 0)
            atomicAdd(wg + r * W + wt.slot[e], dmaps[map_index(s, b, t, h, n)] * tt.w[t]);
    }
    float m[RPW], z[RPW], pw[RPW];
    softmax_stats_tiled(s, wt, k, b, h, Qs, Ks, wl, m, z);
    for (int rr = 0; rr < RPW; rr++) {                      /* <p, w> over the wanted tokens only */
        const int r = warp + rr * (TILED_THREADS / L2S_WARP);
        float acc = 0.f;
        for (int w = lane; w < W; w += L2S_WARP) acc += __expf(wl[r * W + w] - m[rr]) / z[rr] * wg[r * W + w];
        pw[rr] = warp_sum(acc);
    }
    for (int l0 = 0; l0 < s.L; l0 += LC) {
        __syncthreads();
        load_rows(s, k, s.k_strides, b, h, l0, LC, s.L, Ks);
        __syncthreads();
        const int l = l0 + lane;
        for (int rr = 0; rr < RPW; rr++) {                  /* ds = p (w - <p, w>) scale */
            const int r = warp + rr * (TILED_THREADS / L2S_WARP);
            float dot = 0.f;
            for (int d = 0; d < s.D; d++) dot += Qs[r * Dp + d] * Ks[lane * Dp + d];
            float wv = 0.f;
            for (int w = 0; w < W; w++) if (wt.tok[w] == l) wv = wg[r * W + w];
            ds[r * LC + lane] = l < s.L ? __expf(dot * s.scale - m[rr]) / z[rr] * (wv - pw[rr]) * s.scale : 0.f;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < TN * s.D; i += blockDim.x) {          /* dQ += dS K */
            const int r = i / s.D, d = i % s.D;
            float acc = 0.f;
            for (int j = 0; j < LC; j++) acc += ds[r * LC + j] * Ks[j * Dp + d];
            dQs[i] += acc;
        }
        for (int i = threadIdx.x; i < LC * s.D; i += blockDim.x) {          /* dK += dS^T Q: one atomic per block */
            const int j = i / s.D, d = i % s.D;
            if (l0 + j >= s.L) continue;
            float acc = 0.f;
            for (int r = 0; r < TN; r++) acc += ds[r * LC + j] * Qs[r * Dp + d];
            atomicAdd(dk_acc + (((int64_t)b * s.H + h) * s.L + l0 + j) * s.D + d, acc);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TN * s.D; i += blockDim.x) {
        const int r = i / s.D, d = i % s.D, n = n0 + r;
        if (n < s.N) l2s_store(dq, (((int64_t)b * s.H + h) * s.N + n) * s.D + d, s.dtype, dQs[i]);
    }
}

/* The tiled kernels' shared memory, or 0 when the shape does not fit the device (the simple kernels run). */
static size_t tiled_smem(const l2s_attn_shape* s, int W, int backward, const void* kernel) {
    const size_t Dp = (size_t)s->D + 1;
    size_t floats = TN * Dp + LC * Dp + (size_t)TN * W;
    if (backward) floats += (size_t)TN * W + (size_t)TN * LC + (size_t)TN * s->D;
    size_t bytes = floats * sizeof(float);
    if (bytes > 48 * 1024) {                                /* past the default: ask for the opt-in amount */
        int dev = 0, limit = 0;
        if (cudaGetDevice(&dev) || cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) ||
            bytes > (size_t)limit ||
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes)) {
            cudaGetLastError();                             /* not an error of the op: fall back */
            return 0;
        }
    }
    return bytes;
}

extern "C" int attn_maps_forward_cuda(const l2s_attn_shape* s, const void* q, const void* k,
                                      const int32_t* tokens, float* maps, void* stream) {
    int64_t rows = (int64_t)s->B * s->N;
    if (l2s_attn_tiled() && s->N <= (int64_t)INT32_MAX - TN && s->B <= 65535 && s->H <= 65535) {
        Wanted wt = wanted_tokens(s, tokens);
        size_t bytes = tiled_smem(s, wt.W, 0, (const void*)attn_maps_forward_tiled_kernel);
        if (bytes) {
            int err;
            if (!s->per_head && (err = (int)cudaMemsetAsync(maps, 0, sizeof(float) * (size_t)s->B * s->T * s->N,
                                                              as_stream(stream))))
                return err;
            dim3 grid((unsigned)((s->N + TN - 1) / TN), (unsigned)s->H, (unsigned)s->B);
            attn_maps_forward_tiled_kernel<<<grid, TILED_THREADS, bytes, as_stream(stream)>>>(*s, copy_tokens(s, tokens),
                                                                                            wt, q, k, maps);
            return launch_status();
        }
    }
    size_t smem = sizeof(float) * (size_t)WARPS_PER_BLOCK * s->L;
    if (smem > 48 * 1024) return (int)cudaErrorInvalidValue;   /* L > 3072 tokens: far beyond any text encoder */
    attn_maps_forward_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), WARPS_PER_BLOCK * L2S_WARP, smem, as_stream(stream)>>>(
        *s, copy_tokens(s, tokens), q, k, maps);
    return launch_status();
}

extern "C" int attn_maps_backward_cuda(const l2s_attn_shape* s, const void* q, const void* k,
                                       const int32_t* tokens, const float* dmaps, void* dq, void* dk,
                                       float* dk_acc, void* stream) {
    cudaStream_t st = as_stream(stream);
    int64_t rows = (int64_t)s->B * s->N, nk = (int64_t)s->B * s->H * s->L * s->D;
    size_t smem = sizeof(float) * (size_t)WARPS_PER_BLOCK * 2 * s->L;
    if (smem > 48 * 1024) return (int)cudaErrorInvalidValue;
    /* dk sums over every image position: accumulate in float32, in place when dk is float32, else in
     * the caller's buffer (an allocation here leaked on the error paths and cost a malloc per call) */
    float* acc = s->dtype == L2S_F32 ? (float*)dk : dk_acc;
    if (!acc) return (int)cudaErrorInvalidValue;
    int err;
    if ((err = (int)cudaMemsetAsync(acc, 0, sizeof(float) * nk, st))) return err;
    Wanted wt;
    size_t tiled = 0;
    if (l2s_attn_tiled() && s->B <= 65535 && s->H <= 65535) {
        wt = wanted_tokens(s, tokens);
        tiled = tiled_smem(s, wt.W, 1, (const void*)attn_maps_backward_tiled_kernel);
    }
    if (tiled) {
        dim3 grid((unsigned)((s->N + TN - 1) / TN), (unsigned)s->H, (unsigned)s->B);
        attn_maps_backward_tiled_kernel<<<grid, TILED_THREADS, tiled, st>>>(*s, copy_tokens(s, tokens), wt, q, k, dmaps,
                                                                           dq, acc);
    } else {
        attn_maps_backward_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), WARPS_PER_BLOCK * L2S_WARP, smem, st>>>(
            *s, copy_tokens(s, tokens), q, k, dmaps, dq, acc);
    }
    if ((err = launch_status())) return err;
    if (s->dtype != L2S_F32) {
        store_converted_kernel<<<blocks_for(nk, 256), 256, 0, st>>>(acc, nk, s->dtype, dk);
        return launch_status();
    }
    return 0;
}
