/* layers.cuh — CUDA twins of csrc/layers.c: the layers both classifiers are made of (classifier.cu,
 * authors_net.cu), as launchers on a stream. They return 0 or a CUDA error code. Row-major. */
#ifndef L2S_LAYERS_CUH
#define L2S_LAYERS_CUH
#include "common.cuh"

/* out[B,O] = in W^T + b;  din[:, din_from:] = dout W (din_from >= I: none), dW += dout^T in, db += sum dout */
int cu_linear_forward(const float* in, const float* W, const float* b, int B, int I, int O, float* out, cudaStream_t st);
int cu_linear_backward(const float* in, const float* W, const float* dout, int B, int I, int O, int din_from, float* din,
                       float* dW, float* db, cudaStream_t st);
int cu_layernorm_forward(const float* a, const float* g, const float* be, int B, int C, float eps, float* out,
                         float* mean, float* rstd, cudaStream_t st);
int cu_layernorm_backward(const float* a, const float* mean, const float* rstd, const float* g, const float* dout,
                          int B, int C, float* da, float* dg, float* dbe, cudaStream_t st);
int cu_leaky_forward(const float* x, int64_t n, float slope, float* y, cudaStream_t st);
int cu_leaky_backward(const float* x, int64_t n, float slope, float* dy, cudaStream_t st);
int cu_softmax_ce_forward(const float* logits, const int32_t* labels, int B, int R, float* probs, float* losses,
                          cudaStream_t st);
int cu_softmax_ce_backward(const float* probs, const int32_t* labels, int B, int R, float* dlogits, cudaStream_t st);

#endif
