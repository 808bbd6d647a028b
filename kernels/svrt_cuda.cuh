// Shared by the model ops' kernels (spike_accumulate.cu, fused_bias_act.cu, upfirdn2d.cu, deform_attn.cu);
// kernels/cuda_runtime.py inlines this file where a source includes it, so NVRTC needs no include path.
//
// Storage types. float16/bfloat16 tensors are read and written as 16-bit patterns (half_t, bf16_t) and
// converted with one PTX instruction each way, so no CUDA header (cuda_fp16.h, cuda_bf16.h) is needed;
// arithmetic happens in acc_t<T>: float for float16/bfloat16/float32, double for float64. Host builds
// (the CPU emulation of tests/kernels/) use the compiler's _Float16 and bit arithmetic instead of PTX.
// (included once: by kernels/cuda_runtime.py, or by one source)

struct half_t { unsigned short bits; };
struct bf16_t { unsigned short bits; };

template <typename T> struct acc_of { using type = T; };
template <> struct acc_of<half_t> { using type = float; };
template <> struct acc_of<bf16_t> { using type = float; };
template <typename T> using acc_t = typename acc_of<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(bf16_t v) { return __uint_as_float(static_cast<unsigned int>(v.bits) << 16); }
__device__ __forceinline__ float to_acc(half_t v) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
#else
    _Float16 h;
    __builtin_memcpy(&h, &v.bits, 2);
    return static_cast<float>(h);
#endif
}

// Round to the storage type (round to nearest even, as torch's .to()).
template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ half_t from_acc<half_t>(float v) {
    half_t h;
#ifdef __CUDA_ARCH__
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
#else
    const _Float16 x = static_cast<_Float16>(v);
    __builtin_memcpy(&h.bits, &x, 2);
#endif
    return h;
}
template <> __device__ __forceinline__ bf16_t from_acc<bf16_t>(float v) {
    bf16_t h;
#ifdef __CUDA_ARCH__
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
#else
    const unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.bits = static_cast<unsigned short>((u >> 16) | 0x40u);  // NaN stays a (quiet) NaN
    } else {
        h.bits = static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
#endif
    return h;
}

// Eight consecutive values as 16-byte words (1, 2 or 4 of them), for vector loads and stores.
template <typename T>
union Pack8 {
    T v[8];
    uint4 q[sizeof(T) / 2];
};

// dst and src must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void store8(T* dst, const Pack8<T>& p) {
#pragma unroll
    for (int i = 0; i < static_cast<int>(sizeof(T) / 2); ++i) reinterpret_cast<uint4*>(dst)[i] = p.q[i];
}

template <typename T>
__device__ __forceinline__ Pack8<T> load8(const T* src) {
    Pack8<T> p;
#pragma unroll
    for (int i = 0; i < static_cast<int>(sizeof(T) / 2); ++i) p.q[i] = reinterpret_cast<const uint4*>(src)[i];
    return p;
}
