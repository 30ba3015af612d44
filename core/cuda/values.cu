// SPDX-License-Identifier: GPL-3.0-or-later
// Decompression (x_hat = n16 R^T c[idx]), softmax, value aggregation (sum_t w_t x_hat_t accumulated in
// rotated space, R^T applied once per query) and small helpers (conversions, synthetic data).
#include <cublas_v2.h>

#include <algorithm>

#include "cuda/common.cuh"

namespace tq {
namespace cuda {

namespace {

struct DecParams {
  const uint8_t* codes;
  const uint16_t* norms;
  size_t n;
  int d, bits, cb;
  const float* cen;
  const float* signs;
  float scale;  // Hadamard 1/sqrt(d) (fast path)
  int nblocks;
  const int* blocks;
  const float* blockScales;
  void* out;
  bool half;
};

/// d = 128, one Hadamard block, BITS = 1..8: four lanes per vector, lane s of a group owning the 32
/// coordinates [32 s, 32 s + 32) (its BITS code words are one contiguous load). Butterflies h = 1..16 run
/// in registers, h = 32 and 64 across the group's lanes; each butterfly is the same a + b / a - b as
/// tq::fwht, so the output is bit-identical to the CPU's. A warp decodes 8 vectors per step and issues
/// the loads of its next U steps together.
template <int BITS>
__global__ void __launch_bounds__(256) decompressFastKernel(const DecParams P) {
  __shared__ float cen[256];
  for (int i = threadIdx.x; i < (1 << BITS); i += blockDim.x) cen[i] = P.cen[i];
  __syncthreads();
  __shared__ uint4 stageAll[8][256];  // per warp: 8 rows of fp32 output (4 KB)
  const int lane = threadIdx.x & 31, s = lane & 3, grp = lane >> 2;
  uint4* stage = stageAll[threadIdx.x >> 5];
  const size_t warp = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const size_t warps = (static_cast<size_t>(gridDim.x) * blockDim.x) >> 5;
  // Hadamard signs of this lane's 32 coordinates as a bit mask (bit k: coordinate 32 s + k negative)
  uint32_t neg = 0u;
#pragma unroll
  for (int k = 0; k < 32; ++k) neg |= (P.signs[32 * s + k] < 0.0f ? 1u : 0u) << k;
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  constexpr int U = 2;  // warp steps whose loads are issued together (8 vectors each)
  for (size_t vb = warp * 8; vb < P.n; vb += warps * 8 * U) {
    uint32_t word[U][BITS];
    float n16[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t v = vb + static_cast<size_t>(u) * warps * 8 + grp;
      const bool ok = v < P.n;
      const uint32_t* src = reinterpret_cast<const uint32_t*>(P.codes + v * (16 * BITS)) + BITS * s;
#pragma unroll
      for (int w = 0; w < BITS; ++w) word[u][w] = ok ? __ldg(src + w) : 0u;
      n16[u] = ok ? h2f(P.norms[v]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (vb + static_cast<size_t>(u) * warps * 8 >= P.n) break;  // warp-uniform
      float a[32];
#pragma unroll
      for (int k = 0; k < 32; ++k) {
        const int bit = k * BITS, w = bit >> 5, sh = bit & 31;
        uint32_t c = word[u][w] >> sh;
        if (sh + BITS > 32) c |= word[u][w + 1] << (32 - sh);
        a[k] = __fmul_rn(n16[u], cen[c & kMask]);
      }
#pragma unroll
      for (int h = 1; h < 32; h <<= 1)
#pragma unroll
        for (int k = 0; k < 32; ++k)
          if ((k & h) == 0) {
            const float x = a[k], y = a[k + h];
            a[k] = __fadd_rn(x, y);
            a[k + h] = __fsub_rn(x, y);
          }
#pragma unroll
      for (int hl = 1; hl < 4; hl <<= 1) {  // h = 32, 64: partner lane s ^ hl
        const bool lower = (s & hl) == 0;
#pragma unroll
        for (int k = 0; k < 32; ++k) {
          const float o = __shfl_xor_sync(kFull, a[k], hl);
          a[k] = lower ? __fadd_rn(a[k], o) : __fsub_rn(o, a[k]);
        }
      }
#pragma unroll
      for (int k = 0; k < 32; ++k) a[k] = __fmul_rn(__fmul_rn(a[k], P.scale), ((neg >> k) & 1u) ? -1.0f : 1.0f);
      // Out through a per-warp staging buffer (16-byte chunks, XOR-swizzled: conflict-free both ways)
      // so that the warp's 8 rows leave as one contiguous run of coalesced 16-byte stores.
      const int cpl = P.half ? 4 : 8;  // 16-byte chunks per lane
      if (P.half) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          uint32_t hw[4];
#pragma unroll
          for (int e = 0; e < 4; ++e)
            hw[e] = packHalf2(__half_as_ushort(__float2half_rn(a[8 * q + 2 * e])), __half_as_ushort(__float2half_rn(a[8 * q + 2 * e + 1])));
          const int c = (grp * 4 + s) * 4 + q;
          stage[c ^ ((c >> 3) & 7)] = make_uint4(hw[0], hw[1], hw[2], hw[3]);
        }
      } else {
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const int c = (grp * 4 + s) * 8 + q;
          stage[c ^ ((c >> 3) & 7)] = make_uint4(__float_as_uint(a[4 * q]), __float_as_uint(a[4 * q + 1]), __float_as_uint(a[4 * q + 2]),
                                                 __float_as_uint(a[4 * q + 3]));
        }
      }
      __syncwarp();
      const size_t v0 = vb + static_cast<size_t>(u) * warps * 8;
      const size_t rowChunks = static_cast<size_t>(cpl) * 4;  // 16-byte chunks per output row
      const size_t valid = min(static_cast<size_t>(8), P.n - v0) * rowChunks;
      uint4* dst = reinterpret_cast<uint4*>(static_cast<uint8_t*>(P.out) + v0 * rowChunks * 16);
      for (int i = 0; i < cpl; ++i) {
        const int c = lane + 32 * i;
        if (static_cast<size_t>(c) < valid) dst[c] = stage[c ^ ((c >> 3) & 7)];
      }
      __syncwarp();
    }
  }
}

__device__ __forceinline__ int codeAt(const uint8_t* row, int cb, int j, int bits) {
  const int bitpos = j * bits, k = bitpos >> 3, sh = bitpos & 7;
  uint32_t v = row[k];
  if (k + 1 < cb) v |= static_cast<uint32_t>(row[k + 1]) << 8;
  return static_cast<int>((v >> sh) & ((1u << bits) - 1u));
}

/// Any d (Hadamard, possibly several blocks), or dense (decode only: out = n16 c[idx], rotated later).
__global__ void __launch_bounds__(128) decompressGenericKernel(const DecParams P, bool hadamard) {
  extern __shared__ float dsm[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int d = P.d;
  float* A = dsm + warp * d;
  for (size_t v = static_cast<size_t>(blockIdx.x) * 4 + warp; v < P.n; v += static_cast<size_t>(gridDim.x) * 4) {
    const uint8_t* row = P.codes + v * P.cb;
    const float n16 = h2f(P.norms[v]);
    for (int j = lane; j < d; j += 32) A[j] = __fmul_rn(n16, P.cen[codeAt(row, P.cb, j, P.bits)]);
    __syncwarp();
    if (hadamard) {
      sharedFwht(A, P.blocks, P.nblocks, P.blockScales, lane, 32, [] { __syncwarp(); });
      for (int j = lane; j < d; j += 32) A[j] = __fmul_rn(A[j], P.signs[j]);
      __syncwarp();
    }
    for (int j = lane; j < d; j += 32) {
      if (P.half)
        static_cast<uint16_t*>(P.out)[v * d + j] = __half_as_ushort(__float2half_rn(A[j]));
      else
        static_cast<float*>(P.out)[v * d + j] = A[j];
    }
    __syncwarp();
  }
}

__global__ void f32ToHalfKernel(const float* in, size_t n, uint16_t* out) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = f2hBits(in[i]);
}

__global__ void f32ToBf16Kernel(const float* in, size_t n, uint16_t* out) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = __float_as_uint(in[i]);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
      out[i] = static_cast<uint16_t>((x >> 16) | 0x40u);
    } else {
      x += 0x7fffu + ((x >> 16) & 1u);
      out[i] = static_cast<uint16_t>(x >> 16);
    }
  }
}

__device__ __forceinline__ uint64_t mix64d(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void syntheticKernel(float* out, size_t rows, int dim, uint64_t seed, float outlierScale) {
  const size_t total = rows * static_cast<size_t>(dim);
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(i % dim);
    const uint64_t r = mix64d(seed * 0x9e3779b97f4a7c15ull + i);
    const float u1 = (static_cast<float>(r >> 40) + 0.5f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((r >> 16) & 0xffffffu) * (1.0f / 16777216.0f);
    const float g = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    const uint64_t c = mix64d(seed ^ (0xabcdefull + static_cast<uint64_t>(j)));
    const float chanScale = 0.5f + static_cast<float>(c & 0xffff) / 65536.0f;
    const float offset = (static_cast<float>((c >> 16) & 0xffff) / 65536.0f - 0.5f);
    const bool outlier = (j % 37) == 5;
    out[i] = offset + g * chanScale * (outlier ? outlierScale : 1.0f);
  }
}

// ------------------------------------------------------------------------------------------ softmax
__device__ __forceinline__ float blockReduce(float v, bool isMax, float* red) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(kFull, v, o);
    v = isMax ? fmaxf(v, w) : v + w;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  v = lane < nw ? red[lane] : (isMax ? -INFINITY : 0.0f);
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(kFull, v, o);
    v = isMax ? fmaxf(v, w) : v + w;
  }
  return v;
}

__global__ void softmaxKernel(const float* s, size_t n, size_t ld, float scale, float* w) {
  __shared__ float red[32];
  const float* row = s + blockIdx.x * ld;
  float* out = w + blockIdx.x * ld;
  float mx = -INFINITY;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, scale * row[i]);
  mx = blockReduce(mx, true, red);
  float sum = 0.0f;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) sum += expf(scale * row[i] - mx);
  sum = blockReduce(sum, false, red);
  const float inv = 1.0f / sum;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = expf(scale * row[i] - mx) * inv;
}

// ------------------------------------------------------------------------------------------ aggregation
struct AggParams {
  const uint8_t* codes;
  const uint16_t* norms;
  size_t valuesPerHead, n;
  const float* w;
  size_t ld, qPerHead;
  int d, bits, cb;
  const float* cen;
  size_t parts, chunk;
  float* partial;  // [q][part][d]
};

/// d = 128, BITS = 1..8: the decompression kernel's layout — 4 lanes per token, lane s of a group
/// accumulating the 32 coordinates [32 s, 32 s + 32) of its group's tokens (one contiguous load of its
/// BITS code words, no shuffles per token); a warp takes 8 tokens per step, the loads of U steps in
/// flight. Steps whose 8 weights are all zero (beyond a causal limit) are skipped. At the end the 8 groups
/// of a warp and the 8 warps of the block are summed in a fixed order into the block's partial.
template <int BITS>
__global__ void __launch_bounds__(256) aggFastKernel(const AggParams P) {
  __shared__ float cen[256];
  __shared__ float red[8][128];
  for (int i = threadIdx.x; i < (1 << BITS); i += blockDim.x) cen[i] = P.cen[i];
  __syncthreads();
  const size_t qi = blockIdx.y, part = blockIdx.x;
  const size_t head = qi / P.qPerHead;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 3, grp = lane >> 2;
  const size_t t0 = part * P.chunk, t1 = min(P.n, t0 + P.chunk);
  const float* wrow = P.w + qi * P.ld;
  const uint8_t* codes = P.codes + head * P.valuesPerHead * (16 * BITS);
  const uint16_t* norms = P.norms + head * P.valuesPerHead;
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  float acc[32];
#pragma unroll
  for (int k = 0; k < 32; ++k) acc[k] = 0.0f;
  constexpr int U = 2;
  for (size_t tb = t0 + static_cast<size_t>(warp) * 8; tb < t1; tb += 64 * U) {
    uint32_t word[U][BITS];
    float wn[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t t = tb + u * 64 + grp;
      const bool ok = t < t1;
      wn[u] = ok ? __ldg(wrow + t) : 0.0f;
      const bool use = wn[u] != 0.0f;
      const uint32_t* src = reinterpret_cast<const uint32_t*>(codes + t * (16 * BITS)) + BITS * s;
#pragma unroll
      for (int w = 0; w < BITS; ++w) word[u][w] = use ? __ldg(src + w) : 0u;
      wn[u] = use ? wn[u] * h2f(norms[t]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!__any_sync(kFull, wn[u] != 0.0f)) continue;
#pragma unroll
      for (int k = 0; k < 32; ++k) {
        const int bit = k * BITS, w = bit >> 5, sh = bit & 31;
        uint32_t c = word[u][w] >> sh;
        if (sh + BITS > 32) c |= word[u][w + 1] << (32 - sh);
        acc[k] = fmaf(wn[u], cen[c & kMask], acc[k]);
      }
    }
  }
#pragma unroll
  for (int o = 4; o < 32; o <<= 1)
#pragma unroll
    for (int k = 0; k < 32; ++k) acc[k] += __shfl_xor_sync(kFull, acc[k], o);
  if (grp == 0)
#pragma unroll
    for (int k = 0; k < 32; ++k) red[warp][32 * s + k] = acc[k];
  __syncthreads();
  if (threadIdx.x < 128) {
    float sum = 0.0f;
    for (int w = 0; w < 8; ++w) sum += red[w][threadIdx.x];
    P.partial[(qi * P.parts + part) * 128 + threadIdx.x] = sum;
  }
}

/// Any d and bits: threads over coordinates, accumulators in shared memory.
__global__ void __launch_bounds__(128) aggGenericKernel(const AggParams P) {
  extern __shared__ float acc[];
  const size_t qi = blockIdx.y, part = blockIdx.x;
  const size_t head = qi / P.qPerHead;
  const int d = P.d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) acc[j] = 0.0f;
  const size_t t0 = part * P.chunk, t1 = min(P.n, t0 + P.chunk);
  const float* wrow = P.w + qi * P.ld;
  const uint8_t* codes = P.codes + head * P.valuesPerHead * P.cb;
  const uint16_t* norms = P.norms + head * P.valuesPerHead;
  for (size_t t = t0; t < t1; ++t) {
    const float wn = wrow[t] * h2f(norms[t]);
    if (wn == 0.0f) continue;
    const uint8_t* row = codes + t * P.cb;
    for (int j = threadIdx.x; j < d; j += blockDim.x) acc[j] = fmaf(wn, P.cen[codeAt(row, P.cb, j, P.bits)], acc[j]);
  }
  for (int j = threadIdx.x; j < d; j += blockDim.x) P.partial[(qi * P.parts + part) * d + j] = acc[j];
}

struct FinishParams {
  const float* partial;
  size_t parts;
  int d;
  bool hadamard;
  int nblocks;
  const int* blocks;
  const float* blockScales;
  const float* signs;
  const float* rot;  // row-major R: out_j = sum_k acc_k R[k][j]
  float* out;
};

__global__ void aggFinishKernel(const FinishParams P) {
  extern __shared__ float fsm[];
  const int d = P.d;
  float* a = fsm;
  const size_t qi = blockIdx.x;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float s = 0.0f;
    for (size_t p = 0; p < P.parts; ++p) s += P.partial[(qi * P.parts + p) * d + j];
    a[j] = s;
  }
  __syncthreads();
  if (P.hadamard) {
    sharedFwht(a, P.blocks, P.nblocks, P.blockScales, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), [] { __syncthreads(); });
    for (int j = threadIdx.x; j < d; j += blockDim.x) P.out[qi * d + j] = a[j] * P.signs[j];
  } else {
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      float s = 0.0f;
      for (int k = 0; k < d; ++k) s = fmaf(a[k], P.rot[static_cast<size_t>(k) * d + j], s);
      P.out[qi * d + j] = s;
    }
  }
}

}  // namespace

void decompress(Context& ctx, const DevPlan& p, const DevCompressed& cv, size_t n, void* out, bool half, Scratch& s) {
  if (n == 0) return;
  const cudaStream_t st = static_cast<cudaStream_t>(ctx.stream());
  const size_t d = static_cast<size_t>(p.dim);
  if (p.mseBits == 0) {
    ctx.memsetAsync(out, 0, n * d * (half ? 2 : 4));
    return;
  }
  DecParams P{};
  P.codes = cv.codes;
  P.norms = cv.norms;
  P.n = n;
  P.d = p.dim;
  P.bits = p.mseBits;
  P.cb = static_cast<int>(p.codeBytes);
  P.cen = p.cen.as<const float>();
  P.signs = p.signs.as<const float>();
  P.scale = p.hadScales.empty() ? 1.0f : p.hadScales[0];
  P.nblocks = static_cast<int>(p.hadBlocks.size());
  P.blocks = p.hadBlocksDev.as<const int>();
  P.blockScales = p.hadScalesDev.as<const float>();
  P.out = out;
  P.half = half;
  const size_t sms = static_cast<size_t>(ctx.multiprocessors());
  if (p.hadamard && p.dim == 128 && p.hadBlocks.size() == 1) {
    const size_t blocks = std::min(sms * 8, ceilDiv<size_t>(n, 64));  // 8 warps x 8 vectors per block step
    switch (p.mseBits) {
      case 1: decompressFastKernel<1><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      case 2: decompressFastKernel<2><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      case 3: decompressFastKernel<3><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      case 4: decompressFastKernel<4><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      case 5: decompressFastKernel<5><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      case 6: decompressFastKernel<6><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      case 7: decompressFastKernel<7><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
      default: decompressFastKernel<8><<<static_cast<unsigned>(blocks), 256, 0, st>>>(P); break;
    }
    checkLaunch("fast decompression kernel");
    return;
  }
  const size_t smem = 4 * d * sizeof(float);
  TQ_CUDA_CHECK(cudaFuncSetAttribute(decompressGenericKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const size_t blocks = std::min(sms * 16, ceilDiv<size_t>(n, 4));
  if (p.hadamard) {
    decompressGenericKernel<<<static_cast<unsigned>(blocks), 128, smem, st>>>(P, true);
    checkLaunch("generic decompression kernel");
    return;
  }
  // Dense: decode n16 c[idx] in chunks, then X = Y R with cuBLAS (fp32).
  const size_t chunk = std::min<size_t>(n, size_t{1} << 20);
  s.d.ensure(chunk * d * sizeof(float));
  if (half) s.a.ensure(chunk * d * sizeof(float));
  const float one = 1.0f, zero = 0.0f;
  for (size_t b0 = 0; b0 < n; b0 += chunk) {
    const size_t nb = std::min(chunk, n - b0);
    DecParams Q = P;
    Q.codes = cv.codes + b0 * p.codeBytes;
    Q.norms = cv.norms + b0;
    Q.n = nb;
    Q.out = s.d.get();
    Q.half = false;
    decompressGenericKernel<<<static_cast<unsigned>(std::min(sms * 16, ceilDiv<size_t>(nb, 4))), 128, smem, st>>>(Q, false);
    checkLaunch("decode kernel");
    float* dst = half ? s.a.as<float>() : static_cast<float*>(out) + b0 * d;
    // X (col-major d x nb) = R^T (R row-major = col-major R^T, op N) * Y (col-major d x nb)
    const cublasStatus_t cs = cublasSgemm(static_cast<cublasHandle_t>(ctx.cublas()), CUBLAS_OP_N, CUBLAS_OP_N, p.dim, static_cast<int>(nb), p.dim,
                                          &one, p.rot.as<const float>(), p.dim, s.d.as<const float>(), p.dim, &zero, dst, p.dim);
    if (cs != CUBLAS_STATUS_SUCCESS)
      throw CudaError(std::string("cublasSgemm (inverse rotation): ") + cublasGetStatusString(cs), 10000 + static_cast<int>(cs), false, false);
    if (half) {
      f32ToHalfKernel<<<static_cast<unsigned>(std::min<size_t>(sms * 8, ceilDiv<size_t>(nb * d, 256))), 256, 0, st>>>(
          dst, nb * d, static_cast<uint16_t*>(out) + b0 * d);
      checkLaunch("fp16 conversion kernel");
    }
  }
}

void softmaxRows(Context& ctx, const float* s, size_t nq, size_t n, size_t ld, float scale, float* w) {
  if (nq == 0 || n == 0) return;
  softmaxKernel<<<static_cast<unsigned>(nq), 1024, 0, static_cast<cudaStream_t>(ctx.stream())>>>(s, n, ld, scale, w);
  checkLaunch("softmax kernel");
}

void weightedSum(Context& ctx, const DevPlan& p, const DevCompressed& values, size_t valuesPerHead, size_t n, const float* w, size_t ld,
                 size_t nq, size_t qPerHead, float* out, Scratch& s) {
  if (nq == 0) return;
  if (nq > 65535) {  // grid.y limit: whole heads per launch
    const size_t step = std::max<size_t>(1, 65535 / qPerHead) * qPerHead;
    for (size_t q0 = 0; q0 < nq; q0 += step) {
      const size_t nb = std::min(step, nq - q0);
      DevCompressed v = values;
      const size_t h0 = q0 / qPerHead;
      v.codes += h0 * valuesPerHead * p.codeBytes;
      v.norms += h0 * valuesPerHead;
      weightedSum(ctx, p, v, valuesPerHead, n, w + q0 * ld, ld, nb, qPerHead, out + q0 * p.dim, s);
    }
    return;
  }
  const cudaStream_t st = static_cast<cudaStream_t>(ctx.stream());
  const size_t d = static_cast<size_t>(p.dim);
  if (p.mseBits == 0 || n == 0) {
    ctx.memsetAsync(out, 0, nq * d * sizeof(float));
    return;
  }
  const size_t sms = static_cast<size_t>(ctx.multiprocessors());
  AggParams A{};
  A.codes = values.codes;
  A.norms = values.norms;
  A.valuesPerHead = valuesPerHead;
  A.n = n;
  A.w = w;
  A.ld = ld;
  A.qPerHead = qPerHead;
  A.d = p.dim;
  A.bits = p.mseBits;
  A.cb = static_cast<int>(p.codeBytes);
  A.cen = p.cen.as<const float>();
  // parts per query: enough blocks to fill the device, at least 512 tokens each
  size_t parts = std::max<size_t>(1, std::min(ceilDiv<size_t>(n, 512), ceilDiv<size_t>(8 * sms, nq)));
  A.chunk = ceilDiv<size_t>(n, parts);
  parts = ceilDiv<size_t>(n, A.chunk);
  A.parts = parts;
  s.c.ensure(nq * parts * d * sizeof(float));
  A.partial = s.c.as<float>();
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(nq));
  if (p.dim == 128) {
    switch (p.mseBits) {
      case 1: aggFastKernel<1><<<grid, 256, 0, st>>>(A); break;
      case 2: aggFastKernel<2><<<grid, 256, 0, st>>>(A); break;
      case 3: aggFastKernel<3><<<grid, 256, 0, st>>>(A); break;
      case 4: aggFastKernel<4><<<grid, 256, 0, st>>>(A); break;
      case 5: aggFastKernel<5><<<grid, 256, 0, st>>>(A); break;
      case 6: aggFastKernel<6><<<grid, 256, 0, st>>>(A); break;
      case 7: aggFastKernel<7><<<grid, 256, 0, st>>>(A); break;
      default: aggFastKernel<8><<<grid, 256, 0, st>>>(A); break;
    }
  } else {
    const size_t smem = d * sizeof(float);
    TQ_CUDA_CHECK(cudaFuncSetAttribute(aggGenericKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    aggGenericKernel<<<grid, 128, smem, st>>>(A);
  }
  checkLaunch("aggregation kernel");
  FinishParams F{};
  F.partial = A.partial;
  F.parts = parts;
  F.d = p.dim;
  F.hadamard = p.hadamard;
  F.nblocks = static_cast<int>(p.hadBlocks.size());
  F.blocks = p.hadBlocksDev.as<const int>();
  F.blockScales = p.hadScalesDev.as<const float>();
  F.signs = p.signs.as<const float>();
  F.rot = p.rot.as<const float>();
  F.out = out;
  const size_t smem = d * sizeof(float);
  TQ_CUDA_CHECK(cudaFuncSetAttribute(aggFinishKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  aggFinishKernel<<<static_cast<unsigned>(nq), 128, smem, st>>>(F);
  checkLaunch("aggregation finish kernel");
}

void convertF32(Context& ctx, const float* in, size_t n, CudaInput type, void* out) {
  if (n == 0) return;
  const cudaStream_t st = static_cast<cudaStream_t>(ctx.stream());
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>(static_cast<size_t>(ctx.multiprocessors()) * 16, ceilDiv<size_t>(n, 256)));
  if (type == CudaInput::F16)
    f32ToHalfKernel<<<blocks, 256, 0, st>>>(in, n, static_cast<uint16_t*>(out));
  else if (type == CudaInput::BF16)
    f32ToBf16Kernel<<<blocks, 256, 0, st>>>(in, n, static_cast<uint16_t*>(out));
  else
    TQ_CUDA_CHECK(cudaMemcpyAsync(out, in, n * sizeof(float), cudaMemcpyDeviceToDevice, st));
  checkLaunch("conversion kernel");
}

void fillSynthetic(Context& ctx, float* out, size_t rows, int dim, uint64_t seed, float outlierScale) {
  const size_t total = rows * static_cast<size_t>(dim);
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>(static_cast<size_t>(ctx.multiprocessors()) * 16, ceilDiv<size_t>(total, 256)));
  syntheticKernel<<<blocks, 256, 0, static_cast<cudaStream_t>(ctx.stream())>>>(out, rows, dim, seed, outlierScale);
  checkLaunch("synthetic data kernel");
}

}  // namespace cuda
}  // namespace tq
