/*
 * common.cuh — launch helpers and warp/block reductions shared by the CUDA twins.
 * Every entry returns a cudaError_t as int (0 = success) so the module can raise a Python error.
 */
#ifndef L2S_COMMON_CUH
#define L2S_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include "l2s.h"
#include "numeric.h"

#define L2S_WARP 32

static inline cudaStream_t as_stream(void* s) { return (cudaStream_t)s; }
static inline unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }
static inline int launch_status(void) { return (int)cudaGetLastError(); }

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = L2S_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = L2S_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
 * double for sums that must decide exactly as the C twin does (the latent norm). */
template <typename T> __device__ __forceinline__ T block_sum(T v, T* shared32) {
    int lane = threadIdx.x % L2S_WARP, w = threadIdx.x / L2S_WARP, nw = blockDim.x / L2S_WARP;
    v = warp_sum(v);
    __syncthreads();                       /* shared32 may still be read by a previous call */
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    v = lane < nw ? shared32[lane] : (T)0;
    return warp_sum(v);
}

#endif /* L2S_COMMON_CUH */
