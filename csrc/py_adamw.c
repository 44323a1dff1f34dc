/*
 * py_adamw.c — binding of the AdamW update over flat float32 buffers (adamw.c, kernels/adamw.cu).
 */
#include "binding.h"

PyDoc_STRVAR(adamw_update_doc,
"adamw_update(params, grads, m, v, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1, stream=None)\n--\n\n"
"One AdamW step in place over float32 contiguous arrays of equal size. step counts from 1.");
static PyObject* py_adamw_update(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"params", "grads", "m", "v", "lr", "beta1", "beta2", "eps", "weight_decay", "step", "stream", NULL};
    arg_t a[4] = {{"params", NULL, 1}, {"grads"}, {"m", NULL, 1}, {"v", NULL, 1}};
    l2s_adamw_config ac = {0.f, 0.9f, 0.999f, 1e-8f, 0.f, 1};
    PyObject* stream = Py_None; void* st;
    if (parse_fast("adamw_update", args, nargs, kwnames, "OOOOf|ffffiO", kwlist, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &ac.lr, &ac.beta1, &ac.beta2, &ac.eps, &ac.weight_decay, &ac.step_t, &stream) < 0)
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
        L2S_RUN(&a[0].t, adamw_update_cuda(&ac, n, a[0].t.data, a[1].t.data, a[2].t.data, a[3].t.data, st),
                (adamw_update_cpu(&ac, n, a[0].t.data, a[1].t.data, a[2].t.data, a[3].t.data), 0));
    }
    release_args(a, 4);
    Py_RETURN_NONE;
fail:
    release_args(a, 4);
    return NULL;
}

PyMethodDef adamw_methods[] = {
    {"adamw_update", L2S_FASTCALL(py_adamw_update), adamw_update_doc},
    {NULL, NULL, 0, NULL}
};
