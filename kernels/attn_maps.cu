/*
 * attn_maps.cu — CUDA twin of csrc/attn_maps.c. One warp per (b, n) image position loops over the
 * heads: lanes split the L text tokens for the logits, the warp reduces max and sum, and the lanes
 * then sum the requested token columns. The [B, H, N, L] probabilities never leave shared memory.
 */
#include "common.cuh"

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

extern "C" int attn_maps_forward_cuda(const l2s_attn_shape* s, const void* q, const void* k,
                                      const int32_t* tokens, float* maps, void* stream) {
    int64_t rows = (int64_t)s->B * s->N;
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
    attn_maps_backward_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), WARPS_PER_BLOCK * L2S_WARP, smem, st>>>(
        *s, copy_tokens(s, tokens), q, k, dmaps, dq, acc);
    if ((err = launch_status())) return err;
    if (s->dtype != L2S_F32) {
        store_converted_kernel<<<blocks_for(nk, 256), 256, 0, st>>>(acc, nk, s->dtype, dk);
        return launch_status();
    }
    return 0;
}
