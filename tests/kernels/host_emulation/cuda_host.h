// Host emulation of the CUDA built-ins the model ops' kernels use, so that a kernels/*.cu file compiles
// as C++ (g++ -std=c++20) and runs on the CPU: tests/kernels/emulation.py builds one shared library per
// source and launches its kernels over the same grids as the CUDA path.
//
// A launch runs the blocks one after another. A block runs either serially (its threads one after
// another; __syncthreads/__syncwarp abort, so a kernel that needs cooperation cannot pass unnoticed)
// or cooperatively: one std::thread per CUDA thread, __syncthreads and __syncwarp being one barrier
// of the whole block (the kernels call them block-uniformly), a finished thread dropping out of the
// barrier as an exited CUDA thread does. __shared__ variables are function statics: one block at a
// time uses them. Atomics are std::atomic_ref. Warp shuffles are not emulated (no kernel here uses them).
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* emu_block_barrier = nullptr;

inline void __syncthreads() {
    if (emu_block_barrier == nullptr) {
        std::fprintf(stderr, "cuda_host.h: __syncthreads in a serial launch; launch this kernel cooperatively\n");
        std::abort();
    }
    emu_block_barrier->arrive_and_wait();
}
inline void __syncwarp(unsigned int = 0xffffffffu) { __syncthreads(); }

template <typename T>
inline T __ldg(const T* p) {
    return *p;
}
template <typename T>
inline T atomicAdd(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
using std::max;
using std::min;

namespace emu {

// Runs kernel(args...) for every thread of the grid; params[i] points to the i-th argument's value
// (the convention of cuLaunchKernel).
template <typename... Args, std::size_t... I>
void call(void (*kernel)(Args...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<Args>*>(params[I])...);
}

template <typename... Args>
void launch(void (*kernel)(Args...), dim3 grid, dim3 block, void** params, bool cooperative) {
    gridDim = grid;
    blockDim = block;
    const unsigned int threads = block.x * block.y * block.z;
    auto run_thread = [&](dim3 b, unsigned int t) {
        blockIdx = b;
        threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        call(kernel, params, std::index_sequence_for<Args...>{});
    };
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                const dim3 b{bx, by, bz};
                if (!cooperative) {
                    for (unsigned int t = 0; t < threads; ++t) run_thread(b, t);
                    continue;
                }
                std::barrier<> barrier(static_cast<std::ptrdiff_t>(threads));
                emu_block_barrier = &barrier;
                std::vector<std::thread> pool;
                pool.reserve(threads);
                for (unsigned int t = 0; t < threads; ++t)
                    pool.emplace_back([&, t] {
                        run_thread(b, t);
                        barrier.arrive_and_drop();
                    });
                for (auto& th : pool) th.join();
                emu_block_barrier = nullptr;
            }
}

struct Entry {
    const char* name;
    std::function<void(dim3, dim3, void**, bool)> run;
};

template <typename... Args>
Entry entry(const char* name, void (*kernel)(Args...)) {
    return Entry{name, [kernel](dim3 g, dim3 b, void** p, bool coop) { launch(kernel, g, b, p, coop); }};
}

}  // namespace emu
