// Selective scan (Mamba), chunked over the sequence, in mamba's layout:
//   u (B, D, L) storage T; dt (B, D, L) float32 (bias and softplus already applied); A (D, N) float32;
//   Bm, Cm (B, G, N, L) storage T, channel d reading group d / (D / G); gy, y, du, ddt (B, D, L) float32;
//   chunk states (B, D, nchunks, N) float32.
//
// Recurrence per (b, d, n): h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, and y_t = sum_n C_t h_t.
// The sequence is cut into chunks of `chunk_len` tokens. Forward: (1) scan_fwd_chunk scans every chunk
// from a zero state at once, giving its local end state and total decay exp(A sum dt); (2) scan_carry
// propagates the true state entering each chunk (a short sequential pass per (b, d, n)); (3)
// scan_fwd_chunk runs again from those states and writes y. Backward mirrors this with the reverse
// scan g_t = gy_t C_t + exp(dt_{t+1} A) g_{t+1}: scan_bwd_local, scan_carry (reversed), scan_bwd_chunk.
// Only the chunk-entering states are kept between forward and backward (memory O(B D L N / chunk_len));
// scan_bwd_chunk recomputes the chunk's states into shared memory and walks them backwards.
//
// Threads: a group of `lanes` threads (a power of two >= N, at most 32) handles one (b, d, chunk), lane
// n owning state n; a block holds `blockDim.x / lanes` consecutive channels of one B/C group.
// grid = (nchunks, D / channels_per_block, B). Lanes n >= N idle along with zero values.
#include "common.cuh"

#define LOG2E 1.4426950408889634f

__device__ __forceinline__ unsigned block_lane_mask() {
    return blockDim.x >= 32 ? 0xffffffffu : ((1u << blockDim.x) - 1u);
}

// Sum over the `lanes` threads of a group (all threads of the warp must call it together).
__device__ __forceinline__ float group_sum(float v, int lanes, unsigned mask) {
    for (int offset = lanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(mask, v, offset, lanes);
    return v;
}

struct ScanIndex {
    int lane, ch, d, n, t0, len;
    bool active;
    long long row, mrow, state;

    __device__ ScanIndex(int D, int L, int N, int G, int chunk_len, int nchunks, int lanes) {
        lane = threadIdx.x % lanes;
        ch = threadIdx.x / lanes;
        const int chunk = blockIdx.x, b = blockIdx.z;
        d = blockIdx.y * (blockDim.x / lanes) + ch;
        const int g = d / (D / G);
        active = lane < N;
        n = active ? lane : 0;
        t0 = chunk * chunk_len;
        len = min(chunk_len, L - t0);
        row = ((long long)b * D + d) * L;
        mrow = (((long long)b * G + g) * N + n) * L;
        state = (((long long)b * D + d) * nchunks + chunk) * N + n;
    }
};

// h_start: states entering each chunk, or nullptr for zero. y: output or nullptr. h_end: state after each
// chunk. decay: exp(A sum_chunk dt) per chunk, or nullptr.
template <typename T>
__global__ void scan_fwd_chunk(const T* __restrict__ u, const float* __restrict__ dt, const float* __restrict__ A,
                               const T* __restrict__ Bm, const T* __restrict__ Cm, const float* __restrict__ h_start,
                               float* __restrict__ y, float* __restrict__ h_end, float* __restrict__ decay, int D,
                               int L, int N, int G, int chunk_len, int nchunks, int lanes) {
    const ScanIndex ix(D, L, N, G, chunk_len, nchunks, lanes);
    const unsigned mask = block_lane_mask();
    const float a2 = ix.active ? A[ix.d * N + ix.n] * LOG2E : 0.f;
    float h = (h_start != nullptr && ix.active) ? h_start[ix.state] : 0.f;
    float dt_sum = 0.f;
    for (int i = 0; i < ix.len; ++i) {
        const int t = ix.t0 + i;
        const float dtv = dt[ix.row + t];
        const float bv = ix.active ? to_float(Bm[ix.mrow + t]) : 0.f;
        h = exp2f(dtv * a2) * h + dtv * to_float(u[ix.row + t]) * bv;
        dt_sum += dtv;
        if (y != nullptr) {
            const float p = group_sum(ix.active ? to_float(Cm[ix.mrow + t]) * h : 0.f, lanes, mask);
            if (ix.lane == 0) y[ix.row + t] = p;
        }
    }
    if (ix.active) {
        h_end[ix.state] = h;
        if (decay != nullptr) decay[ix.state] = exp2f(dt_sum * a2);
    }
}

// One thread per (b, d, n), over the chunk states (B, D, nchunks, N): out[c] = s; s = decay[c] * s + add[c],
// chunks in order (forward states) or reversed (backward gradients). init, final_state: (B, D, N) or nullptr.
__global__ void scan_carry(const float* __restrict__ decay, const float* __restrict__ add, float* __restrict__ out,
                           const float* __restrict__ init, float* __restrict__ final_state, long long bdn, int N,
                           int nchunks, int reverse) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= bdn) return;
    const long long bd = idx / N;
    const int n = (int)(idx % N);
    float s = init != nullptr ? init[idx] : 0.f;
    for (int k = 0; k < nchunks; ++k) {
        const int c = reverse ? nchunks - 1 - k : k;
        const long long j = (bd * nchunks + c) * N + n;
        out[j] = s;
        s = decay[j] * s + add[j];
    }
    if (final_state != nullptr) final_state[idx] = s;
}

// Reverse scan of every chunk from a zero gradient: carry_out = exp(dt_first A) * g_first (what the chunk
// passes to the previous chunk's last state), and decay = exp(A sum_chunk dt).
template <typename T>
__global__ void scan_bwd_local(const float* __restrict__ dt, const float* __restrict__ A, const T* __restrict__ Cm,
                               const float* __restrict__ gy, float* __restrict__ carry_out,
                               float* __restrict__ decay, int D, int L, int N, int G, int chunk_len, int nchunks,
                               int lanes) {
    const ScanIndex ix(D, L, N, G, chunk_len, nchunks, lanes);
    const float a2 = ix.active ? A[ix.d * N + ix.n] * LOG2E : 0.f;
    float g = 0.f, dt_sum = 0.f;
    for (int i = ix.len - 1; i >= 0; --i) {
        const int t = ix.t0 + i;
        const float dtv = dt[ix.row + t];
        const float cv = ix.active ? to_float(Cm[ix.mrow + t]) : 0.f;
        g = exp2f(dtv * a2) * (g + gy[ix.row + t] * cv);
        dt_sum += dtv;
    }
    if (ix.active) {
        carry_out[ix.state] = g;
        decay[ix.state] = exp2f(dt_sum * a2);
    }
}

// Gradients of one chunk. h_in: state entering the chunk; g_after: gradient reaching the chunk's last state
// from later chunks (and from last_state). Writes du, ddt; adds into dA (D, N), dB, dC (B, G, N, L), all
// float32 and zero-initialised by the caller. Dynamic shared memory: (chunk_len + 2) * blockDim.x floats.
template <typename T>
__global__ void scan_bwd_chunk(const T* __restrict__ u, const float* __restrict__ dt, const float* __restrict__ A,
                               const T* __restrict__ Bm, const T* __restrict__ Cm, const float* __restrict__ gy,
                               const float* __restrict__ h_in, const float* __restrict__ g_after,
                               float* __restrict__ du, float* __restrict__ ddt, float* __restrict__ dA,
                               float* __restrict__ dB, float* __restrict__ dC, int D, int L, int N, int G,
                               int chunk_len, int nchunks, int lanes) {
    extern __shared__ float smem[];
    const int nt = blockDim.x, tid = threadIdx.x;
    float* hbuf = smem;                      // [chunk_len][nt] states of this chunk
    float* red_b = smem + chunk_len * nt;    // [nt] per-token dB terms, summed over the block's channels
    float* red_c = red_b + nt;               // [nt] per-token dC terms
    const ScanIndex ix(D, L, N, G, chunk_len, nchunks, lanes);
    const unsigned mask = block_lane_mask();
    const int channels = nt / lanes;
    const float av = ix.active ? A[ix.d * N + ix.n] : 0.f;
    const float a2 = av * LOG2E;
    const float h0 = ix.active ? h_in[ix.state] : 0.f;
    float h = h0;
    for (int i = 0; i < ix.len; ++i) {
        const int t = ix.t0 + i;
        const float dtv = dt[ix.row + t];
        const float bv = ix.active ? to_float(Bm[ix.mrow + t]) : 0.f;
        h = exp2f(dtv * a2) * h + dtv * to_float(u[ix.row + t]) * bv;
        hbuf[i * nt + tid] = h;
    }
    float g = ix.active ? g_after[ix.state] : 0.f;
    float dA_sum = 0.f;
    for (int i = ix.len - 1; i >= 0; --i) {
        const int t = ix.t0 + i;
        const float dtv = dt[ix.row + t], uv = to_float(u[ix.row + t]), gyv = gy[ix.row + t];
        const float bv = ix.active ? to_float(Bm[ix.mrow + t]) : 0.f;
        const float cv = ix.active ? to_float(Cm[ix.mrow + t]) : 0.f;
        g += gyv * cv;  // g is now dLoss/dh_t
        const float h_t = hbuf[i * nt + tid];
        const float h_prev = i > 0 ? hbuf[(i - 1) * nt + tid] : h0;
        const float a = exp2f(dtv * a2);
        const float q = g * h_prev * a;  // dLoss / d(dt_t A)
        dA_sum += q * dtv;
        const float gb = g * bv;
        const float p_dt = group_sum(q * av + gb * uv, lanes, mask);
        const float p_u = group_sum(gb * dtv, lanes, mask);
        if (ix.lane == 0) {
            ddt[ix.row + t] = p_dt;
            du[ix.row + t] = p_u;
        }
        red_b[tid] = g * dtv * uv;
        red_c[tid] = gyv * h_t;
        __syncthreads();
        if (ix.ch == 0 && ix.active) {
            float sb = 0.f, sc = 0.f;
            for (int k = 0; k < channels; ++k) {
                sb += red_b[k * lanes + ix.lane];
                sc += red_c[k * lanes + ix.lane];
            }
            atomicAdd(dB + ix.mrow + t, sb);
            atomicAdd(dC + ix.mrow + t, sc);
        }
        __syncthreads();
        g *= a;  // what flows on to h_{t-1}
    }
    if (ix.active) atomicAdd(dA + ix.d * N + ix.n, dA_sum);
}
