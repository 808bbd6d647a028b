// Voxelization of packed spike bits on the GPU (compiled at run time by NVRTC through cupy.RawModule).
//
// Layout. A frame is F packed bytes (rows of W/8 bytes, row-major); pixel 8p+i of the flat H*W image
// is bit i of byte p. A bin image is the frame expanded 8x, so every kernel works on flat frames and
// ignores rows. Bin b = n*K + k of the output (B bins in all) reads the frames
// ranges[2b] <= t < ranges[2b+1] and writes out[b*8F .. (b+1)*8F).
//
// Work split. Thread g handles chunk c of bin b (g = b*chunks_per_bin + c): V packed bytes (a V-byte
// load per frame, V in {1,2,4,8,16}, the widest that divides F and the frame pointer's alignment),
// whose 8V output pixels start at out + 8V*g: consecutive threads own consecutive output bytes, every
// output byte has exactly one writer, no atomics, results are deterministic. One launch covers every
// window of a call.
//
// count: SWAR in 32-bit words. A nibble x spreads to four byte lanes with (x * 0x204081) & 0x01010101
// (shifts of 0, 7, 14, 21 bits land bit i of x at bit 8i; the four copies never overlap, so nothing
// carries); lanes never overflow because the host refuses bins of more than 255 frames. With
// STAGED, a warp writes its 32 * 8V output bytes through shared memory so each store instruction
// covers 512 contiguous bytes (16 bytes a lane); without, each lane stores its own 8V bytes directly.
//
// linear: weights[offsets[b] + t - ranges[2b]] is frame t's share for bin b (host-computed float64);
// accumulation in double, in frame order, rounded to float once.

template <int V>
__device__ __forceinline__ void load_bytes(const unsigned char* __restrict__ p, unsigned int (&w)[(V + 3) / 4]) {
    if constexpr (V == 16) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
        w[0] = q.x; w[1] = q.y; w[2] = q.z; w[3] = q.w;
    } else if constexpr (V == 8) {
        const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
        w[0] = q.x; w[1] = q.y;
    } else if constexpr (V == 4) {
        w[0] = __ldg(reinterpret_cast<const unsigned int*>(p));
    } else if constexpr (V == 2) {
        w[0] = __ldg(reinterpret_cast<const unsigned short*>(p));
    } else {
        w[0] = __ldg(p);
    }
}

template <int V>
__device__ __forceinline__ unsigned int byte_of(const unsigned int (&w)[(V + 3) / 4], int j) {
    return (w[j >> 2] >> (8 * (j & 3))) & 0xFFu;
}

template <int V, bool STAGED>
__global__ void __launch_bounds__(256) voxel_count(
    const unsigned char* __restrict__ frames,  // (S, F) packed frames
    const long long* __restrict__ ranges,      // (B, 2) frame range [first, stop) of each bin
    unsigned char* __restrict__ out,           // (B, 8F) counts
    long long F, long long chunks_per_bin, long long total)  // total = B * chunks_per_bin threads
{
    constexpr int NW = 2 * V;  // accumulator words: 4 pixel lanes each
    const long long g = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
    if (g - lane >= total) return;  // the whole warp is past the end
    unsigned int acc[NW];
#pragma unroll
    for (int i = 0; i < NW; ++i) acc[i] = 0u;
    const bool active = g < total;
    if (active) {
        const long long b = g / chunks_per_bin;
        const long long c = g - b * chunks_per_bin;
        const long long first = ranges[2 * b], stop = ranges[2 * b + 1];
        const unsigned char* p = frames + first * F + c * V;
#pragma unroll 4
        for (long long t = first; t < stop; ++t, p += F) {
            unsigned int w[(V + 3) / 4];
            load_bytes<V>(p, w);
#pragma unroll
            for (int j = 0; j < V; ++j) {
                const unsigned int x = byte_of<V>(w, j);
                acc[2 * j] += ((x & 0xFu) * 0x204081u) & 0x01010101u;
                acc[2 * j + 1] += ((x >> 4) * 0x204081u) & 0x01010101u;
            }
        }
    }
    if constexpr (V == 1) {
        if (active) *reinterpret_cast<uint2*>(out + 8 * g) = make_uint2(acc[0], acc[1]);
    } else if constexpr (!STAGED || V == 2) {
        if (active) {
            uint4* o = reinterpret_cast<uint4*>(out + 8LL * V * g);
#pragma unroll
            for (int i = 0; i < V / 2; ++i) o[i] = make_uint4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
        }
    } else {
        // Each lane's 8V bytes go to shared memory (rows padded by 16 bytes against bank conflicts), then
        // the warp stores its 32 * 8V contiguous output bytes 16 bytes a lane, 512 bytes an instruction.
        constexpr int ROW = 8 * V + 16;
        __shared__ __align__(16) unsigned char stage[8][32 * ROW];  // 8 warps of a 256-thread block
        unsigned char* s = stage[threadIdx.x >> 5];
#pragma unroll
        for (int i = 0; i < V / 2; ++i)
            *reinterpret_cast<uint4*>(s + lane * ROW + 16 * i) =
                make_uint4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
        __syncwarp();
        const long long g0 = g - lane;
        const long long bytes_left = (total - g0) * 8LL * V;  // the warp's share of the output may end early
        uint4* o = reinterpret_cast<uint4*>(out + 8LL * V * g0);
#pragma unroll
        for (int r = 0; r < V / 2; ++r) {
            const int q = 32 * r + lane;  // 16-byte piece q of the warp's output
            if (16LL * q < bytes_left)
                o[q] = *reinterpret_cast<const uint4*>(s + (q / (V / 2)) * ROW + 16 * (q % (V / 2)));
        }
    }
}

template <int V>
__global__ void __launch_bounds__(256) voxel_linear(
    const unsigned char* __restrict__ frames,  // (S, F) packed frames
    const long long* __restrict__ ranges,      // (B, 2) frame range [first, stop) of each bin
    const long long* __restrict__ offsets,     // (B + 1,) start of each bin's weights
    const double* __restrict__ weights,        // one weight per (bin, frame of its range)
    float* __restrict__ out,                   // (B, 8F)
    long long F, long long chunks_per_bin, long long total)
{
    const long long g = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (g >= total) return;
    const long long b = g / chunks_per_bin;
    const long long c = g - b * chunks_per_bin;
    const long long first = ranges[2 * b], stop = ranges[2 * b + 1];
    const double* wt = weights + offsets[b] - first;
    double acc[8 * V];
#pragma unroll
    for (int i = 0; i < 8 * V; ++i) acc[i] = 0.0;
    const unsigned char* p = frames + first * F + c * V;
    for (long long t = first; t < stop; ++t, p += F) {
        const double w = wt[t];
        unsigned int x[(V + 3) / 4];
        load_bytes<V>(p, x);
#pragma unroll
        for (int j = 0; j < V; ++j) {
            const unsigned int v = byte_of<V>(x, j);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[8 * j + i] += ((v >> i) & 1u) ? w : 0.0;
        }
    }
    float4* o = reinterpret_cast<float4*>(out + 8LL * V * g);
#pragma unroll
    for (int i = 0; i < 2 * V; ++i)
        o[i] = make_float4(static_cast<float>(acc[4 * i]), static_cast<float>(acc[4 * i + 1]),
                           static_cast<float>(acc[4 * i + 2]), static_cast<float>(acc[4 * i + 3]));
}
