/*
 * layers.c — the layers both classifiers are made of (the MLP of classifier.c and the authors'
 * transformer of authors_net.c), forward and backward side by side, and the small matrix products
 * the transformer's attention runs on. Shapes are in the comments; all row-major.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "layers.h"
#include "gemm.h"
#include "numeric.h"
#include "parallel.h"
#include "tiles.h"

/* ---- linear: out[B,O] = in[B,I] W[O,I]^T + b[O] ----
 * Batches of at least TILED_MIN_ROWS rows (training) go through the register tiles of tiles.c in
 * ROWS-row blocks; smaller ones (steering, B = 1) keep the plain loops. The loops run over slices of
 * W (OUT_SLICE rows, COL_SLICE columns) outermost so a slice stays in cache while every row block
 * passes it (one row block at a time streamed all of W from L3 and ran at 0.4x torch), and the
 * slices go to threads only for products large enough to repay a thread start (~50 us). */
enum { ROWS = L2S_ROWS, TILED_MIN_ROWS = 2 * L2S_ROWS, OUT_SLICE = 16, COL_SLICE = 8 * L2S_LANES, ROW_CHUNK = 256 };
#define PARALLEL_MIN_MACS (16 << 20)   /* B = 64 on the authors' widths ran slower on two threads */

typedef struct {
    const float *in, *W, *b, *dout;
    float *out, *din, *dW;
    int B, I, O, tiled_rows, tiled_cols;
    int din_tiles_from;      /* first din column the tiles write: din_from rounded down to LANES */
    l2s_block_ops ops;
} linear_job;

/* Large products (training batches, the transformer's token rows) take the packed l2s_gemm_cpu (gemm.c). */
static int big_product(int B, int I, int O) {
    return B >= 128 && (int64_t)B * I * O >= L2S_GEMM_CPU_MIN_MACS;
}

static int64_t slices_per_thread(const linear_job* j, int64_t slices) {
    return (int64_t)j->B * j->I * j->O >= PARALLEL_MIN_MACS ? 1 : slices;
}

static void linear_forward_slices(void* ctx, int64_t begin, int64_t end) {
    const linear_job* j = ctx;
    const int I = j->I, O = j->O;              /* locals: stores through out may not alias them */
    for (int c0 = 0; c0 < j->tiled_rows; c0 += ROW_CHUNK) {   /* a chunk of rows stays in L2 ... */
        int c1 = c0 + ROW_CHUNK < j->tiled_rows ? c0 + ROW_CHUNK : j->tiled_rows;
        for (int64_t sl = begin; sl < end; sl++) {            /* ... while each W slice passes it */
            int o0 = (int)sl * OUT_SLICE, nw = O - o0 < OUT_SLICE ? O - o0 : OUT_SLICE;
            const float* b = j->b + o0;
            for (int r0 = c0; r0 < c1; r0 += ROWS) {
                float* out = j->out + (int64_t)r0 * O + o0;
                j->ops.dots(j->in + (int64_t)r0 * I, I, j->W + (int64_t)o0 * I, I, I, nw, out, O);
                for (int r = 0; r < ROWS; r++)
                    for (int o = 0; o < nw; o++) out[(int64_t)r * O + o] += b[o];
            }
        }
    }
}
L2S_HOT void l2s_linear_forward(const float* in, const float* W, const float* b, int B, int I, int O,
                                   float* out) {
    if (big_product(B, I, O)) {                /* out = in W^T: B[k, n] = W[n, k] */
        l2s_gemm_cpu_args g = {.a = in, .a_m = I, .a_k = 1, .b = W, .b_k = 1, .b_n = I, .c = out, .ldc = O,
                               .M = B, .N = O, .K = I};
        if (l2s_gemm_cpu(&g) == 0) {
            for (int r = 0; r < B; r++)
                for (int o = 0; o < O; o++) out[(int64_t)r * O + o] += b[o];
            return;
        }                                      /* no memory for its panels: the tiles below need none */
    }
    linear_job j = {.in = in, .W = W, .b = b, .out = out, .B = B, .I = I, .O = O,
                    .tiled_rows = B >= TILED_MIN_ROWS ? B / ROWS * ROWS : 0};
    if (j.tiled_rows) {
        j.ops = l2s_pick_block_ops();
        int64_t slices = (O + OUT_SLICE - 1) / OUT_SLICE;
        l2s_parallel_for(slices, slices_per_thread(&j, slices), linear_forward_slices, &j);
    }
    for (int r = j.tiled_rows; r < B; r++) {
        const float* x = in + (int64_t)r * I;
        for (int o = 0; o < O; o++) out[(int64_t)r * O + o] = b[o] + l2s_dot_f32(x, W + (int64_t)o * I, I);
    }
}

/* din[r, i] = sum_o dout[r, o] W[o, i] for rows [r0, r1), columns [c0, I) (plain loops). */
L2S_HOT static void linear_din_plain(const linear_job* j, int r0, int r1, int c0) {
    const int I = j->I, O = j->O;          /* locals: stores through dx may not alias them */
    const float *W = j->W, *dout = j->dout;
    for (int r = r0; r < r1; r++) {
        float* dx = j->din + (int64_t)r * I;
        memset(dx + c0, 0, sizeof(float) * (size_t)(I - c0));
        for (int o = 0; o < O; o++) {
            float g = dout[(int64_t)r * O + o];
            const float* w = W + (int64_t)o * I;
            for (int i = c0; i < I; i++) dx[i] += g * w[i];
        }
    }
}
static void linear_din_slices(void* ctx, int64_t begin, int64_t end) {
    const linear_job* j = ctx;
    for (int64_t sl = begin; sl < end; sl++) {
        int c0 = j->din_tiles_from + (int)sl * COL_SLICE;
        int nc = j->tiled_cols - c0 < COL_SLICE ? j->tiled_cols - c0 : COL_SLICE;
        for (int r0 = 0; r0 < j->tiled_rows; r0 += ROWS)
            j->ops.gemm(j->dout + (int64_t)r0 * j->O, j->O, 1, j->O, j->W + c0, j->I, nc,
                        j->din + (int64_t)r0 * j->I + c0, j->I, 0);
    }
}
/* dW[o, i] += sum_r dout[r, o] in[r, i] for outputs [o0, o1), columns [c0, I) (plain loops). */
L2S_HOT static void linear_dw_plain(const linear_job* j, int o0, int o1, int c0) {
    const int B = j->B, I = j->I, O = j->O;   /* locals: stores through dw may not alias them */
    for (int o = o0; o < o1; o++) {
        float* dw = j->dW + (int64_t)o * I;
        for (int r = 0; r < B; r++) {
            float g = j->dout[(int64_t)r * O + o];
            const float* x = j->in + (int64_t)r * I;
            for (int i = c0; i < I; i++) dw[i] += g * x[i];
        }
    }
}
/* dW rows [o0, o0 + ROWS) += dout^T in, reading dout transposed in place (a_col = O), a chunk of
 * rows of `in` at a time so it is read from L2 by every block (whole, it streamed from memory). */
static void linear_dw_blocks(void* ctx, int64_t begin, int64_t end) {
    const linear_job* j = ctx;
    for (int r0 = 0; r0 < j->B && j->tiled_cols; r0 += ROW_CHUNK) {
        int rows = j->B - r0 < ROW_CHUNK ? j->B - r0 : ROW_CHUNK;
        for (int64_t blk = begin; blk < end; blk++) {
            int o0 = (int)blk * ROWS;
            j->ops.gemm(j->dout + (int64_t)r0 * j->O + o0, 1, j->O, rows, j->in + (int64_t)r0 * j->I, j->I,
                        j->tiled_cols, j->dW + (int64_t)o0 * j->I, j->I, 1);
        }
    }
    for (int64_t blk = begin; blk < end; blk++)
        linear_dw_plain(j, (int)blk * ROWS, (int)blk * ROWS + ROWS, j->tiled_cols);   /* columns past the last tile */
}
/* db[O] += sum_r dout[r], row by row: dout is read in memory order. */
L2S_HOT static void bias_grad(const float* dout, int B, int O, float* db) {
    for (int r = 0; r < B; r++)
        for (int o = 0; o < O; o++) db[o] += dout[(int64_t)r * O + o];
}
/* din[B, din_from:I] = (dout W)[:, din_from:] (overwritten; columns before din_from are left as they
 * are: the first layer's map columns when no map gradient is asked for); dW[O,I] += dout^T in;
 * db[O] += sum_r dout (if dW). */
L2S_HOT void l2s_linear_backward(const float* in, const float* W, const float* dout, int B, int I, int O,
                                    int din_from, float* din, float* dW, float* db) {
    linear_job j = {.in = in, .W = W, .dout = dout, .din = din, .dW = dW, .B = B, .I = I, .O = O,
                    .tiled_rows = B >= TILED_MIN_ROWS ? B / ROWS * ROWS : 0, .tiled_cols = I / L2S_LANES * L2S_LANES,
                    .din_tiles_from = din_from / L2S_LANES * L2S_LANES, .ops = l2s_pick_block_ops()};
    l2s_gemm_cpu_args gd = {.a = dout, .a_m = O, .a_k = 1, .b = W + din_from, .b_k = I, .b_n = 1, .c = din + din_from,
                             .ldc = I, .M = B, .N = I - din_from, .K = O};
    const int din_done = din_from >= I || (big_product(B, I - din_from, O) && l2s_gemm_cpu(&gd) == 0);
    if (!din_done && j.tiled_rows && j.din_tiles_from < j.tiled_cols) {
        int64_t slices = (j.tiled_cols - j.din_tiles_from + COL_SLICE - 1) / COL_SLICE;
        l2s_parallel_for(slices, slices_per_thread(&j, slices), linear_din_slices, &j);
        linear_din_plain(&j, 0, j.tiled_rows, j.tiled_cols);         /* columns past the last tile */
    } else if (!din_done) {
        linear_din_plain(&j, 0, j.tiled_rows, din_from);
    }
    if (!din_done) linear_din_plain(&j, j.tiled_rows, B, din_from);  /* rows past the last block */
    if (!dW) return;
    l2s_gemm_cpu_args gw = {.a = dout, .a_m = 1, .a_k = O, .b = in, .b_k = I, .b_n = 1, .c = dW, .ldc = I,   /* dW += dout^T in */
                             .M = O, .N = I, .K = B, .accumulate = 1};
    if (big_product(B, I, O) && l2s_gemm_cpu(&gw) == 0) {
        bias_grad(dout, B, O, db);
        return;
    }
    int tiled_outs = j.tiled_rows ? O / ROWS * ROWS : 0;
    if (tiled_outs) l2s_parallel_for(tiled_outs / ROWS, slices_per_thread(&j, tiled_outs / ROWS), linear_dw_blocks, &j);
    linear_dw_plain(&j, tiled_outs, O, 0);                            /* outputs past the last block */
    bias_grad(dout, B, O, db);
}

/* ---- layernorm over the last dim C: out = (a - mean) * rstd * g + be ----
 * Reductions go through 8 partial sums (numeric.h) and the rows are built in place in out/da, so
 * every loop vectorises without -ffast-math (the scalar chains were a fifth of the B=64 pass). */
L2S_HOT void l2s_layernorm_forward(const float* a, const float* g, const float* be, int B, int C, float eps,
                                      float* out, float* mean, float* rstd) {
    for (int r = 0; r < B; r++) {
        const float* x = a + (int64_t)r * C;
        float* y = out + (int64_t)r * C;
        float mu = l2s_sum_f32(x, C) / C;
        for (int c = 0; c < C; c++) y[c] = x[c] - mu;
        float rs = 1.f / sqrtf(l2s_dot_f32(y, y, C) / C + eps);
        for (int c = 0; c < C; c++) y[c] = y[c] * rs * g[c] + be[c];
        mean[r] = mu; rstd[r] = rs;
    }
}
/* da[B,C] overwritten; dg, dbe accumulated when dg is not NULL. */
L2S_HOT void l2s_layernorm_backward(const float* a, const float* mean, const float* rstd, const float* g,
                                       const float* dout, int B, int C, float* da, float* dg, float* dbe) {
    for (int r = 0; r < B; r++) {
        const float* x = a + (int64_t)r * C; const float* dy = dout + (int64_t)r * C;
        float* d = da + (int64_t)r * C;
        float mu = mean[r], rs = rstd[r];
        for (int c = 0; c < C; c++) d[c] = (x[c] - mu) * rs;                 /* xhat */
        if (dg)
            for (int c = 0; c < C; c++) { dg[c] += dy[c] * d[c]; dbe[c] += dy[c]; }
        float mean_dx = 0.f, acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  /* mean of dnorm * xhat */
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int k = 0; k < 8; k++) acc[k] += dy[c + k] * g[c + k] * d[c + k];
        for (; c < C; c++) mean_dx += dy[c] * g[c] * d[c];
        mean_dx = (mean_dx + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) / C;
        float mean_d = l2s_dot_f32(dy, g, C) / C;                           /* mean of dnorm */
        for (c = 0; c < C; c++) d[c] = dy[c] * g[c] - d[c] * mean_dx;     /* d = dnorm - xhat mean_dx */
        for (c = 0; c < C; c++) d[c] = rs * (d[c] - mean_d);
    }
}

/* ---- leaky relu, elementwise; backward in place on the gradient ---- */
L2S_HOT void l2s_leaky_forward(const float* x, int64_t n, float slope, float* y) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.f ? x[i] : slope * x[i];
}
L2S_HOT void l2s_leaky_backward(const float* x, int64_t n, float slope, float* dy) {
    for (int64_t i = 0; i < n; i++) dy[i] = x[i] > 0.f ? dy[i] : dy[i] * slope;
}

/* ---- softmax + cross-entropy over R classes; dlogits of the batch-mean loss ---- */
void l2s_softmax_ce_forward(const float* logits, const int32_t* labels, int B, int R,
                               float* probs, float* losses) {
    for (int r = 0; r < B; r++) {
        const float* z = logits + (int64_t)r * R; float* p = probs + (int64_t)r * R;
        float mx = z[0];
        for (int j = 1; j < R; j++) if (z[j] > mx) mx = z[j];
        float sum = 0.f;
        for (int j = 0; j < R; j++) { p[j] = expf(z[j] - mx); sum += p[j]; }
        for (int j = 0; j < R; j++) p[j] /= sum;
        if (labels) losses[r] = -(z[labels[r]] - mx - logf(sum));   /* log-sum-exp form: no log(0) */
    }
}
void l2s_softmax_ce_backward(const float* probs, const int32_t* labels, int B, int R, float* dlogits) {
    const float inv_b = 1.f / (float)B;
    for (int r = 0; r < B; r++)
        for (int j = 0; j < R; j++)
            dlogits[(int64_t)r * R + j] = (probs[(int64_t)r * R + j] - (j == labels[r] ? 1.f : 0.f)) * inv_b;
}


/* ---- dropout: the masks of numeric.h, the same in forward and backward ---- */
L2S_HOT void l2s_dropout(float* x, int64_t n, float p, uint64_t seed, uint32_t site) {
    if (!(p > 0.f)) return;
    const uint32_t cut = l2s_dropout_cut(p);
    const float keep = 1.f / (1.f - p);
    for (int64_t block = 0; block * L2S_DROPOUT_BLOCK < n; block++) {
        const uint64_t key = l2s_dropout_key(seed, site, block);
        float* xb = x + block * L2S_DROPOUT_BLOCK;
        const int64_t left = n - block * L2S_DROPOUT_BLOCK;
        const int m = (int)(left < L2S_DROPOUT_BLOCK ? left : L2S_DROPOUT_BLOCK);
        for (int i = 0; i < m; i++) xb[i] *= l2s_dropout_factor(key, (uint32_t)i, cut, keep);   /* vectorises */
    }
}

/* ---- small products: ROWS-row register tiles for the bulk, plain loops for the edges ---- */
L2S_HOT void l2s_matmul(const float* a, int a_row, int a_col, int M, int K, const float* bm, int ldb, int N,
                        float* out, int ldo, int accumulate) {
    l2s_gemm_cpu_args g = {.a = a, .a_m = a_row, .a_k = a_col, .b = bm, .b_k = ldb, .b_n = 1, .c = out, .ldc = ldo,
                           .M = M, .N = N, .K = K, .accumulate = accumulate};
    if (M >= 16 && (int64_t)M * N * K >= L2S_GEMM_CPU_MIN_MACS && l2s_gemm_cpu(&g) == 0) return;
    const l2s_block_ops ops = l2s_pick_block_ops();
    const int rows = M / L2S_ROWS * L2S_ROWS, cols = N / L2S_LANES * L2S_LANES;
    for (int r0 = 0; r0 < rows && cols; r0 += L2S_ROWS)
        ops.gemm(a + (int64_t)r0 * a_row, a_row, a_col, K, bm, ldb, cols, out + (int64_t)r0 * ldo, ldo, accumulate);
    for (int r = 0; r < M; r++) {
        float* o = out + (int64_t)r * ldo;
        int j0 = r < rows ? cols : 0;                /* tiled rows: only the columns past the tiles */
        if (j0 >= N) continue;
        if (!accumulate) memset(o + j0, 0, sizeof(float) * (size_t)(N - j0));
        for (int i = 0; i < K; i++) {
            const float x = a[(int64_t)r * a_row + (int64_t)i * a_col];
            const float* b = bm + (int64_t)i * ldb;
            for (int j = j0; j < N; j++) o[j] += x * b[j];
        }
    }
}

L2S_HOT void l2s_matmul_bt(const float* a, int lda, int M, int K, const float* w, int ldw, int N, float* out, int ldo) {
    l2s_gemm_cpu_args g = {.a = a, .a_m = lda, .a_k = 1, .b = w, .b_k = 1, .b_n = ldw, .c = out, .ldc = ldo,   /* B = W^T */
                           .M = M, .N = N, .K = K};
    if (M >= 16 && (int64_t)M * N * K >= L2S_GEMM_CPU_MIN_MACS && l2s_gemm_cpu(&g) == 0) return;
    const l2s_block_ops ops = l2s_pick_block_ops();
    const int rows = M / L2S_ROWS * L2S_ROWS;
    for (int r0 = 0; r0 < rows; r0 += L2S_ROWS)
        ops.dots(a + (int64_t)r0 * lda, lda, w, ldw, K, N, out + (int64_t)r0 * ldo, ldo);
    for (int r = rows; r < M; r++)
        for (int j = 0; j < N; j++)
            out[(int64_t)r * ldo + j] = l2s_dot_f32(a + (int64_t)r * lda, w + (int64_t)j * ldw, K);
}
