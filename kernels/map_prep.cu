/*
 * map_prep.cu — CUDA twin of csrc/map_prep.c. The resize taps come from numeric.h, the same code
 * the CPU uses. Backward scatters with atomics (an output pixel feeds few inputs).
 */
#include "common.cuh"

/* Output element i: its plane p, position (y, x) and the input window [y0, y0+ny) x [x0, x0+nx). */
struct resize_site { int64_t p; int y, x, y0, x0, ny, nx; };
__device__ __forceinline__ resize_site locate(const l2s_resize_shape& s, int64_t i) {
    resize_site r;
    int64_t per = (int64_t)s.h_out * s.w_out;
    r.p = i / per; r.y = (int)((i % per) / s.w_out); r.x = (int)(i % s.w_out);
    r.ny = l2s_resize_taps(s.mode, s.h_in, s.h_out, r.y, &r.y0);
    r.nx = l2s_resize_taps(s.mode, s.w_in, s.w_out, r.x, &r.x0);
    return r;
}

__global__ void resize_maps_forward_kernel(l2s_resize_shape s, const float* in, float* out) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= s.P * s.h_out * s.w_out) return;
    resize_site r = locate(s, i);
    int y = r.y, x = r.x, y0 = r.y0, x0 = r.x0, ny = r.ny, nx = r.nx;
    const float* src = in + r.p * s.h_in * s.w_in;
    float acc = 0.f;
    for (int j = 0; j < ny; j++) {
        float wy = l2s_resize_tap_weight(s.mode, s.h_in, s.h_out, y, j);
        for (int c = 0; c < nx; c++)
            acc += wy * l2s_resize_tap_weight(s.mode, s.w_in, s.w_out, x, c) * src[(int64_t)(y0 + j) * s.w_in + x0 + c];
    }
    acc *= s.weight;
    out[i] = s.accumulate ? out[i] + acc : acc;
}

__global__ void resize_maps_backward_kernel(l2s_resize_shape s, const float* dout, float* din) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= s.P * s.h_out * s.w_out) return;
    resize_site r = locate(s, i);
    int y = r.y, x = r.x, y0 = r.y0, x0 = r.x0, ny = r.ny, nx = r.nx;
    float g = dout[i] * s.weight;
    float* dst = din + r.p * s.h_in * s.w_in;
    for (int j = 0; j < ny; j++) {
        float wy = l2s_resize_tap_weight(s.mode, s.h_in, s.h_out, y, j) * g;
        for (int c = 0; c < nx; c++)
            atomicAdd(dst + (int64_t)(y0 + j) * s.w_in + x0 + c, wy * l2s_resize_tap_weight(s.mode, s.w_in, s.w_out, x, c));
    }
}

extern "C" int resize_maps_forward_cuda(const l2s_resize_shape* s, const float* in, float* out, void* stream) {
    int64_t n = s->P * s->h_out * s->w_out;
    if (n == 0) return 0;
    resize_maps_forward_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(*s, in, out);
    return launch_status();
}

extern "C" int resize_maps_backward_cuda(const l2s_resize_shape* s, const float* dout, float* din, void* stream) {
    int err;
    if (!s->accumulate && (err = (int)cudaMemsetAsync(din, 0, sizeof(float) * s->P * s->h_in * s->w_in, as_stream(stream))))
        return err;
    int64_t n = s->P * s->h_out * s->w_out;
    if (n == 0) return 0;
    resize_maps_backward_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(*s, dout, din);
    return launch_status();
}

/* One block per map: reduce the divisor (sum, or max with its first argmax). */
__device__ float plane_divisor(const float* x, int64_t M, l2s_norm_mode mode, int64_t* argmax, float* sh) {
    if (mode == L2S_NORM_SUM) {
        float v = 0.f;
        for (int64_t i = threadIdx.x; i < M; i += blockDim.x) v += x[i];
        return block_sum(v, sh);
    }
    __shared__ float best_v[32];
    __shared__ int64_t best_i[32];
    float bv = -INFINITY; int64_t bi = M;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) if (x[i] > bv) { bv = x[i]; bi = i; }
    for (int o = 16; o > 0; o >>= 1) {                  /* ties go to the lower index, as on the CPU */
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads();
    if (lane == 0) { best_v[w] = bv; best_i[w] = bi; }
    __syncthreads();
    bv = lane < nw ? best_v[lane] : -INFINITY; bi = lane < nw ? best_i[lane] : M;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    *argmax = bi;
    return bv;
}

__global__ void normalize_maps_forward_kernel(int64_t M, l2s_norm_mode mode, float eps, const float* x, float* y) {
    __shared__ float sh[32];
    const float* xp = x + blockIdx.x * M; float* yp = y + blockIdx.x * M;
    int64_t am;
    float inv = 1.f / (plane_divisor(xp, M, mode, &am, sh) + eps);
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) yp[i] = xp[i] * inv;
}

__global__ void normalize_maps_backward_kernel(int64_t M, l2s_norm_mode mode, float eps, const float* x,
                                               const float* dy, float* dx) {
    __shared__ float sh[32];
    const float* xp = x + blockIdx.x * M; const float* gp = dy + blockIdx.x * M; float* op = dx + blockIdx.x * M;
    int64_t am = 0;
    float c = plane_divisor(xp, M, mode, &am, sh) + eps;
    float dot = 0.f;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) dot += gp[i] * xp[i];
    dot = block_sum(dot, sh);
    float corr = dot / (c * c);
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x)
        op[i] = gp[i] / c - (mode == L2S_NORM_SUM || i == am ? corr : 0.f);
}

extern "C" int normalize_maps_forward_cuda(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                           const float* x, float* y, void* stream) {
    if (P == 0) return 0;
    normalize_maps_forward_kernel<<<(unsigned)P, 256, 0, as_stream(stream)>>>(M, mode, eps, x, y);
    return launch_status();
}

extern "C" int normalize_maps_backward_cuda(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                            const float* x, const float* dy, float* dx, void* stream) {
    if (P == 0) return 0;
    normalize_maps_backward_kernel<<<(unsigned)P, 256, 0, as_stream(stream)>>>(M, mode, eps, x, dy, dx);
    return launch_status();
}
