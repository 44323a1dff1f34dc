/* adamw.cu — CUDA twin of csrc/adamw.c: one thread per parameter. */
#include "common.cuh"

__global__ void adamw_update_kernel(l2s_adamw_config a, float c1, float c2, int64_t n, float* params,
                                    const float* grads, float* m, float* v) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = grads[i];
    float mi = a.beta1 * m[i] + (1.f - a.beta1) * g;
    float vi = a.beta2 * v[i] + (1.f - a.beta2) * g * g;
    m[i] = mi; v[i] = vi;
    params[i] -= a.lr * ((mi / c1) / (sqrtf(vi / c2) + a.eps) + a.weight_decay * params[i]);
}

extern "C" int adamw_update_cuda(const l2s_adamw_config* a, int64_t n, float* params, const float* grads,
                                 float* m, float* v, void* stream) {
    if (n == 0) return 0;
    float c1 = 1.f - powf(a->beta1, (float)a->step_t), c2 = 1.f - powf(a->beta2, (float)a->step_t);
    adamw_update_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(*a, c1, c2, n, params, grads, m, v);
    return launch_status();
}
