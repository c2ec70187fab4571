// Depthwise 3D convolution, "same" zero padding K / 2, stride S in {1, 2}, dilation 1.
//
// Layout: x (B, C, D, H, W) and y (B, C, Do, Ho, Wo) contiguous; w (C, 1, K, K, K) contiguous.
// Every kernel works on one (batch, channel) plane and one spatial tile per block: a block of
// TileW x TileH threads, each thread covering TileD positions along depth. The input window of the tile
// is staged in shared memory (no im2col buffer); arithmetic is float32 whatever the storage type.
//
//   dw_forward:      y  = sum_k w[k] * x[o * S - P + k] (+ bias)
//   dw_grad_input:   gx = sum over (k, o) with o * S - P + k = i of w[k] * gy[o]   (transposed conv)
//   dw_grad_weight:  gw[c, k] += sum over the tile of gy[o] * x[o * S - P + k]   (float32 atomicAdd)
#include "common.cuh"

template <int S>
struct Tile;
template <>
struct Tile<1> {
    static constexpr int W = 32, H = 8, D = 4;
};
template <>
struct Tile<2> {
    static constexpr int W = 16, H = 8, D = 2;
};

// Load the zero-padded input window that a tile of outputs reads into shared memory.
template <typename T, int K, int S>
__device__ __forceinline__ void load_input_window(float* win, const T* xp, int D, int H, int W, int id0, int ih0,
                                                  int iw0, int tid, int nthreads) {
    constexpr int IW = (Tile<S>::W - 1) * S + K, IH = (Tile<S>::H - 1) * S + K, ID = (Tile<S>::D - 1) * S + K;
    for (int i = tid; i < ID * IH * IW; i += nthreads) {
        const int lw = i % IW, r = i / IW, lh = r % IH, ld = r / IH;
        const int gw = iw0 + lw, gh = ih0 + lh, gd = id0 + ld;
        float v = 0.f;
        if (gw >= 0 && gw < W && gh >= 0 && gh < H && gd >= 0 && gd < D) {
            v = to_float(xp[((long long)gd * H + gh) * W + gw]);
        }
        win[i] = v;
    }
}

// grid: (tiles_w * tiles_h * tiles_d, C, B) over the output; block: (Tile<S>::W, Tile<S>::H).
template <typename T, int K, int S>
__global__ void dw_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                           T* __restrict__ y, int C, int D, int H, int W, int Do, int Ho, int Wo, int tiles_w,
                           int tiles_h) {
    constexpr int TW = Tile<S>::W, TH = Tile<S>::H, TD = Tile<S>::D, P = K / 2;
    constexpr int IW = (TW - 1) * S + K, IH = (TH - 1) * S + K, ID = (TD - 1) * S + K;
    constexpr int NT = TW * TH, KKK = K * K * K;
    __shared__ float win[ID * IH * IW];
    __shared__ float wk[KKK];
    const int c = blockIdx.y, b = blockIdx.z;
    int tile = blockIdx.x;
    const int tw = tile % tiles_w;
    tile /= tiles_w;
    const int th = tile % tiles_h, td = tile / tiles_h;
    const int ow0 = tw * TW, oh0 = th * TH, od0 = td * TD;
    const long long plane = (long long)b * C + c;
    const int tid = threadIdx.y * TW + threadIdx.x;
    for (int i = tid; i < KKK; i += NT) wk[i] = to_float(w[(long long)c * KKK + i]);
    load_input_window<T, K, S>(win, x + plane * D * H * W, D, H, W, od0 * S - P, oh0 * S - P, ow0 * S - P, tid, NT);
    __syncthreads();
    const int ow = ow0 + threadIdx.x, oh = oh0 + threadIdx.y;
    if (ow >= Wo || oh >= Ho) return;
    const float b0 = bias != nullptr ? to_float(bias[c]) : 0.f;
    T* yp = y + plane * Do * Ho * Wo;
    for (int dz = 0; dz < TD; ++dz) {
        const int od = od0 + dz;
        if (od >= Do) break;
        const float* base = win + (dz * S * IH + threadIdx.y * S) * IW + threadIdx.x * S;
        float acc = b0;
#pragma unroll 1
        for (int kd = 0; kd < K; ++kd)
#pragma unroll
            for (int kh = 0; kh < K; ++kh)
#pragma unroll
                for (int kw = 0; kw < K; ++kw) acc += wk[(kd * K + kh) * K + kw] * base[(kd * IH + kh) * IW + kw];
        yp[((long long)od * Ho + oh) * Wo + ow] = from_float<T>(acc);
    }
}

// grid: (tiles_w * tiles_h * tiles_d, C, B) over the INPUT; block: (Tile<S>::W, Tile<S>::H).
template <typename T, int K, int S>
__global__ void dw_grad_input(const T* __restrict__ gy, const T* __restrict__ w, T* __restrict__ gx, int C, int D,
                              int H, int W, int Do, int Ho, int Wo, int tiles_w, int tiles_h) {
    constexpr int TW = Tile<S>::W, TH = Tile<S>::H, TD = Tile<S>::D, P = K / 2;
    // Outputs read by a tile of TD inputs: indices ceil((i0 + P - K + 1) / S) .. floor((i0 + TD - 1 + P) / S).
    constexpr int GW = (TW + K - 2) / S + 2, GH = (TH + K - 2) / S + 2, GD = (TD + K - 2) / S + 2;
    constexpr int NT = TW * TH, KKK = K * K * K;
    __shared__ float gwin[GD * GH * GW];
    __shared__ float wk[KKK];
    const int c = blockIdx.y, b = blockIdx.z;
    int tile = blockIdx.x;
    const int tw = tile % tiles_w;
    tile /= tiles_w;
    const int th = tile % tiles_h, td = tile / tiles_h;
    const int iw0 = tw * TW, ih0 = th * TH, id0 = td * TD;
    const int ow_lo = ceil_div(iw0 + P - K + 1, S), oh_lo = ceil_div(ih0 + P - K + 1, S);
    const int od_lo = ceil_div(id0 + P - K + 1, S);
    const long long plane = (long long)b * C + c;
    const int tid = threadIdx.y * TW + threadIdx.x;
    for (int i = tid; i < KKK; i += NT) wk[i] = to_float(w[(long long)c * KKK + i]);
    const T* gyp = gy + plane * Do * Ho * Wo;
    for (int i = tid; i < GD * GH * GW; i += NT) {
        const int lw = i % GW, r = i / GW, lh = r % GH, ld = r / GH;
        const int ow = ow_lo + lw, oh = oh_lo + lh, od = od_lo + ld;
        float v = 0.f;
        if (ow >= 0 && ow < Wo && oh >= 0 && oh < Ho && od >= 0 && od < Do) {
            v = to_float(gyp[((long long)od * Ho + oh) * Wo + ow]);
        }
        gwin[i] = v;
    }
    __syncthreads();
    const int iw = iw0 + threadIdx.x, ih = ih0 + threadIdx.y;
    if (iw >= W || ih >= H) return;
    T* gxp = gx + plane * D * H * W;
    for (int dz = 0; dz < TD; ++dz) {
        const int id = id0 + dz;
        if (id >= D) break;
        float acc = 0.f;
#pragma unroll 1
        for (int kd = 0; kd < K; ++kd) {
            const int nd = id + P - kd;
            if (nd % S != 0) continue;
            const int ld = nd / S - od_lo;
#pragma unroll
            for (int kh = 0; kh < K; ++kh) {
                const int nh = ih + P - kh;
                if (nh % S != 0) continue;
                const int lh = nh / S - oh_lo;
#pragma unroll
                for (int kw = 0; kw < K; ++kw) {
                    const int nw = iw + P - kw;
                    if (nw % S != 0) continue;
                    const int lw = nw / S - ow_lo;
                    acc += wk[(kd * K + kh) * K + kw] * gwin[(ld * GH + lh) * GW + lw];
                }
            }
        }
        gxp[((long long)id * H + ih) * W + iw] = from_float<T>(acc);
    }
}

// grid: (tiles_w * tiles_h * tiles_d, C, B) over the output; block: (Tile<S>::W, Tile<S>::H).
// gw_acc: float32 (C, K, K, K), zero-initialised by the caller; each block adds its partial sums.
template <typename T, int K, int S>
__global__ void dw_grad_weight(const T* __restrict__ x, const T* __restrict__ gy, float* __restrict__ gw_acc, int C,
                               int D, int H, int W, int Do, int Ho, int Wo, int tiles_w, int tiles_h) {
    constexpr int TW = Tile<S>::W, TH = Tile<S>::H, TD = Tile<S>::D, P = K / 2;
    constexpr int IW = (TW - 1) * S + K, IH = (TH - 1) * S + K, ID = (TD - 1) * S + K;
    constexpr int NT = TW * TH, KKK = K * K * K, NOUT = TD * TH * TW;
    // Threads split into R replicas of the KKK taps; replica r sums outputs r, r + R, ... of the tile.
    constexpr int R = NT >= KKK ? NT / KKK : 1;
    __shared__ float win[ID * IH * IW];
    __shared__ float gwin[NOUT];
    __shared__ float partial[R > 1 ? R * KKK : 1];
    const int c = blockIdx.y, b = blockIdx.z;
    int tile = blockIdx.x;
    const int tw = tile % tiles_w;
    tile /= tiles_w;
    const int th = tile % tiles_h, td = tile / tiles_h;
    const int ow0 = tw * TW, oh0 = th * TH, od0 = td * TD;
    const long long plane = (long long)b * C + c;
    const int tid = threadIdx.y * TW + threadIdx.x;
    load_input_window<T, K, S>(win, x + plane * D * H * W, D, H, W, od0 * S - P, oh0 * S - P, ow0 * S - P, tid, NT);
    const T* gyp = gy + plane * Do * Ho * Wo;
    for (int i = tid; i < NOUT; i += NT) {
        const int lw = i % TW, r = i / TW, lh = r % TH, ld = r / TH;
        const int ow = ow0 + lw, oh = oh0 + lh, od = od0 + ld;
        gwin[i] = (ow < Wo && oh < Ho && od < Do) ? to_float(gyp[((long long)od * Ho + oh) * Wo + ow]) : 0.f;
    }
    __syncthreads();
    for (int slot = tid; slot < R * KKK; slot += NT) {
        const int tap = slot % KKK, rep = slot / KKK;
        const int kw = tap % K, kh = (tap / K) % K, kd = tap / (K * K);
        const float* base = win + (kd * IH + kh) * IW + kw;
        float acc = 0.f;
        for (int o = rep; o < NOUT; o += R) {
            const int lw = o % TW, r = o / TW, lh = r % TH, ld = r / TH;
            acc += gwin[o] * base[(ld * S * IH + lh * S) * IW + lw * S];
        }
        if (R > 1) {
            partial[slot] = acc;
        } else {
            atomicAdd(gw_acc + (long long)c * KKK + tap, acc);
        }
    }
    if (R > 1) {
        __syncthreads();
        for (int tap = tid; tap < KKK; tap += NT) {
            float acc = 0.f;
            for (int rep = 0; rep < R; ++rep) acc += partial[rep * KKK + tap];
            atomicAdd(gw_acc + (long long)c * KKK + tap, acc);
        }
    }
}
