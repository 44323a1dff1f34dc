/*
 * binding.c — argument borrowing and the small checks every binding shares (see binding.h).
 */
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include "binding.h"
#include "parallel.h"

#define L2S_MAX_PARAMS 16

static int convert_arg(char code, PyObject* v, const char* fn, const char* name, va_list* out) {
    switch (code) {
    case 'O': *va_arg(*out, PyObject**) = v; return 0;
    case 'f': {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        *va_arg(*out, float*) = (float)d;          /* out-of-range values become inf; ops check finiteness */
        return 0;
    }
    case 'i': {
        if (PyFloat_Check(v) || !PyIndex_Check(v)) break;
        long l = PyLong_AsLong(v);
        if (l == -1 && PyErr_Occurred()) return -1;
        if (l < INT_MIN || l > INT_MAX) {
            PyErr_Format(PyExc_OverflowError, "%s() argument '%s' does not fit a C int", fn, name); return -1;
        }
        *va_arg(*out, int*) = (int)l;
        return 0;
    }
    case 'p': {
        int b = PyObject_IsTrue(v);
        if (b < 0) return -1;
        *va_arg(*out, int*) = b;
        return 0;
    }
    case 's': {
        if (!PyUnicode_Check(v)) break;
        Py_ssize_t n;
        const char* c = PyUnicode_AsUTF8AndSize(v, &n);
        if (!c) return -1;
        if ((size_t)n != strlen(c)) {
            PyErr_Format(PyExc_ValueError, "%s() argument '%s' contains a null character", fn, name); return -1;
        }
        *va_arg(*out, const char**) = c;
        return 0;
    }
    }
    PyErr_Format(PyExc_TypeError, "%s() argument '%s' must be %s, not %.200s", fn, name,
                 code == 'i' ? "an integer" : "str", Py_TYPE(v)->tp_name);
    return -1;
}

/* Step past the output pointer of a parameter that was not given, read as the type it has. */
static void skip_arg(char code, va_list* out) {
    switch (code) {
    case 'O': (void)va_arg(*out, PyObject**); break;
    case 'f': (void)va_arg(*out, float*); break;
    case 's': (void)va_arg(*out, const char**); break;
    default: (void)va_arg(*out, int*); break;
    }
}

int parse_fast(const char* fn, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, const char* format,
               const char* const* names, ...) {
    PyObject* vals[L2S_MAX_PARAMS] = {NULL};
    int n = 0, n_required = -1;
    while (names[n]) n++;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, n, nargs); return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) vals[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject* key = PyTuple_GET_ITEM(kwnames, k);
        int j = 0;
        while (j < n && PyUnicode_CompareWithASCIIString(key, names[j]) != 0) j++;
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fn, key); return -1;
        }
        if (vals[j]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn, names[j]); return -1;
        }
        vals[j] = args[nargs + k];
    }
    va_list out;
    va_start(out, names);
    int i = 0, rc = 0;
    for (const char* f = format; *f && rc == 0; f++) {
        if (*f == '|') { n_required = i; continue; }
        if (i >= n) break;
        if (vals[i]) {
            rc = convert_arg(*f, vals[i], fn, names[i], &out);
        } else if (n_required < 0) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)", fn, names[i], i + 1);
            rc = -1;
        } else {
            skip_arg(*f, &out);                    /* not given: the caller's default stays */
        }
        i++;
    }
    va_end(out);
    return rc;
}

void release_args(arg_t* a, int n) {
    for (int i = 0; i < n; i++) if (a[i].present) { tensor_release(&a[i].t); a[i].present = 0; }
}

/* Borrow every present argument; device-bound ones must share the first one's device. */
int borrow_args(arg_t* a, int n, PyObject* stream) {
    int first_dev = -1;
    l2s_read_settings();                  /* environment settings, read while the GIL is held */
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

int require_present(const arg_t* a, const char* why) {
    if (a->present) return 0;
    PyErr_Format(PyExc_ValueError, "%s is required%s", a->name, why);
    return -1;
}

int check_finite(double v, const char* name) {
    if (isfinite(v)) return 0;
    PyErr_Format(PyExc_ValueError, "%s must be finite", name);
    return -1;
}

int copy_index_vector(const arg_t* a, int64_t B, int32_t limit, const char* what, int32_t* dst) {
    const int64_t shp[1] = {B};
    if (tensor_check_dtype(&a->t, a->name, L2S_M_I32) < 0 || tensor_check_shape(&a->t, a->name, 1, shp) < 0 ||
        tensor_check_contiguous(&a->t, a->name) < 0)
        return -1;
    memcpy(dst, a->t.data, sizeof(int32_t) * (size_t)B);
    for (int64_t i = 0; i < B; i++) {
        if (dst[i] < 0 || dst[i] >= limit) {
            PyErr_Format(PyExc_ValueError, "%s[%lld] = %d is out of range [0, %d) (%s)", a->name, (long long)i, dst[i], limit, what);
            return -1;
        }
    }
    return 0;
}

int check_vector(const l2s_tensor* t, const char* name, int64_t n) {
    const int64_t shp[1] = {n};
    if (tensor_check_dtype(t, name, L2S_M_F32) < 0 || tensor_check_shape(t, name, 1, shp) < 0 ||
        tensor_check_contiguous(t, name) < 0)
        return -1;
    return 0;
}


static void config_capsule_free(PyObject* capsule) {
    PyMem_Free(PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule)));
}

PyObject* config_capsule_new(const void* config, size_t size, const char* name) {
    void* heap = PyMem_Malloc(size);
    if (!heap) return PyErr_NoMemory();
    memcpy(heap, config, size);
    PyObject* capsule = PyCapsule_New(heap, name, config_capsule_free);
    if (!capsule) PyMem_Free(heap);
    return capsule;
}

int config_capsule_read(PyObject* o, const char* name, const char* maker, void* out, size_t size) {
    const void* p = PyCapsule_CheckExact(o) ? PyCapsule_GetPointer(o, name) : NULL;
    if (!p) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "config must be made by %s, not %.100s", maker, Py_TYPE(o)->tp_name);
        return -1;
    }
    memcpy(out, p, size);
    return 0;
}

PyObject* end_call(arg_t* a, int n, void* owned, int ok) {
    PyMem_Free(owned);
    release_args(a, n);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}
