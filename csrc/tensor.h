/*
 * tensor.h — one borrowed view of any array that crosses into l2s._C, and the checks every
 * entry point runs on it. Nothing here copies data.
 */
#ifndef L2S_TENSOR_H
#define L2S_TENSOR_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include "l2s.h"

#define L2S_MAX_DIMS 8

enum { L2S_DEV_CPU = 1, L2S_DEV_CUDA = 2 };   /* the DLPack device codes */

/* dtype masks for tensor_check_dtype */
#define L2S_M_F32  (1u << L2S_F32)
#define L2S_M_F16  (1u << L2S_F16)
#define L2S_M_BF16 (1u << L2S_BF16)
#define L2S_M_I32  (1u << L2S_I32)
#define L2S_M_FLOATS (L2S_M_F32 | L2S_M_F16 | L2S_M_BF16)

typedef struct {
    void* data;                         /* already offset by byte_offset */
    int device_type, device_id;
    l2s_dtype dtype;
    int ndim;
    int64_t shape[L2S_MAX_DIMS];
    int64_t strides[L2S_MAX_DIMS];      /* in elements */
    int readonly;
    PyObject* owner;                    /* the array or the DLPack capsule; keeps the data alive */
} l2s_tensor;

/* Fill t from obj (a NumPy array, or anything with __dlpack__). stream: None or an int, handed to
 * CUDA producers. writable: the op writes into it. Returns 0, or -1 with a Python error set. */
int tensor_from_py(PyObject* obj, const char* name, PyObject* stream, int writable, l2s_tensor* t);
void tensor_release(l2s_tensor* t);

int64_t tensor_numel(const l2s_tensor* t);
int tensor_is_contiguous(const l2s_tensor* t);
const char* dtype_name(l2s_dtype dt);

/* Each returns 0 if fine, else -1 with TypeError/ValueError naming the argument. */
int tensor_check_dtype(const l2s_tensor* t, const char* name, unsigned mask);
/* expected[i] < 0 means any size. */
int tensor_check_shape(const l2s_tensor* t, const char* name, int ndim, const int64_t* expected);
int tensor_check_contiguous(const l2s_tensor* t, const char* name);
/* a and b live on the same device */
int tensor_check_same_device(const l2s_tensor* a, const char* an, const l2s_tensor* b, const char* bn);
/* value fits an int (the C ops index with int) */
int check_fits_int(int64_t v, const char* what);

/* Parse a stream argument (None or int >= 0) into a cudaStream_t value; 0 means the legacy
 * default stream and becomes 1 (cudaStreamLegacy), as DLPack forbids 0. */
int stream_from_py(PyObject* stream, void** out);

/* The _l2s.Buffer type: memory l2s owns and exports through DLPack. */
extern PyTypeObject BufferType;
PyObject* buffer_empty(PyObject* self, PyObject* args, PyObject* kwargs);

#endif /* L2S_TENSOR_H */
