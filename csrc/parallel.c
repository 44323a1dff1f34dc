/* parallel.c — see parallel.h: the settings, and a parallel-for on a pool of pthreads kept between calls. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "parallel.h"

#define L2S_MAX_THREADS 64

static _Atomic int g_threads = 0;         /* 0: not read yet */
static _Atomic int g_sse2 = 0;
static _Atomic int g_attn_tiled = 0;
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
    env = getenv("L2S_ATTN_KERNEL");
    g_attn_tiled = env && strcmp(env, "tiled") == 0;
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
int l2s_attn_tiled(void) { return g_attn_tiled; }
int l2s_gemm_fallback_forced(void) { return g_gemm_fallback; }
const char* l2s_cublaslt_path(void) { return g_cublaslt_path[0] ? g_cublaslt_path : NULL; }

typedef struct { l2s_range_fn fn; void* ctx; int64_t begin, end; } chunk_t;

static void* run_chunk(void* arg) {
    chunk_t* c = (chunk_t*)arg;
    c->fn(c->ctx, c->begin, c->end);
    return NULL;
}

/* ---- a pool of threads kept between calls ----
 * A thread started per call cost 20-50 us, and far more when this shared VM was busy (the same op
 * then took 1.5x as long): one pool serves one parallel_for at a time. A call made while it is busy
 * (another Python thread, the GIL released) starts its own threads as before; a call made from
 * inside a chunk runs inline. A forked child starts a new pool. */
static __thread int t_in_chunk = 0;

static struct {
    pthread_mutex_t busy;                 /* held by the caller the pool is serving */
    pthread_mutex_t m;
    pthread_cond_t work, done;
    int workers;                          /* started so far */
    unsigned long generation;             /* bumped per call: the workers' signal */
    chunk_t* chunks;                      /* chunks[1 + w] is worker w's, for w < active */
    int active, pending;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, NULL, 0, 0};

static unsigned long pool_born[L2S_MAX_THREADS];   /* the generation current when worker w was made */

static void* pool_worker(void* arg) {
    const int id = (int)(intptr_t)arg;
    t_in_chunk = 1;
    pthread_mutex_lock(&pool.m);
    unsigned long seen = pool_born[id];   /* not pool.generation: the call that made it may have bumped it already */
    for (;;) {
        while (pool.generation == seen) pthread_cond_wait(&pool.work, &pool.m);
        seen = pool.generation;
        if (id < pool.active) {
            chunk_t c = pool.chunks[1 + id];
            pthread_mutex_unlock(&pool.m);
            run_chunk(&c);
            pthread_mutex_lock(&pool.m);
            if (--pool.pending == 0) pthread_cond_signal(&pool.done);
        }
    }
    return NULL;
}

static void pool_after_fork(void) {        /* the child has the memory, not the threads */
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.m, NULL);
    pthread_cond_init(&pool.work, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.workers = 0; pool.active = 0; pool.pending = 0;
}

/* Run chunks[1 .. n-1] on the pool and chunks[0] here; 0, or -1 when the pool cannot take them. */
static int pool_run(chunk_t* chunks, int n) {
    if (pthread_mutex_trylock(&pool.busy) != 0) return -1;
    pthread_mutex_lock(&pool.m);
    while (pool.workers < n - 1) {         /* grow to this call's width (never shrinks) */
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pool_born[pool.workers] = pool.generation;
        int ok = pthread_create(&t, &attr, pool_worker, (void*)(intptr_t)pool.workers) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        pool.workers++;
    }
    if (pool.workers < n - 1) {
        pthread_mutex_unlock(&pool.m);
        pthread_mutex_unlock(&pool.busy);
        return -1;
    }
    pool.chunks = chunks;
    pool.active = n - 1;
    pool.pending = n - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.m);
    t_in_chunk = 1;
    run_chunk(&chunks[0]);
    t_in_chunk = 0;
    pthread_mutex_lock(&pool.m);
    while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.m);
    pool.active = 0;
    pthread_mutex_unlock(&pool.m);
    pthread_mutex_unlock(&pool.busy);
    return 0;
}

void l2s_parallel_for(int64_t n, int64_t min_chunk, l2s_range_fn fn, void* ctx) {
    if (n <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int64_t workers = l2s_num_threads();
    if (workers > (n + min_chunk - 1) / min_chunk) workers = (n + min_chunk - 1) / min_chunk;
    if (workers <= 1 || t_in_chunk) { fn(ctx, 0, n); return; }     /* nested: inline */
    chunk_t chunks[L2S_MAX_THREADS];
    for (int64_t w = 0; w < workers; w++) {
        chunks[w].fn = fn; chunks[w].ctx = ctx;
        chunks[w].begin = n * w / workers; chunks[w].end = n * (w + 1) / workers;
    }
    if (pool_run(chunks, (int)workers) == 0) return;
    pthread_t threads[L2S_MAX_THREADS];        /* the pool is busy: threads of our own */
    int started[L2S_MAX_THREADS] = {0};
    for (int64_t w = 1; w < workers; w++)
        started[w] = pthread_create(&threads[w], NULL, run_chunk, &chunks[w]) == 0;
    run_chunk(&chunks[0]);
    for (int64_t w = 1; w < workers; w++) {
        if (started[w]) pthread_join(threads[w], NULL);
        else run_chunk(&chunks[w]);            /* could not start a thread: do its share here */
    }
}

__attribute__((constructor)) static void pool_register_fork(void) {
    pthread_atfork(NULL, NULL, pool_after_fork);
}
