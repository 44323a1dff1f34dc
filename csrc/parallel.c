/* parallel.c — see parallel.h. Threads are made per call: the ops it serves run for milliseconds. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include "parallel.h"

#define L2S_MAX_THREADS 64

int l2s_num_threads(void) {
    const char* env = getenv("L2S_NUM_THREADS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > L2S_MAX_THREADS) n = L2S_MAX_THREADS;
    return (int)n;
}

typedef struct { l2s_range_fn fn; void* ctx; int64_t begin, end; } chunk_t;

static void* run_chunk(void* arg) {
    chunk_t* c = (chunk_t*)arg;
    c->fn(c->ctx, c->begin, c->end);
    return NULL;
}

void l2s_parallel_for(int64_t n, int64_t min_chunk, l2s_range_fn fn, void* ctx) {
    if (n <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int64_t workers = l2s_num_threads();
    if (workers > (n + min_chunk - 1) / min_chunk) workers = (n + min_chunk - 1) / min_chunk;
    if (workers <= 1) { fn(ctx, 0, n); return; }
    chunk_t chunks[L2S_MAX_THREADS];
    pthread_t threads[L2S_MAX_THREADS];
    int started[L2S_MAX_THREADS] = {0};
    for (int64_t w = 0; w < workers; w++) {
        chunks[w].fn = fn; chunks[w].ctx = ctx;
        chunks[w].begin = n * w / workers; chunks[w].end = n * (w + 1) / workers;
    }
    for (int64_t w = 1; w < workers; w++)
        started[w] = pthread_create(&threads[w], NULL, run_chunk, &chunks[w]) == 0;
    run_chunk(&chunks[0]);
    for (int64_t w = 1; w < workers; w++) {
        if (started[w]) pthread_join(threads[w], NULL);
        else run_chunk(&chunks[w]);            /* could not start a thread: do its share here */
    }
}
