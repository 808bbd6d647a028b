// upfirdn2d: upsample by zero insertion, pad, FIR filter, downsample (compiled at run time by NVRTC from
// kernels/upfirdn2d_cuda.py; semantics and the derivation of the backward in kernels/upfirdn2d.py).
//
// Per axis (y shown; x alike), with up u, down d, leading pad p0 and a filter of k taps, output row o is
//
//   out[o] = sum_{t in [0, k)} f[k-1-t] * q[o*d + t],   q[m] = x[(m - p0) / u] if (m - p0) % u == 0 and
//                                                             0 <= (m - p0) / u < H, else 0
//
// i.e. the zero-inserted, padded signal q convolved with f (correlation with the flipped filter), read
// every d-th sample. One thread computes one output element directly: only the taps t whose m - p0 is a
// multiple of u touch an input sample (about k/u of them per axis), so no upsampled or padded copy is
// ever made. A negative pad crops. Layouts (contiguous): x (NC, H, W), f acc_t<T> (kh, kw),
// out (NC, OH, OW).

#include "svrt_cuda.cuh"

template <typename T>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ f, T* __restrict__ out,
                                 long long total, int H, int W, int OH, int OW, int uy, int ux, int dy, int dx,
                                 int py0, int px0, int kh, int kw) {
    using Acc = acc_t<T>;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(blockDim.x) * gridDim.x) {
        const int ox = static_cast<int>(idx % OW);
        const int oy = static_cast<int>((idx / OW) % OH);
        const long long nc = idx / (static_cast<long long>(OW) * OH);
        const T* plane = x + nc * H * W;
        // first tap whose upsampled index m - p0 = o*d + t - p0 is a multiple of u
        const int my = oy * dy - py0, mx = ox * dx - px0;
        const int ty0 = ((-my) % uy + uy) % uy, tx0 = ((-mx) % ux + ux) % ux;
        Acc acc = Acc(0);
        for (int ty = ty0; ty < kh; ty += uy) {
            const int iy = (my + ty) / uy;  // exact: my + ty is a multiple of uy
            if (my + ty < 0 || iy >= H) continue;
            const Acc* frow = f + static_cast<long long>(kh - 1 - ty) * kw;
            const T* row = plane + static_cast<long long>(iy) * W;
            for (int tx = tx0; tx < kw; tx += ux) {
                const int ix = (mx + tx) / ux;
                if (mx + tx < 0 || ix >= W) continue;
                acc += frow[kw - 1 - tx] * to_acc(row[ix]);
            }
        }
        out[idx] = from_acc<T>(acc);
    }
}
