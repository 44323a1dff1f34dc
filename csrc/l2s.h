/*
 * l2s.h — the C interface of the l2s core.
 *
 * Every op comes as a pair with one name and two back ends:
 *   foo_forward_cpu / foo_backward_cpu   (csrc/foo.c, portable C99)
 *   foo_forward_cuda / foo_backward_cuda (kernels/foo.cu, compiled when nvcc is found)
 * Only stdint types cross this header, so the .cu files never see Python or NumPy.
 * Pointers are borrowed: the caller (the Python layer) owns every buffer.
 * Layouts are row-major and contiguous unless a stride array is passed.
 */
#ifndef L2S_H
#define L2S_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types the ops understand. Map inputs (Q, K, latents) may be half precision;
 * everything the classifier touches is float32; indices are int32. */
typedef enum { L2S_F32 = 0, L2S_F16 = 1, L2S_BF16 = 2, L2S_I32 = 3, L2S_I64 = 4 } l2s_dtype;

/* ---------------------------------------------------------------------------------------
 * Attention-map extraction.
 * q [B, H, N, D], k [B, H, L, D] (any element strides), tokens [T, M] int32 padded with -1.
 * maps[b, t, n] = (1/H) sum_h sum_{m: tokens[t,m] >= 0} softmax_l(scale * q[b,h,n] . k[b,h,l])[tokens[t,m]]
 * The [B, H, N, L] probabilities are never stored; backward recomputes each softmax row.
 * The CPU versions return 0, or -1 when their scratch allocation fails.
 * ------------------------------------------------------------------------------------- */
#define L2S_MAX_TOKEN_SLOTS 64   /* T * M: the token table travels to CUDA kernels by value */

typedef struct {
    int B, H, N, L, D;      /* batch, heads, image positions, text tokens, head dim */
    int T, M;               /* objects, max tokens per object */
    float scale;            /* softmax temperature, usually 1/sqrt(D) */
    l2s_dtype dtype;        /* of q, k, dq, dk */
    int64_t q_strides[4];   /* element strides of q over (B, H, N, D) */
    int64_t k_strides[4];   /* element strides of k over (B, H, L, D) */
    int per_head;           /* 1: maps [B, T, H, N], one per head; 0: the head mean [B, T, N] */
    int token_mean;         /* 1: an object's map is the mean over its tokens; 0: their sum */
} l2s_attn_shape;

/* Where map (b, t, h, n) lives, and the weight each head's and each object's token probabilities
 * get in it: 1/H for the head mean, 1/(valid tokens of t) for the token mean. */
static inline int64_t l2s_attn_map_index(const l2s_attn_shape* s, int b, int t, int h, int n) {
    return s->per_head ? (((int64_t)b * s->T + t) * s->H + h) * s->N + n : ((int64_t)b * s->T + t) * s->N + n;
}
static inline float l2s_attn_token_weight(const l2s_attn_shape* s, const int32_t* tokens, int t) {
    float w = s->per_head ? 1.f : 1.f / (float)s->H;
    if (!s->token_mean) return w;
    int valid = 0;
    for (int m = 0; m < s->M; m++) valid += tokens[t * s->M + m] >= 0;
    return valid ? w / (float)valid : w;
}

int attn_maps_forward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                           const int32_t* tokens, float* maps);
/* dq [B,H,N,D], dk [B,H,L,D]: contiguous, element type s->dtype, overwritten. */
int attn_maps_backward_cpu(const l2s_attn_shape* s, const void* q, const void* k,
                            const int32_t* tokens, const float* dmaps, void* dq, void* dk);

/* ---------------------------------------------------------------------------------------
 * Map preparation.
 * resize: out[p] (+)= weight * R(in[p]) for P planes, in [P, h_in, w_in] -> out [P, h_out, w_out];
 * R is bilinear (align_corners=False, like torch's interpolate) or area (adaptive average).
 * Several layers are averaged by calling it once per layer with accumulate=1, weight=1/layers.
 * normalize: y[p] = x[p] / (sum(x[p]) + eps) or x[p] / (max(x[p]) + eps), over M elements.
 * ------------------------------------------------------------------------------------- */
typedef enum { L2S_RESIZE_BILINEAR = 0, L2S_RESIZE_AREA = 1 } l2s_resize_mode;
typedef enum { L2S_NORM_SUM = 0, L2S_NORM_MAX = 1 } l2s_norm_mode;

typedef struct {
    int64_t P;
    int h_in, w_in, h_out, w_out;
    l2s_resize_mode mode;
    float weight;
    int accumulate;         /* 1: add into the output, 0: overwrite it */
} l2s_resize_shape;

void resize_maps_forward_cpu(const l2s_resize_shape* s, const float* in, float* out);
/* din [P, h_in, w_in] (+)= weight * R^T(dout); accumulate applies to din. */
void resize_maps_backward_cpu(const l2s_resize_shape* s, const float* dout, float* din);

void normalize_maps_forward_cpu(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                const float* x, float* y);
void normalize_maps_backward_cpu(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                 const float* x, const float* dy, float* dx);

/* ---------------------------------------------------------------------------------------
 * Relation classifier ("mlp" kind): input maps x [B, n_maps * map_pixels] and step indices
 * steps [B] ->
 *   h0 = [x, step_emb[steps]]                                  (step_dim may be 0)
 *   r1 = leaky(LN1(h0 W1^T + b1)),  r2 = leaky(LN2(r1 W2^T + b2)),  logits = r2 W3^T + b3
 *   probs = softmax(logits),  losses[b] = -log probs[b, labels[b]]
 * Parameters live in one flat float32 buffer in the order of l2s_classifier_offsets, so one
 * AdamW call updates them all. The workspace keeps forward activations for backward.
 * steps and labels are HOST arrays on both back ends: the boundary validates their range, and
 * the CUDA path copies them into the workspace.
 * ------------------------------------------------------------------------------------- */
typedef struct {
    int n_maps, map_pixels;     /* e.g. 2 objects x (16*16) */
    int n_steps, step_dim;      /* step-embedding table [n_steps, step_dim]; step_dim 0 disables it */
    int hidden1, hidden2;
    int n_relations;
    float leaky_slope;          /* 0.1 as the authors use */
    float ln_eps;               /* 1e-5 */
} l2s_classifier_config;

typedef struct {
    int64_t emb, w1, b1, g1, be1, w2, b2, g2, be2, w3, b3, total;
} l2s_classifier_offsets;

typedef struct {   /* float offsets into the workspace */
    int64_t h0, a1, n1, r1, mean1, rstd1, a2, n2, r2, mean2, rstd2, logits, probs;
    int64_t dh0, dbuf1, dbuf2;
    int64_t steps, labels;      /* int32 copies of the index arrays (used by the CUDA path) */
    int64_t total;
} l2s_classifier_workspace;

int64_t classifier_input_dim(const l2s_classifier_config* c);
l2s_classifier_offsets classifier_param_offsets(const l2s_classifier_config* c);

/* The parameter tensors inside the flat buffer, in buffer order: the one table the binding, the
 * Python initialisation and the safetensors names all read. */
typedef enum { L2S_INIT_ZEROS, L2S_INIT_ONES, L2S_INIT_FAN_IN_UNIFORM, L2S_INIT_NORMAL } l2s_param_init;
typedef struct {
    const char* name;
    int64_t offset;
    int ndim;
    int64_t shape[2];
    l2s_param_init init;        /* FAN_IN_UNIFORM: U(+-1/sqrt(fan_in)); NORMAL: N(0, 0.1^2) */
    int64_t fan_in;
} l2s_param_entry;
#define L2S_CLASSIFIER_N_TENSORS 11
void classifier_param_table(const l2s_classifier_config* c, l2s_param_entry out[L2S_CLASSIFIER_N_TENSORS]);
l2s_classifier_workspace classifier_workspace_offsets(const l2s_classifier_config* c, int B);
/* Returns NULL if the config is usable, else a message naming the bad field. */
const char* classifier_config_error(const l2s_classifier_config* c);

/* probs [B, R] out; losses [B] out (ignored when labels is NULL). */
void classifier_forward_cpu(const l2s_classifier_config* c, const float* params, int B,
                            const float* x, const int32_t* steps, const int32_t* labels,
                            float* workspace, float* probs, float* losses);
/* Needs the workspace of the forward call with the same inputs. Gradients are of the MEAN loss
 * over the batch. dx [B, n_maps*map_pixels] (overwritten) and grads [total] (accumulated into)
 * may each be NULL. */
void classifier_backward_cpu(const l2s_classifier_config* c, const float* params, int B,
                             const int32_t* steps, const int32_t* labels,
                             float* workspace, float* dx, float* grads);

/* ---------------------------------------------------------------------------------------
 * The authors' relation classifier (Learn-to-Steer's transformer; shared/authors-format.md §3):
 * maps [B, 2, C, map_pixels] (C <= max_channels, any) and embedding rows steps [B] ->
 *   per object: X = maps W_in^T + b + PE[c]; for each extractor layer X = layer(X + emb[steps]);
 *   attention pooling with a learned query; A = output projection (map_pixels values)
 *   head: h = [A_0, A_1] W_p^T + b_p + PE_cls[0]; classifier layers; z = [h, emb_cls[steps]];
 *   two Linear-LayerNorm-LeakyReLU(-dropout) layers; logits; softmax; cross-entropy.
 * Encoder layers are pre-norm (attention, then ReLU feed-forward), dropout on the attention output,
 * the hidden activation and the feed-forward output. Parameters: one flat float32 buffer, tensors
 * in the authors' state-dict order with the two positional tables moved to the end (AdamW updates
 * the first n_trained values only); names and places from authors_param_table.
 * ------------------------------------------------------------------------------------- */
#define L2S_AUTHORS_MAX_LAYERS 16

typedef struct {
    int d, map_pixels, max_channels, n_steps;     /* d_model, S*S, the PE table's rows, embedding rows */
    int ex_layers, ex_heads, ex_ff, pool_heads;   /* extractor */
    int cl_layers, cl_heads, cl_ff, step_dim;     /* relation head (step_dim: its embedding width) */
    int n_relations;
    float ln_eps, leaky_slope;                    /* 1e-5, 0.1 */
} l2s_authors_config;

typedef struct { int64_t in_w, in_b, out_w, out_b, l1_w, l1_b, l2_w, l2_b, n1_g, n1_b, n2_g, n2_b; } l2s_encoder_offsets;

typedef struct {
    int64_t query, in_w, in_b, ex_emb;
    l2s_encoder_offsets ex[L2S_AUTHORS_MAX_LAYERS];
    int64_t pool_in_w, pool_in_b, pool_out_w, pool_out_b, out_w, out_b;
    int64_t cl_emb, proj_w, proj_b;
    l2s_encoder_offsets cl[L2S_AUTHORS_MAX_LAYERS];
    int64_t fc0_w, fc0_b, fc1_g, fc1_b, fc4_w, fc4_b, fc5_g, fc5_b, fc8_w, fc8_b;
    int64_t n_trained;                            /* everything above; the fixed tables follow */
    int64_t ex_pe, cl_pe, total;
} l2s_authors_offsets;

const char* authors_config_error(const l2s_authors_config* c);
l2s_authors_offsets authors_param_offsets(const l2s_authors_config* c);
/* The state-dict tensors in buffer order: name, offset, element count. */
typedef struct { char name[80]; int64_t offset, numel; } l2s_authors_tensor;
#define L2S_AUTHORS_MAX_TENSORS (4 + 12 * L2S_AUTHORS_MAX_LAYERS + 6 + 3 + 12 * L2S_AUTHORS_MAX_LAYERS + 10 + 2)
/* Fills out[L2S_AUTHORS_MAX_TENSORS]; returns how many tensors the config has. */
int authors_param_table(const l2s_authors_config* c, l2s_authors_tensor* out);
/* Workspace floats for batch B and C channels; -1 if that overflows int64 or a row count overflows int. */
int64_t authors_workspace_size(const l2s_authors_config* c, int B, int C);

typedef struct { float p; uint64_t seed; } l2s_dropout_config;   /* p = 0: eval mode */

/* probs [B, K] out; losses [B] out when labels is not NULL. Returns 0, or -1 when a scratch
 * allocation failed. */
int authors_forward_cpu(const l2s_authors_config* c, const float* params, int B, int C, const float* maps,
                        const int32_t* steps, const int32_t* labels, l2s_dropout_config drop, float* workspace,
                        float* probs, float* losses);
/* Gradients of the batch-MEAN loss of the last forward on this workspace (which it consumes: call
 * it once per forward). dmaps [B, 2, C, map_pixels] overwritten, grads [total] accumulated into
 * (the fixed tables get none); either may be NULL. Returns 0 or -1 (allocation). */
int authors_backward_cpu(const l2s_authors_config* c, const float* params, int B, int C, const int32_t* steps,
                         const int32_t* labels, l2s_dropout_config drop, float* workspace, float* dmaps, float* grads);

/* ---------------------------------------------------------------------------------------
 * AdamW (decoupled weight decay, bias-corrected), in place over n float32 values.
 * step_t counts from 1.
 * ------------------------------------------------------------------------------------- */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int step_t;
} l2s_adamw_config;

void adamw_update_cpu(const l2s_adamw_config* a, int64_t n, float* params, const float* grads,
                      float* m, float* v);

/* ---------------------------------------------------------------------------------------
 * Latent update, per sample b of z [B, K]:
 *   norms[b] = ||g[b]||_2;  z[b] -= step * g[b] / norms[b]   (normalize = 1)
 *                           z[b] -= step * g[b]              (normalize = 0)
 * A sample whose gradient holds NaN/inf is left untouched and its norms[b] is set to NaN, so the
 * caller can see which samples were skipped. A zero gradient leaves z as it is (norms[b] = 0).
 * ------------------------------------------------------------------------------------- */
void latent_update_cpu(int64_t B, int64_t K, l2s_dtype dtype, float step, int normalize,
                       void* z, const void* g, float* norms);

#ifdef L2S_WITH_CUDA
/* CUDA twins: same arguments plus the caller's stream (a cudaStream_t as void*). They return
 * 0 on success, else a CUDA error code; l2s_cuda_error_string() names it. */
int attn_maps_forward_cuda(const l2s_attn_shape* s, const void* q, const void* k,
                           const int32_t* tokens, float* maps, void* stream);
/* dk_acc: float32 [B,H,L,D] where dK is summed before its conversion to a half dtype (the caller's:
 * no allocation in the op); unused, may be NULL, when s->dtype is float32. */
int attn_maps_backward_cuda(const l2s_attn_shape* s, const void* q, const void* k,
                            const int32_t* tokens, const float* dmaps, void* dq, void* dk,
                            float* dk_acc, void* stream);
int resize_maps_forward_cuda(const l2s_resize_shape* s, const float* in, float* out, void* stream);
int resize_maps_backward_cuda(const l2s_resize_shape* s, const float* dout, float* din, void* stream);
int normalize_maps_forward_cuda(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                const float* x, float* y, void* stream);
int normalize_maps_backward_cuda(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                 const float* x, const float* dy, float* dx, void* stream);
int classifier_forward_cuda(const l2s_classifier_config* c, const float* params, int B,
                            const float* x, const int32_t* steps, const int32_t* labels,
                            float* workspace, float* probs, float* losses, void* stream);
int classifier_backward_cuda(const l2s_classifier_config* c, const float* params, int B,
                             const int32_t* steps, const int32_t* labels,
                             float* workspace, float* dx, float* grads, void* stream);
int authors_forward_cuda(const l2s_authors_config* c, const float* params, int B, int C, const float* maps,
                         const int32_t* steps, const int32_t* labels, l2s_dropout_config drop, float* workspace,
                         float* probs, float* losses, void* stream);
int authors_backward_cuda(const l2s_authors_config* c, const float* params, int B, int C, const int32_t* steps,
                          const int32_t* labels, l2s_dropout_config drop, float* workspace, float* dmaps,
                          float* grads, void* stream);
int adamw_update_cuda(const l2s_adamw_config* a, int64_t n, float* params, const float* grads,
                      float* m, float* v, void* stream);
int latent_update_cuda(int64_t B, int64_t K, l2s_dtype dtype, float step, int normalize,
                       void* z, const void* g, float* norms, void* stream);

/* Runtime queries; none of them initialises CUDA until called. */
int l2s_cuda_device_count(void);                 /* 0 when there is no driver or device */
const char* l2s_cuda_status(void);               /* NULL if a device is usable, else the runtime's reason */
int l2s_cuda_swap_device(int device, int* previous);   /* make current; *previous to restore */
const char* l2s_cuda_error_string(int err);
int l2s_cuda_malloc(void** ptr, int64_t bytes, int device);
void l2s_cuda_free(void* ptr, int device);
int l2s_cuda_memset_async(void* ptr, int value, int64_t bytes, void* stream);
/* Which GEMM path the classifier uses: 1 cuBLASLt loaded, 0 fallback kernel, -1 not tried yet. */
int l2s_cublaslt_status(void);
unsigned long long l2s_cublaslt_calls(void);     /* GEMMs cuBLASLt has run since import */
#endif

#ifdef __cplusplus
}
#endif
#endif /* L2S_H */
