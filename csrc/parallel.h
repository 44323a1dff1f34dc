/* parallel.h — a minimal parallel-for over [0, n) on plain pthreads (no OpenMP runtime to clash
 * with torch's). Threads: L2S_NUM_THREADS, else the online CPU count. */
#ifndef L2S_PARALLEL_H
#define L2S_PARALLEL_H
#include <stdint.h>

/* fn(ctx, begin, end) runs once per contiguous chunk; chunks never overlap. */
typedef void (*l2s_range_fn)(void* ctx, int64_t begin, int64_t end);

int l2s_num_threads(void);
/* Splits [0, n) into at most l2s_num_threads() chunks of at least min_chunk items, runs them,
 * and returns when all are done. Falls back to the calling thread if a thread cannot start. */
void l2s_parallel_for(int64_t n, int64_t min_chunk, l2s_range_fn fn, void* ctx);
#endif
