// Padded average and max pooling (crates/cells/src/kernels/pool.rs on the GPU): x (N, C, H, W),
// any kernel and stride, (asymmetric) padding smaller than the kernel, no dilation.

// 1 / divisor of output pixel (oy, ox) of an average pool: kh * kw when padding counts
// (Geom::flag), else the number of real input pixels in the window (at least 1). Computed in
// double and rounded once, as the CPU op does.
template <typename T>
__device__ inline T avg_inv_count(int oy, int ox, const Geom& g) {
    if (g.flag) return (T)(1.0 / (double)(g.kh * g.kw));
    int rows = 0, cols = 0;
    for (int ky = 0; ky < g.kh; ++ky) {
        const int iy = tap_pos(oy, ky, g.stride, 1, g.pad_top);
        rows += (iy >= 0 && iy < g.h) ? 1 : 0;
    }
    for (int kx = 0; kx < g.kw; ++kx) {
        const int ix = tap_pos(ox, kx, g.stride, 1, g.pad_left);
        cols += (ix >= 0 && ix < g.w) ? 1 : 0;
    }
    const int count = rows * cols > 0 ? rows * cols : 1;
    return (T)(1.0 / (double)count);
}

// Average pool forward: a = x; out (N, C, oh, ow): the window sum in window order, times the
// inverse count.
template <typename T>
__device__ void avg_fwd(const T* a, const T*, const T*, T* out, Geom g) {
    const idx_t total = (idx_t)g.n * g.c * g.oh * g.ow;
    GRID_LOOP(i, total) {
        const int ox = (int)(i % g.ow);
        const int oy = (int)((i / g.ow) % g.oh);
        const T* xp = a + (i / ((idx_t)g.ow * g.oh)) * g.h * g.w;
        T acc = 0;
        for (int ky = 0; ky < g.kh; ++ky) {
            const int iy = tap_pos(oy, ky, g.stride, 1, g.pad_top);
            if (iy < 0 || iy >= g.h) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
                const int ix = tap_pos(ox, kx, g.stride, 1, g.pad_left);
                if (ix < 0 || ix >= g.w) continue;
                acc += xp[(idx_t)iy * g.w + ix];
            }
        }
        out[i] = acc * avg_inv_count<T>(oy, ox, g);
    }
}
NASNET_KERNEL(nasnet_avg_pool_fwd, avg_fwd)

// Average pool input gradient: a = output gradient; out (N, C, H, W), one thread per input
// pixel summing (gradient * inverse count) over the windows that contain it.
template <typename T>
__device__ void avg_bwd(const T* a, const T*, const T*, T* out, Geom g) {
    const idx_t total = (idx_t)g.n * g.c * g.h * g.w;
    GRID_LOOP(i, total) {
        const int ix = (int)(i % g.w);
        const int iy = (int)((i / g.w) % g.h);
        const T* gyp = a + (i / ((idx_t)g.w * g.h)) * g.oh * g.ow;
        T acc = 0;
        for (int ky = 0; ky < g.kh; ++ky) {
            const int oy = tap_source(iy, ky, g.stride, 1, g.pad_top, g.oh);
            if (oy < 0) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
                const int ox = tap_source(ix, kx, g.stride, 1, g.pad_left, g.ow);
                if (ox < 0) continue;
                acc += gyp[(idx_t)oy * g.ow + ox] * avg_inv_count<T>(oy, ox, g);
            }
        }
        out[i] = acc;
    }
}
NASNET_KERNEL(nasnet_avg_pool_bwd, avg_bwd)

// Max pool forward: a = x; out (N, C, oh, ow). Padding never wins (it acts as -inf).
template <typename T>
__device__ void max_fwd(const T* a, const T*, const T*, T* out, Geom g) {
    const idx_t total = (idx_t)g.n * g.c * g.oh * g.ow;
    GRID_LOOP(i, total) {
        const int ox = (int)(i % g.ow);
        const int oy = (int)((i / g.ow) % g.oh);
        const T* xp = a + (i / ((idx_t)g.ow * g.oh)) * g.h * g.w;
        T best = nasnet_neg_inf((T)0);
        for (int ky = 0; ky < g.kh; ++ky) {
            const int iy = tap_pos(oy, ky, g.stride, 1, g.pad_top);
            if (iy < 0 || iy >= g.h) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
                const int ix = tap_pos(ox, kx, g.stride, 1, g.pad_left);
                if (ix < 0 || ix >= g.w) continue;
                const T v = xp[(idx_t)iy * g.w + ix];
                best = v > best ? v : best;
            }
        }
        out[i] = best;
    }
}
NASNET_KERNEL(nasnet_max_pool_fwd, max_fwd)

// Whether tap (ky, kx) is the first tap of output (oy, ox)'s window, in window order
// (row-major over the kernel), whose real input pixel equals the window's maximum y.
template <typename T>
__device__ inline bool max_first_hit(const T* xp, T y, int oy, int ox, int ky, int kx,
                                     const Geom& g) {
    for (int t = 0; t <= ky * g.kw + kx; ++t) {
        const int iy = tap_pos(oy, t / g.kw, g.stride, 1, g.pad_top);
        const int ix = tap_pos(ox, t % g.kw, g.stride, 1, g.pad_left);
        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
        if (xp[(idx_t)iy * g.w + ix] == y) return t == ky * g.kw + kx;
    }
    return false;
}

// Max pool input gradient: a = x, b = the forward's output, c = output gradient;
// out (N, C, H, W). Each output's gradient goes whole to the first maximum of its window in
// window order (the CPU op's rule, docs/devices.md), gathered per input pixel.
template <typename T>
__device__ void max_bwd(const T* a, const T* b, const T* c, T* out, Geom g) {
    const idx_t total = (idx_t)g.n * g.c * g.h * g.w;
    GRID_LOOP(i, total) {
        const int ix = (int)(i % g.w);
        const int iy = (int)((i / g.w) % g.h);
        const idx_t p = i / ((idx_t)g.w * g.h);
        const T* xp = a + p * g.h * g.w;
        const idx_t o0 = p * g.oh * g.ow;
        T acc = 0;
        for (int ky = 0; ky < g.kh; ++ky) {
            const int oy = tap_source(iy, ky, g.stride, 1, g.pad_top, g.oh);
            if (oy < 0) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
                const int ox = tap_source(ix, kx, g.stride, 1, g.pad_left, g.ow);
                if (ox < 0) continue;
                const idx_t o = o0 + (idx_t)oy * g.ow + ox;
                if (a[i] == b[o] && max_first_hit(xp, b[o], oy, ox, ky, kx, g)) acc += c[o];
            }
        }
        out[i] = acc;
    }
}
NASNET_KERNEL(nasnet_max_pool_bwd, max_bwd)
