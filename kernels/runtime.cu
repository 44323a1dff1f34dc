/* runtime.cu — device queries and memory for the module; nothing here runs at import. */
#include "common.cuh"

extern "C" int l2s_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }   /* no driver: 0, not an error */
    return n;
}

/* NULL when the runtime sees a device, else why not, in the runtime's words (an old driver for
 * this static CUDA 13 runtime reads as no device: "CUDA driver version is insufficient ..."). */
extern "C" const char* l2s_cuda_status(void) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    cudaGetLastError();
    if (err != cudaSuccess) return cudaGetErrorString(err);
    return n > 0 ? NULL : "the CUDA runtime sees no device";
}

/* Make `device` current and return the one that was, so the caller can put it back: torch and
 * other libraries keep their own notion of the current device, which l2s must not change. */
extern "C" int l2s_cuda_swap_device(int device, int* previous) {
    /* every op starts here: clear an error an earlier, unrelated failed call left behind (a bad
     * device id, an out-of-memory), or the op's own launch check would report it as its own */
    cudaGetLastError();
    int err = (int)cudaGetDevice(previous);
    if (err) return err;
    return *previous == device ? 0 : (int)cudaSetDevice(device);
}

extern "C" const char* l2s_cuda_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

extern "C" int l2s_cuda_malloc(void** ptr, int64_t bytes, int device) {
    int prev, err = l2s_cuda_swap_device(device, &prev);
    if (err) return err;
    err = (int)cudaMalloc(ptr, (size_t)bytes);
    cudaSetDevice(prev);
    return err;
}

extern "C" void l2s_cuda_free(void* ptr, int device) {
    int prev;
    if (l2s_cuda_swap_device(device, &prev) != 0) return;
    cudaFree(ptr);
    cudaSetDevice(prev);
}

extern "C" int l2s_cuda_memset_async(void* ptr, int value, int64_t bytes, void* stream) {
    return (int)cudaMemsetAsync(ptr, value, (size_t)bytes, as_stream(stream));
}
