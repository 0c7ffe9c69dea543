/*
 * Fused multi-step LIF forward and backward for float32 CPU tensors (see lean_lif.py for the recurrence).
 *
 * Built at first use by lif_kernel.py with -O3 -fopenmp -ffp-contract=off -fno-trapping-math and without
 * -ffast-math: the forward performs the same float operations in the same order as the eager torch code, so spikes
 * and membranes agree bit for bit (-fno-trapping-math only lets the compiler vectorise the selects). Each tensor is
 * read or written once; the time loop runs inside a block of elements whose membrane (or membrane gradient) stays in
 * a small local buffer.
 *
 * The forward writes only the spikes (and the last membrane); the backward recomputes the membranes before firing
 * from the input, into the gradient buffer it writes anyway, block by block while they are in cache. So training
 * keeps the input for the backward pass, as a ReLU or GELU does, and allocates no membrane sequence at all.
 *
 * Layout: every sequence is (T, n) contiguous, element i of step t at t * n + i.
 *
 * bfloat16 (mixed precision): lif_forward_bf16 and lif_backward_bf16 read and write bfloat16 tensors but integrate
 * in float32 (each block is widened into a local float buffer, exactly), so membranes, threshold and surrogate are
 * those of the float32 kernel on the widened input. Spikes (0 or 1) are exact in bfloat16; the input's gradient is
 * rounded to nearest even, as torch rounds float32 to bfloat16.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LIF_BLOCK 1024
#define LIF_ABI 3

/* parallel only when the work pays for starting the threads */
#define LIF_PARALLEL_MIN 32768

int lif_kernel_abi(void) { return LIF_ABI; }

/* the blocks of a step of n elements, the length of the block from start, and whether to start threads */
static inline int64_t lif_blocks(int64_t n) { return (n + LIF_BLOCK - 1) / LIF_BLOCK; }
static inline int64_t lif_len(int64_t n, int64_t start) { return n - start < LIF_BLOCK ? n - start : LIF_BLOCK; }
static inline int lif_parallel(int threads, int64_t steps, int64_t n) {
    return threads > 1 && steps * n >= LIF_PARALLEL_MIN;
}

/*
 * One step of a block: H from the membrane v and the input x, the spike, the membrane after the reset.
 * Written without branches so that the compiler vectorises it; the constant flags are resolved per variant.
 * st or ht is not written (and may be NULL) when write_s or write_h is 0.
 */
static inline void lif_step(const float *restrict xt, float *restrict st, float *restrict ht, float *restrict v,
                            int64_t len, float tau, float v_th, float rest, const int hard_reset,
                            const int decay_input, const int write_s, const int write_h) {
    for (int64_t i = 0; i < len; ++i) {
        const float vi = v[i];
        const float hi = decay_input ? (xt[i] - (vi - rest)) / tau + vi : (vi - (vi - rest) / tau) + xt[i];
        const int fired = hi >= v_th;
        if (write_h) ht[i] = hi;
        if (write_s) st[i] = fired ? 1.0f : 0.0f;
        v[i] = hard_reset ? (fired ? rest : hi) : (fired ? hi - v_th : hi);
    }
}

/* one step, the variant chosen from the flags (write_s = write_h = 0 is not a case) */
static inline void lif_step_any(const float *restrict xt, float *restrict st, float *restrict ht, float *restrict v,
                                int64_t len, float tau, float v_th, float rest, int hard_reset, int decay_input,
                                int write_s, int write_h) {
#define LIF_VARIANT(R, D, S, H) lif_step(xt, st, ht, v, len, tau, v_th, rest, R, D, S, H)
    if (write_s && !write_h) {
        if (hard_reset && decay_input) LIF_VARIANT(1, 1, 1, 0);
        else if (hard_reset) LIF_VARIANT(1, 0, 1, 0);
        else if (decay_input) LIF_VARIANT(0, 1, 1, 0);
        else LIF_VARIANT(0, 0, 1, 0);
    } else if (!write_s) { /* H only */
        if (hard_reset && decay_input) LIF_VARIANT(1, 1, 0, 1);
        else if (hard_reset) LIF_VARIANT(1, 0, 0, 1);
        else if (decay_input) LIF_VARIANT(0, 1, 0, 1);
        else LIF_VARIANT(0, 0, 0, 1);
    } else {
        if (hard_reset && decay_input) LIF_VARIANT(1, 1, 1, 1);
        else if (hard_reset) LIF_VARIANT(1, 0, 1, 1);
        else if (decay_input) LIF_VARIANT(0, 1, 1, 1);
        else LIF_VARIANT(0, 0, 1, 1);
    }
#undef LIF_VARIANT
}

/*
 * all steps of one block of len elements from start, v left at the last membrane. Callers write the spikes, H or
 * both: write_s = write_h = 0 is not a case.
 */
static void lif_block(const float *restrict x, float *restrict spikes, float *restrict h, float *restrict v,
                      int64_t steps, int64_t n, int64_t start, int64_t len, float tau, float v_th, float rest,
                      int hard_reset, int decay_input, int write_s, int write_h) {
    for (int64_t i = 0; i < len; ++i) v[i] = rest;
    for (int64_t t = 0; t < steps; ++t) {
        const int64_t at = t * n + start;
        lif_step_any(x + at, write_s ? spikes + at : NULL, write_h ? h + at : NULL, v, len, tau, v_th, rest,
                     hard_reset, decay_input, write_s, write_h);
    }
}

/*
 * spikes, optionally h (membrane before firing, for all steps) and v_last (membrane after the last step); h or
 * v_last NULL: not written. hard_reset: V = S ? rest : H, else V = H - v_th S (soft).
 * decay_input: H = V + (X - (V - rest)) / tau, else H = V - (V - rest) / tau + X. The membrane starts at rest.
 */
void lif_forward(const float *restrict x, float *restrict spikes, float *restrict h, float *restrict v_last,
                 int64_t steps, int64_t n, float tau, float v_th, float rest, int hard_reset, int decay_input,
                 int threads) {
    const int64_t blocks = lif_blocks(n);
    const int parallel = lif_parallel(threads, steps, n);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t start = b * LIF_BLOCK, len = lif_len(n, start);
        float v[LIF_BLOCK];
        lif_block(x, spikes, h, v, steps, n, start, len, tau, v_th, rest, hard_reset, decay_input, 1, h != NULL);
        if (v_last != NULL) memcpy(v_last + start, v, (size_t)len * sizeof(float));
    }
}

/* exp(x) to about 2 ulp for |x| < 87, written so that the compiler vectorises it (no libm call) */
static inline float lif_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    /* x = n ln2 + r with n an integer: round x / ln2 to the nearest by adding and removing 1.5 * 2^23 */
    const float shifted = x * 1.44269504088896341f + 12582912.0f;
    const float k = shifted - 12582912.0f;
    float r = x - k * 0.693359375f;   /* ln2, high part (exact product) */
    r = r - k * -2.12194440e-4f;      /* ln2, low part */
    /* Taylor-like minimax polynomial of (e^r - 1 - r) / r^2 on |r| <= ln2 / 2 */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float e = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)k + 127) << 23; /* 2^k, k in [-126, 126] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

/*
 * one step of a block, backwards in time: io holds H_t and becomes dL/dX_t; next holds dL/dH_{t+1} (1 - 1/tau) and
 * becomes dL/dH_t (1 - 1/tau)
 */
static inline void lif_step_back(float *restrict io, const float *restrict gt, float *restrict next, int64_t len,
                                 float v_th, float alpha, float keep, float scale_x, const int hard_reset,
                                 const int surrogate) {
    const float half_alpha = alpha / 2.0f;
    const float atan_scale = 1.57079632679489662f * alpha;
    for (int64_t i = 0; i < len; ++i) {
        const float u = io[i] - v_th;
        float slope;
        if (surrogate == 0) {
            const float sig = 1.0f / (1.0f + lif_exp(-alpha * u));
            slope = alpha * sig * (1.0f - sig);
        } else {
            const float z = atan_scale * u;
            slope = half_alpha / (1.0f + z * z);
        }
        const float carried = next[i];
        const float through = hard_reset ? (u >= 0.0f ? 0.0f : carried) : carried;
        const float grad_h = gt[i] * slope + through;
        next[i] = grad_h * keep;
        io[i] = grad_h * scale_x;
    }
}

/*
 * grad_x from the input x and the spikes' gradient grad_s, from the last step down to the first. The membranes
 * before firing, H, are first recomputed block by block (the forward's operations, so the same values) into the
 * block's part of grad_x, and each is overwritten by its gradient as the time loop goes back.
 * surrogate 0: sigmoid, g' = alpha sig(alpha u) (1 - sig(alpha u)); 1: atan, g' = alpha / 2 / (1 + (pi/2 alpha u)^2),
 * u = h - v_th. dL/dH_t = grad_s_t g'(u_t) + dL/dH_{t+1} (1 - 1/tau) (1 - S_t if hard_reset else 1);
 * dL/dX_t = dL/dH_t / tau (decay_input) or dL/dH_t.
 */
void lif_backward(const float *restrict x, const float *restrict grad_s, float *restrict grad_x, int64_t steps,
                  int64_t n, float tau, float v_th, float rest, int hard_reset, int decay_input, int surrogate,
                  float alpha, int threads) {
    const int64_t blocks = lif_blocks(n);
    const int parallel = lif_parallel(threads, steps, n);
    const float keep = 1.0f - 1.0f / tau;
    const float scale_x = decay_input ? 1.0f / tau : 1.0f;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t start = b * LIF_BLOCK, len = lif_len(n, start);
        float next[LIF_BLOCK];
        /* H into grad_x (next serves as the membrane buffer meanwhile) */
        lif_block(x, NULL, grad_x, next, steps, n, start, len, tau, v_th, rest, hard_reset, decay_input, 0, 1);
        for (int64_t i = 0; i < len; ++i) next[i] = 0.0f;
        for (int64_t t = steps - 1; t >= 0; --t) {
            const int64_t at = t * n + start;
            float *ht = grad_x + at; /* read as H, then written as dL/dX, element by element */
            if (hard_reset && surrogate == 0)
                lif_step_back(ht, grad_s + at, next, len, v_th, alpha, keep, scale_x, 1, 0);
            else if (hard_reset)
                lif_step_back(ht, grad_s + at, next, len, v_th, alpha, keep, scale_x, 1, 1);
            else if (surrogate == 0)
                lif_step_back(ht, grad_s + at, next, len, v_th, alpha, keep, scale_x, 0, 0);
            else
                lif_step_back(ht, grad_s + at, next, len, v_th, alpha, keep, scale_x, 0, 1);
        }
    }
}

/* bfloat16 <-> float32: widening is exact; narrowing rounds to nearest even (NaN stays NaN), as torch does */
static inline float lif_from_bf16(uint16_t b) {
    const uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t lif_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)0x7fc0u;
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline void lif_widen(const uint16_t *restrict src, float *restrict dst, int64_t len) {
    for (int64_t i = 0; i < len; ++i) dst[i] = lif_from_bf16(src[i]);
}

/* lif_forward for bfloat16 x and spikes; v_last (float32) as there */
void lif_forward_bf16(const uint16_t *restrict x, uint16_t *restrict spikes, float *restrict v_last, int64_t steps,
                      int64_t n, float tau, float v_th, float rest, int hard_reset, int decay_input, int threads) {
    const int64_t blocks = lif_blocks(n);
    const int parallel = lif_parallel(threads, steps, n);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t start = b * LIF_BLOCK, len = lif_len(n, start);
        float v[LIF_BLOCK], xt[LIF_BLOCK], st[LIF_BLOCK];
        for (int64_t i = 0; i < len; ++i) v[i] = rest;
        for (int64_t t = 0; t < steps; ++t) {
            const int64_t at = t * n + start;
            lif_widen(x + at, xt, len);
            lif_step_any(xt, st, NULL, v, len, tau, v_th, rest, hard_reset, decay_input, 1, 0);
            for (int64_t i = 0; i < len; ++i) spikes[at + i] = st[i] != 0.0f ? (uint16_t)0x3f80u : (uint16_t)0;
        }
        if (v_last != NULL) memcpy(v_last + start, v, (size_t)len * sizeof(float));
    }
}

/*
 * lif_backward for bfloat16 x, grad_s and grad_x: the membranes of a block are recomputed in float32 into a buffer
 * of steps x LIF_BLOCK floats per thread. Returns 0, or -1 if that buffer could not be allocated (grad_x is then
 * not fully written).
 */
int lif_backward_bf16(const uint16_t *restrict x, const uint16_t *restrict grad_s, uint16_t *restrict grad_x,
                      int64_t steps, int64_t n, float tau, float v_th, float rest, int hard_reset, int decay_input,
                      int surrogate, float alpha, int threads) {
    const int64_t blocks = lif_blocks(n);
    const int parallel = lif_parallel(threads, steps, n);
    const float keep = 1.0f - 1.0f / tau;
    const float scale_x = decay_input ? 1.0f / tau : 1.0f;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (parallel)
    {
        float *h = malloc((size_t)steps * LIF_BLOCK * sizeof(float));
        if (h == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            if (h == NULL) continue;
            const int64_t start = b * LIF_BLOCK, len = lif_len(n, start);
            float next[LIF_BLOCK], buf[LIF_BLOCK];
            for (int64_t i = 0; i < len; ++i) next[i] = rest; /* the membrane meanwhile */
            for (int64_t t = 0; t < steps; ++t) {
                lif_widen(x + t * n + start, buf, len);
                lif_step_any(buf, NULL, h + t * len, next, len, tau, v_th, rest, hard_reset, decay_input, 0, 1);
            }
            for (int64_t i = 0; i < len; ++i) next[i] = 0.0f;
            for (int64_t t = steps - 1; t >= 0; --t) {
                const int64_t at = t * n + start;
                float *ht = h + t * len;
                lif_widen(grad_s + at, buf, len);
                if (hard_reset && surrogate == 0)
                    lif_step_back(ht, buf, next, len, v_th, alpha, keep, scale_x, 1, 0);
                else if (hard_reset)
                    lif_step_back(ht, buf, next, len, v_th, alpha, keep, scale_x, 1, 1);
                else if (surrogate == 0)
                    lif_step_back(ht, buf, next, len, v_th, alpha, keep, scale_x, 0, 0);
                else
                    lif_step_back(ht, buf, next, len, v_th, alpha, keep, scale_x, 0, 1);
                for (int64_t i = 0; i < len; ++i) grad_x[at + i] = lif_to_bf16(ht[i]);
            }
        }
        free(h);
    }
    return failed ? -1 : 0;
}
