/*
 * map_prep.c — bring maps from layers of different resolutions to one grid and normalise them.
 * Resize is separable and linear, so its backward is the same taps applied in transpose.
 */
#include <string.h>
#include <math.h>
#include "l2s.h"
#include "numeric.h"

/* Plane offsets are 64-bit: a 65536 x 65536 map has 2^32 pixels. */
void resize_maps_forward_cpu(const l2s_resize_shape* s, const float* in, float* out) {
    const int hi = s->h_in, wi = s->w_in, ho = s->h_out, wo = s->w_out;
    for (int64_t p = 0; p < s->P; p++) {
        const float* src = in + p * hi * wi;
        float* dst = out + p * ho * wo;
        for (int y = 0; y < ho; y++) {
            int y0; int ny = l2s_resize_taps(s->mode, hi, ho, y, &y0);
            for (int x = 0; x < wo; x++) {
                int x0; int nx = l2s_resize_taps(s->mode, wi, wo, x, &x0);
                float acc = 0.f;
                for (int j = 0; j < ny; j++) {
                    float wy = l2s_resize_tap_weight(s->mode, hi, ho, y, j);
                    for (int i = 0; i < nx; i++)
                        acc += wy * l2s_resize_tap_weight(s->mode, wi, wo, x, i) * src[(int64_t)(y0 + j) * wi + x0 + i];
                }
                acc *= s->weight;
                dst[(int64_t)y * wo + x] = s->accumulate ? dst[(int64_t)y * wo + x] + acc : acc;
            }
        }
    }
}

void resize_maps_backward_cpu(const l2s_resize_shape* s, const float* dout, float* din) {
    const int hi = s->h_in, wi = s->w_in, ho = s->h_out, wo = s->w_out;
    if (!s->accumulate) memset(din, 0, sizeof(float) * (size_t)s->P * hi * wi);
    for (int64_t p = 0; p < s->P; p++) {
        const float* g = dout + p * ho * wo;
        float* dst = din + p * hi * wi;
        for (int y = 0; y < ho; y++) {
            int y0; int ny = l2s_resize_taps(s->mode, hi, ho, y, &y0);
            for (int x = 0; x < wo; x++) {
                int x0; int nx = l2s_resize_taps(s->mode, wi, wo, x, &x0);
                float gv = g[(int64_t)y * wo + x] * s->weight;
                for (int j = 0; j < ny; j++) {
                    float wy = l2s_resize_tap_weight(s->mode, hi, ho, y, j) * gv;
                    for (int i = 0; i < nx; i++)
                        dst[(int64_t)(y0 + j) * wi + x0 + i] += wy * l2s_resize_tap_weight(s->mode, wi, wo, x, i);
                }
            }
        }
    }
}

/* The divisor of plane x[0..M): its sum or its max, and where the max sits. */
static float norm_divisor(const float* x, int64_t M, l2s_norm_mode mode, int64_t* argmax) {
    if (mode == L2S_NORM_SUM) {
        double s = 0.0;
        for (int64_t i = 0; i < M; i++) s += x[i];
        return (float)s;
    }
    int64_t am = 0;
    for (int64_t i = 1; i < M; i++) if (x[i] > x[am]) am = i;
    *argmax = am;
    return x[am];
}

void normalize_maps_forward_cpu(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                const float* x, float* y) {
    for (int64_t p = 0; p < P; p++) {
        int64_t am = 0;
        float inv = 1.f / (norm_divisor(x + p * M, M, mode, &am) + eps);
        for (int64_t i = 0; i < M; i++) y[p * M + i] = x[p * M + i] * inv;
    }
}

/* y = x / c(x): dx = dy / c - (<dy, x> / c^2) * dc/dx, with dc/dx = 1 (sum) or e_argmax (max). */
void normalize_maps_backward_cpu(int64_t P, int64_t M, l2s_norm_mode mode, float eps,
                                 const float* x, const float* dy, float* dx) {
    for (int64_t p = 0; p < P; p++) {
        const float* xp = x + p * M; const float* gp = dy + p * M; float* op = dx + p * M;
        int64_t am = 0;
        float c = norm_divisor(xp, M, mode, &am) + eps;
        double dot = 0.0;
        for (int64_t i = 0; i < M; i++) dot += (double)gp[i] * xp[i];
        float corr = (float)(dot / ((double)c * c));
        for (int64_t i = 0; i < M; i++) op[i] = gp[i] / c - (mode == L2S_NORM_SUM ? corr : 0.f);
        if (mode == L2S_NORM_MAX) op[am] -= corr;
    }
}
