// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Device helpers shared by the kernels. Arithmetic that must match the CPU bit for bit uses the
/// explicitly rounded intrinsics (__fadd_rn, __fmul_rn, ...), which nvcc never contracts into FMAs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/device_api.h"

namespace tq {
namespace cuda {

#define TQ_CUDA_CHECK(expr) ::tq::cuda::check(static_cast<int>(expr), #expr)

constexpr unsigned kFull = 0xffffffffu;

/// float -> IEEE half bits, round to nearest even: the exact port of util/half.h floatToHalf.
__device__ __forceinline__ uint16_t f2hBits(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (absx < 0x38800000u) {
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(absx >> 23);
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((absx - 0x38000000u) >> 13);
  const uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

/// IEEE half bits -> float (exact for every value, NaN payloads kept like util/half.h).
__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

__device__ __forceinline__ bool finitePositive(float n) { return n > 0.0f && n <= 3.4028234663852886e38f; }

/// Correctly rounded x / n given y = RN(1/n) (Markstein): exact for |x| <= n when x is zero or
/// |x| >= 2^-60 and n <= 2^40 (checked exhaustively for fp16 inputs and by 1.5e8 random fp32 pairs).
__device__ __forceinline__ float divMarkstein(float x, float n, float y) {
  const float q0 = __fmul_rn(x, y);
  const float r = __fmaf_rn(-q0, n, x);
  const float q1 = __fmaf_rn(r, y, q0);
  return copysignf(q1, x);
}

/// mma.sync m16n8k16 fp16 x fp16 -> fp32 (row.col).
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* smemPtr) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smemPtr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ uint32_t packHalf2(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }

/// Spreads the 4 low bits of x to the even bit positions 0, 2, 4, 6.
__device__ __forceinline__ uint32_t spread4(uint32_t x) {
  x = (x | (x << 2)) & 0x33u;
  x = (x | (x << 1)) & 0x55u;
  return x;
}

/// Number of ascending boundaries strictly below y (binary search over a table of 2^b - 1 entries):
/// equals the CPU's linear count for every y, NaN included (0).
__device__ __forceinline__ int bucketize(float y, const float* bnd, int bits) {
  int idx = 0;
  for (int step = 1 << (bits - 1); step > 0; step >>= 1)
    if (y > bnd[idx + step - 1]) idx += step;
  return idx;
}

/// The CPU's laneSumSquares combination of 8 lane sums: ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
__device__ __forceinline__ float combineLanes(const float (&a)[8]) {
  return __fadd_rn(__fadd_rn(__fadd_rn(a[0], a[1]), __fadd_rn(a[2], a[3])), __fadd_rn(__fadd_rn(a[4], a[5]), __fadd_rn(a[6], a[7])));
}

template <typename T>
__host__ __device__ constexpr T ceilDiv(T a, T b) { return (a + b - 1) / b; }

/// Input element loaders.
__device__ __forceinline__ float loadElem(const void* base, size_t i, CudaInput t) {
  switch (t) {
    case CudaInput::F16: return h2f(static_cast<const uint16_t*>(base)[i]);
    case CudaInput::BF16: return bf2f(static_cast<const uint16_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

/// In-place randomized-Hadamard butterflies over a vector in shared memory, split into the power-of-two
/// blocks of tq::Rotation (`blocks`, `scales` = 1/sqrt(block)), by `nthreads` cooperating threads
/// (`tid` = this thread's index among them); `sync()` separates the stages (__syncwarp or
/// __syncthreads). Every butterfly is the same add/sub of the same operands as tq::fwht, and the scale
/// is one multiply, so the result is bit-identical to the CPU.
template <class Sync>
__device__ __forceinline__ void sharedFwht(float* A, const int* blocks, int nblocks, const float* scales, int tid, int nthreads, Sync sync) {
  int off = 0;
  for (int bi = 0; bi < nblocks; ++bi) {
    const int bs = blocks[bi];
    for (int h = 1; h < bs; h <<= 1) {
      for (int t = tid; t < bs / 2; t += nthreads) {
        const int j = off + (t / h) * 2 * h + (t % h);
        const float a = A[j], b = A[j + h];
        A[j] = __fadd_rn(a, b);
        A[j + h] = __fsub_rn(a, b);
      }
      sync();
    }
    const float sc = scales[bi];
    for (int j = off + tid; j < off + bs; j += nthreads) A[j] = __fmul_rn(A[j], sc);
    sync();
    off += bs;
  }
}

inline size_t inputSize(CudaInput t) { return t == CudaInput::F32 ? 4 : 2; }

}  // namespace cuda
}  // namespace tq
