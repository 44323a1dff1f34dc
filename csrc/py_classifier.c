/*
 * py_classifier.c — bindings of the fused relation classifier (classifier.c, kernels/classifier.cu):
 * a config made once by named fields, sizes and the parameter table from the core, forward and
 * backward passes.
 */
#include "binding.h"

/* A validated config, made once by classifier_config() and passed to every call: parsing it is a
 * type check and a copy, cheaper than reading nine fields per call. */
static const char* CONFIG_CAPSULE = "l2s.classifier_config";

static int parse_config(PyObject* o, l2s_classifier_config* c) {
    return config_capsule_read(o, CONFIG_CAPSULE, "classifier_config(n_maps=..., ...)", c, sizeof(*c));
}

PyDoc_STRVAR(classifier_config_doc,
"classifier_config(*, n_maps, map_pixels, n_steps, step_dim, hidden1, hidden2, n_relations, leaky_slope=0.1, ln_eps=1e-5)\n--\n\n"
"A validated relation-classifier config, by named fields, for the other classifier_* calls.");
static PyObject* py_classifier_config(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"n_maps", "map_pixels", "n_steps", "step_dim", "hidden1", "hidden2", "n_relations",
                             "leaky_slope", "ln_eps", NULL};
    l2s_classifier_config c = {0, 0, 0, 0, 0, 0, 0, 0.1f, 1e-5f};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$iiiiiiiff", kwlist, &c.n_maps, &c.map_pixels, &c.n_steps, &c.step_dim,
                                     &c.hidden1, &c.hidden2, &c.n_relations, &c.leaky_slope, &c.ln_eps))
        return NULL;
    const char* err = classifier_config_error(&c);
    if (err) { PyErr_Format(PyExc_ValueError, "config: %s", err); return NULL; }
    return config_capsule_new(&c, sizeof(c), CONFIG_CAPSULE);
}

PyDoc_STRVAR(classifier_sizes_doc,
"classifier_sizes(config, batch)\n--\n\n"
"(n_params, workspace_floats, input_dim) for a classifier_config and a batch size.");
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

static const char* INIT_NAMES[] = {"zeros", "ones", "fan_in_uniform", "normal"};

PyDoc_STRVAR(classifier_layout_doc,
"classifier_layout(config)\n--\n\n"
"{name: (offset, shape, init, fan_in)} of every parameter tensor inside the flat float32 buffer, in\n"
"buffer order (the core's table). init: 'zeros', 'ones', 'fan_in_uniform' (U(+-1/sqrt(fan_in))) or\n"
"'normal' (N(0, 0.1^2)).");
static PyObject* py_classifier_layout(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cfg;
    if (!PyArg_ParseTuple(args, "O", &cfg)) return NULL;
    l2s_classifier_config c;
    if (parse_config(cfg, &c) < 0) return NULL;
    l2s_param_entry table[L2S_CLASSIFIER_N_TENSORS];
    classifier_param_table(&c, table);
    PyObject* d = PyDict_New();
    for (int i = 0; d && i < L2S_CLASSIFIER_N_TENSORS; i++) {
        const l2s_param_entry* e = &table[i];
        PyObject* v = e->ndim == 2
            ? Py_BuildValue("(L(LL)sL)", (long long)e->offset, (long long)e->shape[0], (long long)e->shape[1],
                            INIT_NAMES[e->init], (long long)e->fan_in)
            : Py_BuildValue("(L(L)sL)", (long long)e->offset, (long long)e->shape[0], INIT_NAMES[e->init],
                            (long long)e->fan_in);
        if (!v || PyDict_SetItemString(d, e->name, v) < 0) { Py_XDECREF(v); Py_CLEAR(d); break; }
        Py_DECREF(v);
    }
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

/* Shared checks of params, steps, labels, workspace for both passes. Steps and labels are copied
 * into *idx (2 B int32, PyMem_Free it) and checked there: the op reads the copies (NULL if absent). */
static int classifier_setup(const l2s_classifier_config* c, int64_t B, arg_t* params, arg_t* steps, arg_t* labels,
                            arg_t* ws, int need_labels, int32_t** idx, const int32_t** steps_c,
                            const int32_t** labels_c) {
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
    if (c->step_dim > 0 && require_present(steps, " when step_dim > 0") < 0) return -1;
    if (need_labels && require_present(labels, " for the backward pass") < 0) return -1;
    *idx = PyMem_Malloc(sizeof(int32_t) * 2 * (size_t)B);
    if (!*idx) { PyErr_NoMemory(); return -1; }
    *steps_c = *labels_c = NULL;
    if (c->step_dim > 0) {
        if (copy_index_vector(steps, B, c->n_steps, "n_steps", *idx) < 0) return -1;
        *steps_c = *idx;
    }
    if (labels->present) {
        if (copy_index_vector(labels, B, c->n_relations, "n_relations", *idx + B) < 0) return -1;
        *labels_c = *idx + B;
    }
    return 0;
}

PyDoc_STRVAR(classifier_forward_doc,
"classifier_forward(config, params, x, steps, labels, workspace, probs, losses=None, stream=None)\n--\n\n"
"Relation-classifier forward. x [B, n_maps*map_pixels] (or [B, n_maps, h, w]) float32; steps, labels:\n"
"int32 host arrays [B] or None; probs [B, R] and losses [B] float32 outputs (losses needs labels).\n"
"The workspace keeps activations for classifier_backward.");
static PyObject* py_classifier_forward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"config", "params", "x", "steps", "labels", "workspace", "probs", "losses", "stream", NULL};
    PyObject* cfg; PyObject* stream = Py_None; void* st;
    arg_t a[7] = {{"params"}, {"x"}, {"steps", NULL, 0, 1}, {"labels", NULL, 0, 1}, {"workspace", NULL, 1},
                  {"probs", NULL, 1}, {"losses", NULL, 1}};
    if (parse_fast("classifier_forward", args, nargs, kwnames, "OOOOOOO|OO", kwlist, &cfg, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &a[4].obj, &a[5].obj, &a[6].obj, &stream) < 0)
        return NULL;
    l2s_classifier_config c;
    int32_t* idx = NULL;
    const int32_t *steps = NULL, *labels = NULL;
    if (parse_config(cfg, &c) < 0 || stream_from_py(stream, &st) < 0 || borrow_args(a, 7, stream) < 0) return NULL;
    if (require_present(&a[1], "") < 0 || require_present(&a[5], "") < 0) goto fail;
    {
        int64_t B = a[1].t.ndim ? a[1].t.shape[0] : 0;
        if (classifier_setup(&c, B, &a[0], &a[2], &a[3], &a[4], 0, &idx, &steps, &labels) < 0) goto fail;
        if (check_rows(&a[1].t, "x", B, (int64_t)c.n_maps * c.map_pixels) < 0) goto fail;
        const int64_t psh[2] = {B, c.n_relations};
        if (tensor_check_dtype(&a[5].t, "probs", L2S_M_F32) < 0 || tensor_check_shape(&a[5].t, "probs", 2, psh) < 0 ||
            tensor_check_contiguous(&a[5].t, "probs") < 0)
            goto fail;
        if (a[3].present) {
            if (require_present(&a[6], " when labels are given") < 0 || check_vector(&a[6].t, "losses", B) < 0) goto fail;
        }
        float* losses = a[3].present ? (float*)a[6].t.data : NULL;
        L2S_RUN(&a[0].t, classifier_forward_cuda(&c, a[0].t.data, (int)B, a[1].t.data, steps, labels, a[4].t.data,
                                                 a[5].t.data, losses, st),
                (classifier_forward_cpu(&c, a[0].t.data, (int)B, a[1].t.data, steps, labels, a[4].t.data, a[5].t.data,
                                        losses), 0));
    }
    return end_call(a, 7, idx, 1);
fail:
    return end_call(a, 7, idx, 0);
}

PyDoc_STRVAR(classifier_backward_doc,
"classifier_backward(config, params, steps, labels, workspace, dx=None, grads=None, stream=None)\n--\n\n"
"Backward of the mean cross-entropy of the last classifier_forward on this workspace.\n"
"dx [B, n_maps*map_pixels] is overwritten with d(loss)/d(x); grads [n_params] is ACCUMULATED into.");
static PyObject* py_classifier_backward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"config", "params", "steps", "labels", "workspace", "dx", "grads", "stream", NULL};
    PyObject* cfg; PyObject* stream = Py_None; void* st;
    arg_t a[6] = {{"params"}, {"steps", NULL, 0, 1}, {"labels", NULL, 0, 1}, {"workspace", NULL, 1},
                  {"dx", NULL, 1}, {"grads", NULL, 1}};
    a[4].obj = Py_None; a[5].obj = Py_None;
    if (parse_fast("classifier_backward", args, nargs, kwnames, "OOOOO|OOO", kwlist, &cfg, &a[0].obj, &a[1].obj, &a[2].obj, &a[3].obj,
                                     &a[4].obj, &a[5].obj, &stream) < 0)
        return NULL;
    l2s_classifier_config c;
    int32_t* idx = NULL;
    const int32_t *steps = NULL, *labels = NULL;
    if (parse_config(cfg, &c) < 0 || stream_from_py(stream, &st) < 0 || borrow_args(a, 6, stream) < 0) return NULL;
    if (require_present(&a[2], " for the backward pass") < 0) goto fail;
    {
        int64_t B = a[2].t.ndim ? a[2].t.shape[0] : 0;
        if (classifier_setup(&c, B, &a[0], &a[1], &a[2], &a[3], 1, &idx, &steps, &labels) < 0) goto fail;
        if (a[4].present && check_rows(&a[4].t, "dx", B, (int64_t)c.n_maps * c.map_pixels) < 0) goto fail;
        if (a[5].present && check_vector(&a[5].t, "grads", classifier_param_offsets(&c).total) < 0) goto fail;
        float* dx = a[4].present ? (float*)a[4].t.data : NULL;
        float* grads = a[5].present ? (float*)a[5].t.data : NULL;
        L2S_RUN(&a[0].t, classifier_backward_cuda(&c, a[0].t.data, (int)B, steps, labels, a[3].t.data, dx, grads, st),
                (classifier_backward_cpu(&c, a[0].t.data, (int)B, steps, labels, a[3].t.data, dx, grads), 0));
    }
    return end_call(a, 6, idx, 1);
fail:
    return end_call(a, 6, idx, 0);
}

PyMethodDef classifier_methods[] = {
    {"classifier_config", (PyCFunction)(void (*)(void))py_classifier_config, METH_VARARGS | METH_KEYWORDS, classifier_config_doc},
    {"classifier_sizes", (PyCFunction)py_classifier_sizes, METH_VARARGS, classifier_sizes_doc},
    {"classifier_layout", (PyCFunction)py_classifier_layout, METH_VARARGS, classifier_layout_doc},
    {"classifier_forward", L2S_FASTCALL(py_classifier_forward), classifier_forward_doc},
    {"classifier_backward", L2S_FASTCALL(py_classifier_backward), classifier_backward_doc},
    {NULL, NULL, 0, NULL}
};
