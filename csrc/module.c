/*
 * module.c — the _l2s Python module: argument parsing, validation and dispatch.
 * Every entry point borrows the caller's arrays (no copies), checks dtype, shape, device,
 * contiguity and index ranges, then runs the C op (CPU) or its CUDA twin with the GIL released.
 * Index arrays (tokens, steps, labels) are small host arrays on both back ends.
 */
#include <math.h>
#include "tensor.h"

#define PY_ARRAY_UNIQUE_SYMBOL l2s_ARRAY_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

/* ---------------------------------------------------------------------------------------
 * Argument plumbing: a table of the array arguments of one call.
 * ------------------------------------------------------------------------------------- */
typedef struct {
    const char* name;
    PyObject* obj;          /* NULL or Py_None: absent */
    int writable;
    int host_only;          /* must be on the CPU whatever the op's device */
    l2s_tensor t;
    int present;
} arg_t;

static void release_args(arg_t* a, int n) {
    for (int i = 0; i < n; i++) if (a[i].present) { tensor_release(&a[i].t); a[i].present = 0; }
}

/* Borrow every present argument; device-bound ones must share the first one's device. */
static int borrow_args(arg_t* a, int n, PyObject* stream) {
    int first_dev = -1;
    for (int i = 0; i < n; i++) {
        a[i].present = 0;
        if (a[i].obj == NULL || a[i].obj == Py_None) continue;
        if (tensor_from_py(a[i].obj, a[i].name, a[i].host_only ? Py_None : stream, a[i].writable, &a[i].t) < 0) {
            release_args(a, n);
            return -1;
        }
        a[i].present = 1;
        if (a[i].host_only) {
            if (a[i].t.device_type != L2S_DEV_CPU) {
                PyErr_Format(PyExc_ValueError, "%s must be a host (CPU) array: it is small index metadata", a[i].name);
                release_args(a, n);
                return -1;
            }
        } else if (first_dev < 0) {
            first_dev = i;
        } else if (tensor_check_same_device(&a[first_dev].t, a[first_dev].name, &a[i].t, a[i].name) < 0) {
            release_args(a, n);
            return -1;
        }
    }
    return 0;
}

static int require_present(const arg_t* a, const char* why) {
    if (a->present) return 0;
    PyErr_Format(PyExc_ValueError, "%s is required%s", a->name, why);
    return -1;
}

/* Runs the CUDA twin, or explains why it cannot. */
#ifdef L2S_WITH_CUDA
#define CUDA_DISPATCH(dev_id, call)                                                         \
    do {                                                                                    \
        int prev_ = -1, err_;                                                               \
        Py_BEGIN_ALLOW_THREADS                                                              \
        err_ = l2s_cuda_swap_device(dev_id, &prev_);                                        \
        if (!err_) { err_ = (call); if (prev_ != (dev_id)) l2s_cuda_swap_device(prev_, &prev_); } \
        Py_END_ALLOW_THREADS                                                                \
        if (err_) { PyErr_Format(PyExc_RuntimeError, "CUDA error: %s", l2s_cuda_error_string(err_)); goto fail; } \
    } while (0)
#else
#define CUDA_DISPATCH(dev_id, call)                                                         \
    do {                                                                                    \
        (void)(dev_id);                                                                     \
        PyErr_SetString(PyExc_RuntimeError, "got CUDA arrays, but this _l2s was built without CUDA "\
                        "(rebuild with nvcc on PATH or L2S_CUDA=1)");                       \
        goto fail;                                                                          \
    } while (0)
#endif

static int is_cuda(const l2s_tensor* t) { return t->device_type == L2S_DEV_CUDA; }

static int check_finite(double v, const char* name) {
    if (isfinite(v)) return 0;
    PyErr_Format(PyExc_ValueError, "%s must be finite", name);
    return -1;
}

/* ---------------------------------------------------------------------------------------
 * Attention maps
 * ------------------------------------------------------------------------------------- */

/* Validates q, k, tokens (and maps/dmaps of shape [B, T, N]); fills the shape. */
static int attn_setup(l2s_attn_shape* s, arg_t* q, arg_t* k, arg_t* tok, arg_t* maps, float scale) {
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
    const int32_t* tk = (const int32_t*)tok->t.data;
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
    const int64_t mshape[3] = {q->t.shape[0], T, q->t.shape[2]};
    if (tensor_check_dtype(&maps->t, maps->name, L2S_M_F32) < 0 || tensor_check_shape(&maps->t, maps->name, 3, mshape) < 0 ||
        tensor_check_contiguous(&maps->t, maps->name) < 0)
        return -1;
    if (check_finite(scale, "scale") < 0) return -1;
    s->B = (int)q->t.shape[0]; s->H = (int)q->t.shape[1]; s->N = (int)q->t.shape[2]; s->D = (int)q->t.shape[3];
    s->L = (int)L; s->T = (int)T; s->M = (int)M; s->scale = scale; s->dtype = q->t.dtype;
    for (int i = 0; i < 4; i++) { s->q_strides[i] = q->t.strides[i]; s->k_strides[i] = k->t.strides[i]; }
    return 0;
}

PyDoc_STRVAR(attn_maps_forward_doc,
"attn_maps_forward(q, k, tokens, maps, scale, stream=None)\n--\n\n"
"Cross-attention maps of chosen tokens, averaged over heads, without storing the full attention.\n"
"q [B,H,N,D] and k [B,H,L,D] (float32/float16/bfloat16, any strides); tokens [T,M] int32 host array\n"
"of token indices per object, padded with -1; maps [B,T,N] float32 output, overwritten.");
static PyObject* py_attn_maps_forward(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"q", "k", "tokens", "maps", "scale", "stream", NULL};
    arg_t a[4] = {{"q"}, {"k"}, {"tokens", NULL, 0, 1}, {"maps", NULL, 1}};
    float scale; PyObject* stream = Py_None; void* st;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOf|O", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj, &scale, &stream))
        return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 4, stream) < 0) return NULL;
    l2s_attn_shape s;
    for (int i = 0; i < 4; i++) if (require_present(&a[i], "") < 0) goto fail;
    if (attn_setup(&s, &a[0], &a[1], &a[2], &a[3], scale) < 0) goto fail;
    if (is_cuda(&a[0].t)) {
        CUDA_DISPATCH(a[0].t.device_id, attn_maps_forward_cuda(&s, a[0].t.data, a[1].t.data, (const int32_t*)a[2].t.data, (float*)a[3].t.data, st));
    } else {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = attn_maps_forward_cpu(&s, a[0].t.data, a[1].t.data, (const int32_t*)a[2].t.data, (float*)a[3].t.data);
        Py_END_ALLOW_THREADS
        if (rc) { PyErr_NoMemory(); goto fail; }
    }
    release_args(a, 4);
    Py_RETURN_NONE;
fail:
    release_args(a, 4);
    return NULL;
}

PyDoc_STRVAR(attn_maps_backward_doc,
"attn_maps_backward(q, k, tokens, dmaps, dq, dk, scale, stream=None)\n--\n\n"
"Backward of attn_maps_forward: from dmaps [B,T,N] float32 write dq [B,H,N,D] and dk [B,H,L,D]\n"
"(contiguous, q's dtype, overwritten). Softmax rows are recomputed, not stored.");
static PyObject* py_attn_maps_backward(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"q", "k", "tokens", "dmaps", "dq", "dk", "scale", "stream", NULL};
    arg_t a[6] = {{"q"}, {"k"}, {"tokens", NULL, 0, 1}, {"dmaps"}, {"dq", NULL, 1}, {"dk", NULL, 1}};
    float scale; PyObject* stream = Py_None; void* st;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOf|O", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &a[4].obj, &a[5].obj, &scale, &stream))
        return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 6, stream) < 0) return NULL;
    l2s_attn_shape s;
    for (int i = 0; i < 6; i++) if (require_present(&a[i], "") < 0) goto fail;
    if (attn_setup(&s, &a[0], &a[1], &a[2], &a[3], scale) < 0) goto fail;
    {
        const int64_t qsh[4] = {s.B, s.H, s.N, s.D}, ksh[4] = {s.B, s.H, s.L, s.D};
        if (tensor_check_dtype(&a[4].t, "dq", 1u << s.dtype) < 0 || tensor_check_shape(&a[4].t, "dq", 4, qsh) < 0 ||
            tensor_check_contiguous(&a[4].t, "dq") < 0 ||
            tensor_check_dtype(&a[5].t, "dk", 1u << s.dtype) < 0 || tensor_check_shape(&a[5].t, "dk", 4, ksh) < 0 ||
            tensor_check_contiguous(&a[5].t, "dk") < 0)
            goto fail;
    }
    if (is_cuda(&a[0].t)) {
        CUDA_DISPATCH(a[0].t.device_id, attn_maps_backward_cuda(&s, a[0].t.data, a[1].t.data, (const int32_t*)a[2].t.data,
                                                             (const float*)a[3].t.data, a[4].t.data, a[5].t.data, st));
    } else {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = attn_maps_backward_cpu(&s, a[0].t.data, a[1].t.data, (const int32_t*)a[2].t.data, (const float*)a[3].t.data,
                                    a[4].t.data, a[5].t.data);
        Py_END_ALLOW_THREADS
        if (rc) { PyErr_NoMemory(); goto fail; }
    }
    release_args(a, 6);
    Py_RETURN_NONE;
fail:
    release_args(a, 6);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Map preparation
 * ------------------------------------------------------------------------------------- */
static int parse_resize_mode(const char* m, l2s_resize_mode* out) {
    if (strcmp(m, "bilinear") == 0) { *out = L2S_RESIZE_BILINEAR; return 0; }
    if (strcmp(m, "area") == 0) { *out = L2S_RESIZE_AREA; return 0; }
    PyErr_Format(PyExc_ValueError, "mode must be 'bilinear' or 'area', got '%s'", m);
    return -1;
}

/* small: [..., h_s, w_s] is the input side, big: the output side of the forward. */
static int resize_setup(l2s_resize_shape* s, const l2s_tensor* src, const char* sn, const l2s_tensor* dst, const char* dn) {
    if (tensor_check_dtype(src, sn, L2S_M_F32) < 0 || tensor_check_dtype(dst, dn, L2S_M_F32) < 0) return -1;
    if (tensor_check_contiguous(src, sn) < 0 || tensor_check_contiguous(dst, dn) < 0) return -1;
    if (src->ndim < 2) { PyErr_Format(PyExc_ValueError, "%s must have at least 2 dims (..., h, w)", sn); return -1; }
    int64_t want[L2S_MAX_DIMS];
    for (int i = 0; i < src->ndim - 2; i++) want[i] = src->shape[i];
    want[src->ndim - 2] = -1; want[src->ndim - 1] = -1;
    if (tensor_check_shape(dst, dn, src->ndim, want) < 0) return -1;
    int64_t P = 1;
    for (int i = 0; i < src->ndim - 2; i++) P *= src->shape[i];
    int64_t hs = src->shape[src->ndim - 2], ws = src->shape[src->ndim - 1];
    int64_t hd = dst->shape[dst->ndim - 2], wd = dst->shape[dst->ndim - 1];
    if (hs < 1 || ws < 1 || hd < 1 || wd < 1 || hs > 65536 || ws > 65536 || hd > 65536 || wd > 65536) {
        PyErr_SetString(PyExc_ValueError, "map sides must be between 1 and 65536"); return -1;
    }
    s->P = P; s->h_in = (int)hs; s->w_in = (int)ws; s->h_out = (int)hd; s->w_out = (int)wd;
    return 0;
}

static PyObject* resize_common(PyObject* args, PyObject* kw, int backward) {
    static char* kwlist_f[] = {"x", "out", "mode", "weight", "accumulate", "stream", NULL};
    static char* kwlist_b[] = {"dout", "din", "mode", "weight", "accumulate", "stream", NULL};
    arg_t a[2] = {{backward ? "dout" : "x"}, {backward ? "din" : "out", NULL, 1}};
    const char* mode = "bilinear"; float weight = 1.f; int accumulate = 0; PyObject* stream = Py_None; void* st;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|sfpO", backward ? kwlist_b : kwlist_f, &a[0].obj, &a[1].obj,
                                     &mode, &weight, &accumulate, &stream))
        return NULL;
    l2s_resize_shape s;
    if (parse_resize_mode(mode, &s.mode) < 0 || check_finite(weight, "weight") < 0) return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 2, stream) < 0) return NULL;
    if (require_present(&a[0], "") < 0 || require_present(&a[1], "") < 0) goto fail;
    /* the forward's input side is dout's partner din in backward */
    if (backward ? resize_setup(&s, &a[1].t, a[1].name, &a[0].t, a[0].name) : resize_setup(&s, &a[0].t, a[0].name, &a[1].t, a[1].name))
        goto fail;
    s.weight = weight; s.accumulate = accumulate;
    if (is_cuda(&a[0].t)) {
        if (backward) CUDA_DISPATCH(a[0].t.device_id, resize_maps_backward_cuda(&s, (const float*)a[0].t.data, (float*)a[1].t.data, st));
        else CUDA_DISPATCH(a[0].t.device_id, resize_maps_forward_cuda(&s, (const float*)a[0].t.data, (float*)a[1].t.data, st));
    } else {
        Py_BEGIN_ALLOW_THREADS
        if (backward) resize_maps_backward_cpu(&s, (const float*)a[0].t.data, (float*)a[1].t.data);
        else resize_maps_forward_cpu(&s, (const float*)a[0].t.data, (float*)a[1].t.data);
        Py_END_ALLOW_THREADS
    }
    release_args(a, 2);
    Py_RETURN_NONE;
fail:
    release_args(a, 2);
    return NULL;
}

PyDoc_STRVAR(resize_maps_forward_doc,
"resize_maps_forward(x, out, mode='bilinear', weight=1.0, accumulate=False, stream=None)\n--\n\n"
"out[..., :, :] (+)= weight * resize(x[..., :, :]) for float32 maps [..., h, w] -> [..., H, W].\n"
"mode: 'bilinear' (torch interpolate, align_corners=False) or 'area' (adaptive average).\n"
"Average L layers into one grid with accumulate=True, weight=1/L.");
static PyObject* py_resize_maps_forward(PyObject* self, PyObject* args, PyObject* kw) { (void)self; return resize_common(args, kw, 0); }
PyDoc_STRVAR(resize_maps_backward_doc,
"resize_maps_backward(dout, din, mode='bilinear', weight=1.0, accumulate=False, stream=None)\n--\n\n"
"din (+)= weight * resize^T(dout): the gradient of resize_maps_forward.");
static PyObject* py_resize_maps_backward(PyObject* self, PyObject* args, PyObject* kw) { (void)self; return resize_common(args, kw, 1); }

static int parse_norm_mode(const char* m, l2s_norm_mode* out) {
    if (strcmp(m, "sum") == 0) { *out = L2S_NORM_SUM; return 0; }
    if (strcmp(m, "max") == 0) { *out = L2S_NORM_MAX; return 0; }
    PyErr_Format(PyExc_ValueError, "mode must be 'sum' or 'max', got '%s'", m);
    return -1;
}

static PyObject* normalize_common(PyObject* args, PyObject* kw, int backward) {
    static char* kwlist_f[] = {"x", "y", "mode", "eps", "stream", NULL};
    static char* kwlist_b[] = {"x", "dy", "dx", "mode", "eps", "stream", NULL};
    arg_t a[3] = {{"x"}, {backward ? "dy" : "y", NULL, !backward}, {"dx", NULL, 1}};
    int n = backward ? 3 : 2;
    const char* mode = "sum"; float eps = 1e-8f; PyObject* stream = Py_None; void* st;
    int ok = backward
        ? PyArg_ParseTupleAndKeywords(args, kw, "OOO|sfO", kwlist_b, &a[0].obj, &a[1].obj, &a[2].obj, &mode, &eps, &stream)
        : PyArg_ParseTupleAndKeywords(args, kw, "OO|sfO", kwlist_f, &a[0].obj, &a[1].obj, &mode, &eps, &stream);
    if (!ok) return NULL;
    l2s_norm_mode nm;
    if (parse_norm_mode(mode, &nm) < 0) return NULL;
    if (!(eps >= 0.f) || !isfinite(eps)) { PyErr_SetString(PyExc_ValueError, "eps must be finite and >= 0"); return NULL; }
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, n, stream) < 0) return NULL;
    for (int i = 0; i < n; i++) if (require_present(&a[i], "") < 0) goto fail;
    for (int i = 0; i < n; i++) {
        if (tensor_check_dtype(&a[i].t, a[i].name, L2S_M_F32) < 0 || tensor_check_contiguous(&a[i].t, a[i].name) < 0) goto fail;
        if (i > 0 && tensor_check_shape(&a[i].t, a[i].name, a[0].t.ndim, a[0].t.shape) < 0) goto fail;
    }
    if (a[0].t.ndim < 1 || a[0].t.shape[a[0].t.ndim - 1] < 1) {
        PyErr_SetString(PyExc_ValueError, "x must have a non-empty last dimension (the map)"); goto fail;
    }
    {
        int64_t M = a[0].t.shape[a[0].t.ndim - 1], P = tensor_numel(&a[0].t) / M;
        if (is_cuda(&a[0].t)) {
            if (backward) CUDA_DISPATCH(a[0].t.device_id, normalize_maps_backward_cuda(P, M, nm, eps, a[0].t.data, a[1].t.data, a[2].t.data, st));
            else CUDA_DISPATCH(a[0].t.device_id, normalize_maps_forward_cuda(P, M, nm, eps, a[0].t.data, a[1].t.data, st));
        } else {
            Py_BEGIN_ALLOW_THREADS
            if (backward) normalize_maps_backward_cpu(P, M, nm, eps, a[0].t.data, a[1].t.data, a[2].t.data);
            else normalize_maps_forward_cpu(P, M, nm, eps, a[0].t.data, a[1].t.data);
            Py_END_ALLOW_THREADS
        }
    }
    release_args(a, n);
    Py_RETURN_NONE;
fail:
    release_args(a, n);
    return NULL;
}

PyDoc_STRVAR(normalize_maps_forward_doc,
"normalize_maps_forward(x, y, mode='sum', eps=1e-8, stream=None)\n--\n\n"
"y = x / (sum(x) + eps) or x / (max(x) + eps) over the LAST dimension (float32, contiguous).");
static PyObject* py_normalize_maps_forward(PyObject* self, PyObject* args, PyObject* kw) { (void)self; return normalize_common(args, kw, 0); }
PyDoc_STRVAR(normalize_maps_backward_doc,
"normalize_maps_backward(x, dy, dx, mode='sum', eps=1e-8, stream=None)\n--\n\n"
"dx = the gradient of normalize_maps_forward at x, given dy.");
static PyObject* py_normalize_maps_backward(PyObject* self, PyObject* args, PyObject* kw) { (void)self; return normalize_common(args, kw, 1); }

/* ---------------------------------------------------------------------------------------
 * Relation classifier
 * ------------------------------------------------------------------------------------- */
static int parse_config(PyObject* o, l2s_classifier_config* c) {
    if (!PyTuple_Check(o)) {
        PyErr_Format(PyExc_TypeError, "config must be a tuple (n_maps, map_pixels, n_steps, step_dim, hidden1, "
                     "hidden2, n_relations, leaky_slope, ln_eps), not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!PyArg_ParseTuple(o, "iiiiiiiff;config must be a tuple (n_maps, map_pixels, n_steps, step_dim, hidden1, "
                          "hidden2, n_relations, leaky_slope, ln_eps)",
                          &c->n_maps, &c->map_pixels, &c->n_steps, &c->step_dim, &c->hidden1, &c->hidden2,
                          &c->n_relations, &c->leaky_slope, &c->ln_eps))
        return -1;
    const char* err = classifier_config_error(c);
    if (err) { PyErr_Format(PyExc_ValueError, "config: %s", err); return -1; }
    return 0;
}

PyDoc_STRVAR(classifier_sizes_doc,
"classifier_sizes(config, batch)\n--\n\n"
"(n_params, workspace_floats, input_dim) for a classifier config tuple and a batch size.");
static PyObject* py_classifier_sizes(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cfg; int B;
    if (!PyArg_ParseTuple(args, "Oi", &cfg, &B)) return NULL;
    l2s_classifier_config c;
    if (parse_config(cfg, &c) < 0) return NULL;
    if (B < 1) { PyErr_SetString(PyExc_ValueError, "batch must be >= 1"); return NULL; }
    l2s_classifier_offsets po = classifier_param_offsets(&c);
    l2s_classifier_workspace wo = classifier_workspace_offsets(&c, B);
    return Py_BuildValue("(LLL)", (long long)po.total, (long long)wo.total, (long long)((int64_t)c.n_maps * c.map_pixels));
}

PyDoc_STRVAR(classifier_layout_doc,
"classifier_layout(config)\n--\n\n"
"{name: (offset, shape)} of every parameter tensor inside the flat float32 parameter buffer.");
static PyObject* py_classifier_layout(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cfg;
    if (!PyArg_ParseTuple(args, "O", &cfg)) return NULL;
    l2s_classifier_config c;
    if (parse_config(cfg, &c) < 0) return NULL;
    l2s_classifier_offsets o = classifier_param_offsets(&c);
    long long D0 = classifier_input_dim(&c), H1 = c.hidden1, H2 = c.hidden2, R = c.n_relations;
    PyObject* d = Py_BuildValue(
        "{s:(L(LL)),s:(L(LL)),s:(L(L)),s:(L(L)),s:(L(L)),s:(L(LL)),s:(L(L)),s:(L(L)),s:(L(L)),s:(L(LL)),s:(L(L))}",
        "step_embedding", (long long)o.emb, (long long)(c.step_dim > 0 ? c.n_steps : 0), (long long)c.step_dim,
        "fc1.weight", (long long)o.w1, H1, D0, "fc1.bias", (long long)o.b1, H1,
        "ln1.weight", (long long)o.g1, H1, "ln1.bias", (long long)o.be1, H1,
        "fc2.weight", (long long)o.w2, H2, H1, "fc2.bias", (long long)o.b2, H2,
        "ln2.weight", (long long)o.g2, H2, "ln2.bias", (long long)o.be2, H2,
        "fc3.weight", (long long)o.w3, R, H2, "fc3.bias", (long long)o.b3, R);
    return d;
}

/* x-like [B, ...] with n_maps*map_pixels values per row. */
static int check_rows(const l2s_tensor* t, const char* name, int64_t B, int64_t per_row) {
    if (tensor_check_dtype(t, name, L2S_M_F32) < 0 || tensor_check_contiguous(t, name) < 0) return -1;
    if (t->ndim < 1 || t->shape[0] != B || tensor_numel(t) != B * per_row) {
        PyErr_Format(PyExc_ValueError, "%s must hold %lld rows of %lld values (n_maps * map_pixels)",
                     name, (long long)B, (long long)per_row);
        return -1;
    }
    return 0;
}

static int check_index_vector(const arg_t* a, int64_t B, int32_t limit, const char* what) {
    const int64_t shp[1] = {B};
    if (tensor_check_dtype(&a->t, a->name, L2S_M_I32) < 0 || tensor_check_shape(&a->t, a->name, 1, shp) < 0 ||
        tensor_check_contiguous(&a->t, a->name) < 0)
        return -1;
    const int32_t* v = (const int32_t*)a->t.data;
    for (int64_t i = 0; i < B; i++) {
        if (v[i] < 0 || v[i] >= limit) {
            PyErr_Format(PyExc_ValueError, "%s[%lld] = %d is out of range [0, %d) (%s)", a->name, (long long)i, v[i], limit, what);
            return -1;
        }
    }
    return 0;
}

static int check_vector(const l2s_tensor* t, const char* name, int64_t n) {
    const int64_t shp[1] = {n};
    if (tensor_check_dtype(t, name, L2S_M_F32) < 0 || tensor_check_shape(t, name, 1, shp) < 0 ||
        tensor_check_contiguous(t, name) < 0)
        return -1;
    return 0;
}

/* Shared checks of params, steps, labels, workspace for both passes. */
static int classifier_setup(const l2s_classifier_config* c, int64_t B, arg_t* params, arg_t* steps, arg_t* labels,
                            arg_t* ws, int need_labels) {
    if (require_present(params, "") < 0 || require_present(ws, "") < 0) return -1;
    if (check_fits_int(B, "batch") < 0) return -1;
    if (B < 1) { PyErr_SetString(PyExc_ValueError, "batch must be >= 1"); return -1; }
    l2s_classifier_offsets po = classifier_param_offsets(c);
    if (check_vector(&params->t, "params", po.total) < 0) return -1;
    l2s_classifier_workspace wo = classifier_workspace_offsets(c, (int)B);
    if (tensor_check_dtype(&ws->t, "workspace", L2S_M_F32) < 0 || tensor_check_contiguous(&ws->t, "workspace") < 0) return -1;
    if (tensor_numel(&ws->t) < wo.total) {
        PyErr_Format(PyExc_ValueError, "workspace holds %lld floats; batch %lld needs %lld (see classifier_sizes)",
                     (long long)tensor_numel(&ws->t), (long long)B, (long long)wo.total);
        return -1;
    }
    if (c->step_dim > 0) {
        if (require_present(steps, " when step_dim > 0") < 0 || check_index_vector(steps, B, c->n_steps, "n_steps") < 0) return -1;
    }
    if (need_labels && require_present(labels, " for the backward pass") < 0) return -1;
    if (labels->present && check_index_vector(labels, B, c->n_relations, "n_relations") < 0) return -1;
    return 0;
}

PyDoc_STRVAR(classifier_forward_doc,
"classifier_forward(config, params, x, steps, labels, workspace, probs, losses=None, stream=None)\n--\n\n"
"Relation-classifier forward. x [B, n_maps*map_pixels] (or [B, n_maps, h, w]) float32; steps, labels:\n"
"int32 host arrays [B] or None; probs [B, R] and losses [B] float32 outputs (losses needs labels).\n"
"The workspace keeps activations for classifier_backward.");
static PyObject* py_classifier_forward(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"config", "params", "x", "steps", "labels", "workspace", "probs", "losses", "stream", NULL};
    PyObject* cfg; PyObject* stream = Py_None; void* st;
    arg_t a[7] = {{"params"}, {"x"}, {"steps", NULL, 0, 1}, {"labels", NULL, 0, 1}, {"workspace", NULL, 1},
                  {"probs", NULL, 1}, {"losses", NULL, 1}};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOO|OO", kwlist, &cfg, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &a[4].obj, &a[5].obj, &a[6].obj, &stream))
        return NULL;
    l2s_classifier_config c;
    if (parse_config(cfg, &c) < 0 || stream_from_py(stream, &st) < 0 || borrow_args(a, 7, stream) < 0) return NULL;
    if (require_present(&a[1], "") < 0 || require_present(&a[5], "") < 0) goto fail;
    {
        int64_t B = a[1].t.ndim ? a[1].t.shape[0] : 0;
        if (classifier_setup(&c, B, &a[0], &a[2], &a[3], &a[4], 0) < 0) goto fail;
        if (check_rows(&a[1].t, "x", B, (int64_t)c.n_maps * c.map_pixels) < 0) goto fail;
        const int64_t psh[2] = {B, c.n_relations};
        if (tensor_check_dtype(&a[5].t, "probs", L2S_M_F32) < 0 || tensor_check_shape(&a[5].t, "probs", 2, psh) < 0 ||
            tensor_check_contiguous(&a[5].t, "probs") < 0)
            goto fail;
        if (a[3].present) {
            if (require_present(&a[6], " when labels are given") < 0 || check_vector(&a[6].t, "losses", B) < 0) goto fail;
        }
        const int32_t* steps = a[2].present ? (const int32_t*)a[2].t.data : NULL;
        const int32_t* labels = a[3].present ? (const int32_t*)a[3].t.data : NULL;
        float* losses = a[3].present ? (float*)a[6].t.data : NULL;
        if (is_cuda(&a[0].t)) {
            CUDA_DISPATCH(a[0].t.device_id, classifier_forward_cuda(&c, a[0].t.data, (int)B, a[1].t.data, steps, labels,
                                                                 a[4].t.data, a[5].t.data, losses, st));
        } else {
            Py_BEGIN_ALLOW_THREADS
            classifier_forward_cpu(&c, a[0].t.data, (int)B, a[1].t.data, steps, labels, a[4].t.data, a[5].t.data, losses);
            Py_END_ALLOW_THREADS
        }
    }
    release_args(a, 7);
    Py_RETURN_NONE;
fail:
    release_args(a, 7);
    return NULL;
}

PyDoc_STRVAR(classifier_backward_doc,
"classifier_backward(config, params, steps, labels, workspace, dx=None, grads=None, stream=None)\n--\n\n"
"Backward of the mean cross-entropy of the last classifier_forward on this workspace.\n"
"dx [B, n_maps*map_pixels] is overwritten with d(loss)/d(x); grads [n_params] is ACCUMULATED into.");
static PyObject* py_classifier_backward(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"config", "params", "steps", "labels", "workspace", "dx", "grads", "stream", NULL};
    PyObject* cfg; PyObject* stream = Py_None; void* st;
    arg_t a[6] = {{"params"}, {"steps", NULL, 0, 1}, {"labels", NULL, 0, 1}, {"workspace", NULL, 1},
                  {"dx", NULL, 1}, {"grads", NULL, 1}};
    a[4].obj = Py_None; a[5].obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|OOO", kwlist, &cfg, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &a[4].obj, &a[5].obj, &stream))
        return NULL;
    l2s_classifier_config c;
    if (parse_config(cfg, &c) < 0 || stream_from_py(stream, &st) < 0 || borrow_args(a, 6, stream) < 0) return NULL;
    if (require_present(&a[2], " for the backward pass") < 0) goto fail;
    {
        int64_t B = a[2].t.ndim ? a[2].t.shape[0] : 0;
        if (classifier_setup(&c, B, &a[0], &a[1], &a[2], &a[3], 1) < 0) goto fail;
        if (a[4].present && check_rows(&a[4].t, "dx", B, (int64_t)c.n_maps * c.map_pixels) < 0) goto fail;
        if (a[5].present && check_vector(&a[5].t, "grads", classifier_param_offsets(&c).total) < 0) goto fail;
        const int32_t* steps = a[1].present ? (const int32_t*)a[1].t.data : NULL;
        float* dx = a[4].present ? (float*)a[4].t.data : NULL;
        float* grads = a[5].present ? (float*)a[5].t.data : NULL;
        if (is_cuda(&a[0].t)) {
            CUDA_DISPATCH(a[0].t.device_id, classifier_backward_cuda(&c, a[0].t.data, (int)B, steps, a[2].t.data,
                                                                  a[3].t.data, dx, grads, st));
        } else {
            Py_BEGIN_ALLOW_THREADS
            classifier_backward_cpu(&c, a[0].t.data, (int)B, steps, a[2].t.data, a[3].t.data, dx, grads);
            Py_END_ALLOW_THREADS
        }
    }
    release_args(a, 6);
    Py_RETURN_NONE;
fail:
    release_args(a, 6);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Optimiser and latent update
 * ------------------------------------------------------------------------------------- */
PyDoc_STRVAR(adamw_update_doc,
"adamw_update(params, grads, m, v, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1, stream=None)\n--\n\n"
"One AdamW step in place over float32 contiguous arrays of equal size. step counts from 1.");
static PyObject* py_adamw_update(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"params", "grads", "m", "v", "lr", "beta1", "beta2", "eps", "weight_decay", "step", "stream", NULL};
    arg_t a[4] = {{"params", NULL, 1}, {"grads"}, {"m", NULL, 1}, {"v", NULL, 1}};
    l2s_adamw_config ac = {0.f, 0.9f, 0.999f, 1e-8f, 0.f, 1};
    PyObject* stream = Py_None; void* st;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOf|ffffiO", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &ac.lr, &ac.beta1, &ac.beta2, &ac.eps, &ac.weight_decay, &ac.step_t, &stream))
        return NULL;
    if (check_finite(ac.lr, "lr") < 0 || check_finite(ac.weight_decay, "weight_decay") < 0) return NULL;
    if (!(ac.beta1 >= 0.f && ac.beta1 < 1.f) || !(ac.beta2 >= 0.f && ac.beta2 < 1.f)) {
        PyErr_SetString(PyExc_ValueError, "beta1 and beta2 must be in [0, 1)"); return NULL;
    }
    if (!(ac.eps > 0.f)) { PyErr_SetString(PyExc_ValueError, "eps must be > 0"); return NULL; }
    if (ac.step_t < 1) { PyErr_SetString(PyExc_ValueError, "step must be >= 1 (it counts from 1)"); return NULL; }
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 4, stream) < 0) return NULL;
    for (int i = 0; i < 4; i++) if (require_present(&a[i], "") < 0) goto fail;
    {
        int64_t n = tensor_numel(&a[0].t);
        for (int i = 0; i < 4; i++) {
            if (tensor_check_dtype(&a[i].t, a[i].name, L2S_M_F32) < 0 || tensor_check_contiguous(&a[i].t, a[i].name) < 0) goto fail;
            if (tensor_numel(&a[i].t) != n) {
                PyErr_Format(PyExc_ValueError, "%s has %lld elements but params has %lld", a[i].name,
                             (long long)tensor_numel(&a[i].t), (long long)n);
                goto fail;
            }
        }
        if (is_cuda(&a[0].t)) {
            CUDA_DISPATCH(a[0].t.device_id, adamw_update_cuda(&ac, n, a[0].t.data, a[1].t.data, a[2].t.data, a[3].t.data, st));
        } else {
            Py_BEGIN_ALLOW_THREADS
            adamw_update_cpu(&ac, n, a[0].t.data, a[1].t.data, a[2].t.data, a[3].t.data);
            Py_END_ALLOW_THREADS
        }
    }
    release_args(a, 4);
    Py_RETURN_NONE;
fail:
    release_args(a, 4);
    return NULL;
}

PyDoc_STRVAR(latent_update_doc,
"latent_update(z, g, norms, step, normalize=True, stream=None)\n--\n\n"
"Per sample b: z[b] -= step * g[b] / ||g[b]|| (or step * g[b] when normalize is False), in place.\n"
"z, g: same shape [B, ...] and dtype (float32/float16/bfloat16), contiguous. norms [B] float32 receives\n"
"||g[b]||, or NaN where g[b] holds NaN/inf: that sample is left untouched.");
static PyObject* py_latent_update(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"z", "g", "norms", "step", "normalize", "stream", NULL};
    arg_t a[3] = {{"z", NULL, 1}, {"g"}, {"norms", NULL, 1}};
    float step; int normalize = 1; PyObject* stream = Py_None; void* st;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOf|pO", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &step, &normalize, &stream))
        return NULL;
    if (check_finite(step, "step") < 0) return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 3, stream) < 0) return NULL;
    for (int i = 0; i < 3; i++) if (require_present(&a[i], "") < 0) goto fail;
    if (tensor_check_dtype(&a[0].t, "z", L2S_M_FLOATS) < 0 || tensor_check_contiguous(&a[0].t, "z") < 0) goto fail;
    if (a[0].t.ndim < 1 || a[0].t.shape[0] < 1) { PyErr_SetString(PyExc_ValueError, "z must have a batch dimension"); goto fail; }
    if (tensor_check_dtype(&a[1].t, "g", 1u << a[0].t.dtype) < 0 || tensor_check_contiguous(&a[1].t, "g") < 0 ||
        tensor_check_shape(&a[1].t, "g", a[0].t.ndim, a[0].t.shape) < 0)
        goto fail;
    {
        int64_t B = a[0].t.shape[0], K = tensor_numel(&a[0].t) / B;
        if (check_vector(&a[2].t, "norms", B) < 0) goto fail;
        if (is_cuda(&a[0].t)) {
            CUDA_DISPATCH(a[0].t.device_id, latent_update_cuda(B, K, a[0].t.dtype, step, normalize, a[0].t.data, a[1].t.data, a[2].t.data, st));
        } else {
            Py_BEGIN_ALLOW_THREADS
            latent_update_cpu(B, K, a[0].t.dtype, step, normalize, a[0].t.data, a[1].t.data, a[2].t.data);
            Py_END_ALLOW_THREADS
        }
    }
    release_args(a, 3);
    Py_RETURN_NONE;
fail:
    release_args(a, 3);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Runtime queries
 * ------------------------------------------------------------------------------------- */
static PyObject* py_cuda_compiled(PyObject* self, PyObject* noargs) {
    (void)self; (void)noargs;
#ifdef L2S_WITH_CUDA
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}
static PyObject* py_cuda_device_count(PyObject* self, PyObject* noargs) {
    (void)self; (void)noargs;
#ifdef L2S_WITH_CUDA
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = l2s_cuda_device_count();
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
#else
    return PyLong_FromLong(0);
#endif
}
static PyObject* py_cuda_available(PyObject* self, PyObject* noargs) {
    PyObject* n = py_cuda_device_count(self, noargs);
    if (!n) return NULL;
    long v = PyLong_AsLong(n);
    Py_DECREF(n);
    return PyBool_FromLong(v > 0);
}
static PyObject* py_gemm_backend(PyObject* self, PyObject* noargs) {
    (void)self; (void)noargs;
#ifdef L2S_WITH_CUDA
    int s = l2s_cublaslt_status();
    return PyUnicode_FromString(s > 0 ? "cublaslt" : (s == 0 ? "fallback" : "not-loaded"));
#else
    return PyUnicode_FromString("cpu-only");
#endif
}

static PyMethodDef methods[] = {
    {"attn_maps_forward", (PyCFunction)(void (*)(void))py_attn_maps_forward, METH_VARARGS | METH_KEYWORDS, attn_maps_forward_doc},
    {"attn_maps_backward", (PyCFunction)(void (*)(void))py_attn_maps_backward, METH_VARARGS | METH_KEYWORDS, attn_maps_backward_doc},
    {"resize_maps_forward", (PyCFunction)(void (*)(void))py_resize_maps_forward, METH_VARARGS | METH_KEYWORDS, resize_maps_forward_doc},
    {"resize_maps_backward", (PyCFunction)(void (*)(void))py_resize_maps_backward, METH_VARARGS | METH_KEYWORDS, resize_maps_backward_doc},
    {"normalize_maps_forward", (PyCFunction)(void (*)(void))py_normalize_maps_forward, METH_VARARGS | METH_KEYWORDS, normalize_maps_forward_doc},
    {"normalize_maps_backward", (PyCFunction)(void (*)(void))py_normalize_maps_backward, METH_VARARGS | METH_KEYWORDS, normalize_maps_backward_doc},
    {"classifier_sizes", (PyCFunction)py_classifier_sizes, METH_VARARGS, classifier_sizes_doc},
    {"classifier_layout", (PyCFunction)py_classifier_layout, METH_VARARGS, classifier_layout_doc},
    {"classifier_forward", (PyCFunction)(void (*)(void))py_classifier_forward, METH_VARARGS | METH_KEYWORDS, classifier_forward_doc},
    {"classifier_backward", (PyCFunction)(void (*)(void))py_classifier_backward, METH_VARARGS | METH_KEYWORDS, classifier_backward_doc},
    {"adamw_update", (PyCFunction)(void (*)(void))py_adamw_update, METH_VARARGS | METH_KEYWORDS, adamw_update_doc},
    {"latent_update", (PyCFunction)(void (*)(void))py_latent_update, METH_VARARGS | METH_KEYWORDS, latent_update_doc},
    {"empty", (PyCFunction)(void (*)(void))buffer_empty, METH_VARARGS | METH_KEYWORDS,
     "empty(shape, dtype='float32', device='cpu', device_id=0)\n--\n\nUninitialised l2s-owned memory, exported through DLPack."},
    {"cuda_compiled", py_cuda_compiled, METH_NOARGS, "True if this build includes the CUDA kernels."},
    {"cuda_available", py_cuda_available, METH_NOARGS, "True if CUDA kernels are compiled and a device is usable."},
    {"cuda_device_count", py_cuda_device_count, METH_NOARGS, "Number of CUDA devices (0 without a driver)."},
    {"gemm_backend", py_gemm_backend, METH_NOARGS,
     "The classifier's CUDA GEMM path: 'cublaslt', 'fallback', 'not-loaded' (no GPU call yet) or 'cpu-only'."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_l2s",
    "The l2s C/CUDA core: attention-map extraction, map preparation, relation classifier, AdamW and\n"
    "latent-update ops. Arrays are borrowed zero-copy from NumPy or any DLPack producer.",
    -1, methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__l2s(void) {
    import_array();
    if (PyType_Ready(&BufferType) < 0) return NULL;
    PyObject* m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&BufferType);
    if (PyModule_AddObject(m, "Buffer", (PyObject*)&BufferType) < 0) { Py_DECREF(&BufferType); Py_DECREF(m); return NULL; }
    PyModule_AddIntConstant(m, "MAX_TOKEN_SLOTS", L2S_MAX_TOKEN_SLOTS);
    return m;
}
