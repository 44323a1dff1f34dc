/* latent.c — the steering step on the latent, guarded against non-finite gradients. */
#include <math.h>
#include "l2s.h"
#include "numeric.h"

void latent_update_cpu(int64_t B, int64_t K, l2s_dtype dtype, float step, int normalize,
                       void* z, const void* g, float* norms) {
    for (int64_t b = 0; b < B; b++) {
        double ss = 0.0;
        int finite = 1;
        for (int64_t i = 0; i < K; i++) {
            float gi = l2s_load(g, b * K + i, dtype);
            if (!isfinite(gi)) { finite = 0; break; }
            ss += (double)gi * gi;
        }
        float norm = (float)sqrt(ss);
        if (!finite || !isfinite(norm)) { norms[b] = NAN; continue; }
        norms[b] = norm;
        if (norm == 0.f) continue;   /* nothing to move, and no division by zero */
        float scale = normalize ? step / norm : step;
        for (int64_t i = 0; i < K; i++) {
            int64_t j = b * K + i;
            l2s_store(z, j, dtype, l2s_load(z, j, dtype) - scale * l2s_load(g, j, dtype));
        }
    }
}
