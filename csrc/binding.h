/*
 * binding.h — what every py_<op>.c binding shares: the table of an op's array arguments, their
 * borrowing and release, small checks, and L2S_RUN, the one CPU/CUDA dispatch.
 * Each binding parses its arguments, validates them (dtype, shape, device, contiguity, ranges),
 * then runs the C op (GIL released) or its CUDA twin on the device of its first array.
 */
#ifndef L2S_BINDING_H
#define L2S_BINDING_H

#include <math.h>
#include "tensor.h"

typedef struct {
    const char* name;
    PyObject* obj;          /* NULL or Py_None: absent */
    int writable;
    int host_only;          /* must be on the CPU whatever the op's device */
    l2s_tensor t;
    int present;
} arg_t;

/* Argument parsing for METH_FASTCALL | METH_KEYWORDS entry points (the vectorcall protocol: no
 * argument tuple or keyword dict is built, as numpy's from_dlpack does). `format` is a subset of
 * PyArg's: 'O' object, 'f' float, 'i' int, 'p' bool, 's' str, '|' before the optional ones; `names`
 * (NULL-terminated) names every parameter in order; one output pointer per parameter follows, left
 * untouched when an optional one is not given. Errors are PyArg's: TypeError for a missing, repeated,
 * unknown or ill-typed argument. */
int parse_fast(const char* fn, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, const char* format,
               const char* const* names, ...);
#define L2S_FASTCALL(fn) (PyCFunction)(void (*)(void))(fn), METH_FASTCALL | METH_KEYWORDS

/* Borrow every present argument; device-bound ones must share the first one's device. */
int borrow_args(arg_t* a, int n, PyObject* stream);
void release_args(arg_t* a, int n);
/* The end of a call: free `owned` (PyMem, may be NULL) and release the arrays; None when ok, else
 * NULL with the error already set. */
PyObject* end_call(arg_t* a, int n, void* owned, int ok);
int require_present(const arg_t* a, const char* why);
int check_finite(double v, const char* name);
/* float32 contiguous vector of n values */
int check_vector(const l2s_tensor* t, const char* name, int64_t n);
/* Copy an int32 host vector [B] into dst (private storage) and check every value lies in [0, limit).
 * Ops read the copy with the GIL released: another thread writing the caller's array meanwhile
 * cannot push an index out of range after it was checked. */
int copy_index_vector(const arg_t* a, int64_t B, int32_t limit, const char* what, int32_t* dst);

/* A validated op config kept in a capsule named `name`: made once by the config call, copied out per
 * call (a TypeError naming `maker` for anything else). */
PyObject* config_capsule_new(const void* config, size_t size, const char* name);
int config_capsule_read(PyObject* o, const char* name, const char* maker, void* out, size_t size);

/* The CUDA twin on device dev_id, or an explanation of why it cannot run. */
#ifdef L2S_WITH_CUDA
#define L2S_CUDA_CALL(dev_id, call)                                                         \
    do {                                                                                    \
        int prev_ = -1, err_;                                                               \
        Py_BEGIN_ALLOW_THREADS                                                              \
        err_ = l2s_cuda_swap_device(dev_id, &prev_);                                        \
        if (!err_) { err_ = (call); if (prev_ != (dev_id)) l2s_cuda_swap_device(prev_, &prev_); } \
        Py_END_ALLOW_THREADS                                                                \
        if (err_) { PyErr_Format(PyExc_RuntimeError, "CUDA error: %s", l2s_cuda_error_string(err_)); goto fail; } \
    } while (0)
#else
#define L2S_CUDA_CALL(dev_id, call)                                                         \
    do {                                                                                    \
        (void)(dev_id);                                                                     \
        PyErr_SetString(PyExc_RuntimeError, "got CUDA arrays, but this l2s._C was built without CUDA "\
                        "(rebuild with nvcc on PATH or L2S_CUDA=1)");                       \
        goto fail;                                                                          \
    } while (0)
#endif

/* Run an op where tensor t lives: its CUDA twin, or the C op with the GIL released. cpu_call is
 * an int expression, non-zero when the op could not allocate its scratch (write (op(...), 0) for
 * a void op). Jumps to the caller's fail label with a Python error set. */
#define L2S_RUN(t, cuda_call, cpu_call)                                                     \
    do {                                                                                    \
        if ((t)->device_type == L2S_DEV_CUDA) {                                             \
            L2S_CUDA_CALL((t)->device_id, cuda_call);                                       \
        } else {                                                                            \
            int rc_;                                                                        \
            Py_BEGIN_ALLOW_THREADS                                                          \
            rc_ = (cpu_call);                                                               \
            Py_END_ALLOW_THREADS                                                            \
            if (rc_) { PyErr_NoMemory(); goto fail; }                                       \
        }                                                                                   \
    } while (0)

/* The method tables of the bindings, added to the module by module.c. */
extern PyMethodDef attn_maps_methods[];
extern PyMethodDef map_prep_methods[];
extern PyMethodDef classifier_methods[];
extern PyMethodDef authors_net_methods[];
extern PyMethodDef adamw_methods[];
extern PyMethodDef latent_methods[];
extern PyMethodDef runtime_methods[];

#endif /* L2S_BINDING_H */
