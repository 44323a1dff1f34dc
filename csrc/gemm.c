/*
 * gemm.c — a packed, cache-blocked matrix product for the large linear layers of the classifiers
 * (the authors' transformer reads 16k rows at batch 64). Blocks of B (KC x NC) are copied into
 * contiguous strips (the copy also absorbs any transposition, 8 x 8 at a time in registers); A is
 * read where it lies (packing it was a sixth of the time), and a 6 x 16 register tile multiplies
 * them: 12 AVX2 accumulators hide the FMA latency, where the 4 x 16 tiles of tiles.c, streaming
 * their operands from wherever they lie, ran the B = 64 training step at 0.6x torch.
 */
#include <stdlib.h>
#include <string.h>
#include "gemm.h"
#include "parallel.h"
#include "simd.h"

enum { MR = 6, NR = 16, KC = 256, MC = 96, NC = 512 };
#define GEMM_PARALLEL_MIN_MACS (16 << 20)   /* smaller products ran slower on two threads here (B = 64 MLP) */

#ifdef L2S_AVX2_PATH
/* A whole strip of a transposed B (B[k, n] = W[n, k]: NR rows of W, kc a multiple of 8) through
 * 8 x 8 register transposes: the scalar gather was a third of a B = 1 steering pass. */
__attribute__((target("avx2,fma")))
static void pack_b_transposed_avx2(const float* w, int64_t ldw, int kc, float* dst) {
    for (int half = 0; half < 2; half++)
        for (int k = 0; k < kc; k += 8) {
            __m256 r[8], t[8];
            for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(w + (int64_t)(half * 8 + j) * ldw + k);
            for (int j = 0; j < 8; j += 2) {
                t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
                t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
            }
            for (int j = 0; j < 8; j += 4) {
                r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
                r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
                r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
                r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
            }
            /* r[0..3] hold columns k+{0,1,2,3} of rows 0-3 | 4-7 (lanes), r[4..7] those of rows 4-7 | ... */
            for (int j = 0; j < 4; j++) {
                __m256 lo = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20), hi = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);
                _mm256_storeu_ps(dst + (int64_t)(k + j) * NR + half * 8, lo);
                _mm256_storeu_ps(dst + (int64_t)(k + j + 4) * NR + half * 8, hi);
            }
        }
}
#endif

/* Bp: ceil(nc / NR) strips, each kc x NR (zero-padded past nc). */
static void pack_b(const l2s_gemm_cpu_args* g, int k0, int kc, int n0, int nc, float* bp, int avx2) {
    for (int j0 = 0; j0 < nc; j0 += NR) {
        int w = nc - j0 < NR ? nc - j0 : NR;
        float* dst = bp + (int64_t)j0 * kc;
#ifdef L2S_AVX2_PATH
        if (avx2 && g->b_k == 1 && w == NR && kc % 8 == 0) {
            pack_b_transposed_avx2(g->b + k0 + (int64_t)(n0 + j0) * g->b_n, g->b_n, kc, dst);
            continue;
        }
#endif
        (void)avx2;
        for (int k = 0; k < kc; k++) {
            const float* src = g->b + (int64_t)(k0 + k) * g->b_k + (int64_t)(n0 + j0) * g->b_n;
            float* d = dst + (int64_t)k * NR;
            if (g->b_n == 1) memcpy(d, src, sizeof(float) * (size_t)w);
            else for (int j = 0; j < w; j++) d[j] = src[(int64_t)j * g->b_n];
            for (int j = w; j < NR; j++) d[j] = 0.f;
        }
    }
}

/* tile[h][NR] += A rows x Bp strip over kc; A[i, k] at a[i * a_m + k * a_k], read where it lies (a
 * strip of MR rows is reused by every B strip, so it stays in L1 without being packed). */
static void tile_portable(const float* a, int64_t a_m, int64_t a_k, int h, const float* bp, int kc, float* tile) {
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < h; i++) {
            const float x = a[i * a_m + k * a_k];
            for (int j = 0; j < NR; j++) tile[i * NR + j] += x * bp[k * NR + j];
        }
}

#ifdef L2S_AVX2_PATH
/* The same, with the tile written straight into C (ldc apart) when it is whole. Twelve named
 * accumulators: GCC kept an array of them in memory and stored all twelve every iteration. */
#define ROW_LOAD(i) __m256 c##i##0 = add ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps(), \
                           c##i##1 = add ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps()
#define ROW_FMA(i) do { __m256 x = _mm256_broadcast_ss(ak + i * a_m); \
                        c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0); c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1); } while (0)
#define ROW_STORE(i) do { _mm256_storeu_ps(c + i * ldc, c##i##0); _mm256_storeu_ps(c + i * ldc + 8, c##i##1); } while (0)
__attribute__((target("avx2,fma")))
static void tile_avx2(const float* a, int64_t a_m, int64_t a_k, const float* bp, int kc, float* c, int64_t ldc,
                      int add) {
    ROW_LOAD(0); ROW_LOAD(1); ROW_LOAD(2); ROW_LOAD(3); ROW_LOAD(4); ROW_LOAD(5);
    const float* ak = a;
    for (int k = 0; k < kc; k++, ak += a_k) {
        __m256 b0 = _mm256_loadu_ps(bp + k * NR), b1 = _mm256_loadu_ps(bp + k * NR + 8);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3); ROW_FMA(4); ROW_FMA(5);
    }
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3); ROW_STORE(4); ROW_STORE(5);
}
#undef ROW_LOAD
#undef ROW_FMA
#undef ROW_STORE
#endif

typedef struct {
    const l2s_gemm_cpu_args* g;
    int avx2, failed;
} gemm_job;

/* Packing buffers are kept for the life of the process, one per concurrent user: a fresh 600 KB
 * malloc is a fresh mmap, and faulting its pages in cost more than the B = 1 products themselves. */
enum { PANEL_FLOATS = KC * NC, POOL_SLOTS = 64 };
static float* pool[POOL_SLOTS];
static int pool_busy[POOL_SLOTS];

static float* panels_acquire(int* slot) {
    for (int i = 0; i < POOL_SLOTS; i++) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&pool_busy[i], &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            if (!pool[i]) pool[i] = malloc(sizeof(float) * PANEL_FLOATS);
            if (pool[i]) { *slot = i; return pool[i]; }
            __atomic_store_n(&pool_busy[i], 0, __ATOMIC_RELEASE);
            return NULL;
        }
    }
    *slot = -1;                                   /* more users than slots: a private buffer */
    return malloc(sizeof(float) * PANEL_FLOATS);
}

static void panels_release(float* p, int slot) {
    if (slot < 0) free(p);
    else __atomic_store_n(&pool_busy[slot], 0, __ATOMIC_RELEASE);
}

/* Columns [NR * begin, NR * end) of C: every k and m block for them. */
static void gemm_columns(void* ctx, int64_t begin, int64_t end) {
    gemm_job* job = ctx;
    const l2s_gemm_cpu_args* g = job->g;
    int slot;
    float* bp = panels_acquire(&slot);
    if (!bp) { __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED); return; }
    float tile[MR * NR], a_tail[MR * KC];
    const int n_end = (int)(end * NR < g->N ? end * NR : g->N);
    for (int n0 = (int)begin * NR; n0 < n_end; n0 += NC) {
        int nc = n_end - n0 < NC ? n_end - n0 : NC;
        const int k_blocks = g->K > 0 ? (g->K + KC - 1) / KC : 1;   /* K = 0 still writes C (zeros) */
        for (int kb = 0; kb < k_blocks; kb++) {
            const int k0 = kb * KC, kc = g->K - k0 < KC ? g->K - k0 : KC;
            int add = g->accumulate || k0 > 0;
            pack_b(g, k0, kc, n0, nc, bp, job->avx2);
            for (int m0 = 0; m0 < g->M; m0 += MC) {
                int mc = g->M - m0 < MC ? g->M - m0 : MC;
                /* the block's last rows, when fewer than MR: copied once, zero-padded, so their tiles
                 * run the AVX2 kernel too (scalar, they took a quarter of a B = 1 pass) */
                int tail = mc % MR, i_tail = mc - tail;
                if (tail && job->avx2)
                    for (int i = 0; i < MR; i++)
                        for (int k = 0; k < kc; k++)
                            a_tail[i * kc + k] = i < tail ? g->a[(int64_t)(m0 + i_tail + i) * g->a_m +
                                                                 (int64_t)(k0 + k) * g->a_k] : 0.f;
                for (int j0 = 0; j0 < nc; j0 += NR)          /* a B strip stays in L1 ... */
                    for (int i0 = 0; i0 < mc; i0 += MR) {    /* ... while MC rows of A pass from L2 */
                        int h = mc - i0 < MR ? mc - i0 : MR, w = nc - j0 < NR ? nc - j0 : NR;
                        float* c = g->c + (int64_t)(m0 + i0) * g->ldc + n0 + j0;
                        const float* a = g->a + (int64_t)(m0 + i0) * g->a_m + (int64_t)k0 * g->a_k;
                        const float* b_strip = bp + (int64_t)j0 * kc;
#ifdef L2S_AVX2_PATH
                        if (job->avx2 && h == MR && w == NR) {
                            tile_avx2(a, g->a_m, g->a_k, b_strip, kc, c, g->ldc, add);
                            continue;
                        }
#endif
                        for (int i = 0; i < MR; i++)                /* an edge tile (or no AVX2): via a copy */
                            for (int j = 0; j < NR; j++) tile[i * NR + j] = add && i < h && j < w ? c[(int64_t)i * g->ldc + j] : 0.f;
#ifdef L2S_AVX2_PATH
                        if (job->avx2) {
                            const float* rows = h < MR ? a_tail : a;
                            tile_avx2(rows, h < MR ? kc : g->a_m, h < MR ? 1 : g->a_k, b_strip, kc, tile, NR, 1);
                        } else
#endif
                            tile_portable(a, g->a_m, g->a_k, h, b_strip, kc, tile);
                        for (int i = 0; i < h; i++)
                            for (int j = 0; j < w; j++) c[(int64_t)i * g->ldc + j] = tile[i * NR + j];
                    }
            }
        }
    }
    panels_release(bp, slot);
}

int l2s_gemm_cpu(const l2s_gemm_cpu_args* g) {
    if (g->M <= 0 || g->N <= 0) return 0;
    gemm_job job = {g, l2s_use_avx2(), 0};
    int64_t strips = (g->N + NR - 1) / NR;
    /* threads (whole NR strips apiece) only when each gets enough work to repay its start */
    l2s_parallel_for(strips, (int64_t)g->M * g->N * g->K >= GEMM_PARALLEL_MIN_MACS ? 1 : strips, gemm_columns, &job);
    return job.failed ? -1 : 0;
}
