/*
 * py_attn_maps.c — binding of the attention-map extraction (attn_maps.c, kernels/attn_maps.cu):
 * validates q, k, tokens and the maps, then runs the forward or backward.
 */
#include <string.h>
#include "binding.h"

/* Validates q, k, tokens (and maps/dmaps of shape [B, T, N]); fills the shape and tk, a private
 * copy of the token table: the op reads the copy with the GIL released, so another thread writing
 * the caller's array meanwhile cannot push an index out of range after it was checked. */
static int attn_setup(l2s_attn_shape* s, arg_t* q, arg_t* k, arg_t* tok, arg_t* maps, float scale,
                      int per_head, int token_mean, int32_t tk[L2S_MAX_TOKEN_SLOTS]) {
    if (tensor_check_dtype(&q->t, "q", L2S_M_FLOATS) < 0) return -1;
    if (tensor_check_dtype(&k->t, "k", 1u << q->t.dtype) < 0) return -1;
    const int64_t any4[4] = {-1, -1, -1, -1};
    if (tensor_check_shape(&q->t, "q", 4, any4) < 0) return -1;
    const int64_t kshape[4] = {q->t.shape[0], q->t.shape[1], -1, q->t.shape[3]};
    if (tensor_check_shape(&k->t, "k", 4, kshape) < 0) return -1;
    for (int i = 0; i < 4; i++) {
        if (q->t.shape[i] == 0 || k->t.shape[i] == 0) {
            PyErr_SetString(PyExc_ValueError, "q and k must not be empty"); return -1;
        }
        if (check_fits_int(q->t.shape[i], "a dimension of q") < 0 || check_fits_int(k->t.shape[i], "a dimension of k") < 0) return -1;
    }
    if (tensor_check_dtype(&tok->t, "tokens", L2S_M_I32) < 0) return -1;
    const int64_t any2[2] = {-1, -1};
    if (tensor_check_shape(&tok->t, "tokens", 2, any2) < 0 || tensor_check_contiguous(&tok->t, "tokens") < 0) return -1;
    int64_t T = tok->t.shape[0], M = tok->t.shape[1], L = k->t.shape[2];
    if (T < 1 || M < 1 || T * M > L2S_MAX_TOKEN_SLOTS) {
        PyErr_Format(PyExc_ValueError, "tokens has shape (%lld, %lld); need at least one object and token, "
                     "and at most %d slots in all", (long long)T, (long long)M, L2S_MAX_TOKEN_SLOTS);
        return -1;
    }
    memcpy(tk, tok->t.data, sizeof(int32_t) * (size_t)(T * M));
    for (int64_t t = 0; t < T; t++) {
        int valid = 0;
        for (int64_t m = 0; m < M; m++) {
            int32_t v = tk[t * M + m];
            if (v >= L || v < -1) {
                PyErr_Format(PyExc_ValueError, "tokens[%lld, %lld] = %d is out of range: k has %lld text tokens "
                             "(use -1 for padding)", (long long)t, (long long)m, v, (long long)L);
                return -1;
            }
            valid += v >= 0;
        }
        if (!valid) {
            PyErr_Format(PyExc_ValueError, "tokens row %lld has no token (all -1)", (long long)t);
            return -1;
        }
    }
    const int64_t mshape[4] = {q->t.shape[0], T, per_head ? q->t.shape[1] : q->t.shape[2], q->t.shape[2]};
    if (tensor_check_dtype(&maps->t, maps->name, L2S_M_F32) < 0 ||
        tensor_check_shape(&maps->t, maps->name, per_head ? 4 : 3, mshape) < 0 ||
        tensor_check_contiguous(&maps->t, maps->name) < 0)
        return -1;
    if (check_finite(scale, "scale") < 0) return -1;
    if (!(scale > 0.f)) {              /* the max-shifted softmax assumes a positive temperature */
        PyErr_Format(PyExc_ValueError, "scale must be > 0 (the softmax scale, usually 1/sqrt(d)), got %g", (double)scale);
        return -1;
    }
    s->B = (int)q->t.shape[0]; s->H = (int)q->t.shape[1]; s->N = (int)q->t.shape[2]; s->D = (int)q->t.shape[3];
    s->L = (int)L; s->T = (int)T; s->M = (int)M; s->scale = scale; s->dtype = q->t.dtype;
    s->per_head = per_head; s->token_mean = token_mean;
    for (int i = 0; i < 4; i++) { s->q_strides[i] = q->t.strides[i]; s->k_strides[i] = k->t.strides[i]; }
    return 0;
}

PyDoc_STRVAR(attn_maps_forward_doc,
"attn_maps_forward(q, k, tokens, maps, scale, stream=None, per_head=False, token_mean=False)\n--\n\n"
"Cross-attention maps of chosen tokens, averaged over heads, without storing the full attention.\n"
"q [B,H,N,D] and k [B,H,L,D] (float32/float16/bfloat16, any strides); tokens [T,M] int32 host array\n"
"of token indices per object, padded with -1; maps [B,T,N] float32 output, overwritten ([B,T,H,N],\n"
"one map per head, with per_head). token_mean: an object's map is the mean over its tokens, not the sum.");
static PyObject* py_attn_maps_forward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"q", "k", "tokens", "maps", "scale", "stream", "per_head", "token_mean", NULL};
    arg_t a[4] = {{"q"}, {"k"}, {"tokens", NULL, 0, 1}, {"maps", NULL, 1}};
    float scale; PyObject* stream = Py_None; void* st;
    int per_head = 0, token_mean = 0;
    if (parse_fast("attn_maps_forward", args, nargs, kwnames, "OOOOf|Opp", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj, &scale,
                                     &stream, &per_head, &token_mean) < 0)
        return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 4, stream) < 0) return NULL;
    l2s_attn_shape s;
    int32_t tk[L2S_MAX_TOKEN_SLOTS];
    for (int i = 0; i < 4; i++) if (require_present(&a[i], "") < 0) goto fail;
    if (attn_setup(&s, &a[0], &a[1], &a[2], &a[3], scale, per_head, token_mean, tk) < 0) goto fail;
    L2S_RUN(&a[0].t, attn_maps_forward_cuda(&s, a[0].t.data, a[1].t.data, tk, (float*)a[3].t.data, st),
            attn_maps_forward_cpu(&s, a[0].t.data, a[1].t.data, tk, (float*)a[3].t.data));
    release_args(a, 4);
    Py_RETURN_NONE;
fail:
    release_args(a, 4);
    return NULL;
}

PyDoc_STRVAR(attn_maps_backward_doc,
"attn_maps_backward(q, k, tokens, dmaps, dq, dk, scale, stream=None, per_head=False, token_mean=False, scratch=None)\n--\n\n"
"Backward of attn_maps_forward: from dmaps [B,T,N] ([B,T,H,N] with per_head) float32 write dq [B,H,N,D]\n"
"and dk [B,H,L,D] (contiguous, q's dtype, overwritten). Softmax rows are recomputed, not stored.\n"
"scratch: float32 [B,H,L,D] on q's device, where a half-precision dk is summed on a GPU (required there).");
static PyObject* py_attn_maps_backward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"q", "k", "tokens", "dmaps", "dq", "dk", "scale", "stream", "per_head", "token_mean",
                                         "scratch", NULL};
    arg_t a[7] = {{"q"}, {"k"}, {"tokens", NULL, 0, 1}, {"dmaps"}, {"dq", NULL, 1}, {"dk", NULL, 1}, {"scratch", NULL, 1}};
    float scale; PyObject* stream = Py_None; void* st;
    int per_head = 0, token_mean = 0;
    a[6].obj = Py_None;
    if (parse_fast("attn_maps_backward", args, nargs, kwnames, "OOOOOOf|OppO", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &a[4].obj, &a[5].obj, &scale, &stream, &per_head, &token_mean, &a[6].obj) < 0)
        return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 7, stream) < 0) return NULL;
    l2s_attn_shape s;
    int32_t tk[L2S_MAX_TOKEN_SLOTS];
    for (int i = 0; i < 6; i++) if (require_present(&a[i], "") < 0) goto fail;
    if (attn_setup(&s, &a[0], &a[1], &a[2], &a[3], scale, per_head, token_mean, tk) < 0) goto fail;
    {
        const int64_t qsh[4] = {s.B, s.H, s.N, s.D}, ksh[4] = {s.B, s.H, s.L, s.D};
        if (tensor_check_dtype(&a[4].t, "dq", 1u << s.dtype) < 0 || tensor_check_shape(&a[4].t, "dq", 4, qsh) < 0 ||
            tensor_check_contiguous(&a[4].t, "dq") < 0 ||
            tensor_check_dtype(&a[5].t, "dk", 1u << s.dtype) < 0 || tensor_check_shape(&a[5].t, "dk", 4, ksh) < 0 ||
            tensor_check_contiguous(&a[5].t, "dk") < 0)
            goto fail;
        if (a[0].t.device_type == L2S_DEV_CUDA && s.dtype != L2S_F32 &&
            require_present(&a[6], " for a half-precision backward on a GPU (float32, k's shape)") < 0)
            goto fail;
        if (a[6].present && (tensor_check_dtype(&a[6].t, "scratch", L2S_M_F32) < 0 ||
                             tensor_check_shape(&a[6].t, "scratch", 4, ksh) < 0 ||
                             tensor_check_contiguous(&a[6].t, "scratch") < 0))
            goto fail;
    }
    L2S_RUN(&a[0].t, attn_maps_backward_cuda(&s, a[0].t.data, a[1].t.data, tk, (const float*)a[3].t.data, a[4].t.data,
                                             a[5].t.data, a[6].present ? (float*)a[6].t.data : NULL, st),
            attn_maps_backward_cpu(&s, a[0].t.data, a[1].t.data, tk, (const float*)a[3].t.data, a[4].t.data, a[5].t.data));
    release_args(a, 7);
    Py_RETURN_NONE;
fail:
    release_args(a, 7);
    return NULL;
}

PyMethodDef attn_maps_methods[] = {
    {"attn_maps_forward", L2S_FASTCALL(py_attn_maps_forward), attn_maps_forward_doc},
    {"attn_maps_backward", L2S_FASTCALL(py_attn_maps_backward), attn_maps_backward_doc},
    {NULL, NULL, 0, NULL}
};
