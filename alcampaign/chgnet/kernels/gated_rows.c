/* Fused row kernels for CHGNet's gated MLPs (alcampaign/fused_rows.py has the maths).
 *
 * A "row" is a directed bond (atom convolution) or an angle (bond convolution, angle
 * update). Its first-layer output h (w = 2 * hh columns: core | gate) is a sum of up to
 * three per-row or gathered blocks; the gate is
 *     out = silu(LN_c(core)) * sigmoid(LN_g(gate)) [* weight] [+ residual],
 * written per row or added to out[scatter[r]]. Each kernel makes one pass over the rows
 * where torch makes one pass per operation. float32, row-major, int64 indices, one
 * thread; the feature loops vectorise (compiled with -O3 -march=native -ffast-math, so
 * expf comes from glibc's vector library). Row widths are at most MAX_W. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_W 1024

/* fast-math may compute 1 / (1 + inf) as NaN; sigmoid(+-40) is already 0 or 1. */
static inline float sigm(float x) { return 1.0f / (1.0f + expf(-fminf(fmaxf(x, -40.0f), 40.0f))); }

static inline const float *row(const float *x, const int64_t *idx, int64_t r, int64_t w) {
    return x + (idx ? idx[r] : r) * w;
}

/* h[r] = x0[i0[r]] + x1[i1[r]] (+ x2[i2[r]]); a NULL index means row r itself.
 * s[r] = silu(h[r]) when s is not NULL. */
int rows_in_fwd(int64_t n, int64_t w, const float *x0, const int64_t *i0, const float *x1,
                const int64_t *i1, const float *x2, const int64_t *i2, float *h, float *s) {
    if (w > MAX_W) return 1;
    for (int64_t r = 0; r < n; r++) {
        const float *a = row(x0, i0, r, w), *b = row(x1, i1, r, w);
        float *hr = h + r * w;
        if (x2) {
            const float *c = row(x2, i2, r, w);
#pragma omp simd
            for (int64_t k = 0; k < w; k++) hr[k] = a[k] + b[k] + c[k];
        } else {
#pragma omp simd
            for (int64_t k = 0; k < w; k++) hr[k] = a[k] + b[k];
        }
        if (s) {
            float *sr = s + r * w;
#pragma omp simd
            for (int64_t k = 0; k < w; k++) sr[k] = hr[k] * sigm(hr[k]);
        }
    }
    return 0;
}

static inline void scatter_add(float *dx, const int64_t *idx, int64_t r, int64_t w,
                               const float *v) {
    if (!dx) return;
    float *d = dx + idx[r] * w;
#pragma omp simd
    for (int64_t k = 0; k < w; k++) d[k] += v[k];
}

/* Backward of rows_in_fwd. The gradient of h arrives as two halves (d_lo, d_hi, hh
 * columns each, with row strides); when h is given, it is the gradient of silu(h) and is
 * multiplied by silu'(h). Writes dh (n x w; may alias the halves when h is NULL) and
 * adds dh[r] to dx_k[i_k[r]] for every source with both an index and an output. */
int rows_in_bwd(int64_t n, int64_t hh, const float *h, const float *d_lo, int64_t st_lo,
                const float *d_hi, int64_t st_hi, float *dh, const int64_t *i0, float *dx0,
                const int64_t *i1, float *dx1, const int64_t *i2, float *dx2) {
    int64_t w = 2 * hh;
    float buf[MAX_W];
    if (w > MAX_W) return 1;
    for (int64_t r = 0; r < n; r++) {
        const float *lo = d_lo + r * st_lo, *hi = d_hi + r * st_hi;
        if (h) {
            const float *hr = h + r * w;
#pragma omp simd
            for (int64_t k = 0; k < hh; k++) {
                float sg = sigm(hr[k]);
                buf[k] = lo[k] * sg * (1.0f + hr[k] * (1.0f - sg));
            }
#pragma omp simd
            for (int64_t k = 0; k < hh; k++) {
                float x = hr[hh + k], sg = sigm(x);
                buf[hh + k] = hi[k] * sg * (1.0f + x * (1.0f - sg));
            }
        } else {
            memcpy(buf, lo, hh * sizeof(float));
            memcpy(buf + hh, hi, hh * sizeof(float));
        }
        memcpy(dh + r * w, buf, w * sizeof(float));
        if (i0) scatter_add(dx0, i0, r, w, buf);
        if (i1) scatter_add(dx1, i1, r, w, buf);
        if (i2) scatter_add(dx2, i2, r, w, buf);
    }
    return 0;
}

static inline void norm_stats(const float *x, int64_t hh, float eps, float *mean, float *rstd) {
    float m = 0.0f, v = 0.0f;
#pragma omp simd reduction(+ : m)
    for (int64_t k = 0; k < hh; k++) m += x[k];
    m /= (float)hh;
#pragma omp simd reduction(+ : v)
    for (int64_t k = 0; k < hh; k++) v += (x[k] - m) * (x[k] - m);
    *mean = m;
    *rstd = 1.0f / sqrtf(v / (float)hh + eps);
}

/* out = silu(LN_c(core)) * sigmoid(LN_g(gate)) [* wt] [+ res], written to out[r] or added
 * to out[scat[r]]; stats[r] = (mean_c, rstd_c, mean_g, rstd_g) for the backward. */
int gate_fwd(int64_t n, int64_t hh, const float *core, int64_t sc, const float *gate,
             int64_t sg, const float *gc, const float *bc, const float *gg, const float *bg,
             float eps, const float *wt, const float *res, const int64_t *scat, float *out,
             float *stats) {
    float v[MAX_W];
    if (hh > MAX_W) return 1;
    for (int64_t r = 0; r < n; r++) {
        const float *c = core + r * sc, *g = gate + r * sg;
        float mc, rc, mg, rg;
        norm_stats(c, hh, eps, &mc, &rc);
        norm_stats(g, hh, eps, &mg, &rg);
        float *st = stats + 4 * r;
        st[0] = mc;
        st[1] = rc;
        st[2] = mg;
        st[3] = rg;
#pragma omp simd
        for (int64_t k = 0; k < hh; k++) {
            float yc = (c[k] - mc) * rc * gc[k] + bc[k];
            float yg = (g[k] - mg) * rg * gg[k] + bg[k];
            v[k] = yc * sigm(yc) * sigm(yg);
        }
        if (wt) {
            const float *p = wt + r * hh;
#pragma omp simd
            for (int64_t k = 0; k < hh; k++) v[k] *= p[k];
        }
        if (res) {
            const float *p = res + r * hh;
#pragma omp simd
            for (int64_t k = 0; k < hh; k++) v[k] += p[k];
        }
        if (scat) {
            float *o = out + scat[r] * hh;
#pragma omp simd
            for (int64_t k = 0; k < hh; k++) o[k] += v[k];
        } else {
            memcpy(out + r * hh, v, hh * sizeof(float));
        }
    }
    return 0;
}

/* One row of gate_bwd; has_wt is a constant at each call, so each variant vectorises. */
static inline void gate_bwd_row(int64_t hh, const float *c, const float *g, const float *gc,
                                const float *bc, const float *gg, const float *bg,
                                const float *st, const float *wt, const float *d, float *oc,
                                float *og, float *dwt, const int has_wt) {
    /* oc, og first hold the gradients of the normalised values, then of the inputs */
    float s1c = 0.0f, s2c = 0.0f, s1g = 0.0f, s2g = 0.0f;
    const float mc = st[0], rc = st[1], mg = st[2], rg = st[3];
#pragma omp simd reduction(+ : s1c, s2c, s1g, s2g)
    for (int64_t k = 0; k < hh; k++) {
        float zck = (c[k] - mc) * rc, zgk = (g[k] - mg) * rg;
        float yc = zck * gc[k] + bc[k], yg = zgk * gg[k] + bg[k];
        float sc_ = sigm(yc), sg_ = sigm(yg), a = yc * sc_;
        float dk = d[k];
        if (has_wt) {
            dwt[k] = dk * a * sg_;
            dk *= wt[k];
        }
        float a1 = dk * sg_ * sc_ * (1.0f + yc * (1.0f - sc_)) * gc[k];
        float a2 = dk * a * sg_ * (1.0f - sg_) * gg[k];
        oc[k] = a1;
        og[k] = a2;
        s1c += a1;
        s2c += a1 * zck;
        s1g += a2;
        s2g += a2 * zgk;
    }
    s1c /= (float)hh;
    s2c /= (float)hh;
    s1g /= (float)hh;
    s2g /= (float)hh;
#pragma omp simd
    for (int64_t k = 0; k < hh; k++) {
        oc[k] = rc * (oc[k] - s1c - (c[k] - mc) * rc * s2c);
        og[k] = rg * (og[k] - s1g - (g[k] - mg) * rg * s2g);
    }
}

/* Backward of gate_fwd without its residual: the gradient of out[r] is dout[scat[r]] or
 * dout[r]. Writes dcore and dgate (row strides sdc, sdg) and, with a weight, dwt. */
int gate_bwd(int64_t n, int64_t hh, const float *core, int64_t sc, const float *gate,
             int64_t sg, const float *gc, const float *bc, const float *gg, const float *bg,
             const float *stats, const float *wt, const int64_t *scat, const float *dout,
             float *dcore, int64_t sdc, float *dgate, int64_t sdg, float *dwt) {
    if (hh > MAX_W) return 1;
    for (int64_t r = 0; r < n; r++) {
        const float *c = core + r * sc, *g = gate + r * sg, *st = stats + 4 * r;
        const float *d = dout + (scat ? scat[r] : r) * hh;
        float *oc = dcore + r * sdc, *og = dgate + r * sdg;
        if (wt)
            gate_bwd_row(hh, c, g, gc, bc, gg, bg, st, wt + r * hh, d, oc, og, dwt + r * hh, 1);
        else
            gate_bwd_row(hh, c, g, gc, bc, gg, bg, st, 0, d, oc, og, 0, 0);
    }
    return 0;
}
