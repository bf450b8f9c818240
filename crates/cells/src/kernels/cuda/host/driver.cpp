// Runs the CUDA kernel bodies of ../depthwise.cu and ../pool.cu on the CPU, so that their index
// arithmetic is tested without a GPU (crates/cells/src/kernels/cuda/host.rs builds and drives
// it). The CUDA built-ins the kernels use are shimmed; a launch is a loop over every block and
// thread id. Each kernel writes each output element once from one thread (no shared memory,
// synchronisation or atomics: see ../prelude.cuh), so running the threads one after another
// computes what the GPU computes.
//
// Jobs come on stdin, one per line:
//   KERNEL DTYPE GRID BLOCK OUT_LEN G0 .. G13 OUT_FILE IN_FILE...
// with KERNEL the name NASNET_KERNEL registered (no _f32 / _f64 suffix), DTYPE f32 or f64, G0 .. G13 the fields of Geom in order, and files of raw native-endian
// elements. Exits non-zero on the first malformed job.

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <string>
#include <vector>

struct nasnet_dim3 {
    unsigned x, y, z;
};
static nasnet_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__

static inline float __int_as_float(int v) {
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}
static inline double __longlong_as_double(long long v) {
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

struct Geom;
template <typename T>
using KernelFn = void (*)(const T*, const T*, const T*, T*, Geom);

struct Kernels {
    KernelFn<float> f32;
    KernelFn<double> f64;
};

static std::map<std::string, Kernels>& registry() {
    static std::map<std::string, Kernels> table;
    return table;
}

struct Registrar {
    Registrar(const char* name, KernelFn<float> f32, KernelFn<double> f64) {
        registry()[name] = Kernels{f32, f64};
    }
};

#define NASNET_KERNEL(name, body) \
    static Registrar name##_registrar(#name, body<float>, body<double>);

#include "../prelude.cuh"
#include "../depthwise.cu"
#include "../pool.cu"

template <typename T>
static bool read_file(const char* path, std::vector<T>& out) {
    FILE* f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    out.resize(bytes / sizeof(T));
    size_t got = out.empty() ? 0 : fread(out.data(), sizeof(T), out.size(), f);
    fclose(f);
    return got == out.size();
}

template <typename T>
static bool run(KernelFn<T> kernel, unsigned grid, unsigned block, size_t len, Geom g,
                const char* out_path, const std::vector<std::string>& inputs) {
    // Exactly sized buffers, so that a sanitizer build catches any index outside them.
    std::vector<std::vector<T> > bufs(inputs.size());
    for (size_t k = 0; k < inputs.size(); ++k) {
        if (!read_file(inputs[k].c_str(), bufs[k])) return false;
    }
    const T* in[3] = {0, 0, 0};
    for (size_t k = 0; k < bufs.size() && k < 3; ++k) in[k] = bufs[k].data();
    std::vector<T> out(len);
    // NaN marks elements no thread wrote; the test refuses them.
    for (size_t k = 0; k < len; ++k) out[k] = NAN;
    gridDim = nasnet_dim3{grid, 1, 1};
    blockDim = nasnet_dim3{block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = nasnet_dim3{b, 0, 0};
            threadIdx = nasnet_dim3{t, 0, 0};
            kernel(in[0], in[1], in[2], out.data(), g);
        }
    }
    FILE* f = fopen(out_path, "wb");
    if (!f) return false;
    size_t put = len == 0 ? 0 : fwrite(out.data(), sizeof(T), len, f);
    fclose(f);
    return put == len;
}

int main() {
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        std::vector<std::string> words;
        for (char* tok = strtok(line, " \n"); tok; tok = strtok(0, " \n")) words.push_back(tok);
        if (words.empty()) continue;
        if (words.size() < 20) {
            fprintf(stderr, "malformed job for %s\n", words[0].c_str());
            return 2;
        }
        std::map<std::string, Kernels>::iterator k = registry().find(words[0]);
        if (k == registry().end()) {
            fprintf(stderr, "unknown kernel %s\n", words[0].c_str());
            return 2;
        }
        unsigned grid = (unsigned)strtoul(words[2].c_str(), 0, 10);
        unsigned block = (unsigned)strtoul(words[3].c_str(), 0, 10);
        size_t len = (size_t)strtoull(words[4].c_str(), 0, 10);
        int f[14];
        for (int j = 0; j < 14; ++j) f[j] = atoi(words[5 + j].c_str());
        Geom g = {f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13]};
        const char* out_path = words[19].c_str();
        std::vector<std::string> inputs(words.begin() + 20, words.end());
        bool ok = words[1] == "f32"
                      ? run(k->second.f32, grid, block, len, g, out_path, inputs)
                      : words[1] == "f64"
                            ? run(k->second.f64, grid, block, len, g, out_path, inputs)
                            : false;
        if (!ok) {
            fprintf(stderr, "job failed: %s %s\n", words[0].c_str(), words[1].c_str());
            return 1;
        }
    }
    return 0;
}
