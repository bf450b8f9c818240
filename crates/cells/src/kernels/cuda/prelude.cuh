// Shared by every kernel family (prepended to depthwise.cu and pool.cu before NVRTC compiles
// them, and included by host/driver.cpp, which runs the same kernel bodies on the CPU).
//
// Rules that keep the bodies runnable on the host: plain C-style CUDA, one thread per output
// element in a grid-stride loop, only blockIdx.x / blockDim.x / gridDim.x / threadIdx.x, no
// shared memory, no __syncthreads, no atomics, no warp intrinsics. Every kernel writes each
// element of its output exactly once (gathers, never scatters), so results do not depend on
// thread scheduling.

// The geometry of one window op, filled in by crates/cells/src/kernels/cuda/mod.rs
// (`KernelGeom`, the same field order).
struct Geom {
    int n, c, h, w;          // input (N, C, H, W)
    int oh, ow;              // output height and width
    int kh, kw;              // kernel height and width
    int stride, dilation;
    int pad_top, pad_left;   // padding before the input; the padding after is implied by oh, ow
    int flag;                // depthwise: fused ReLU on the input; avg pool: count padding
    int chunk;               // depthwise weight gradient: output pixels per partial sum
};

typedef long long idx_t;

// Runs `i` over [0, total) across the whole grid.
#define GRID_LOOP(i, total)                                                     \
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < (total);    \
         i += (idx_t)blockDim.x * gridDim.x)

__device__ inline float nasnet_neg_inf(float) { return __int_as_float(0xff800000); }
__device__ inline double nasnet_neg_inf(double) {
    return __longlong_as_double(0xfff0000000000000LL);
}

// a * b + c with one rounding, as the CPU kernels compute it.
__device__ inline float mul_add(float a, float b, float c) { return fmaf(a, b, c); }
__device__ inline double mul_add(double a, double b, double c) { return fma(a, b, c); }

// The input row (or column) tap `k` of output position `o` reads; outside [0, len) when it
// falls in the padding.
__device__ inline int tap_pos(int o, int k, int stride, int dilation, int pad) {
    return o * stride + k * dilation - pad;
}

// The output position whose tap `k` reads input position `i`, or -1 when there is none
// (the gather form of tap_pos, for input gradients).
__device__ inline int tap_source(int i, int k, int stride, int dilation, int pad, int out_len) {
    const int t = i + pad - k * dilation;
    if (t < 0 || t % stride != 0) return -1;
    const int o = t / stride;
    return o < out_len ? o : -1;
}

// Every kernel has this signature (inputs a, b, c, some unused, and the output), instantiated
// for float (_f32) and double (_f64). The host driver redefines NASNET_KERNEL to register the
// same bodies in a table instead.
#ifndef NASNET_KERNEL
#define NASNET_KERNEL(name, body)                                                          \
    extern "C" __global__ void name##_f32(const float* a, const float* b, const float* c,  \
                                          float* out, Geom g) {                            \
        body<float>(a, b, c, out, g);                                                      \
    }                                                                                      \
    extern "C" __global__ void name##_f64(const double* a, const double* b,                \
                                          const double* c, double* out, Geom g) {          \
        body<double>(a, b, c, out, g);                                                     \
    }
#endif
