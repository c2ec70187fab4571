// Additive coupling of reversible blocks: out = a + sign * b (sign = +1 forward, -1 inverse).
//
// Memory-bound, so: one pass, 16-byte vector loads and stores when every pointer is 16-byte aligned
// (`vectorized` = 1), a grid-stride loop, and a scalar loop for the tail. `out` may be `a` (in place):
// each element is read and written by the same thread. Arithmetic is float32, which for float16 and
// bfloat16 storage rounds exactly as PyTorch's own elementwise add does.
#include "common.cuh"

template <typename T>
__global__ void coupling(const T* a, const T* b, T* out, long long n, float sign, int vectorized) {
    constexpr int V = 16 / sizeof(T);
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (vectorized) {
        const long long nv = n / V;
        const uint4* a4 = reinterpret_cast<const uint4*>(a);
        const uint4* b4 = reinterpret_cast<const uint4*>(b);
        uint4* o4 = reinterpret_cast<uint4*>(out);
        for (long long i = first; i < nv; i += stride) {
            const uint4 va = a4[i], vb = b4[i];
            uint4 vo;
            const T* ea = reinterpret_cast<const T*>(&va);
            const T* eb = reinterpret_cast<const T*>(&vb);
            T* eo = reinterpret_cast<T*>(&vo);
#pragma unroll
            for (int j = 0; j < V; ++j) eo[j] = from_float<T>(to_float(ea[j]) + sign * to_float(eb[j]));
            o4[i] = vo;
        }
        done = nv * V;
    }
    for (long long i = done + first; i < n; i += stride) out[i] = from_float<T>(to_float(a[i]) + sign * to_float(b[i]));
}
