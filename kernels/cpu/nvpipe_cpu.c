/* nvpipe's CPU kernels: the full-resolution stages fused into one pass each.
 *
 * Same functions as the Triton kernels beside them (kernels/color.py, tail.py, nv12.py),
 * for the CPU pipeline: at 1080p the PyTorch references make 10-20 full-frame passes
 * (tail -> NV12: 62 ms a frame on 2 cores, against 7.7 ms here); these make one. Each call handles a band of rows
 * [row_begin, row_end) so the caller can split a frame across threads (ctypes releases
 * the GIL). Arithmetic follows the references in float32; bilinear taps follow PyTorch's
 * upsample_bilinear2d (align_corners=False). Last, one host kernel of the subject tracker
 * (kernels/edges.py: colour edges, SciPy's arithmetic bit for bit, one thread).
 *
 * License: GPL-3.0.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float clamp01(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

static inline uint8_t to_u8(float x) { /* round(x * 255), half up, as the references */
    float v = x * 255.0f + 0.5f;
    v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    return (uint8_t)v;
}

static inline uint8_t code_u8(float v) { /* an already-offset code + 0.5, clamped, truncated */
    v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    return (uint8_t)v;
}

/* PyTorch's source index for output index d: s = max(scale * (d + 0.5) - 0.5, 0),
 * i0 = min(floor(s), n - 1), i1 = i0 + (i0 < n - 1), lambda = clamp(s - i0, 0, 1).
 * Equal sizes copy straight through (PyTorch's special case). */
static inline void linear_tap(int d, int out_size, int in_size, float scale,
                              int *i0, int *i1, float *l1) {
    if (out_size == in_size) { *i0 = d; *i1 = d; *l1 = 0.0f; return; }
    float s = scale * ((float)d + 0.5f) - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int a = (int)s;
    if (a > in_size - 1) a = in_size - 1;
    float l = s - (float)a;
    *l1 = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
    *i0 = a;
    *i1 = a + (a < in_size - 1 ? 1 : 0);
}

static void linear_taps(int out_size, int in_size, float scale, int *i0, int *i1, float *l1) {
    for (int d = 0; d < out_size; ++d) linear_tap(d, out_size, in_size, scale, i0 + d, i1 + d, l1 + d);
}

/* ------------------------------------------------------------------ decoded frame -> RGB */

/* NV12 (bytes == 1) or P016 (bytes == 2) rows [row_begin, row_end) -> planar float RGB.
 * k: (ky, rv, gu, gv, bu, r0, g0, b0), R = ky*Y + rv*V + r0 etc. on raw sample values.
 * pitch in samples; rgb is [3, H, W] contiguous float32. Chroma is replicated (2x2). */
void nvp_yuv420_to_rgb(const void *frame, int bytes, int64_t pitch, int H, int W,
                       const float *k, float *rgb, int row_begin, int row_end) {
    const float ky = k[0], rv = k[1], gu = k[2], gv = k[3], bu = k[4];
    const float r0 = k[5], g0 = k[6], b0 = k[7];
    const int64_t plane = (int64_t)H * W;
    float *cr = malloc(sizeof(float) * 3 * (size_t)((W + 1) / 2));
    if (!cr) return;
    float *cg = cr + (W + 1) / 2, *cb = cg + (W + 1) / 2;
    for (int y = row_begin; y < row_end; ++y) {
        const int64_t luma_row = (int64_t)y * pitch, chroma_row = (int64_t)(H + y / 2) * pitch;
        for (int j = 0; j < (W + 1) / 2; ++j) {
            float u, v;
            if (bytes == 1) {
                const uint8_t *uv = (const uint8_t *)frame + chroma_row + 2 * j;
                u = uv[0]; v = uv[1];
            } else {
                const uint16_t *uv = (const uint16_t *)frame + chroma_row + 2 * j;
                u = uv[0]; v = uv[1];
            }
            cr[j] = r0 + rv * v;
            cg[j] = g0 + (gu * u + gv * v);
            cb[j] = b0 + bu * u;
        }
        float *r = rgb + (int64_t)y * W, *g = r + plane, *b = g + plane;
        if (bytes == 1) {
            const uint8_t *luma = (const uint8_t *)frame + luma_row;
            for (int x = 0; x < W; ++x) {
                const float l = ky * (float)luma[x];
                r[x] = clamp01(cr[x >> 1] + l); g[x] = clamp01(cg[x >> 1] + l);
                b[x] = clamp01(cb[x >> 1] + l);
            }
        } else {
            const uint16_t *luma = (const uint16_t *)frame + luma_row;
            for (int x = 0; x < W; ++x) {
                const float l = ky * (float)luma[x];
                r[x] = clamp01(cr[x >> 1] + l); g[x] = clamp01(cg[x >> 1] + l);
                b[x] = clamp01(cb[x >> 1] + l);
            }
        }
    }
    free(cr);
}

/* Bilinear resize of planar float [C, H, W] -> [C, h, w], rows [row_begin, row_end) of the
 * output; scale_y/scale_x as PyTorch computes them (1/r for a scale factor, in/out for a size). */
void nvp_resize_bilinear(const float *in, int C, int H, int W, float *out, int h, int w,
                         float scale_y, float scale_x, int row_begin, int row_end) {
    int *x0 = malloc(sizeof(int) * 2 * (size_t)w);
    float *lx = malloc(sizeof(float) * (size_t)w);
    if (!x0 || !lx) { free(x0); free(lx); return; }
    int *x1 = x0 + w;
    linear_taps(w, W, scale_x, x0, x1, lx);
    for (int y = row_begin; y < row_end; ++y) {
        int y0, y1; float ly;
        linear_tap(y, h, H, scale_y, &y0, &y1, &ly);
        for (int c = 0; c < C; ++c) {
            const float *top = in + ((int64_t)c * H + y0) * W, *bottom = in + ((int64_t)c * H + y1) * W;
            float *o = out + ((int64_t)c * h + y) * w;
            for (int x = 0; x < w; ++x) {
                const float l = lx[x];
                const float t = (1.0f - l) * top[x0[x]] + l * top[x1[x]];
                const float b = (1.0f - l) * bottom[x0[x]] + l * bottom[x1[x]];
                o[x] = (1.0f - ly) * t + ly * b;
            }
        }
    }
    free(x0); free(lx);
}

/* ------------------------------------------------------------------ the fused tail */

enum { KIND_COMPOSITE = 0, KIND_FOREGROUND = 1, KIND_ALPHA = 2, KIND_RGBA = 3, KIND_RGBA_PREMUL = 4 };

typedef struct {
    const float *a, *b;   /* [4, h, w] contiguous */
    int h, w;
    const float *src;     /* [3, H, W] contiguous */
    int H, W;
    int kind;
    float bg[3];          /* background colour, when bg_frame is NULL */
    const uint8_t *bg_frame; /* [3, H, W] uint8 contiguous, or NULL */
    const float *bg_float;   /* [3, H, W] float32 contiguous, or NULL */
} TailArgs;

/* Working memory for a band of rows: taps along x, the coefficient rows interpolated along
 * x (cached per low-resolution row: output rows y and y+1 usually share their two source
 * rows, so a 4x upsample interpolates each low-res row once, not four times), the 8
 * channels interpolated along y at the current row, and the output values. */
typedef struct {
    int *x0, *x1;
    float *lx;
    float *wide[2];   /* [8, W]: low-res row wide_row[k] of A and b, interpolated along x */
    int wide_row[2];
    float *up;        /* [8, W]: ... and along y, at the current output row */
    float *value;     /* [4, W]: the output values (fgr rgb + pha, or composite) */
} TailScratch;

static int scratch_init(TailScratch *s, const TailArgs *t) {
    s->x0 = malloc(sizeof(int) * 2 * (size_t)t->W);
    s->lx = malloc(sizeof(float) * (size_t)t->W);
    s->wide[0] = malloc(sizeof(float) * 8 * (size_t)t->W);
    s->wide[1] = malloc(sizeof(float) * 8 * (size_t)t->W);
    s->wide_row[0] = s->wide_row[1] = -1;
    s->up = malloc(sizeof(float) * 8 * (size_t)t->W);
    s->value = malloc(sizeof(float) * 4 * (size_t)t->W);
    if (!s->x0 || !s->lx || !s->wide[0] || !s->wide[1] || !s->up || !s->value) return 0;
    s->x1 = s->x0 + t->W;
    linear_taps(t->W, t->w, (float)t->w / (float)t->W, s->x0, s->x1, s->lx);
    return 1;
}

static void scratch_free(TailScratch *s) {
    free(s->x0); free(s->lx); free(s->wide[0]); free(s->wide[1]); free(s->up); free(s->value);
}

/* Low-res row `row` of A and b interpolated along x, from the 2-entry cache. */
static const float *wide_row(const TailArgs *t, TailScratch *s, int row) {
    for (int k = 0; k < 2; ++k)
        if (s->wide_row[k] == row) return s->wide[k];
    /* Output rows go down, so their source rows only grow: evict the older entry. */
    const int k = (s->wide_row[0] < s->wide_row[1]) ? 0 : 1;
    const int w = t->w, W = t->W;
    const int *restrict x0 = s->x0, *restrict x1 = s->x1;
    const float *restrict lx = s->lx;
    for (int c = 0; c < 8; ++c) {
        const float *plane = (c < 4 ? t->a + (int64_t)c * t->h * w : t->b + (int64_t)(c - 4) * t->h * w);
        const float *restrict source = plane + (int64_t)row * w;
        float *restrict out = s->wide[k] + (int64_t)c * W;
        for (int x = 0; x < W; ++x) out[x] = (1.0f - lx[x]) * source[x0[x]] + lx[x] * source[x1[x]];
    }
    s->wide_row[k] = row;
    return s->wide[k];
}

/* value[0..3][x] for row y: fgr (clamped) and pha (clamped), then the kind's composition:
 * composite/foreground -> channels 0-2, alpha -> channel 0, rgba(_premultiplied) -> 0-3. */
static void tail_row(const TailArgs *t, TailScratch *s, int y) {
    const int W = t->W, H = t->H;
    int y0, y1; float ly;
    linear_tap(y, H, t->h, (float)t->h / (float)H, &y0, &y1, &ly);
    {
        /* PyTorch's order: along x within each source row, then along y. */
        const float *restrict top = wide_row(t, s, y0);
        const float *restrict bottom = wide_row(t, s, y1);
        float *restrict up = s->up;
        const float h0 = 1.0f - ly;
        for (int i = 0; i < 8 * W; ++i) up[i] = h0 * top[i] + ly * bottom[i];
    }
    const int64_t plane = (int64_t)H * W, offset = (int64_t)y * W;
    const float *sr = t->src + offset, *sg = sr + plane, *sb = sg + plane;
    float *vr = s->value, *vg = vr + W, *vb = vg + W, *va = vb + W;
    const float *ar = s->up, *ag = ar + W, *ab = ag + W, *aa = ab + W;
    const float *br = aa + W, *bgc = br + W, *bb = bgc + W, *ba = bb + W;
#pragma GCC ivdep  /* value, up and src are distinct buffers */
    for (int x = 0; x < W; ++x) {
        const float r = sr[x], g = sg[x], b = sb[x];
        const float mean = (r + g + b) / 3.0f;
        vr[x] = clamp01(ar[x] * r + br[x] + r);
        vg[x] = clamp01(ag[x] * g + bgc[x] + g);
        vb[x] = clamp01(ab[x] * b + bb[x] + b);
        va[x] = clamp01(aa[x] * mean + ba[x]);
    }
    switch (t->kind) {
    case KIND_COMPOSITE:
        for (int c = 0; c < 3; ++c) {
            float *v = s->value + (int64_t)c * W;
            if (t->bg_frame) {
                const uint8_t *bgp = t->bg_frame + c * plane + offset;
                for (int x = 0; x < W; ++x) {
                    const float bgv = (float)bgp[x] * (1.0f / 255.0f);
                    v[x] = (v[x] - bgv) * va[x] + bgv;
                }
            } else if (t->bg_float) {
                const float *bgp = t->bg_float + c * plane + offset;
                for (int x = 0; x < W; ++x) v[x] = (v[x] - bgp[x]) * va[x] + bgp[x];
            } else {
                const float bgv = t->bg[c];
                for (int x = 0; x < W; ++x) v[x] = (v[x] - bgv) * va[x] + bgv;
            }
        }
        break;
    case KIND_ALPHA:
        memcpy(vr, va, sizeof(float) * (size_t)W);
        break;
    case KIND_RGBA_PREMUL:
        for (int x = 0; x < W; ++x) { vr[x] *= va[x]; vg[x] *= va[x]; vb[x] *= va[x]; }
        break;
    default:
        break;
    }
}

static int kind_channels(int kind) {
    return kind == KIND_ALPHA ? 1 : (kind == KIND_RGBA || kind == KIND_RGBA_PREMUL ? 4 : 3);
}

/* The tail into uint8 `out` with element strides (channel, row, column): any layout,
 * e.g. interleaved (H, W, C) for an encoder. Rows [row_begin, row_end). Returns 0 on
 * allocation failure. */
int nvp_tail_u8(const float *a, const float *b, int h, int w, const float *src, int H, int W,
                int kind, const float *bg_color, const uint8_t *bg_frame, const float *bg_float,
                uint8_t *out, int64_t stride_c, int64_t stride_y, int64_t stride_x,
                int row_begin, int row_end) {
    TailArgs t = {a, b, h, w, src, H, W, kind, {bg_color[0], bg_color[1], bg_color[2]},
                  bg_frame, bg_float};
    TailScratch s;
    if (!scratch_init(&s, &t)) { scratch_free(&s); return 0; }
    const int channels = kind_channels(kind);
    for (int y = row_begin; y < row_end; ++y) {
        tail_row(&t, &s, y);
        for (int c = 0; c < channels; ++c) {
            const float *v = s.value + (int64_t)c * W;
            uint8_t *o = out + c * stride_c + (int64_t)y * stride_y;
            if (stride_x == 1) for (int x = 0; x < W; ++x) o[x] = to_u8(v[x]);
            else for (int x = 0; x < W; ++x) o[(int64_t)x * stride_x] = to_u8(v[x]);
        }
    }
    scratch_free(&s);
    return 1;
}

/* The tail straight into NV12 (pitch in bytes): Y per pixel, U/V from 2x2 means of the
 * output values (edge windows average the pixels they hold). coef: 3 rows of
 * (c0, c1, c2, offset) giving Y, U, V codes from values (1 channel uses c0 only).
 * Handles chroma rows [chroma_begin, chroma_end), i.e. luma rows 2*begin .. 2*end-1. */
int nvp_tail_nv12(const float *a, const float *b, int h, int w, const float *src, int H, int W,
                  int kind, const float *bg_color, const uint8_t *bg_frame, const float *bg_float,
                  const float *coef, uint8_t *out, int64_t pitch,
                  int chroma_begin, int chroma_end) {
    TailArgs t = {a, b, h, w, src, H, W, kind, {bg_color[0], bg_color[1], bg_color[2]},
                  bg_frame, bg_float};
    TailScratch s;
    const int channels = kind == KIND_ALPHA ? 1 : 3;
    const int Wc = (W + 1) / 2;
    float *pair = malloc(sizeof(float) * 2 * 3 * (size_t)W); /* two rows of values */
    if (!pair || !scratch_init(&s, &t)) { free(pair); scratch_free(&s); return 0; }
    for (int i = chroma_begin; i < chroma_end; ++i) {
        const int rows_here = (2 * i + 1 < H) ? 2 : 1;
        for (int r = 0; r < rows_here; ++r) {
            const int y = 2 * i + r;
            tail_row(&t, &s, y);
            uint8_t *luma = out + (int64_t)y * pitch;
            const float *v0 = s.value, *v1 = s.value + W, *v2 = s.value + 2 * W;
            if (channels == 3) {
                for (int x = 0; x < W; ++x)
                    luma[x] = code_u8(v0[x] * coef[0] + v1[x] * coef[1] + v2[x] * coef[2] + (coef[3] + 0.5f));
            } else {
                for (int x = 0; x < W; ++x) luma[x] = code_u8(v0[x] * coef[0] + (coef[3] + 0.5f));
            }
            memcpy(pair + (int64_t)r * 3 * W, s.value, sizeof(float) * (size_t)channels * W);
        }
        uint8_t *chroma = out + (int64_t)(H + i) * pitch;
        for (int j = 0; j < Wc; ++j) {
            const int x = 2 * j, cols = (x + 1 < W) ? 2 : 1;
            float mean[3] = {0.0f, 0.0f, 0.0f};
            for (int c = 0; c < channels; ++c) {
                float sum = 0.0f;
                for (int r = 0; r < rows_here; ++r)
                    for (int dx = 0; dx < cols; ++dx) sum += pair[(int64_t)r * 3 * W + (int64_t)c * W + x + dx];
                mean[c] = sum / (float)(rows_here * cols);
            }
            for (int plane = 1; plane <= 2; ++plane) {
                const float *row = coef + 4 * plane;
                float code = mean[0] * row[0] + (row[3] + 0.5f);
                if (channels == 3) code += mean[1] * row[1] + mean[2] * row[2];
                chroma[2 * j + plane - 1] = code_u8(code);
            }
        }
    }
    free(pair);
    scratch_free(&s);
    return 1;
}

/* ---- the tracker's colour edges ---------------------------------------------------------
 * nvpipe.engine.subject's watershed elevation: per channel of an 8-bit RGB image, a Gaussian
 * (its 2r+1 symmetric weights given) then Sobel along each axis, their hypot, and the largest
 * over the channels. scipy.ndimage's arithmetic exactly, so that the answer is the same bit
 * for bit: each 1-D pass in double over 'reflect'-extended lines, stored as float; the
 * symmetric (anti-symmetric) taps summed in pairs from the outermost in; no fused
 * multiply-adds (scipy's wheels have none): every function here is NVP_EXACT, so that GCC
 * inlines the passes only into callers compiled alike. */
#if defined(__clang__)
#define NVP_NO_CONTRACT _Pragma("clang fp contract(off)")
#define NVP_EXACT
#elif defined(__GNUC__)
#define NVP_NO_CONTRACT
#define NVP_EXACT __attribute__((optimize("fp-contract=off")))
#else
#define NVP_NO_CONTRACT
#define NVP_EXACT
#endif

static inline int reflect(int i, int n) { /* 'reflect': d c b a | a b c d | d c b a */
    int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

/* One pass along rows (axis 1): out[y][x] = sum of taps over in[y][x +- j]. sign: +1 for
 * symmetric weights, -1 for anti-symmetric. w[j] is the weight j left of centre. */
NVP_EXACT static void pass_rows(const float *in, float *out, int H, int W, const double *w,
                                int radius, int sign, double *line) {
    NVP_NO_CONTRACT
    double *acc = line + W + 2 * radius;
    for (int y = 0; y < H; y++) {
        const float *row = in + (int64_t)y * W;
        for (int x = -radius; x < W + radius; x++) line[x + radius] = row[reflect(x, W)];
        const double *c = line + radius;
        for (int x = 0; x < W; x++) acc[x] = c[x] * w[0];
        for (int j = radius; j >= 1; j--) {
            if (sign > 0)
                for (int x = 0; x < W; x++) acc[x] += (c[x - j] + c[x + j]) * w[j];
            else
                for (int x = 0; x < W; x++) acc[x] += (c[x - j] - c[x + j]) * w[j];
        }
        float *o = out + (int64_t)y * W;
        for (int x = 0; x < W; x++) o[x] = (float)acc[x];
    }
}

/* One pass along columns (axis 0), a row of accumulators at a time. */
NVP_EXACT static void pass_columns(const float *in, float *out, int H, int W, const double *w,
                                   int radius, int sign, double *acc) {
    NVP_NO_CONTRACT
    for (int y = 0; y < H; y++) {
        const float *centre = in + (int64_t)y * W;
        for (int x = 0; x < W; x++) acc[x] = (double)centre[x] * w[0];
        for (int j = radius; j >= 1; j--) {
            const float *up = in + (int64_t)reflect(y - j, H) * W;
            const float *down = in + (int64_t)reflect(y + j, H) * W;
            if (sign > 0)
                for (int x = 0; x < W; x++) acc[x] += ((double)up[x] + (double)down[x]) * w[j];
            else
                for (int x = 0; x < W; x++) acc[x] += ((double)up[x] - (double)down[x]) * w[j];
        }
        float *o = out + (int64_t)y * W;
        for (int x = 0; x < W; x++) o[x] = (float)acc[x];
    }
}

/* scipy.ndimage.gaussian_filter of a float32 image (H*W, contiguous) into `out` (H*W):
 * along axis 0, then axis 1, with the weights as nvp_colour_edges takes them. 0 if out of
 * memory. */
NVP_EXACT int nvp_gaussian_f32(const float *in, int H, int W, const double *gauss, int radius,
                               float *out) {
    float *between = malloc((int64_t)H * W * sizeof(float));
    double *line = malloc((2 * (int64_t)(H > W ? H : W) + 2 * radius + 2) * sizeof(double));
    int ok = between && line;
    if (ok) {
        pass_columns(in, between, H, W, gauss, radius, 1, line);
        pass_rows(between, out, H, W, gauss, radius, 1, line);
    }
    free(between); free(line);
    return ok;
}

/* rgb: H rows of W pixels (3 bytes each, `pitch` bytes apart); gauss: w[0] the centre
 * weight, w[j] the weight j from it (j = 1..radius); out: H*W floats. 0 if out of memory. */
NVP_EXACT int nvp_colour_edges(const uint8_t *rgb, int64_t pitch, int H, int W,
                               const double *gauss, int radius, float *out) {
    static const double deriv[2] = {0.0, -1.0}, smooth[2] = {2.0, 1.0};
    int64_t n = (int64_t)H * W;
    int longest = 2 * (H > W ? H : W) + 2 * radius + 2;
    float *image = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float));
    float *g = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    double *line = malloc(longest * sizeof(double));
    int ok = image && a && g && b && line;
    for (int ch = 0; ok && ch < 3; ch++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                image[(int64_t)y * W + x] = (float)rgb[y * pitch + 3 * x + ch] / 255.0f;
        pass_columns(image, a, H, W, gauss, radius, 1, line);
        pass_rows(a, g, H, W, gauss, radius, 1, line);
        pass_columns(g, a, H, W, deriv, 1, -1, line);   /* sobel(axis 0): d/dy ... */
        pass_rows(a, b, H, W, smooth, 1, 1, line);      /* ... smoothed along x */
        pass_rows(g, a, H, W, deriv, 1, -1, line);      /* sobel(axis 1): d/dx ... */
        pass_columns(a, image, H, W, smooth, 1, 1, line); /* ... smoothed along y */
        for (int64_t i = 0; i < n; i++) {
            float h = hypotf(b[i], image[i]);
            out[i] = ch == 0 ? (h > 0.0f ? h : 0.0f) : (h > out[i] ? h : out[i]);
        }
    }
    free(image); free(a); free(g); free(b); free(line);
    return ok;
}
