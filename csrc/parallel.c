/* parallel.c — see parallel.h. Threads are made per call: the ops it serves run for milliseconds. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "parallel.h"

#define L2S_MAX_THREADS 64

static _Atomic int g_threads = 0;         /* 0: not read yet */
static _Atomic int g_sse2 = 0;
static _Atomic int g_once = 0;
static int g_gemm_fallback = 0;
static char g_cublaslt_path[1024];

void l2s_read_settings(void) {
    static long cpus = 0;                /* sysconf reads a /sys file: ask once, not per op call */
    if (cpus == 0) cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char* env = getenv("L2S_NUM_THREADS");
    long n = env ? strtol(env, NULL, 10) : cpus;
    g_threads = n < 1 ? 1 : n > L2S_MAX_THREADS ? L2S_MAX_THREADS : (int)n;
    env = getenv("L2S_SIMD");
    g_sse2 = env && strcmp(env, "sse2") == 0;
    if (!g_once) {                       /* the CUDA GEMM settings: once, before any GPU call reads them */
        env = getenv("L2S_GEMM");
        g_gemm_fallback = env && strcmp(env, "fallback") == 0;
        env = getenv("L2S_CUBLASLT_PATH");
        if (env && strlen(env) < sizeof(g_cublaslt_path)) strcpy(g_cublaslt_path, env);
        g_once = 1;
    }
}

int l2s_num_threads(void) {
    int n = g_threads;
    return n > 0 ? n : 1;
}

int l2s_simd_sse2_forced(void) { return g_sse2; }
int l2s_gemm_fallback_forced(void) { return g_gemm_fallback; }
const char* l2s_cublaslt_path(void) { return g_cublaslt_path[0] ? g_cublaslt_path : NULL; }

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
