// Depthwise convolution (crates/cells/src/kernels/depthwise.rs on the GPU): x (N, C, H, W),
// kernel (C, 1, kh, kw), any stride, dilation and (asymmetric) padding, optionally with a ReLU
// applied to x first (Geom::flag). Taps are visited in window order (row-major over the kernel)
// and accumulated with fused multiply-adds, as the CPU loops do.

// The input value a tap reads, rectified when the ReLU is fused (x > 0 ? x : 0, NaN -> 0).
template <typename T>
__device__ inline T dw_input(const T* xp, int iy, int ix, const Geom& g) {
    const T v = xp[(idx_t)iy * g.w + ix];
    return (g.flag && !(v > (T)0)) ? (T)0 : v;
}

// Forward: a = x, b = kernel; out (N, C, oh, ow), one thread per output pixel.
template <typename T>
__device__ void dw_fwd(const T* a, const T* b, const T*, T* out, Geom g) {
    const idx_t total = (idx_t)g.n * g.c * g.oh * g.ow;
    const int taps = g.kh * g.kw;
    GRID_LOOP(i, total) {
        const int ox = (int)(i % g.ow);
        const int oy = (int)((i / g.ow) % g.oh);
        const idx_t p = i / ((idx_t)g.ow * g.oh);
        const T* xp = a + p * g.h * g.w;
        const T* kc = b + (p % g.c) * taps;
        T acc = 0;
        for (int ky = 0; ky < g.kh; ++ky) {
            const int iy = tap_pos(oy, ky, g.stride, g.dilation, g.pad_top);
            if (iy < 0 || iy >= g.h) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
                const int ix = tap_pos(ox, kx, g.stride, g.dilation, g.pad_left);
                if (ix < 0 || ix >= g.w) continue;
                acc = mul_add(kc[ky * g.kw + kx], dw_input(xp, iy, ix, g), acc);
            }
        }
        out[i] = acc;
    }
}
NASNET_KERNEL(nasnet_dw_fwd, dw_fwd)

// Input gradient: a = output gradient, b = kernel, c = x (for the fused ReLU's mask);
// out (N, C, H, W), one thread per input pixel gathering every output that read it.
template <typename T>
__device__ void dw_bwd_input(const T* a, const T* b, const T* c, T* out, Geom g) {
    const idx_t total = (idx_t)g.n * g.c * g.h * g.w;
    const int taps = g.kh * g.kw;
    GRID_LOOP(i, total) {
        if (g.flag && !(c[i] > (T)0)) {
            out[i] = 0;
            continue;
        }
        const int ix = (int)(i % g.w);
        const int iy = (int)((i / g.w) % g.h);
        const idx_t p = i / ((idx_t)g.w * g.h);
        const T* gyp = a + p * g.oh * g.ow;
        const T* kc = b + (p % g.c) * taps;
        T acc = 0;
        for (int ky = 0; ky < g.kh; ++ky) {
            const int oy = tap_source(iy, ky, g.stride, g.dilation, g.pad_top, g.oh);
            if (oy < 0) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
                const int ox = tap_source(ix, kx, g.stride, g.dilation, g.pad_left, g.ow);
                if (ox < 0) continue;
                acc = mul_add(kc[ky * g.kw + kx], gyp[(idx_t)oy * g.ow + ox], acc);
            }
        }
        out[i] = acc;
    }
}
NASNET_KERNEL(nasnet_dw_bwd_input, dw_bwd_input)

// Number of partial sums per (channel, tap) of the weight gradient.
__device__ inline idx_t dw_chunks(const Geom& g) {
    const idx_t pixels = (idx_t)g.n * g.oh * g.ow;
    return (pixels + g.chunk - 1) / g.chunk;
}

// Weight gradient, first pass: a = x, b = output gradient; out holds, for each channel, chunk
// and tap (tap fastest), the sum over `g.chunk` consecutive (batch, output pixel) positions.
// Partial sums in a fixed order instead of atomics: deterministic, and no synchronisation.
template <typename T>
__device__ void dw_bwd_weight_partial(const T* a, const T* b, const T*, T* out, Geom g) {
    const int taps = g.kh * g.kw;
    const idx_t chunks = dw_chunks(g);
    const idx_t total = (idx_t)g.c * chunks * taps;
    const idx_t opix = (idx_t)g.oh * g.ow;
    const idx_t pixels = (idx_t)g.n * opix;
    GRID_LOOP(i, total) {
        const int t = (int)(i % taps);
        const idx_t chunk = (i / taps) % chunks;
        const int ch = (int)(i / ((idx_t)taps * chunks));
        const int ky = t / g.kw, kx = t % g.kw;
        const idx_t end = (chunk + 1) * g.chunk < pixels ? (chunk + 1) * g.chunk : pixels;
        T acc = 0;
        for (idx_t j = chunk * g.chunk; j < end; ++j) {
            const idx_t nn = j / opix;
            const int oy = (int)((j % opix) / g.ow), ox = (int)(j % g.ow);
            const int iy = tap_pos(oy, ky, g.stride, g.dilation, g.pad_top);
            const int ix = tap_pos(ox, kx, g.stride, g.dilation, g.pad_left);
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
            const idx_t p = nn * g.c + ch;
            acc = mul_add(b[p * opix + (j % opix)], dw_input(a + p * g.h * g.w, iy, ix, g), acc);
        }
        out[i] = acc;
    }
}
NASNET_KERNEL(nasnet_dw_bwd_weight_partial, dw_bwd_weight_partial)

// Weight gradient, second pass: a = the partial sums; out (C, 1, kh, kw), each the sum of its
// partials in chunk order.
template <typename T>
__device__ void dw_bwd_weight_reduce(const T* a, const T*, const T*, T* out, Geom g) {
    const int taps = g.kh * g.kw;
    const idx_t chunks = dw_chunks(g);
    GRID_LOOP(i, (idx_t)g.c * taps) {
        const idx_t ch = i / taps;
        const int t = (int)(i % taps);
        T acc = 0;
        for (idx_t k = 0; k < chunks; ++k) acc += a[(ch * chunks + k) * taps + t];
        out[i] = acc;
    }
}
NASNET_KERNEL(nasnet_dw_bwd_weight_reduce, dw_bwd_weight_reduce)
