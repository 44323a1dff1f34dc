/*
 * authors_ops.h — the steps the authors' network is made of, as a table of functions: authors_net.c
 * strings them into the forward and backward passes once, and each back end fills the table —
 * authors_net_cpu.c with C loops and the shared layers, kernels/authors_net.cu with kernels and
 * cuBLASLt. ctx is the back end's (the CUDA stream). Every step returns 0 or an error code; pointers
 * are the back end's memory (host for the CPU, device for CUDA); shapes row-major.
 */
#ifndef L2S_AUTHORS_OPS_H
#define L2S_AUTHORS_OPS_H
#include <stdint.h>
#include "l2s.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* out[rows, O] = in W^T + b;  din[:, din_from:] = dout W (din_from >= I: none), dW += dout^T in, db += sum dout */
    int (*linear_forward)(void* ctx, const float* in, const float* W, const float* b, int rows, int I, int O, float* out);
    int (*linear_backward)(void* ctx, const float* in, const float* W, const float* dout, int rows, int I, int O,
                           int din_from, float* din, float* dW, float* db);
    int (*layernorm_forward)(void* ctx, const float* a, const float* g, const float* be, int rows, int C, float eps,
                             float* out, float* mean, float* rstd);
    int (*layernorm_backward)(void* ctx, const float* a, const float* mean, const float* rstd, const float* g,
                              const float* dout, int rows, int C, float* da, float* dg, float* dbe);
    /* self-attention of `items` sequences of `seq` tokens: qkv [items*seq, 3d], p [items, heads, seq, seq]
     * (kept; backward turns it into dS), o [items*seq, d]; scratch: seq*seq floats the back end may use */
    int (*attention_forward)(void* ctx, const float* qkv, int items, int seq, int heads, int d, float* p, float* o);
    int (*attention_backward)(void* ctx, const float* qkv, float* p, const float* dout, int items, int seq, int heads,
                              int d, float* scratch, float* dqkv);
    /* pooling by one query q [d] over kv [N*C, 2d] (k | v): alpha [N, heads, C], op [N, d];
     * backward: dkv [N*C, 2d] overwritten, dq [d] overwritten, dalpha [N, heads, C] scratch */
    int (*pool_forward)(void* ctx, const float* q, const float* kv, int N, int C, int heads, int d, float* alpha,
                        float* op);
    int (*pool_backward)(void* ctx, const float* q, const float* kv, const float* alpha, const float* dop, int N, int C,
                         int heads, int d, float* dalpha, float* dkv, float* dq);
    int (*dropout)(void* ctx, float* x, int64_t n, float p, uint64_t seed, uint32_t site);   /* layers.h's masks */
    int (*add)(void* ctx, float* out, const float* a, const float* b, int64_t n);           /* out = a + b */
    int (*relu_forward)(void* ctx, float* x, int64_t n);
    int (*relu_backward)(void* ctx, const float* r, float* dr, int64_t n, float keep);       /* r: relu output, dropped */
    /* x[g, r, :] += pe[r, :] (rows rows per group);  x[g, r, :] += emb[steps[g / per_step], :] */
    int (*add_positions)(void* ctx, float* x, const float* pe, int groups, int rows, int d);
    int (*add_step_rows)(void* ctx, float* x, const float* emb, const int32_t* steps, int groups, int rows, int d,
                         int per_step);
    int (*step_rows_grad)(void* ctx, const float* dx, const int32_t* steps, int groups, int rows, int d, int per_step,
                          float* demb);                                                     /* demb[steps] += sum_r dx */
    /* z[b] = [h[b], emb[steps[b]]];  dh[b] = dz[b, :d], demb[steps[b]] += dz[b, d:] (demb may be NULL) */
    int (*concat_steps)(void* ctx, const float* h, const float* emb, const int32_t* steps, int B, int d, int E, float* z);
    int (*split_steps)(void* ctx, const float* dz, const int32_t* steps, int B, int d, int E, float* dh, float* demb);
    int (*leaky_forward)(void* ctx, const float* x, int64_t n, float slope, float* y);
    int (*leaky_backward)(void* ctx, const float* x, int64_t n, float slope, float* dy);
    int (*softmax_ce_forward)(void* ctx, const float* logits, const int32_t* labels, int B, int K, float* probs,
                              float* losses);
    int (*softmax_ce_backward)(void* ctx, const float* probs, const int32_t* labels, int B, int K, float* dlogits);
    int (*copy)(void* ctx, float* dst, const float* src, int64_t n);
    int (*upload)(void* ctx, int32_t* dst, const int32_t* host, int n);                       /* host indices in */
} l2s_authors_ops;

extern const l2s_authors_ops l2s_authors_cpu_ops;

/* The passes, on any back end: steps and labels are HOST arrays (copied into the workspace). */
int authors_forward_run(const l2s_authors_ops* o, void* ctx, const l2s_authors_config* c, const float* params, int B,
                        int C, const float* maps, const int32_t* steps, const int32_t* labels,
                        l2s_dropout_config drop, float* workspace, float* probs, float* losses);
int authors_backward_run(const l2s_authors_ops* o, void* ctx, const l2s_authors_config* c, const float* params, int B,
                         int C, const int32_t* steps, const int32_t* labels, l2s_dropout_config drop,
                         float* workspace, float* dmaps, float* grads);

#ifdef __cplusplus
}
#endif
#endif
