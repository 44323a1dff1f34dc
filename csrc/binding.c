/*
 * binding.c — argument borrowing and the small checks every binding shares (see binding.h).
 */
#include <string.h>
#include "binding.h"
#include "parallel.h"

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

