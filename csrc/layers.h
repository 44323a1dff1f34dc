/*
 * layers.h — layers shared by the MLP classifier (classifier.c) and the authors' transformer
 * (authors_net.c), forward and backward side by side (layers.c). All row-major float32.
 */
#ifndef L2S_LAYERS_H
#define L2S_LAYERS_H
#include <stdint.h>

/* out[B,O] = in[B,I] W[O,I]^T + b[O] (threads for large products). */
void l2s_linear_forward(const float* in, const float* W, const float* b, int B, int I, int O, float* out);
/* din[B, din_from:I] = (dout W)[:, din_from:] (overwritten; earlier columns untouched);
 * when dW: dW[O,I] += dout^T in and db[O] += sum_r dout. */
void l2s_linear_backward(const float* in, const float* W, const float* dout, int B, int I, int O,
                         int din_from, float* din, float* dW, float* db);

/* out = (a - mean) * rstd * g + be over the last dim C; mean, rstd [B] kept for backward. */
void l2s_layernorm_forward(const float* a, const float* g, const float* be, int B, int C, float eps,
                           float* out, float* mean, float* rstd);
/* da[B,C] overwritten; dg, dbe accumulated when dg is not NULL. */
void l2s_layernorm_backward(const float* a, const float* mean, const float* rstd, const float* g,
                            const float* dout, int B, int C, float* da, float* dg, float* dbe);

void l2s_leaky_forward(const float* x, int64_t n, float slope, float* y);
void l2s_leaky_backward(const float* x, int64_t n, float slope, float* dy);      /* in place on dy */

/* probs = softmax(logits) per row; losses[r] = -log probs[r, labels[r]] when labels. */
void l2s_softmax_ce_forward(const float* logits, const int32_t* labels, int B, int R, float* probs, float* losses);
/* dlogits of the batch-MEAN loss. */
void l2s_softmax_ce_backward(const float* probs, const int32_t* labels, int B, int R, float* dlogits);

/* Inverted dropout with the counter-based masks of numeric.h: element i of site `site` is kept with
 * probability 1 - p (then scaled by 1/(1-p)) according to a hash of (seed, site, i) alone, so
 * backward applies the very same mask by calling the same function on the gradient, and the NumPy
 * twin (l2s.authors_net.dropout_mask) reproduces it. p == 0: identity. */
void l2s_dropout(float* x, int64_t n, float p, uint64_t seed, uint32_t site);

/* Single-threaded products for per-head attention (callers thread over heads):
 * matmul:    out[M,N] (+)= A[M,K] B[K,N], A[r,i] at a[r*a_row + i*a_col], B rows ldb apart;
 * matmul_bt: out[M,N]  = A[M,K] W[N,K]^T, rows lda / ldw apart. Any M, N, K >= 0. */
void l2s_matmul(const float* a, int a_row, int a_col, int M, int K, const float* bm, int ldb, int N,
                float* out, int ldo, int accumulate);
void l2s_matmul_bt(const float* a, int lda, int M, int K, const float* w, int ldw, int N, float* out, int ldo);

#endif
