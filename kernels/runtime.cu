/* runtime.cu — device queries and memory for the module; nothing here runs at import. */
#include "common.cuh"

extern "C" int l2s_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }   /* no driver: 0, not an error */
    return n;
}

extern "C" int l2s_cuda_set_device(int device) { return (int)cudaSetDevice(device); }

extern "C" const char* l2s_cuda_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

extern "C" int l2s_cuda_malloc(void** ptr, int64_t bytes, int device) {
    int err = (int)cudaSetDevice(device);
    if (err) return err;
    return (int)cudaMalloc(ptr, (size_t)bytes);
}

extern "C" void l2s_cuda_free(void* ptr, int device) {
    if (cudaSetDevice(device) == cudaSuccess) cudaFree(ptr);
}

extern "C" int l2s_cuda_memset_async(void* ptr, int value, int64_t bytes, void* stream) {
    return (int)cudaMemsetAsync(ptr, value, (size_t)bytes, as_stream(stream));
}
