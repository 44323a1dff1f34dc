/*
 * py_latent.c — binding of the per-sample latent update (latent.c, kernels/latent.cu).
 */
#include "binding.h"

PyDoc_STRVAR(latent_update_doc,
"latent_update(z, g, norms, step, normalize=True, stream=None)\n--\n\n"
"Per sample b: z[b] -= step * g[b] / ||g[b]|| (or step * g[b] when normalize is False), in place.\n"
"z, g: same shape [B, ...] and dtype (float32/float16/bfloat16), contiguous. norms [B] float32 receives\n"
"||g[b]||, or NaN where g[b] holds NaN/inf: that sample is left untouched.");
static PyObject* py_latent_update(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"z", "g", "norms", "step", "normalize", "stream", NULL};
    arg_t a[3] = {{"z", NULL, 1}, {"g"}, {"norms", NULL, 1}};
    float step; int normalize = 1; PyObject* stream = Py_None; void* st;
    if (parse_fast("latent_update", args, nargs, kwnames, "OOOf|pO", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &step, &normalize, &stream) < 0)
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
        L2S_RUN(&a[0].t, latent_update_cuda(B, K, a[0].t.dtype, step, normalize, a[0].t.data, a[1].t.data, a[2].t.data, st),
                (latent_update_cpu(B, K, a[0].t.dtype, step, normalize, a[0].t.data, a[1].t.data, a[2].t.data), 0));
    }
    release_args(a, 3);
    Py_RETURN_NONE;
fail:
    release_args(a, 3);
    return NULL;
}

PyMethodDef latent_methods[] = {
    {"latent_update", L2S_FASTCALL(py_latent_update), latent_update_doc},
    {NULL, NULL, 0, NULL}
};
