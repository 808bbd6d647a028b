// Flow-guided deformable attention (Liang et al., "Recurrent Video Restoration Transformer with Guided
// Deformable Attention", NeurIPS 2022), compiled at run time by NVRTC from kernels/deform_attn_cuda.py;
// semantics in kernels/deform_attn.py. T is float or double (half tensors are cast by the caller).
//
// Layouts (contiguous): query (B, C, H, W); key, value (B, N, C, H, W); offset (B, N*G*P*2, H, W) with
// channel ((n*G + g)*P + p)*2 the dy and +1 the dx of sample p of frame n for offset group g;
// out / grad_query (B, C, H, W). C = M heads * D channels; group g holds heads [g*M/G, (g+1)*M/G).
//
// One thread per (b, g, pixel), pixels fastest (coalesced reads of the planes). It locates its S = N*P
// samples once (shared by the group's heads), then per head: logits l_s = scale * q . K(s) over the D
// channels, a softmax over the S samples, and out = sum_s a_s V(s). Bilinear sampling is DCN's (zero for
// corners outside the image, floor taken as locally constant for the position gradient; see
// kernels/deform_conv.cu), so RVRT-style zero-padded samples still take part in the softmax.
//
// Backward (recomputes the forward's softmax): g_s = dO . V(s); dl_s = a_s (g_s - sum_t a_t g_t) * scale;
// grad_query = sum_s dl_s K(s); grad_key and grad_value are scattered to the four corners with atomics
// (dl_s q and a_s dO); the position gradients of both samplings are summed over the group's heads and
// written once per (b, g, pixel, sample) without atomics.

#include "svrt_cuda.cuh"

#define DA_MAX_SAMPLES 64

__device__ __forceinline__ float floor_t(float v) { return floorf(v); }
__device__ __forceinline__ double floor_t(double v) { return floor(v); }
__device__ __forceinline__ float exp_t(float v) { return expf(v); }
__device__ __forceinline__ double exp_t(double v) { return exp(v); }

template <typename T>
struct Corner {
    int base;            // flat index of the top-left corner in its plane (read only where mask says inside)
    unsigned int mask;   // bit 0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right inside the image
    T ly, lx;            // fractional position inside the cell
};

template <typename T>
__device__ __forceinline__ Corner<T> locate(T y, T x, int H, int W) {
    Corner<T> c;
    if (y < T(-1) || y >= T(H) || x < T(-1) || x >= T(W)) {  // no corner inside
        c.base = 0; c.mask = 0u; c.ly = T(0); c.lx = T(0);
        return c;
    }
    const T yf = floor_t(y), xf = floor_t(x);
    const int y0 = static_cast<int>(yf), x0 = static_cast<int>(xf);
    c.ly = y - yf;
    c.lx = x - xf;
    c.base = y0 * W + x0;  // H * W < 2^31 (checked by the caller)
    const bool top = y0 >= 0, bottom = y0 + 1 < H, left = x0 >= 0, right = x0 + 1 < W;
    c.mask = (top && left ? 1u : 0u) | (top && right ? 2u : 0u) | (bottom && left ? 4u : 0u) | (bottom && right ? 8u : 0u);
    return c;
}

// value at the sample, and (with grad) its derivatives along y and x
template <typename T, bool GRAD>
__device__ __forceinline__ T sample(const T* __restrict__ plane, const Corner<T>& c, int W, T* dy, T* dx) {
    const T a = (c.mask & 1u) ? plane[c.base] : T(0);
    const T b = (c.mask & 2u) ? plane[c.base + 1] : T(0);
    const T d = (c.mask & 4u) ? plane[c.base + W] : T(0);
    const T e = (c.mask & 8u) ? plane[c.base + W + 1] : T(0);
    if (GRAD) {
        *dy = (T(1) - c.lx) * (d - a) + c.lx * (e - b);
        *dx = (T(1) - c.ly) * (b - a) + c.ly * (e - d);
    }
    return (T(1) - c.ly) * ((T(1) - c.lx) * a + c.lx * b) + c.ly * ((T(1) - c.lx) * d + c.lx * e);
}

template <typename T>
__device__ __forceinline__ void scatter(T* plane, const Corner<T>& c, int W, T g) {
    if (c.mask & 1u) atomicAdd(plane + c.base, g * (T(1) - c.ly) * (T(1) - c.lx));
    if (c.mask & 2u) atomicAdd(plane + c.base + 1, g * (T(1) - c.ly) * c.lx);
    if (c.mask & 4u) atomicAdd(plane + c.base + W, g * c.ly * (T(1) - c.lx));
    if (c.mask & 8u) atomicAdd(plane + c.base + W + 1, g * c.ly * c.lx);
}

struct Geo {
    long long b, pix, HW;
    int g, i, j;
};

__device__ __forceinline__ Geo decode(long long idx, int H, int W, int G) {
    Geo o;
    o.HW = static_cast<long long>(H) * W;
    o.pix = idx % o.HW;
    o.g = static_cast<int>((idx / o.HW) % G);
    o.b = idx / (o.HW * G);
    o.i = static_cast<int>(o.pix / W);
    o.j = static_cast<int>(o.pix % W);
    return o;
}

// the S sample positions of (b, g, pixel)
template <typename T>
__device__ __forceinline__ void locate_all(const T* __restrict__ offset, const Geo& o, int N, int G, int H, int W,
                                           int kh, int kw, Corner<T>* corners) {
    const int P = kh * kw;
    for (int s = 0; s < N * P; ++s) {
        const int n = s / P, p = s % P;
        const T* off = offset + ((((o.b * N + n) * G + o.g) * P + p) * 2) * o.HW + o.pix;
        const T y = static_cast<T>(o.i - kh / 2 + p / kw) + off[0];
        const T x = static_cast<T>(o.j - kw / 2 + p % kw) + off[o.HW];
        corners[s] = locate(y, x, H, W);
    }
}

// softmax weights of head h at (b, pixel): logits scale * q . K(s), written to attn[0, S)
template <typename T>
__device__ __forceinline__ void attention(const T* __restrict__ query, const T* __restrict__ key, const Geo& o,
                                          const Corner<T>* corners, int h, int N, int C, int P, int D, int W, T scale,
                                          T* attn) {
    const int S = N * P;
    for (int s = 0; s < S; ++s) attn[s] = T(0);
    for (int d = 0; d < D; ++d) {
        const long long c = static_cast<long long>(h) * D + d;
        const T qd = query[(o.b * C + c) * o.HW + o.pix];
        for (int s = 0; s < S; ++s) {
            const T* plane = key + ((o.b * N + s / P) * C + c) * o.HW;
            attn[s] += qd * sample<T, false>(plane, corners[s], W, nullptr, nullptr);
        }
    }
    T m = attn[0] * scale;
    for (int s = 1; s < S; ++s) m = attn[s] * scale > m ? attn[s] * scale : m;
    T sum = T(0);
    for (int s = 0; s < S; ++s) {
        attn[s] = exp_t(attn[s] * scale - m);
        sum += attn[s];
    }
    for (int s = 0; s < S; ++s) attn[s] /= sum;
}

template <typename T>
__global__ void deform_attn_forward(const T* __restrict__ query, const T* __restrict__ key,
                                    const T* __restrict__ value, const T* __restrict__ offset, T* __restrict__ out,
                                    long long total, int N, int C, int H, int W, int G, int M, int kh, int kw,
                                    T scale) {
    const int P = kh * kw, D = C / M, heads = M / G;
    Corner<T> corners[DA_MAX_SAMPLES];
    T attn[DA_MAX_SAMPLES];
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(blockDim.x) * gridDim.x) {
        const Geo o = decode(idx, H, W, G);
        locate_all(offset, o, N, G, H, W, kh, kw, corners);
        for (int hh = 0; hh < heads; ++hh) {
            const int h = o.g * heads + hh;
            attention(query, key, o, corners, h, N, C, P, D, W, scale, attn);
            for (int d = 0; d < D; ++d) {
                const long long c = static_cast<long long>(h) * D + d;
                T acc = T(0);
                for (int s = 0; s < N * P; ++s) {
                    const T* plane = value + ((o.b * N + s / P) * C + c) * o.HW;
                    acc += attn[s] * sample<T, false>(plane, corners[s], W, nullptr, nullptr);
                }
                out[(o.b * C + c) * o.HW + o.pix] = acc;
            }
        }
    }
}

// grad_key and grad_value are accumulated (the caller zero-fills them); grad_query and grad_offset are
// written. A null output pointer is never touched (need_* flags).
template <typename T>
__global__ void deform_attn_backward(const T* __restrict__ query, const T* __restrict__ key,
                                     const T* __restrict__ value, const T* __restrict__ offset,
                                     const T* __restrict__ grad_out, T* __restrict__ grad_query, T* grad_key,
                                     T* grad_value, T* __restrict__ grad_offset, long long total, int N, int C, int H,
                                     int W, int G, int M, int kh, int kw, T scale, int need_query, int need_key,
                                     int need_value, int need_offset) {
    const int P = kh * kw, S = N * P, D = C / M, heads = M / G;
    Corner<T> corners[DA_MAX_SAMPLES];
    T attn[DA_MAX_SAMPLES], ga[DA_MAX_SAMPLES], gy[DA_MAX_SAMPLES], gx[DA_MAX_SAMPLES];
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(blockDim.x) * gridDim.x) {
        const Geo o = decode(idx, H, W, G);
        locate_all(offset, o, N, G, H, W, kh, kw, corners);
        for (int s = 0; s < S; ++s) gy[s] = gx[s] = T(0);
        for (int hh = 0; hh < heads; ++hh) {
            const int h = o.g * heads + hh;
            attention(query, key, o, corners, h, N, C, P, D, W, scale, attn);
            // through the values: g_s = dO . V(s), position gradient a_s dO . dV(s), grad_value += a_s dO
            for (int s = 0; s < S; ++s) ga[s] = T(0);
            for (int d = 0; d < D; ++d) {
                const long long c = static_cast<long long>(h) * D + d;
                const T go = grad_out[(o.b * C + c) * o.HW + o.pix];
                for (int s = 0; s < S; ++s) {
                    const long long plane = ((o.b * N + s / P) * C + c) * o.HW;
                    T vy, vx;
                    ga[s] += go * sample<T, true>(value + plane, corners[s], W, &vy, &vx);
                    gy[s] += attn[s] * go * vy;
                    gx[s] += attn[s] * go * vx;
                    if (need_value) scatter(grad_value + plane, corners[s], W, attn[s] * go);
                }
            }
            // softmax backward, the scale folded in: dl_s = dL / d(q . K(s))
            T dot = T(0);
            for (int s = 0; s < S; ++s) dot += attn[s] * ga[s];
            for (int s = 0; s < S; ++s) ga[s] = attn[s] * (ga[s] - dot) * scale;
            // through the keys: grad_query, position gradient dl_s q . dK(s), grad_key += dl_s q
            for (int d = 0; d < D; ++d) {
                const long long c = static_cast<long long>(h) * D + d;
                const T qd = query[(o.b * C + c) * o.HW + o.pix];
                T gq = T(0);
                for (int s = 0; s < S; ++s) {
                    const long long plane = ((o.b * N + s / P) * C + c) * o.HW;
                    T ky, kx;
                    gq += ga[s] * sample<T, true>(key + plane, corners[s], W, &ky, &kx);
                    gy[s] += ga[s] * qd * ky;
                    gx[s] += ga[s] * qd * kx;
                    if (need_key) scatter(grad_key + plane, corners[s], W, ga[s] * qd);
                }
                if (need_query) grad_query[(o.b * C + c) * o.HW + o.pix] = gq;
            }
        }
        if (need_offset) {
            for (int s = 0; s < S; ++s) {
                const int n = s / P, p = s % P;
                T* off = grad_offset + ((((o.b * N + n) * G + o.g) * P + p) * 2) * o.HW + o.pix;
                off[0] = gy[s];
                off[o.HW] = gx[s];
            }
        }
    }
}
