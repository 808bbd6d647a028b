// Modulated deformable convolution (DCNv2: Zhu et al., "Deformable ConvNets v2", CVPR 2019) with the
// semantics of torchvision.ops.deform_conv2d, as described in kernels/deform_conv_ref.py.
//
// Compiled at run time by CuPy (NVRTC) from kernels/deform_conv_cuda.py, which also does the GEMMs
// (cuBLAS through torch.matmul). Templated on the compute type T (float or double); half and bfloat16
// tensors are cast to float by the caller.
//
// Layouts (all contiguous, batch-local: the caller passes pointers to the first sample of a chunk):
//   input    (B, C, H, W)
//   offset   (B, 2*G*K, Ho, Wo)   channel 2*(g*K + k) is dy, 2*(g*K + k) + 1 is dx; K = kh*kw
//   mask     (B, G*K, Ho, Wo)     read only when has_mask
//   columns  (B, C*K, Ho*Wo)      row c*K + k: channel c sampled at tap k, times the mask
//
// One thread handles one (b, g, k, n) sample position (n = ho*Wo + wo): it computes the position and
// bilinear weights once and loops over the C/G channels of offset group g, so the weights are shared
// by the group's channels and the column writes are coalesced along n.
//
// Gradient convention: the sample is the per-corner sum "weight times value, zero for a corner outside
// the image", and the offset gradient is its derivative with the floor taken as locally constant (the
// right derivative at integer coordinates). This equals the torch reference's autograd everywhere and
// torchvision everywhere except at coordinates exactly -1 (torchvision returns a zero gradient there).

__device__ __forceinline__ float floor_t(float v) { return floorf(v); }
__device__ __forceinline__ double floor_t(double v) { return ::floor(v); }

template <typename T>
struct Sample {
    int y0, x0;                 // top-left corner (may be -1)
    T ly, lx;                   // fractional parts
    bool v00, v01, v10, v11;    // which corners lie inside the image
    bool inside;                // false: no corner inside, value and gradients are zero
};

// A coordinate beyond (-1, size) in either axis has no corner inside the image. NaN coordinates fail
// every comparison, so they go through and propagate NaN via ly, lx (int conversion of NaN gives 0).
template <typename T>
__device__ __forceinline__ Sample<T> locate(T y, T x, int H, int W) {
    Sample<T> s;
    s.inside = !(y < T(-1) || y >= T(H) || x < T(-1) || x >= T(W));
    if (!s.inside) {
        s.y0 = 0; s.x0 = 0; s.ly = T(0); s.lx = T(0);
        s.v00 = s.v01 = s.v10 = s.v11 = false;
        return s;
    }
    const T yf = floor_t(y);
    const T xf = floor_t(x);
    s.y0 = static_cast<int>(yf);
    s.x0 = static_cast<int>(xf);
    s.ly = y - yf;
    s.lx = x - xf;
    const bool top = s.y0 >= 0, bottom = s.y0 + 1 < H;
    const bool left = s.x0 >= 0, right = s.x0 + 1 < W;
    s.v00 = top && left;
    s.v01 = top && right;
    s.v10 = bottom && left;
    s.v11 = bottom && right;
    return s;
}

// The four corner values of one channel plane, zero for corners outside the image.
template <typename T>
__device__ __forceinline__ void corners(const T* __restrict__ plane, const Sample<T>& s, int W,
                                        T& a, T& b, T& c, T& d) {
    const long long i = static_cast<long long>(s.y0) * W + s.x0;
    a = s.v00 ? plane[i] : T(0);
    b = s.v01 ? plane[i + 1] : T(0);
    c = s.v10 ? plane[i + W] : T(0);
    d = s.v11 ? plane[i + W + 1] : T(0);
}

// Sample position of (b, g, k, n); shared by the forward and backward kernels.
struct Position {
    long long b, gk, n;   // gk = (b*G + g)*K + k indexes mask planes; 2*gk the dy plane of offset
    int g, k;
};

__device__ __forceinline__ Position decode(long long idx, int G, int K, long long N) {
    Position p;
    p.n = idx % N;
    long long t = idx / N;
    p.k = static_cast<int>(t % K);
    t /= K;
    p.g = static_cast<int>(t % G);
    p.b = t / G;
    p.gk = t * K + p.k;
    return p;
}

// Where tap k of output pixel n samples (offset added) and its modulation; shared by both kernels.
template <typename T>
struct Tap {
    T y, x, m;
};

template <typename T>
__device__ __forceinline__ Tap<T> tap(const T* __restrict__ offset, const T* __restrict__ mask, const Position& p,
                                      long long N, int Wo, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                      int has_mask) {
    const int ho = static_cast<int>(p.n / Wo), wo = static_cast<int>(p.n % Wo);
    const int ki = p.k / kw, kj = p.k % kw;
    const T* off = offset + 2 * p.gk * N + p.n;
    Tap<T> t;
    t.y = static_cast<T>(ho * sh - ph + ki * dh) + off[0];
    t.x = static_cast<T>(wo * sw - pw + kj * dw) + off[N];
    t.m = has_mask ? mask[p.gk * N + p.n] : T(1);
    return t;
}

template <typename T>
__global__ void deform_im2col(
    const T* __restrict__ input, const T* __restrict__ offset, const T* __restrict__ mask,
    T* __restrict__ columns, long long total,
    int C, int H, int W, int G, int kh, int kw, int Ho, int Wo,
    int sh, int sw, int ph, int pw, int dh, int dw, int has_mask) {
    const int K = kh * kw;
    const int Cpg = C / G;
    const long long N = static_cast<long long>(Ho) * Wo;
    const long long HW = static_cast<long long>(H) * W;
    for (long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<long long>(blockDim.x) * gridDim.x) {
        const Position p = decode(idx, G, K, N);
        const Tap<T> t = tap(offset, mask, p, N, Wo, kw, sh, sw, ph, pw, dh, dw, has_mask);
        const T y = t.y, x = t.x, m = t.m;
        const Sample<T> s = locate(y, x, H, W);
        const T hy = T(1) - s.ly, hx = T(1) - s.lx;
        const long long c0 = p.b * C + static_cast<long long>(p.g) * Cpg;
        const T* plane = input + c0 * HW;
        T* col = columns + (c0 * K + p.k) * N + p.n;
        for (int c = 0; c < Cpg; ++c) {
            T v = T(0);
            if (s.inside) {
                T a, b, cc, d;
                corners(plane, s, W, a, b, cc, d);
                v = hy * (hx * a + s.lx * b) + s.ly * (hx * cc + s.lx * d);
            }
            col[c * K * N] = m * v;
            plane += HW;
        }
    }
}

// Backward of deform_im2col given grad_columns (same layout as columns). Per sample position:
// - grad_input  += scatter of grad_column * mask * bilinear weight to the four corners (atomics: the
//   corners are shared with neighbouring positions and taps); the caller zero-fills grad_input;
// - grad_offset  = sum over the group's channels of grad_column * mask * d(sample)/d(y, x);
// - grad_mask    = sum over the group's channels of grad_column * sample;
// the last two are owned by this thread and written (zero outside the image) without atomics.
//
// Merging (grad_input): consecutive lanes of a warp are consecutive output pixels of one tap. With smooth
// offsets (flows) a lane's right corners are often the next lane's left corners; the next lane then adds
// them to its own left-corner updates (one shuffle) and this lane skips them, halving the atomics.
// The loop runs warp-uniform trip counts so that every lane takes part in the shuffles.
template <typename T>
__global__ void deform_col2im(
    const T* __restrict__ input, const T* __restrict__ offset, const T* __restrict__ mask,
    const T* __restrict__ grad_columns, T* grad_input, T* __restrict__ grad_offset,
    T* __restrict__ grad_mask, long long total,
    int C, int H, int W, int G, int kh, int kw, int Ho, int Wo,
    int sh, int sw, int ph, int pw, int dh, int dw, int has_mask,
    int need_input, int need_offset, int need_mask) {
    const unsigned FULL = 0xffffffffu;
    const int K = kh * kw;
    const int Cpg = C / G;
    const long long N = static_cast<long long>(Ho) * Wo;
    const long long HW = static_cast<long long>(H) * W;
    const bool need_values = need_offset || need_mask;
    const bool merging = need_input;  // grid-uniform
    const int lane = threadIdx.x & 31;
    const long long step = static_cast<long long>(blockDim.x) * gridDim.x;
    for (long long base = blockIdx.x * static_cast<long long>(blockDim.x) + (threadIdx.x & ~31); base < total;
         base += step) {
        const long long idx = base + lane;
        const bool active = idx < total;
        const Position p = decode(active ? idx : base, G, K, N);
        const Tap<T> t = tap(offset, mask, p, N, Wo, kw, sh, sw, ph, pw, dh, dw, has_mask);
        const T y = t.y, x = t.x, m = t.m;
        Sample<T> s = locate(y, x, H, W);
        if (!active) s = locate(T(-2), T(-2), H, W);  // outside: no loads, no updates
        const T hy = T(1) - s.ly, hx = T(1) - s.lx;
        const long long c0 = p.b * C + static_cast<long long>(p.g) * Cpg;

        // absorb: this lane takes over the previous lane's right-corner updates (same plane, same corners)
        bool absorb = false, give = false;
        if (merging) {
            const long long plane_key = s.inside ? c0 : -1;
            const long long prev_key = __shfl_up_sync(FULL, plane_key, 1);
            const int prev_y0 = __shfl_up_sync(FULL, s.y0, 1);
            const int prev_x0 = __shfl_up_sync(FULL, s.x0, 1);
            absorb = lane > 0 && plane_key >= 0 && prev_key == plane_key && prev_y0 == s.y0 && prev_x0 + 1 == s.x0;
            give = __shfl_down_sync(FULL, static_cast<int>(absorb), 1) != 0 && lane < 31;
        }

        T gy = T(0), gx = T(0), gm = T(0);
        const T* plane = input + c0 * HW;
        T* gplane = grad_input + c0 * HW;
        const T* gcol = grad_columns + (c0 * K + p.k) * N + p.n;
        const long long i = static_cast<long long>(s.y0) * W + s.x0;
        for (int c = 0; c < Cpg; ++c) {
            const T gc = s.inside ? gcol[c * K * N] : T(0);
            if (need_input) {
                const T gcm = gc * m;
                T top_left = gcm * hy * hx, top_right = gcm * hy * s.lx;
                T bottom_left = gcm * s.ly * hx, bottom_right = gcm * s.ly * s.lx;
                if (merging) {
                    const T prev_top_right = __shfl_up_sync(FULL, top_right, 1);
                    const T prev_bottom_right = __shfl_up_sync(FULL, bottom_right, 1);
                    if (absorb) {
                        top_left += prev_top_right;
                        bottom_left += prev_bottom_right;
                    }
                }
                if (s.v00) atomicAdd(gplane + i, top_left);
                if (s.v10) atomicAdd(gplane + i + W, bottom_left);
                if (!give) {
                    if (s.v01) atomicAdd(gplane + i + 1, top_right);
                    if (s.v11) atomicAdd(gplane + i + W + 1, bottom_right);
                }
            }
            if (need_values && s.inside) {
                T a, b, cc, d;
                corners(plane, s, W, a, b, cc, d);
                gy += gc * (hx * (cc - a) + s.lx * (d - b));
                gx += gc * (hy * (b - a) + s.ly * (d - cc));
                gm += gc * (hy * (hx * a + s.lx * b) + s.ly * (hx * cc + s.lx * d));
            }
            plane += HW;
            gplane += HW;
        }
        if (active && need_offset) {
            grad_offset[2 * p.gk * N + p.n] = gy * m;
            grad_offset[(2 * p.gk + 1) * N + p.n] = gx * m;
        }
        if (active && need_mask) grad_mask[p.gk * N + p.n] = gm;
    }
}
