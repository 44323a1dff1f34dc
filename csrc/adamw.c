/* adamw.c — AdamW with bias correction and decoupled weight decay (Loshchilov & Hutter). */
#include <math.h>
#include "l2s.h"

void adamw_update_cpu(const l2s_adamw_config* a, int64_t n, float* params, const float* grads,
                      float* m, float* v) {
    const float c1 = 1.f - powf(a->beta1, (float)a->step_t);
    const float c2 = 1.f - powf(a->beta2, (float)a->step_t);
    for (int64_t i = 0; i < n; i++) {
        float g = grads[i];
        m[i] = a->beta1 * m[i] + (1.f - a->beta1) * g;
        v[i] = a->beta2 * v[i] + (1.f - a->beta2) * g * g;
        float mhat = m[i] / c1, vhat = v[i] / c2;
        params[i] -= a->lr * (mhat / (sqrtf(vhat) + a->eps) + a->weight_decay * params[i]);
    }
}
