/* parallel.h — a minimal parallel-for over [0, n) on plain pthreads (no OpenMP runtime to clash
 * with torch's), and the settings the ops read from the environment. */
#ifndef L2S_PARALLEL_H
#define L2S_PARALLEL_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Environment settings are read only by l2s_read_settings, which every binding calls with the GIL
 * held (Python's os.environ writers hold it too), and kept in atomics the ops read without the GIL:
 * L2S_NUM_THREADS (threads, default the online CPU count), L2S_SIMD=sse2 (portable tiles),
 * L2S_ATTN_KERNEL=tiled (the CUDA extraction's tiled kernels, not yet measured on a GPU) and,
 * read once, L2S_GEMM=fallback and L2S_CUBLASLT_PATH (CUDA GEMM). */
void l2s_read_settings(void);
int l2s_num_threads(void);
int l2s_simd_sse2_forced(void);
int l2s_attn_tiled(void);                 /* L2S_ATTN_KERNEL=tiled: the CUDA extraction's tiled kernels */
int l2s_gemm_fallback_forced(void);
const char* l2s_cublaslt_path(void);      /* NULL when unset */

/* fn(ctx, begin, end) runs once per contiguous chunk; chunks never overlap. */
typedef void (*l2s_range_fn)(void* ctx, int64_t begin, int64_t end);

/* Splits [0, n) into at most l2s_num_threads() chunks of at least min_chunk items, runs them,
 * and returns when all are done. Falls back to the calling thread if a thread cannot start. */
void l2s_parallel_for(int64_t n, int64_t min_chunk, l2s_range_fn fn, void* ctx);

#ifdef __cplusplus
}
#endif
#endif
