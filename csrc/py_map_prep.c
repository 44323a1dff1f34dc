/*
 * py_map_prep.c — bindings of the map preparation ops (map_prep.c, kernels/map_prep.cu): bilinear
 * or area resize and per-map normalisation, forward and backward.
 */
#include <string.h>
#include "binding.h"

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

static PyObject* resize_common(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, int backward) {
    static const char* const kwlist_f[] = {"x", "out", "mode", "weight", "accumulate", "stream", NULL};
    static const char* const kwlist_b[] = {"dout", "din", "mode", "weight", "accumulate", "stream", NULL};
    arg_t a[2] = {{backward ? "dout" : "x"}, {backward ? "din" : "out", NULL, 1}};
    const char* mode = "bilinear"; float weight = 1.f; int accumulate = 0; PyObject* stream = Py_None; void* st;
    if (parse_fast(backward ? "resize_maps_backward" : "resize_maps_forward", args, nargs, kwnames, "OO|sfpO", backward ? kwlist_b : kwlist_f, &a[0].obj, &a[1].obj,
                                     &mode, &weight, &accumulate, &stream) < 0)
        return NULL;
    l2s_resize_shape s;
    if (parse_resize_mode(mode, &s.mode) < 0 || check_finite(weight, "weight") < 0) return NULL;
    if (stream_from_py(stream, &st) < 0 || borrow_args(a, 2, stream) < 0) return NULL;
    if (require_present(&a[0], "") < 0 || require_present(&a[1], "") < 0) goto fail;
    /* the forward's input side is dout's partner din in backward */
    if (backward ? resize_setup(&s, &a[1].t, a[1].name, &a[0].t, a[0].name) : resize_setup(&s, &a[0].t, a[0].name, &a[1].t, a[1].name))
        goto fail;
    s.weight = weight; s.accumulate = accumulate;
    if (backward)
        L2S_RUN(&a[0].t, resize_maps_backward_cuda(&s, (const float*)a[0].t.data, (float*)a[1].t.data, st),
                (resize_maps_backward_cpu(&s, (const float*)a[0].t.data, (float*)a[1].t.data), 0));
    else
        L2S_RUN(&a[0].t, resize_maps_forward_cuda(&s, (const float*)a[0].t.data, (float*)a[1].t.data, st),
                (resize_maps_forward_cpu(&s, (const float*)a[0].t.data, (float*)a[1].t.data), 0));
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
static PyObject* py_resize_maps_forward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self; return resize_common(args, nargs, kwnames, 0);
}
PyDoc_STRVAR(resize_maps_backward_doc,
"resize_maps_backward(dout, din, mode='bilinear', weight=1.0, accumulate=False, stream=None)\n--\n\n"
"din (+)= weight * resize^T(dout): the gradient of resize_maps_forward.");
static PyObject* py_resize_maps_backward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self; return resize_common(args, nargs, kwnames, 1);
}

static int parse_norm_mode(const char* m, l2s_norm_mode* out) {
    if (strcmp(m, "sum") == 0) { *out = L2S_NORM_SUM; return 0; }
    if (strcmp(m, "max") == 0) { *out = L2S_NORM_MAX; return 0; }
    PyErr_Format(PyExc_ValueError, "mode must be 'sum' or 'max', got '%s'", m);
    return -1;
}

static PyObject* normalize_common(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, int backward) {
    static const char* const kwlist_f[] = {"x", "y", "mode", "eps", "stream", NULL};
    static const char* const kwlist_b[] = {"x", "dy", "dx", "mode", "eps", "stream", NULL};
    arg_t a[3] = {{"x"}, {backward ? "dy" : "y", NULL, !backward}, {"dx", NULL, 1}};
    int n = backward ? 3 : 2;
    const char* mode = "sum"; float eps = 1e-8f; PyObject* stream = Py_None; void* st;
    int rc = backward
        ? parse_fast("normalize_maps_backward", args, nargs, kwnames, "OOO|sfO", kwlist_b, &a[0].obj, &a[1].obj, &a[2].obj, &mode, &eps, &stream)
        : parse_fast("normalize_maps_forward", args, nargs, kwnames, "OO|sfO", kwlist_f, &a[0].obj, &a[1].obj, &mode, &eps, &stream);
    if (rc < 0) return NULL;
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
        if (backward)
            L2S_RUN(&a[0].t, normalize_maps_backward_cuda(P, M, nm, eps, a[0].t.data, a[1].t.data, a[2].t.data, st),
                    (normalize_maps_backward_cpu(P, M, nm, eps, a[0].t.data, a[1].t.data, a[2].t.data), 0));
        else
            L2S_RUN(&a[0].t, normalize_maps_forward_cuda(P, M, nm, eps, a[0].t.data, a[1].t.data, st),
                    (normalize_maps_forward_cpu(P, M, nm, eps, a[0].t.data, a[1].t.data), 0));
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
static PyObject* py_normalize_maps_forward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self; return normalize_common(args, nargs, kwnames, 0);
}
PyDoc_STRVAR(normalize_maps_backward_doc,
"normalize_maps_backward(x, dy, dx, mode='sum', eps=1e-8, stream=None)\n--\n\n"
"dx = the gradient of normalize_maps_forward at x, given dy.");
static PyObject* py_normalize_maps_backward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self; return normalize_common(args, nargs, kwnames, 1);
}

PyMethodDef map_prep_methods[] = {
    {"resize_maps_forward", L2S_FASTCALL(py_resize_maps_forward), resize_maps_forward_doc},
    {"resize_maps_backward", L2S_FASTCALL(py_resize_maps_backward), resize_maps_backward_doc},
    {"normalize_maps_forward", L2S_FASTCALL(py_normalize_maps_forward), normalize_maps_forward_doc},
    {"normalize_maps_backward", L2S_FASTCALL(py_normalize_maps_backward), normalize_maps_backward_doc},
    {NULL, NULL, 0, NULL}
};
