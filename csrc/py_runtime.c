/*
 * py_runtime.c — build and device queries, and l2s-owned buffers (buffer.c).
 */
#include "binding.h"

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
static PyObject* py_cuda_status(PyObject* self, PyObject* noargs) {
    (void)self; (void)noargs;
#ifdef L2S_WITH_CUDA
    const char* why;
    Py_BEGIN_ALLOW_THREADS
    why = l2s_cuda_status();
    Py_END_ALLOW_THREADS
    return PyUnicode_FromString(why ? why : "ok");
#else
    return PyUnicode_FromString("built without CUDA (no nvcc at build time, or L2S_CUDA=0)");
#endif
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

static PyObject* py_cublaslt_calls(PyObject* self, PyObject* noargs) {
    (void)self; (void)noargs;
#ifdef L2S_WITH_CUDA
    return PyLong_FromUnsignedLongLong(l2s_cublaslt_calls());
#else
    return PyLong_FromLong(0);
#endif
}

PyMethodDef runtime_methods[] = {
    {"empty", (PyCFunction)(void (*)(void))buffer_empty, METH_VARARGS | METH_KEYWORDS,
     "empty(shape, dtype='float32', device='cpu', device_id=0)\n--\n\nUninitialised l2s-owned memory, exported through DLPack."},
    {"cuda_compiled", py_cuda_compiled, METH_NOARGS, "True if this build includes the CUDA kernels."},
    {"cuda_available", py_cuda_available, METH_NOARGS, "True if CUDA kernels are compiled and a device is usable."},
    {"cuda_device_count", py_cuda_device_count, METH_NOARGS, "Number of CUDA devices (0 without a driver)."},
    {"cuda_status", py_cuda_status, METH_NOARGS,
     "'ok' when a CUDA device is usable, else why not in the CUDA runtime's words (e.g. an old driver)."},
    {"gemm_backend", py_gemm_backend, METH_NOARGS,
     "The classifier's CUDA GEMM path: 'cublaslt', 'fallback', 'not-loaded' (no GPU call yet) or 'cpu-only'."},
    {"cublaslt_calls", py_cublaslt_calls, METH_NOARGS,
     "How many GEMMs cuBLASLt has run in this process (0 without CUDA): the fast path's evidence."},
    {NULL, NULL, 0, NULL}
};
