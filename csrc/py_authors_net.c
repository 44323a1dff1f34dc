/*
 * py_authors_net.c — bindings of the authors' relation classifier (authors_net.c, its steps in
 * authors_net_cpu.c and kernels/authors_net.cu): a config made once by named fields, sizes and the
 * parameter table from the core, forward and backward passes on the device of the parameters.
 */
#include "binding.h"

static const char* CONFIG_CAPSULE = "l2s.authors_config";

static int parse_config(PyObject* o, l2s_authors_config* c) {
    return config_capsule_read(o, CONFIG_CAPSULE, "authors_config(d=..., ...)", c, sizeof(*c));
}

PyDoc_STRVAR(authors_config_doc,
"authors_config(*, d, map_pixels, max_channels, n_steps, ex_layers, ex_heads, ex_ff, pool_heads, cl_layers,\n"
"               cl_heads, cl_ff, step_dim, n_relations, ln_eps=1e-5, leaky_slope=0.1)\n--\n\n"
"A validated config of the authors' classifier for the other authors_* calls.");
static PyObject* py_authors_config(PyObject* self, PyObject* args, PyObject* kw) {
    (void)self;
    static char* kwlist[] = {"d", "map_pixels", "max_channels", "n_steps", "ex_layers", "ex_heads", "ex_ff",
                             "pool_heads", "cl_layers", "cl_heads", "cl_ff", "step_dim", "n_relations", "ln_eps",
                             "leaky_slope", NULL};
    enum { UNSET = -2147483647 - 1 };
    l2s_authors_config c = {UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET, UNSET,
                            1e-5f, 0.1f};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$iiiiiiiiiiiiiff", kwlist, &c.d, &c.map_pixels, &c.max_channels,
                                     &c.n_steps, &c.ex_layers, &c.ex_heads, &c.ex_ff, &c.pool_heads, &c.cl_layers,
                                     &c.cl_heads, &c.cl_ff, &c.step_dim, &c.n_relations, &c.ln_eps, &c.leaky_slope))
        return NULL;
    const int* fields = &c.d;                 /* the 13 int fields, in kwlist order */
    for (int i = 0; i < 13; i++)
        if (fields[i] == UNSET) { PyErr_Format(PyExc_TypeError, "authors_config: missing %s", kwlist[i]); return NULL; }
    const char* err = authors_config_error(&c);
    if (err) { PyErr_Format(PyExc_ValueError, "config: %s", err); return NULL; }
    return config_capsule_new(&c, sizeof(c), CONFIG_CAPSULE);
}

static int check_batch(const l2s_authors_config* c, int64_t B, int64_t C, int64_t* ws_floats) {
    if (B < 1 || B > INT32_MAX) { PyErr_SetString(PyExc_ValueError, "batch must be in [1, 2^31)"); return -1; }
    if (C < 1 || C > c->max_channels) {
        PyErr_Format(PyExc_ValueError, "channels must be in [1, %d] (the positional table's rows), got %lld",
                     c->max_channels, (long long)C);
        return -1;
    }
    *ws_floats = authors_workspace_size(c, (int)B, (int)C);
    if (*ws_floats < 0) {
        PyErr_Format(PyExc_ValueError, "batch %lld x %lld channels is too large for one pass", (long long)B, (long long)C);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(authors_sizes_doc,
"authors_sizes(config, batch, channels)\n--\n\n"
"(n_params, n_trained, workspace_floats): the flat buffer's length, how many of its first values are\n"
"trained (the positional tables follow), and the workspace a pass of that batch and channel count needs.");
static PyObject* py_authors_sizes(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cfg; long long B, C; int64_t ws;
    if (!PyArg_ParseTuple(args, "OLL", &cfg, &B, &C)) return NULL;
    l2s_authors_config c;
    if (parse_config(cfg, &c) < 0 || check_batch(&c, B, C, &ws) < 0) return NULL;
    l2s_authors_offsets o = authors_param_offsets(&c);
    return Py_BuildValue("(LLL)", (long long)o.total, (long long)o.n_trained, (long long)ws);
}

PyDoc_STRVAR(authors_layout_doc,
"authors_layout(config)\n--\n\n"
"{state-dict name: (offset, numel)} of every tensor inside the flat float32 buffer, in buffer order.");
static PyObject* py_authors_layout(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cfg;
    if (!PyArg_ParseTuple(args, "O", &cfg)) return NULL;
    l2s_authors_config c;
    if (parse_config(cfg, &c) < 0) return NULL;
    l2s_authors_tensor* table = PyMem_Malloc(sizeof(l2s_authors_tensor) * L2S_AUTHORS_MAX_TENSORS);
    if (!table) return PyErr_NoMemory();
    int count = authors_param_table(&c, table);
    PyObject* d = PyDict_New();
    for (int i = 0; d && i < count; i++) {
        PyObject* v = Py_BuildValue("(LL)", (long long)table[i].offset, (long long)table[i].numel);
        if (!v || PyDict_SetItemString(d, table[i].name, v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    PyMem_Free(table);
    return d;
}

/* params, workspace, steps, labels, dropout: what both passes check the same way. */
static int setup(const l2s_authors_config* c, int64_t B, int64_t C, arg_t* params, arg_t* ws, arg_t* steps,
                 arg_t* labels, int need_labels, double p, int32_t** idx, const int32_t** labels_c) {
    int64_t ws_floats;
    if (require_present(params, "") < 0 || require_present(ws, "") < 0 || require_present(steps, "") < 0) return -1;
    if (need_labels && require_present(labels, " for the backward pass") < 0) return -1;
    if (check_batch(c, B, C, &ws_floats) < 0) return -1;
    if (check_vector(&params->t, "params", authors_param_offsets(c).total) < 0) return -1;
    if (tensor_check_dtype(&ws->t, "workspace", L2S_M_F32) < 0 || tensor_check_contiguous(&ws->t, "workspace") < 0)
        return -1;
    if (tensor_numel(&ws->t) < ws_floats) {
        PyErr_Format(PyExc_ValueError, "workspace holds %lld floats; batch %lld x %lld channels needs %lld (see "
                     "authors_sizes)", (long long)tensor_numel(&ws->t), (long long)B, (long long)C, (long long)ws_floats);
        return -1;
    }
    if (!(p >= 0.0 && p < 1.0)) { PyErr_SetString(PyExc_ValueError, "dropout must be in [0, 1)"); return -1; }
    *idx = PyMem_Malloc(sizeof(int32_t) * 2 * (size_t)B);
    if (!*idx) { PyErr_NoMemory(); return -1; }
    if (copy_index_vector(steps, B, c->n_steps, "n_steps", *idx) < 0) return -1;
    *labels_c = NULL;
    if (labels->present) {
        if (copy_index_vector(labels, B, c->n_relations, "n_relations", *idx + B) < 0) return -1;
        *labels_c = *idx + B;
    }
    return 0;
}

/* maps-like [B, 2, C, map_pixels] or [B, 2, C, S, S], float32, contiguous: its C (or -1). */
static int64_t map_channels(const l2s_authors_config* c, const l2s_tensor* t, const char* name, int64_t B) {
    if (tensor_check_dtype(t, name, L2S_M_F32) < 0 || tensor_check_contiguous(t, name) < 0) return -1;
    int64_t pixels = t->ndim == 4 ? t->shape[3] : t->ndim == 5 ? t->shape[3] * t->shape[4] : -1;
    if ((B >= 0 && t->ndim >= 1 && t->shape[0] != B) || t->ndim < 4 || t->shape[1] != 2 || pixels != c->map_pixels) {
        PyErr_Format(PyExc_ValueError, "%s must be [B, 2, C, %d] or [B, 2, C, S, S] with S*S = %d%s", name,
                     c->map_pixels, c->map_pixels, B >= 0 ? " and the batch of labels" : "");
        return -1;
    }
    return t->shape[2];
}

static int parse_seed(PyObject* o, uint64_t* seed) {
    if (o == Py_None) { *seed = 0; return 0; }
    if (!PyLong_Check(o)) { PyErr_SetString(PyExc_TypeError, "seed must be an int"); return -1; }
    *seed = (uint64_t)PyLong_AsUnsignedLongLongMask(o);
    return PyErr_Occurred() ? -1 : 0;
}

/* Both passes: the config, the dropout seed, the stream, then the arrays borrowed. */
static int pass_args(PyObject* cfg, PyObject* seed_obj, PyObject* stream, arg_t* a, int n, l2s_authors_config* c,
                     uint64_t* seed, void** st) {
    if (parse_config(cfg, c) < 0 || parse_seed(seed_obj, seed) < 0 || stream_from_py(stream, st) < 0) return -1;
    return borrow_args(a, n, stream);
}

PyDoc_STRVAR(authors_forward_doc,
"authors_forward(config, params, maps, steps, labels, workspace, probs, losses=None, dropout=0.0, seed=0, stream=None)\n--\n\n"
"The authors' classifier forward. maps [B, 2, C, S*S] or [B, 2, C, S, S] float32 (C <= max_channels);\n"
"steps int32 [B] embedding rows; labels int32 [B] or None; probs [B, K] and losses [B] outputs.\n"
"dropout > 0 is training mode, its masks a function of seed alone. The workspace keeps what\n"
"authors_backward needs.");
static PyObject* py_authors_forward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"config", "params", "maps", "steps", "labels", "workspace", "probs", "losses",
                                         "dropout", "seed", "stream", NULL};
    PyObject* cfg; PyObject* seed_obj = Py_None; PyObject* stream = Py_None; float p = 0.f; void* st;
    arg_t a[7] = {{"params"}, {"maps"}, {"steps", NULL, 0, 1}, {"labels", NULL, 0, 1}, {"workspace", NULL, 1},
                  {"probs", NULL, 1}, {"losses", NULL, 1}};
    if (parse_fast("authors_forward", args, nargs, kwnames, "OOOOOOO|OfOO", kwlist, &cfg, &a[0].obj, &a[1].obj,
                   &a[2].obj, &a[3].obj, &a[4].obj, &a[5].obj, &a[6].obj, &p, &seed_obj, &stream) < 0)
        return NULL;
    l2s_authors_config c;
    uint64_t seed;
    int32_t* idx = NULL;
    const int32_t* labels = NULL;
    if (pass_args(cfg, seed_obj, stream, a, 7, &c, &seed, &st) < 0) return NULL;
    if (require_present(&a[1], "") < 0 || require_present(&a[5], "") < 0) goto fail;
    {
        int64_t B = a[1].t.ndim ? a[1].t.shape[0] : 0, C = map_channels(&c, &a[1].t, "maps", -1);
        if (C < 0 || setup(&c, B, C, &a[0], &a[4], &a[2], &a[3], 0, p, &idx, &labels) < 0) goto fail;
        const int64_t psh[2] = {B, c.n_relations};
        if (tensor_check_dtype(&a[5].t, "probs", L2S_M_F32) < 0 || tensor_check_shape(&a[5].t, "probs", 2, psh) < 0 ||
            tensor_check_contiguous(&a[5].t, "probs") < 0)
            goto fail;
        if (labels && (require_present(&a[6], " when labels are given") < 0 || check_vector(&a[6].t, "losses", B) < 0))
            goto fail;
        l2s_dropout_config drop = {p, seed};
        float* losses = labels ? (float*)a[6].t.data : NULL;
        L2S_RUN(&a[0].t, authors_forward_cuda(&c, a[0].t.data, (int)B, (int)C, a[1].t.data, idx, labels, drop,
                                              a[4].t.data, a[5].t.data, losses, st),
                authors_forward_cpu(&c, a[0].t.data, (int)B, (int)C, a[1].t.data, idx, labels, drop, a[4].t.data,
                                    a[5].t.data, losses));
    }
    return end_call(a, 7, idx, 1);
fail:
    return end_call(a, 7, idx, 0);
}

PyDoc_STRVAR(authors_backward_doc,
"authors_backward(config, params, steps, labels, workspace, channels, dmaps=None, grads=None, dropout=0.0, seed=0, stream=None)\n--\n\n"
"Backward of the batch-MEAN cross-entropy of the last authors_forward on this workspace (same batch,\n"
"channels, dropout and seed; it consumes the workspace: once per forward). dmaps [B, 2, C, ...] is\n"
"overwritten with d(loss)/d(maps); grads [n_params] is ACCUMULATED into (the positional tables get none).");
static PyObject* py_authors_backward(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    (void)self;
    static const char* const kwlist[] = {"config", "params", "steps", "labels", "workspace", "channels", "dmaps",
                                         "grads", "dropout", "seed", "stream", NULL};
    PyObject* cfg; PyObject* seed_obj = Py_None; PyObject* stream = Py_None; float p = 0.f; int C = 0; void* st;
    arg_t a[6] = {{"params"}, {"steps", NULL, 0, 1}, {"labels", NULL, 0, 1}, {"workspace", NULL, 1},
                  {"dmaps", NULL, 1}, {"grads", NULL, 1}};
    a[4].obj = Py_None; a[5].obj = Py_None;
    if (parse_fast("authors_backward", args, nargs, kwnames, "OOOOOi|OOfOO", kwlist, &cfg, &a[0].obj, &a[1].obj,
                   &a[2].obj, &a[3].obj, &C, &a[4].obj, &a[5].obj, &p, &seed_obj, &stream) < 0)
        return NULL;
    l2s_authors_config c;
    uint64_t seed;
    int32_t* idx = NULL;
    const int32_t* labels = NULL;
    if (pass_args(cfg, seed_obj, stream, a, 6, &c, &seed, &st) < 0) return NULL;
    if (require_present(&a[2], " for the backward pass") < 0) goto fail;
    {
        int64_t B = a[2].t.ndim ? a[2].t.shape[0] : 0;
        if (setup(&c, B, C, &a[0], &a[3], &a[1], &a[2], 1, p, &idx, &labels) < 0) goto fail;
        if (a[4].present && map_channels(&c, &a[4].t, "dmaps", B) != C) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "dmaps must have channels = %d", C);
            goto fail;
        }
        if (a[5].present && check_vector(&a[5].t, "grads", authors_param_offsets(&c).total) < 0) goto fail;
        l2s_dropout_config drop = {p, seed};
        float* dmaps = a[4].present ? (float*)a[4].t.data : NULL;
        float* grads = a[5].present ? (float*)a[5].t.data : NULL;
        L2S_RUN(&a[0].t, authors_backward_cuda(&c, a[0].t.data, (int)B, C, idx, labels, drop, a[3].t.data, dmaps, grads,
                                               st),
                authors_backward_cpu(&c, a[0].t.data, (int)B, C, idx, labels, drop, a[3].t.data, dmaps, grads));
    }
    return end_call(a, 6, idx, 1);
fail:
    return end_call(a, 6, idx, 0);
}

PyMethodDef authors_net_methods[] = {
    {"authors_config", (PyCFunction)(void (*)(void))py_authors_config, METH_VARARGS | METH_KEYWORDS, authors_config_doc},
    {"authors_sizes", (PyCFunction)py_authors_sizes, METH_VARARGS, authors_sizes_doc},
    {"authors_layout", (PyCFunction)py_authors_layout, METH_VARARGS, authors_layout_doc},
    {"authors_forward", L2S_FASTCALL(py_authors_forward), authors_forward_doc},
    {"authors_backward", L2S_FASTCALL(py_authors_backward), authors_backward_doc},
    {NULL, NULL, 0, NULL}
};
