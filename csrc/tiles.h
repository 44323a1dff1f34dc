/*
 * tiles.h — register-tiled block products (tiles.c).
 *   gemm(a, a_row, a_col, K, bm, ldb, ncols, out, ldo, accumulate): out[r, j] (+)= sum_{i<K} a[r, i] * bm[i, j]
 *       for r < L2S_ROWS, j < ncols (a multiple of L2S_LANES), a[r, i] at a[r * a_row + i * a_col];
 *       out is overwritten unless accumulate.
 *   dots(a, lda, w, ldw, K, nw, out, ldo): out[r, o] = sum_{i<K} a[r, i] * w[o, i] for r < L2S_ROWS, o < nw.
 */
#ifndef L2S_TILES_H
#define L2S_TILES_H

enum { L2S_ROWS = 4, L2S_LANES = 8 };

typedef struct {
    void (*gemm)(const float*, int, int, int, const float*, int, int, float*, int, int);
    void (*dots)(const float*, int, const float*, int, int, int, float*, int);
} l2s_block_ops;

/* The widest variant this CPU runs (L2S_SIMD=sse2 forces the portable one); ask once per op call. */
l2s_block_ops l2s_pick_block_ops(void);

static inline int l2s_round_up(int n, int m) { return (n + m - 1) / m * m; }
static inline int l2s_padded(int n) { return l2s_round_up(n, L2S_LANES); }

#endif /* L2S_TILES_H */
