// Host emulation of the small part of the CUDA execution model that medseg's kernels use, so the real
// .cu sources can be compiled with g++ and run on CPU tensors in tests (index and logic checks; no
// timing, float32 only). Every thread of a block is a std::thread; __syncthreads is a std::barrier;
// __shared__ arrays become function statics shared by the block's threads (blocks run one at a time);
// __shfl_xor_sync exchanges through a block-wide buffer, so all threads must call it together, as they
// do in the kernels; atomicAdd takes a mutex.
#pragma once
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint4 {
    unsigned x, y, z, w;
};

inline dim3 blockDim, gridDim;
inline thread_local dim3 threadIdx, blockIdx;
inline std::barrier<>* emu_barrier = nullptr;
inline std::vector<float> emu_exchange;
inline std::vector<float> emu_dynamic_shared;
inline std::mutex emu_atomic_mutex;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define asm(...)

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

inline unsigned emu_linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline float __shfl_xor_sync(unsigned, float v, int offset, int width = 32) {
    const unsigned t = emu_linear_thread();
    (void)width;
    emu_exchange[t] = v;
    __syncthreads();
    const float r = emu_exchange[t ^ (unsigned)offset];
    __syncthreads();
    return r;
}

inline float atomicAdd(float* p, float v) {
    std::lock_guard<std::mutex> lock(emu_atomic_mutex);
    const float old = *p;
    *p = old + v;
    return old;
}

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline int min(int a, int b) { return a < b ? a : b; }

template <typename F>
void emu_run(dim3 grid, dim3 block, std::size_t shared_bytes, F body) {
    gridDim = grid;
    blockDim = block;
    const unsigned n = block.x * block.y * block.z;
    emu_exchange.assign(n, 0.f);
    emu_dynamic_shared.assign(shared_bytes / sizeof(float) + 1, NAN);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                std::barrier<> bar(n);
                emu_barrier = &bar;
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned t = 0; t < n; ++t) {
                    threads.emplace_back([&, t, bx, by, bz] {
                        blockIdx = dim3{bx, by, bz};
                        threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        body();
                        bar.arrive_and_drop();  // an exited thread no longer takes part in __syncthreads
                    });
                }
                for (auto& th : threads) th.join();
            }
}

template <typename... A, std::size_t... I>
void emu_invoke(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
}

template <typename... A>
void emu_call(void (*kernel)(A...), void** params, dim3 grid, dim3 block, std::size_t shared_bytes) {
    emu_run(grid, block, shared_bytes, [&] { emu_invoke(kernel, params, std::index_sequence_for<A...>{}); });
}
