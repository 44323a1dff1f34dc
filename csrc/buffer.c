/*
 * buffer.c — l2s._C.Buffer: memory that l2s allocates (host or CUDA) and exports through DLPack,
 * so numpy.from_dlpack / torch.from_dlpack / cupy.from_dlpack wrap it without a copy.
 * The exported tensor holds a reference to the Buffer; the memory lives until both are gone.
 */
#include <stdlib.h>
#include "tensor.h"
#include "dlpack_abi.h"

typedef struct {
    PyObject_HEAD
    void* data;
    int device_type, device_id;
    l2s_dtype dtype;
    int ndim;
    int64_t shape[L2S_MAX_DIMS];
    int64_t strides[L2S_MAX_DIMS];
    int64_t nbytes;
} BufferObject;

static int dtype_size(l2s_dtype dt) { return (dt == L2S_F16 || dt == L2S_BF16) ? 2 : (dt == L2S_I64 ? 8 : 4); }

static DLDataType dtype_to_dl(l2s_dtype dt) {
    DLDataType d; d.lanes = 1;
    switch (dt) {
        case L2S_F32: d.code = kDLFloat; d.bits = 32; break;
        case L2S_F16: d.code = kDLFloat; d.bits = 16; break;
        case L2S_BF16: d.code = kDLBfloat; d.bits = 16; break;
        case L2S_I32: d.code = kDLInt; d.bits = 32; break;
        default: d.code = kDLInt; d.bits = 64; break;
    }
    return d;
}

static void buffer_dealloc(BufferObject* self) {
    if (self->data) {
        if (self->device_type == L2S_DEV_CPU) free(self->data);
#ifdef L2S_WITH_CUDA
        else l2s_cuda_free(self->data, self->device_id);
#endif
    }
    Py_TYPE(self)->tp_free((PyObject*)self);
}

/* Deleters may run on a thread without the GIL, or after interpreter shutdown. */
static void release_owner(PyObject* owner) {
    if (!Py_IsInitialized()) return;
    PyGILState_STATE st = PyGILState_Ensure();
    Py_DECREF(owner);
    PyGILState_Release(st);
}
static void deleter_versioned(DLManagedTensorVersioned* mt) {
    release_owner((PyObject*)mt->manager_ctx);
    free(mt);
}
static void deleter_legacy(DLManagedTensor* mt) {
    release_owner((PyObject*)mt->manager_ctx);
    free(mt);
}
/* A capsule nobody consumed still owns its tensor. */
static void capsule_destructor_versioned(PyObject* cap) {
    if (!PyCapsule_IsValid(cap, "dltensor_versioned")) return;
    DLManagedTensorVersioned* mt = (DLManagedTensorVersioned*)PyCapsule_GetPointer(cap, "dltensor_versioned");
    if (mt && mt->deleter) mt->deleter(mt);
}
static void capsule_destructor_legacy(PyObject* cap) {
    if (!PyCapsule_IsValid(cap, "dltensor")) return;
    DLManagedTensor* mt = (DLManagedTensor*)PyCapsule_GetPointer(cap, "dltensor");
    if (mt && mt->deleter) mt->deleter(mt);
}

static void fill_dltensor(BufferObject* self, DLTensor* t) {
    t->data = self->data;
    t->device.device_type = self->device_type;
    t->device.device_id = self->device_id;
    t->ndim = self->ndim;
    t->dtype = dtype_to_dl(self->dtype);
    t->shape = self->shape;        /* lives in the Buffer, which the tensor keeps alive */
    t->strides = self->strides;
    t->byte_offset = 0;
}

static PyObject* buffer_dlpack(BufferObject* self, PyObject* args, PyObject* kwargs) {
    static char* kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO", kwlist, &stream, &max_version, &dl_device, &copy))
        return NULL;
    /* Our memory has no pending work on any stream (allocation is synchronous), so no sync. */
    if (dl_device != Py_None) {
        int dt, di;
        if (!PyTuple_Check(dl_device) || !PyArg_ParseTuple(dl_device, "ii", &dt, &di)) {
            PyErr_SetString(PyExc_TypeError, "dl_device must be a tuple (device_type, device_id)");
            return NULL;
        }
        if (dt != self->device_type || di != self->device_id) {
            PyErr_SetString(PyExc_BufferError, "Buffer cannot be exported to another device (it never copies)");
            return NULL;
        }
    }
    if (copy == Py_True) {
        PyErr_SetString(PyExc_BufferError, "Buffer does not copy on export");
        return NULL;
    }
    int versioned = 0;
    if (max_version != Py_None) {
        unsigned major = 0, minor = 0;
        if (!PyTuple_Check(max_version) || !PyArg_ParseTuple(max_version, "II", &major, &minor)) {
            PyErr_SetString(PyExc_TypeError, "max_version must be a tuple (major, minor)");
            return NULL;
        }
        versioned = major >= 1;
    }
    if (versioned) {
        DLManagedTensorVersioned* mt = (DLManagedTensorVersioned*)calloc(1, sizeof(*mt));
        if (!mt) return PyErr_NoMemory();
        mt->version.major = DLPACK_MAJOR_VERSION;
        mt->version.minor = DLPACK_MINOR_VERSION;
        mt->manager_ctx = self;
        mt->deleter = deleter_versioned;
        mt->flags = 0;
        fill_dltensor(self, &mt->dl_tensor);
        Py_INCREF(self);
        PyObject* cap = PyCapsule_New(mt, "dltensor_versioned", capsule_destructor_versioned);
        if (!cap) { Py_DECREF(self); free(mt); }
        return cap;
    }
    DLManagedTensor* mt = (DLManagedTensor*)calloc(1, sizeof(*mt));
    if (!mt) return PyErr_NoMemory();
    mt->manager_ctx = self;
    mt->deleter = deleter_legacy;
    fill_dltensor(self, &mt->dl_tensor);
    Py_INCREF(self);
    PyObject* cap = PyCapsule_New(mt, "dltensor", capsule_destructor_legacy);
    if (!cap) { Py_DECREF(self); free(mt); }
    return cap;
}

static PyObject* buffer_dlpack_device(BufferObject* self, PyObject* noargs) {
    (void)noargs;
    return Py_BuildValue("(ii)", self->device_type, self->device_id);
}

static PyObject* buffer_get_shape(BufferObject* self, void* closure) {
    (void)closure;
    PyObject* t = PyTuple_New(self->ndim);
    if (!t) return NULL;
    for (int i = 0; i < self->ndim; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLongLong(self->shape[i]));
    return t;
}
static PyObject* buffer_get_dtype(BufferObject* self, void* c) { (void)c; return PyUnicode_FromString(dtype_name(self->dtype)); }
static PyObject* buffer_get_nbytes(BufferObject* self, void* c) { (void)c; return PyLong_FromLongLong(self->nbytes); }
static PyObject* buffer_get_ptr(BufferObject* self, void* c) { (void)c; return PyLong_FromVoidPtr(self->data); }
static PyObject* buffer_get_device(BufferObject* self, void* c) {
    (void)c;
    return Py_BuildValue("(si)", self->device_type == L2S_DEV_CPU ? "cpu" : "cuda", self->device_id);
}
static PyObject* buffer_repr(BufferObject* self) {
    PyObject* shape = buffer_get_shape(self, NULL);
    if (!shape) return NULL;
    PyObject* r = PyUnicode_FromFormat("l2s._C.Buffer(shape=%R, dtype=%s, device=%s:%d)", shape,
                                       dtype_name(self->dtype), self->device_type == L2S_DEV_CPU ? "cpu" : "cuda",
                                       self->device_id);
    Py_DECREF(shape);
    return r;
}

static PyMethodDef buffer_methods[] = {
    {"__dlpack__", (PyCFunction)(void (*)(void))buffer_dlpack, METH_VARARGS | METH_KEYWORDS,
     "Export as a DLPack capsule (versioned when max_version >= (1, 0))."},
    {"__dlpack_device__", (PyCFunction)buffer_dlpack_device, METH_NOARGS, "(device_type, device_id)."},
    {NULL, NULL, 0, NULL}
};
static PyGetSetDef buffer_getset[] = {
    {"shape", (getter)buffer_get_shape, NULL, "shape tuple", NULL},
    {"dtype", (getter)buffer_get_dtype, NULL, "element type name", NULL},
    {"nbytes", (getter)buffer_get_nbytes, NULL, "size in bytes", NULL},
    {"data_ptr", (getter)buffer_get_ptr, NULL, "address of the first element", NULL},
    {"device", (getter)buffer_get_device, NULL, "('cpu' or 'cuda', index)", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyTypeObject BufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "l2s._C.Buffer",
    .tp_basicsize = sizeof(BufferObject),
    .tp_dealloc = (destructor)buffer_dealloc,
    .tp_repr = (reprfunc)buffer_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Uninitialised memory owned by l2s, exported zero-copy through DLPack. Make one with l2s._C.empty().",
    .tp_methods = buffer_methods,
    .tp_getset = buffer_getset,
};

static int parse_dtype(PyObject* o, l2s_dtype* out) {
    const char* s = PyUnicode_AsUTF8(o);
    if (!s) return -1;
    static const l2s_dtype all[] = {L2S_F32, L2S_F16, L2S_BF16, L2S_I32, L2S_I64};
    for (int i = 0; i < 5; i++) if (strcmp(s, dtype_name(all[i])) == 0) { *out = all[i]; return 0; }
    PyErr_Format(PyExc_ValueError, "dtype must be one of float32, float16, bfloat16, int32, int64; got %R", o);
    return -1;
}

PyObject* buffer_empty(PyObject* mod, PyObject* args, PyObject* kwargs) {
    (void)mod;
    static char* kwlist[] = {"shape", "dtype", "device", "device_id", NULL};
    PyObject* shape; PyObject* dtype_obj = NULL; const char* device = "cpu"; int device_id = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|Osi", kwlist, &shape, &dtype_obj, &device, &device_id))
        return NULL;
    l2s_dtype dt = L2S_F32;
    if (dtype_obj && parse_dtype(dtype_obj, &dt) < 0) return NULL;
    int dev;
    if (strcmp(device, "cpu") == 0) dev = L2S_DEV_CPU;
    else if (strcmp(device, "cuda") == 0) dev = L2S_DEV_CUDA;
    else { PyErr_Format(PyExc_ValueError, "device must be 'cpu' or 'cuda', got '%s'", device); return NULL; }
    if (device_id < 0) { PyErr_SetString(PyExc_ValueError, "device_id must be >= 0"); return NULL; }
    PyObject* seq = PySequence_Fast(shape, "shape must be a sequence of ints");
    if (!seq) return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    if (nd > L2S_MAX_DIMS) { Py_DECREF(seq); PyErr_Format(PyExc_ValueError, "shape: at most %d dimensions", L2S_MAX_DIMS); return NULL; }
    BufferObject* self = PyObject_New(BufferObject, &BufferType);
    if (!self) { Py_DECREF(seq); return NULL; }
    self->data = NULL; self->ndim = (int)nd; self->dtype = dt; self->device_type = dev; self->device_id = device_id;
    int64_t n = 1;
    for (Py_ssize_t i = 0; i < nd; i++) {
        long long d = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((d == -1 && PyErr_Occurred()) || d < 0 || (d > 0 && n > (INT64_MAX / 16) / d)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "shape: sizes must be non-negative and not overflow");
            Py_DECREF(seq); Py_DECREF(self); return NULL;
        }
        self->shape[i] = d; n *= d;
    }
    Py_DECREF(seq);
    int64_t st = 1;
    for (int i = (int)nd - 1; i >= 0; i--) { self->strides[i] = st; st *= self->shape[i]; }
    self->nbytes = n * dtype_size(dt);
    size_t alloc = (size_t)(self->nbytes > 0 ? self->nbytes : 1);
    if (dev == L2S_DEV_CPU) {
        /* 64-byte alignment: friendly to SIMD loads and to every consumer's checks. */
        if (posix_memalign(&self->data, 64, (alloc + 63) & ~(size_t)63) != 0) { self->data = NULL; Py_DECREF(self); return PyErr_NoMemory(); }
    } else {
#ifdef L2S_WITH_CUDA
        int err = l2s_cuda_malloc(&self->data, (int64_t)alloc, device_id);
        if (err) {
            self->data = NULL;
            Py_DECREF(self);
            PyErr_Format(PyExc_MemoryError, "cudaMalloc of %lld bytes on cuda:%d failed: %s",
                         (long long)alloc, device_id, l2s_cuda_error_string(err));
            return NULL;
        }
#else
        Py_DECREF(self);
        PyErr_SetString(PyExc_RuntimeError, "this l2s._C was built without CUDA; device='cuda' is unavailable");
        return NULL;
#endif
    }
    return (PyObject*)self;
}
