/*
 * tensor.c — turn NumPy arrays and DLPack producers into l2s_tensor views, and validate them.
 * NumPy arrays are read through the NumPy C API directly (no capsule round trip); everything
 * else (torch, CuPy, jax, l2s._C.Buffer) through __dlpack__, versioned ABI first.
 */
#include <stdint.h>
#include <unistd.h>
#include "tensor.h"
#include "dlpack_abi.h"

#define PY_ARRAY_UNIQUE_SYMBOL l2s_ARRAY_API
#define NO_IMPORT_ARRAY
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

const char* dtype_name(l2s_dtype dt) {
    switch (dt) {
        case L2S_F32: return "float32";
        case L2S_F16: return "float16";
        case L2S_BF16: return "bfloat16";
        case L2S_I32: return "int32";
        case L2S_I64: return "int64";
    }
    return "?";
}

int64_t tensor_numel(const l2s_tensor* t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int tensor_is_contiguous(const l2s_tensor* t) {
    if (tensor_numel(t) == 0) return 1;      /* nothing to address: NumPy gives such arrays stride 0 */
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != expect) return 0;  /* size-1 dims: any stride */
        expect *= t->shape[i];
    }
    return 1;
}

static int from_numpy(PyArrayObject* a, const char* name, int writable, l2s_tensor* t) {
    switch (PyArray_TYPE(a)) {
        case NPY_FLOAT32: t->dtype = L2S_F32; break;
        case NPY_FLOAT16: t->dtype = L2S_F16; break;
        case NPY_INT32: t->dtype = L2S_I32; break;
        case NPY_INT64: t->dtype = L2S_I64; break;
        default:
            PyErr_Format(PyExc_TypeError, "%s: unsupported NumPy dtype %R", name, (PyObject*)PyArray_DESCR(a));
            return -1;
    }
    int nd = PyArray_NDIM(a);
    if (nd > L2S_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions, at most %d supported", name, nd, L2S_MAX_DIMS);
        return -1;
    }
    if (PyArray_ISBYTESWAPPED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: array is in non-native byte order (%R); convert it with "
                     "a.astype(a.dtype.newbyteorder('='))", name, (PyObject*)PyArray_DESCR(a));
        return -1;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: array data is not aligned", name);
        return -1;
    }
    npy_intp itemsize = PyArray_ITEMSIZE(a);
    t->ndim = nd;
    for (int i = 0; i < nd; i++) {
        t->shape[i] = PyArray_DIM(a, i);
        npy_intp sb = PyArray_STRIDE(a, i);
        if (sb % itemsize != 0) {
            PyErr_Format(PyExc_ValueError, "%s: stride %zd bytes is not a multiple of the item size", name, (Py_ssize_t)sb);
            return -1;
        }
        t->strides[i] = sb / itemsize;
    }
    t->data = PyArray_DATA(a);
    t->device_type = L2S_DEV_CPU;
    t->device_id = 0;
    t->readonly = !PyArray_ISWRITEABLE(a);
    (void)writable;
    Py_INCREF(a);
    t->owner = (PyObject*)a;
    return 0;
}

/* Whether the bytes at p can be written, asked of the kernel instead of found by a segfault: the
 * byte goes into a pipe (EFAULT if unreadable) and is read back onto itself (EFAULT if unwritable),
 * so its value is unchanged. DLPack cannot say that a CPU buffer is a read-only mapping (torch
 * wraps a read-only memmap without a flag); NumPy arrays say it themselves. Called with the GIL. */
static int byte_writable(char* p) {
    static int fds[2] = {-1, -1};
    if (fds[0] < 0 && pipe(fds) != 0) { fds[0] = fds[1] = -1; return 1; }      /* cannot ask: assume yes */
    if (write(fds[1], p, 1) != 1) return 0;
    if (read(fds[0], p, 1) == 1) return 1;
    char sink;
    if (read(fds[0], &sink, 1) != 1) { close(fds[0]); close(fds[1]); fds[0] = fds[1] = -1; }  /* drain */
    return 0;
}

/* The first and last byte the tensor spans (any stride signs) are writable (2-4 system calls). */
static int host_range_writable(const l2s_tensor* t) {
    static const int64_t item[] = {4, 2, 2, 4, 8};               /* by l2s_dtype: f32, f16, bf16, i32, i64 */
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return 1;                        /* nothing is written */
        int64_t span = (t->shape[i] - 1) * t->strides[i];
        if (span < 0) lo += span; else hi += span;
    }
    char* first = (char*)t->data + lo * ((int)t->dtype < 5 ? item[t->dtype] : 1);
    char* last = (char*)t->data + (hi + 1) * ((int)t->dtype < 5 ? item[t->dtype] : 1) - 1;
    /* a mapping's pages share one protection: the last byte needs asking only on another page */
    static long page = 0;
    if (page == 0) page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    int same_page = (uintptr_t)first / (uintptr_t)page == (uintptr_t)last / (uintptr_t)page;
    return byte_writable(first) && (same_page || byte_writable(last));
}

static int dl_dtype(DLDataType d, l2s_dtype* out) {
    if (d.lanes != 1) return -1;
    if (d.code == kDLFloat && d.bits == 32) { *out = L2S_F32; return 0; }
    if (d.code == kDLFloat && d.bits == 16) { *out = L2S_F16; return 0; }
    if (d.code == kDLBfloat && d.bits == 16) { *out = L2S_BF16; return 0; }
    if (d.code == kDLInt && d.bits == 32) { *out = L2S_I32; return 0; }
    if (d.code == kDLInt && d.bits == 64) { *out = L2S_I64; return 0; }
    return -1;
}

static int from_dltensor(const DLTensor* dl, const char* name, l2s_tensor* t) {
    if (dl_dtype(dl->dtype, &t->dtype) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: unsupported DLPack dtype (code %d, bits %d, lanes %d)",
                     name, dl->dtype.code, dl->dtype.bits, dl->dtype.lanes);
        return -1;
    }
    if (dl->ndim < 0 || dl->ndim > L2S_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions, at most %d supported", name, dl->ndim, L2S_MAX_DIMS);
        return -1;
    }
    if (dl->device.device_type == kDLCPU || dl->device.device_type == kDLCUDAHost) t->device_type = L2S_DEV_CPU;
    else if (dl->device.device_type == kDLCUDA || dl->device.device_type == kDLCUDAManaged) t->device_type = L2S_DEV_CUDA;
    else {
        PyErr_Format(PyExc_ValueError, "%s: unsupported device type %d (CPU and CUDA only)", name, dl->device.device_type);
        return -1;
    }
    t->device_id = dl->device.device_id;
    t->ndim = dl->ndim;
    int64_t expect = 1;
    for (int i = dl->ndim - 1; i >= 0; i--) {
        t->shape[i] = dl->shape[i];
        t->strides[i] = dl->strides ? dl->strides[i] : expect;   /* NULL strides: compact */
        expect *= dl->shape[i];
    }
    int64_t numel = 1;
    for (int i = 0; i < dl->ndim; i++) {
        if (dl->shape[i] < 0) {
            PyErr_Format(PyExc_ValueError, "%s: the DLPack producer gave a negative dimension", name);
            return -1;
        }
        if (__builtin_mul_overflow(numel, dl->shape[i], &numel)) {
            PyErr_Format(PyExc_ValueError, "%s: the DLPack producer's shape overflows 64 bits", name);
            return -1;
        }
    }
    if (dl->data == NULL && numel > 0) {
        PyErr_Format(PyExc_ValueError, "%s: the DLPack producer gave a NULL data pointer", name);
        return -1;
    }
    t->data = (char*)dl->data + dl->byte_offset;
    return 0;
}

int tensor_from_py(PyObject* obj, const char* name, PyObject* stream, int writable, l2s_tensor* t) {
    memset(t, 0, sizeof(*t));
    if (PyArray_Check(obj)) {
        if (from_numpy((PyArrayObject*)obj, name, writable, t) < 0) return -1;
    } else if (PyObject_HasAttrString(obj, "__dlpack__")) {
        /* The device decides whether a stream may be passed (NumPy and other CPU producers refuse one). */
        PyObject* dev = PyObject_CallMethod(obj, "__dlpack_device__", NULL);
        if (!dev) return -1;
        int dev_type = 0, dev_id = 0;
        if (!PyArg_ParseTuple(dev, "ii", &dev_type, &dev_id)) {
            Py_DECREF(dev);
            PyErr_Format(PyExc_TypeError, "%s: __dlpack_device__() must return (device_type, device_id)", name);
            return -1;
        }
        Py_DECREF(dev);
        PyObject* stream_arg = NULL;
        PyObject* one = NULL;
        if (dev_type == kDLCUDA || dev_type == kDLCUDAManaged) {
            if (stream == NULL || stream == Py_None) stream_arg = Py_None;
            else {
                long long s = PyLong_AsLongLong(stream);
                if (s == -1 && PyErr_Occurred()) return -1;
                if (s == 0) { one = PyLong_FromLong(1); stream_arg = one; }  /* DLPack: 1 = legacy default */
                else stream_arg = stream;
            }
        }
        PyObject* kw = PyDict_New();
        PyObject* empty = PyTuple_New(0);
        PyObject* meth = PyObject_GetAttrString(obj, "__dlpack__");
        PyObject* ver = Py_BuildValue("(ii)", DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION);
        PyObject* capsule = NULL;
        if (kw && empty && meth && ver &&
            (!stream_arg || PyDict_SetItemString(kw, "stream", stream_arg) == 0) &&
            PyDict_SetItemString(kw, "max_version", ver) == 0) {
            capsule = PyObject_Call(meth, empty, kw);
            if (!capsule && PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();                         /* a pre-1.0 producer: no max_version */
                PyDict_DelItemString(kw, "max_version");
                capsule = PyObject_Call(meth, empty, kw);
            }
        }
        Py_XDECREF(one); Py_XDECREF(kw); Py_XDECREF(empty); Py_XDECREF(meth); Py_XDECREF(ver);
        if (!capsule) {
            /* KeyboardInterrupt, SystemExit...: not the producer's fault to explain; pass them on */
            if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            PyErr_Format(PyExc_ValueError, "%s: its __dlpack__() failed: %S "
                         "(torch tensors that require grad must be detached first)", name, ev ? ev : Py_None);
            Py_XDECREF(et); Py_XDECREF(ev); Py_XDECREF(tb);
            return -1;
        }
        /* We read the tensor but do not take ownership: the capsule keeps it alive and its
         * destructor calls the producer's deleter when we drop it after the op. */
        if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
            DLManagedTensorVersioned* mt = (DLManagedTensorVersioned*)PyCapsule_GetPointer(capsule, "dltensor_versioned");
            if (mt->version.major != DLPACK_MAJOR_VERSION) {
                PyErr_Format(PyExc_ValueError, "%s: DLPack major version %u is not supported (need 1)",
                             name, (unsigned)mt->version.major);
                Py_DECREF(capsule);
                return -1;
            }
            if (from_dltensor(&mt->dl_tensor, name, t) < 0) { Py_DECREF(capsule); return -1; }
            t->readonly = (mt->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
        } else if (PyCapsule_IsValid(capsule, "dltensor")) {
            DLManagedTensor* mt = (DLManagedTensor*)PyCapsule_GetPointer(capsule, "dltensor");
            if (from_dltensor(&mt->dl_tensor, name, t) < 0) { Py_DECREF(capsule); return -1; }
            /* a legacy capsule cannot say it is read-only (an immutable bytes object can hide behind
             * one): never write through it, as NumPy does not */
            t->readonly = 1;
        } else {
            PyErr_Format(PyExc_TypeError, "%s: __dlpack__() returned no unused DLPack capsule", name);
            Py_DECREF(capsule);
            return -1;
        }
        t->owner = capsule;
    } else {
        PyErr_Format(PyExc_TypeError, "%s must be a NumPy array or an object with __dlpack__ "
                     "(torch, CuPy, l2s._C.Buffer), not %.200s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (writable && t->readonly) {
        PyErr_Format(PyExc_ValueError, "%s is read-only, but the op writes into it", name);
        tensor_release(t);
        return -1;
    }
    if (writable && t->device_type == L2S_DEV_CPU && !PyArray_Check(obj) && !host_range_writable(t)) {
        PyErr_Format(PyExc_ValueError, "%s lies in memory that cannot be written (a read-only mapping such as a "
                     "memmap opened with mode='r'), but the op writes into it", name);
        tensor_release(t);
        return -1;
    }
    return 0;
}

void tensor_release(l2s_tensor* t) {
    Py_CLEAR(t->owner);
}

int tensor_check_dtype(const l2s_tensor* t, const char* name, unsigned mask) {
    if (mask & (1u << t->dtype)) return 0;
    char want[96] = "";
    for (int d = L2S_F32; d <= L2S_I64; d++) {
        if (!(mask & (1u << d))) continue;
        if (want[0]) strncat(want, " or ", sizeof(want) - strlen(want) - 1);
        strncat(want, dtype_name((l2s_dtype)d), sizeof(want) - strlen(want) - 1);
    }
    PyErr_Format(PyExc_TypeError, "%s must be %s, got %s", name, want, dtype_name(t->dtype));
    return -1;
}

static void format_dims(char* buf, size_t n, int ndim, const int64_t* d, int wildcard) {
    size_t at = 0;
    at += snprintf(buf + at, n - at, "(");
    for (int i = 0; i < ndim && at < n; i++) {
        if (wildcard && d[i] < 0) at += snprintf(buf + at, n - at, "%s*", i ? ", " : "");
        else at += snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)d[i]);
    }
    if (at < n) snprintf(buf + at, n - at, ")");
}

int tensor_check_shape(const l2s_tensor* t, const char* name, int ndim, const int64_t* expected) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = expected[i] < 0 || expected[i] == t->shape[i];
    if (ok) return 0;
    char got[160], want[160];
    format_dims(got, sizeof(got), t->ndim, t->shape, 0);
    format_dims(want, sizeof(want), ndim, expected, 1);
    PyErr_Format(PyExc_ValueError, "%s has shape %s, expected %s", name, got, want);
    return -1;
}

int tensor_check_contiguous(const l2s_tensor* t, const char* name) {
    if (tensor_is_contiguous(t)) return 0;
    PyErr_Format(PyExc_ValueError, "%s must be C-contiguous (row-major); call .contiguous() / "
                 "np.ascontiguousarray first", name);
    return -1;
}

int tensor_check_same_device(const l2s_tensor* a, const char* an, const l2s_tensor* b, const char* bn) {
    if (a->device_type == b->device_type && (a->device_type == L2S_DEV_CPU || a->device_id == b->device_id))
        return 0;
    PyErr_Format(PyExc_ValueError, "%s is on %s:%d but %s is on %s:%d; all arrays of one call must share a device",
                 bn, b->device_type == L2S_DEV_CPU ? "cpu" : "cuda", b->device_id,
                 an, a->device_type == L2S_DEV_CPU ? "cpu" : "cuda", a->device_id);
    return -1;
}

int check_fits_int(int64_t v, const char* what) {
    if (v >= 0 && v <= INT32_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s = %lld is out of range", what, (long long)v);
    return -1;
}

int stream_from_py(PyObject* stream, void** out) {
    *out = NULL;
    if (stream == NULL || stream == Py_None) return 0;
    if (!PyLong_Check(stream)) {
        PyErr_SetString(PyExc_TypeError, "stream must be None or an int (a cudaStream_t value)");
        return -1;
    }
    unsigned long long s = PyLong_AsUnsignedLongLong(stream);
    if (PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "stream must be a non-negative int");
        return -1;
    }
    *out = (void*)(uintptr_t)s;      /* 0: the default stream (only DLPack's __dlpack__ spells it 1) */
    return 0;
}
