/* latent.cu — CUDA twin of csrc/latent.c: a norm pass per sample, then the guarded update.
 * The skip decision travels through norms[b] (NaN = skip), so the host never waits. */
#include "common.cuh"

/* The sum of squares in double, as latent.c does: in float32 a huge or tiny gradient overflowed or
 * underflowed where the C path did not, and the two skipped different samples. */
__global__ void latent_norm_kernel(int64_t K, l2s_dtype dt, const void* g, float* norms) {
    __shared__ double sh[32];
    __shared__ int bad;
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    double ss = 0.0;
    int my_bad = 0;
    for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
        float v = l2s_load(g, blockIdx.x * K + i, dt);
        if (!isfinite(v)) my_bad = 1; else ss += (double)v * v;
    }
    if (my_bad) bad = 1;                     /* benign race: every writer writes 1 */
    ss = block_sum(ss, sh);                  /* its barriers also publish bad */
    float norm = (float)sqrt(ss);
    if (threadIdx.x == 0) norms[blockIdx.x] = (bad || !isfinite(norm)) ? NAN : norm;
}

__global__ void latent_apply_kernel(int64_t B, int64_t K, l2s_dtype dt, float step, int normalize,
                                    void* z, const void* g, const float* norms) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * K) return;
    float nb = norms[i / K];
    if (!isfinite(nb) || nb == 0.f) return;
    float scale = normalize ? step / nb : step;
    l2s_store(z, i, dt, l2s_load(z, i, dt) - scale * l2s_load(g, i, dt));
}

extern "C" int latent_update_cuda(int64_t B, int64_t K, l2s_dtype dtype, float step, int normalize,
                                  void* z, const void* g, float* norms, void* stream) {
    if (B == 0) return 0;
    latent_norm_kernel<<<(unsigned)B, 256, 0, as_stream(stream)>>>(K, dtype, g, norms);
    int err = launch_status();
    if (err || K == 0) return err;
    latent_apply_kernel<<<blocks_for(B * K, 256), 256, 0, as_stream(stream)>>>(B, K, dtype, step, normalize, z, g, norms);
    return launch_status();
}
