// Learnable spike accumulator on packed bits (compiled at run time by NVRTC from
// kernels/spike_accumulate_cuda.py; semantics in kernels/spike_accumulate.py):
//
//   V[b, t, k, y, x] = sum_{s in [r0, r1)} S[b, s, y, x] * gamma[k] ** (r1 - 1 - s),
//   (r0, r1) = ranges[b, t, k],   S[b, s, y, x] = bit (x % 8) of bits[b, s, y, x / 8].
//
// Layouts (contiguous): bits uint8 (B, S, H, Wb); ranges int64 (B*T*K, 2); gamma acc_t<OutT> (K,);
// out OutT (B*T*K, H, W) with 8*(Wb-1) < W <= 8*Wb (the padding bits of a row's last byte are dropped).
//
// Work split: blockIdx.y (grid-stride) picks a bin (b, t, k); thread x of the grid owns packed byte p
// of a frame (F = H*Wb bytes) and its 8 pixels. Per bin it walks the frames of the range with Horner's
// recurrence acc = acc * gamma + bit (exact integer counts at gamma = 1), reading one byte per frame
// (32 lanes read 32 consecutive bytes), and writes 8 values. Nothing is unpacked in memory, every output
// value has one writer (no atomics, deterministic). Ranges are clamped to [0, S] so that unvalidated
// ranges never read out of bounds.
//
// Stores (W == 8*Wb, so a byte's 8 pixels are 8 consecutive, 16-byte aligned values): direct (each lane
// stores its own 8 values as 16-byte words: 32 bytes per lane for float) or STAGED through shared
// memory so that each warp store instruction covers 512 contiguous bytes. Odd widths store per pixel.
//
// Backward (gamma only): with d = dacc/dgamma, d = d * gamma + acc (before acc's update); a thread
// dots its 8 values of d with grad_out, the block sums them in shared memory (a tree, fixed order), and
// thread 0 writes one partial sum per (bin, block): partial (B*T*K, gridDim.x), summed by the caller.

#include "svrt_cuda.cuh"

#define SPIKE_THREADS 256

__device__ __forceinline__ void clamp_range(long long& r0, long long& r1, long long S) {
    r0 = r0 < 0 ? 0 : (r0 > S ? S : r0);
    r1 = r1 < r0 ? r0 : (r1 > S ? S : r1);
}

template <typename OutT, bool STAGED>
__global__ void __launch_bounds__(SPIKE_THREADS) spike_accumulate_forward(
    const unsigned char* __restrict__ bits, const long long* __restrict__ ranges,
    const acc_t<OutT>* __restrict__ gamma, OutT* __restrict__ out,
    long long n_bins, int T, int K, int S, int H, int Wb, int W) {
    using Acc = acc_t<OutT>;
    __shared__ Pack8<OutT> stage[STAGED ? SPIKE_THREADS : 1];
    const long long F = static_cast<long long>(H) * Wb;
    const long long HW = static_cast<long long>(H) * W;
    const long long p = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool active = p < F;
    const bool whole_bytes = W == 8 * Wb;
    const int lane = threadIdx.x & 31;
    const int warp0 = threadIdx.x & ~31;  // first thread of this warp in the block
    for (long long bin = blockIdx.y; bin < n_bins; bin += gridDim.y) {
        const long long b = bin / (static_cast<long long>(T) * K);
        const int k = static_cast<int>(bin % K);
        long long r0 = ranges[2 * bin], r1 = ranges[2 * bin + 1];
        clamp_range(r0, r1, S);
        const Acc g = gamma[k];
        Acc acc[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] = Acc(0);
        if (active) {
            const unsigned char* src = bits + b * S * F + p;
            for (long long s = r0; s < r1; ++s) {
                const unsigned int v = __ldg(src + s * F);
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[i] = acc[i] * g + static_cast<Acc>((v >> i) & 1u);
            }
        }
        OutT* plane = out + bin * HW;
        Pack8<OutT> pack;
#pragma unroll
        for (int i = 0; i < 8; ++i) pack.v[i] = from_acc<OutT>(acc[i]);
        if (STAGED && whole_bytes) {
            // lane l's 8 values sit at stage[warp0 + l]; word j of the warp's 32*8 values goes to
            // plane + 8*(p - lane) + j * (16 / sizeof(OutT)), stored by lane j % 32
            constexpr int WORDS = sizeof(OutT) / 2;  // 16-byte words per lane
            stage[threadIdx.x] = pack;
            __syncwarp();
            const uint4* words = reinterpret_cast<const uint4*>(stage + warp0);
            uint4* dst = reinterpret_cast<uint4*>(plane + 8 * (p - lane));
#pragma unroll
            for (int r = 0; r < WORDS; ++r) {
                const int j = r * 32 + lane;
                if (p - lane + j / WORDS < F) dst[j] = words[j];  // the owner of word j is active
            }
            __syncwarp();
        } else if (whole_bytes) {
            if (active) store8(plane + 8 * p, pack);
        } else if (active) {
            const long long y = p / Wb;
            const int x0 = static_cast<int>(p % Wb) * 8;
            OutT* row = plane + y * W;
#pragma unroll
            for (int i = 0; i < 8; ++i)
                if (x0 + i < W) row[x0 + i] = pack.v[i];
        }
    }
}

template <typename OutT>
__global__ void __launch_bounds__(SPIKE_THREADS) spike_accumulate_backward(
    const unsigned char* __restrict__ bits, const long long* __restrict__ ranges,
    const acc_t<OutT>* __restrict__ gamma, const OutT* __restrict__ grad_out, acc_t<OutT>* __restrict__ partial,
    long long n_bins, int T, int K, int S, int H, int Wb, int W) {
    using Acc = acc_t<OutT>;
    __shared__ Acc red[SPIKE_THREADS];
    const long long F = static_cast<long long>(H) * Wb;
    const long long HW = static_cast<long long>(H) * W;
    const long long p = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool active = p < F;
    const bool whole_bytes = W == 8 * Wb;
    for (long long bin = blockIdx.y; bin < n_bins; bin += gridDim.y) {
        const long long b = bin / (static_cast<long long>(T) * K);
        const int k = static_cast<int>(bin % K);
        long long r0 = ranges[2 * bin], r1 = ranges[2 * bin + 1];
        clamp_range(r0, r1, S);
        const Acc g = gamma[k];
        Acc sum = Acc(0);
        if (active && r1 > r0) {
            Acc acc[8], d[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[i] = d[i] = Acc(0);
            const unsigned char* src = bits + b * S * F + p;
            for (long long s = r0; s < r1; ++s) {
                const unsigned int v = __ldg(src + s * F);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    d[i] = d[i] * g + acc[i];
                    acc[i] = acc[i] * g + static_cast<Acc>((v >> i) & 1u);
                }
            }
            const OutT* plane = grad_out + bin * HW;
            if (whole_bytes) {
                const Pack8<OutT> go = load8(plane + 8 * p);
#pragma unroll
                for (int i = 0; i < 8; ++i) sum += d[i] * to_acc(go.v[i]);
            } else {
                const long long y = p / Wb;
                const int x0 = static_cast<int>(p % Wb) * 8;
#pragma unroll
                for (int i = 0; i < 8; ++i)
                    if (x0 + i < W) sum += d[i] * to_acc(plane[y * W + x0 + i]);
            }
        }
        red[threadIdx.x] = sum;
        __syncthreads();
        for (int half = SPIKE_THREADS / 2; half > 0; half >>= 1) {
            if (static_cast<int>(threadIdx.x) < half) red[threadIdx.x] += red[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0) partial[bin * gridDim.x + blockIdx.x] = red[0];
        __syncthreads();  // red is rewritten for the next bin
    }
}
