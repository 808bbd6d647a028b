// Fused bias + activation (compiled at run time by NVRTC from kernels/fused_bias_act_cuda.py; semantics
// in kernels/fused_bias_act.py):
//
//   forward   out = scale * act(x + bias[c]),   act(z) = z (ACT 0, linear) or z > 0 ? z : slope * z (ACT 1)
//   gradient  out = grad * scale * act'(y),     act'(y) = 1 (ACT 0) or y > 0 ? 1 : slope (ACT 1)
//
// where element i of the contiguous x has channel c = (i / inner) % C and y is the forward's output
// (y > 0 exactly where x + bias > 0, scale being positive). The gradient kernel is its own derivative
// with respect to grad, so it also serves the double backward.
//
// One thread owns 8 consecutive elements (a grid-stride loop over such chunks): 16-byte vector loads and
// stores when the pointers allow (vec) and the chunk is whole, element by element otherwise. The channel
// is computed once per chunk (64-bit division is costly) and advanced element by element.

#include "svrt_cuda.cuh"

template <int ACT, typename Acc>
__device__ __forceinline__ Acc act_fwd(Acc z, Acc slope) {
    if (ACT == 1) return z > Acc(0) ? z : slope * z;
    return z;
}

template <int ACT, typename Acc>
__device__ __forceinline__ Acc act_grad(Acc y, Acc slope) {
    if (ACT == 1) return y > Acc(0) ? Acc(1) : slope;
    return Acc(1);
}

template <typename T, int ACT>
__global__ void bias_act_forward(const T* __restrict__ x, const acc_t<T>* __restrict__ bias, T* __restrict__ out,
                                 long long n, long long inner, long long C, int has_bias, int vec,
                                 acc_t<T> slope, acc_t<T> scale) {
    using Acc = acc_t<T>;
    const long long chunks = (n + 7) / 8;
    for (long long q = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; q < chunks;
         q += static_cast<long long>(blockDim.x) * gridDim.x) {
        const long long i0 = 8 * q;
        long long c = (i0 / inner) % C;
        long long pos = i0 % inner;
        Acc b[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            b[j] = has_bias ? bias[c] : Acc(0);
            if (++pos == inner) {
                pos = 0;
                c = c + 1 == C ? 0 : c + 1;
            }
        }
        if (vec && i0 + 8 <= n) {
            const Pack8<T> in = load8(x + i0);
            Pack8<T> res;
#pragma unroll
            for (int j = 0; j < 8; ++j) res.v[j] = from_acc<T>(scale * act_fwd<ACT>(to_acc(in.v[j]) + b[j], slope));
            store8(out + i0, res);
        } else {
            for (int j = 0; j < 8 && i0 + j < n; ++j)
                out[i0 + j] = from_acc<T>(scale * act_fwd<ACT>(to_acc(x[i0 + j]) + b[j], slope));
        }
    }
}

template <typename T, int ACT>
__global__ void bias_act_grad(const T* __restrict__ grad, const T* __restrict__ y, T* __restrict__ out, long long n,
                              int vec, acc_t<T> slope, acc_t<T> scale) {
    using Acc = acc_t<T>;
    const long long chunks = (n + 7) / 8;
    for (long long q = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; q < chunks;
         q += static_cast<long long>(blockDim.x) * gridDim.x) {
        const long long i0 = 8 * q;
        if (vec && i0 + 8 <= n) {
            const Pack8<T> g = load8(grad + i0);
            Pack8<T> yv;
            if (ACT == 1) yv = load8(y + i0);
            Pack8<T> res;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const Acc d = ACT == 1 ? act_grad<ACT>(to_acc(yv.v[j]), slope) : Acc(1);
                res.v[j] = from_acc<T>(to_acc(g.v[j]) * scale * d);
            }
            store8(out + i0, res);
        } else {
            for (int j = 0; j < 8 && i0 + j < n; ++j) {
                const Acc d = ACT == 1 ? act_grad<ACT>(to_acc(y[i0 + j]), slope) : Acc(1);
                out[i0 + j] = from_acc<T>(to_acc(grad[i0 + j]) * scale * d);
            }
        }
    }
}
