// Shared device helpers for medseg's CuPy kernels: 16-bit storage types and float conversion.
//
// The kernels are compiled by NVRTC (through cupy.RawModule) and, in the tests, by nvcc. To need no
// CUDA headers at all (NVRTC's header set varies between CUDA versions), half and bfloat16 values are
// plain 16-bit storage structs converted with PTX `cvt` instructions (bf16 conversion needs sm_80+).
#pragma once

struct f16 {
    unsigned short bits;
};
struct bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

__device__ __forceinline__ float to_float(bf16 v) { return __uint_as_float(((unsigned int)v.bits) << 16); }

template <typename T>
__device__ __forceinline__ T from_float(float v);

template <>
__device__ __forceinline__ float from_float<float>(float v) {
    return v;
}

template <>
__device__ __forceinline__ f16 from_float<f16>(float v) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
    return r;
}

template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
    return r;
}

// Ceiling and floor division that are correct for negative numerators (C++ `/` truncates toward 0).
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int ceil_div(int a, int b) { return floor_div(a + b - 1, b); }
