/*
 * module.c — the l2s._C Python module: gathers the bindings (one py_<op>.c per op, beside <op>.c and
 * kernels/<op>.cu) into one module. Every entry point borrows the caller's arrays (no copies),
 * validates them and runs the C op (CPU) or its CUDA twin with the GIL released (binding.h).
 */
#include "binding.h"
#include "parallel.h"

#define PY_ARRAY_UNIQUE_SYMBOL l2s_ARRAY_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "l2s._C",
    "The l2s C/CUDA core: attention-map extraction, map preparation, relation classifier, AdamW and\n"
    "latent-update ops. Arrays are borrowed zero-copy from NumPy or any DLPack producer.",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    l2s_read_settings();
    if (PyType_Ready(&BufferType) < 0) return NULL;
    PyObject* m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    PyMethodDef* tables[] = {attn_maps_methods, map_prep_methods, classifier_methods, authors_net_methods, adamw_methods, latent_methods,
                             runtime_methods};
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        if (PyModule_AddFunctions(m, tables[i]) < 0) { Py_DECREF(m); return NULL; }
    }
    Py_INCREF(&BufferType);
    if (PyModule_AddObject(m, "Buffer", (PyObject*)&BufferType) < 0) { Py_DECREF(&BufferType); Py_DECREF(m); return NULL; }
    PyModule_AddIntConstant(m, "MAX_TOKEN_SLOTS", L2S_MAX_TOKEN_SLOTS);
    return m;
}
