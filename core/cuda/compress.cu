// SPDX-License-Identifier: GPL-3.0-or-later
// Key/value compression kernels.
//
// Fast path (d = 128, b <= 4 MSE bits, m % 32 == 0 and m <= 256): one fused pass over the input. A warp
// owns 32 vectors at a time; each thread owns one vector (thread-per-vector) so that the sequential
// fp32 sums of the CPU engine (norm, residual norm) are reproduced in the same order, the randomized
// Hadamard transform runs in registers with tq::fwht's butterfly order, and codes are bucketized and
// bit-packed in registers. The QJL projection (m x d per vector) runs on the tensor cores: the
// residual and S R^T are split into fp16 hi + lo parts and three mma.sync products (hi.hi, hi.lo,
// lo.hi) give the dot products to ~2^-22 relative, so a sign can differ from the CPU's Eigen GEMM
// only for a projection within ~1e-6 relative of zero (a tie).
//
// Generic path (any d, bits, m, rotation): one warp per vector with shared-memory buffers; the same
// sequential sums and butterfly order, so codes are bit-identical for Hadamard too.
//
// Dense (Haar / explicit) rotation on the fast path: kernel MODE 2 normalises (bit-exact), cuBLAS
// SGEMM (fp32) rotates, kernel MODE 1 quantizes; codes agree with Eigen except at ties.
#include <cublas_v2.h>

#include <algorithm>
#include <atomic>

#include "cuda/common.cuh"

namespace tq {
namespace cuda {

namespace {

constexpr int kD = 128;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kAStride = kD * 2 + 16;            // bytes per fp16 row of an A tile (hi or lo), padded
constexpr int kStageBytes = 2 * 32 * kAStride;   // >= 32 input rows of fp32 (+16 B padding each)
constexpr int kSignStage = 32 * 32;              // 32 rows x up to 32 sign bytes
constexpr int kWarpBytes = kStageBytes + kSignStage;
constexpr int kTab = 256;                        // codebook table in shared memory: boundaries [0, 256), centroids [256, 512)
constexpr int kFastSmem = kWarps * kWarpBytes + 2 * kTab * 4;
static_assert(32 * (kD * 4 + 16) <= kStageBytes, "fp32 staging must fit");

enum Mode { kModeHadamard = 0, kModePreRotated = 1, kModeNormalize = 2 };

struct FastParams {
  const void* x;          // input rows (MODE 0/2: element type IN; MODE 1: rotated unit vectors, fp32)
  const float* normsIn;   // MODE 1: fp32 norms
  float* uOut;            // MODE 2: unit vectors (fp32, n x d)
  float* nOut;            // MODE 2: fp32 norms
  size_t n;
  uint8_t* codes;
  uint8_t* signs;
  uint16_t* norms;
  uint16_t* rnorms;
  const uint4* srtFrag;
  const uint8_t* rowSign;
  int m;                  // QJL rows (0 = none)
  float hadScale;
  uint32_t xorw[kD];      // Hadamard signs as XOR masks on the raw input words (MODE 0)
  float bnd[16];           // bits 1-2: boundaries and centroids as parameters
  float cen[16];
  const float* bndDev;     // bits >= 3: 2^b - 1 boundaries, 2^b centroids (device), loaded into shared memory
  const float* cenDev;
};

__device__ __forceinline__ void quantizeOne(float y, const FastParams& P, const float* tab, int bits, int& idx, float& c) {
  if (bits == 1) {
    const bool p = y > P.bnd[0];
    idx = p ? 1 : 0;
    c = p ? P.cen[1] : P.cen[0];
  } else if (bits == 2) {
    const bool p1 = y > P.bnd[1];
    const float t = p1 ? P.bnd[2] : P.bnd[0];
    const bool p0 = y > t;
    idx = (p1 ? 2 : 0) | (p0 ? 1 : 0);
    c = p1 ? (p0 ? P.cen[3] : P.cen[2]) : (p0 ? P.cen[1] : P.cen[0]);
  } else if (bits >= 3) {
    idx = bucketize(y, tab, bits);
    c = tab[kTab + idx];
  } else {
    idx = 0;
    c = 0.0f;
  }
}

/// One n-chunk (NT n8-tiles) of the QJL projection for the warp's 32 rows, signs into sgn (row stride sb).
template <int NT>
__device__ __forceinline__ void qjlChunk(const uint8_t* Ahi, const uint8_t* Alo, const uint4* __restrict__ frag, int nt0,
                                         uint8_t* sgn, int sb, int lane) {
  float acc[2][NT][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
  const int arow = lane & 15, acol = (lane >> 4) * 8;
  uint4 bn[NT];  // B fragments of the next k-step (software pipelined loads)
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) bn[nt] = __ldg(frag + (static_cast<size_t>(nt0 + nt) * (kD / 16)) * 32 + lane);
#pragma unroll 2
  for (int ks = 0; ks < kD / 16; ++ks) {
    uint32_t ah[2][4], al[2][4];
    uint4 b[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) b[nt] = bn[nt];
    if (ks + 1 < kD / 16) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) bn[nt] = __ldg(frag + (static_cast<size_t>(nt0 + nt) * (kD / 16) + ks + 1) * 32 + lane);
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int off = (mt * 16 + arow) * kAStride + (ks * 16 + acol) * 2;
      ldmatrixX4(ah[mt], Ahi + off);
      ldmatrixX4(al[mt], Alo + off);
    }
    // term-major order: 2 NT independent accumulators between dependent products
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) mma16816(acc[mt][nt], al[mt], b[nt].x, b[nt].y);  // lo . hi
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) mma16816(acc[mt][nt], ah[mt], b[nt].z, b[nt].w);  // hi . lo
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) mma16816(acc[mt][nt], ah[mt], b[nt].x, b[nt].y);  // hi . hi
  }
  // Sign bits (bit set = non-negative, like packSigns): c0/c1 are (row g, cols 2t, 2t+1), c2/c3 row g+8.
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const uint32_t b0 = __ballot_sync(kFull, !(acc[mt][nt][0] < 0.0f));
      const uint32_t b1 = __ballot_sync(kFull, !(acc[mt][nt][1] < 0.0f));
      const uint32_t b2 = __ballot_sync(kFull, !(acc[mt][nt][2] < 0.0f));
      const uint32_t b3 = __ballot_sync(kFull, !(acc[mt][nt][3] < 0.0f));
      if (lane < 16) {
        const int g = lane & 7;
        const uint32_t ev = lane < 8 ? b0 : b2, od = lane < 8 ? b1 : b3;
        const uint32_t byte = spread4((ev >> (4 * g)) & 0xfu) | (spread4((od >> (4 * g)) & 0xfu) << 1);
        sgn[(mt * 16 + lane) * sb + nt0 + nt] = static_cast<uint8_t>(byte);
      }
    }
}

template <int B, int MODE, CudaInput IN>
__global__ void __launch_bounds__(kThreads, 1) fastCompressKernel(const FastParams P) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int ESZ = (MODE == kModePreRotated || IN == CudaInput::F32) ? 4 : 2;
  constexpr int ROWB = kD * ESZ;
  constexpr int SROW = ROWB + 16;
  constexpr int CPR = ROWB / 16;  // 16-byte chunks per row
  constexpr int CW = B > 0 ? kD * B / 32 : 1;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  uint8_t* stage = smem + warp * kWarpBytes;
  uint8_t* sgn = stage + kStageBytes;
  float* tab = reinterpret_cast<float*>(smem + kWarps * kWarpBytes);
  if (B >= 3) {
    for (int i = threadIdx.x; i < (1 << B); i += kThreads) {
      tab[i] = i + 1 < (1 << B) ? P.bndDev[i] : 3.0e38f;
      tab[kTab + i] = P.cenDev[i];
    }
    __syncthreads();
  }
  const int m = P.m, sb = m / 8;
  const size_t tiles = (P.n + 31) / 32;
  for (size_t tile = static_cast<size_t>(blockIdx.x) * kWarps + warp; tile < tiles; tile += static_cast<size_t>(gridDim.x) * kWarps) {
    const size_t v0 = tile * 32;
    const int nv = static_cast<int>(min(static_cast<size_t>(32), P.n - v0));
    const size_t v = v0 + lane;
    // 1. coalesced load of 32 rows into the staging tile
    {
      const uint8_t* src = static_cast<const uint8_t*>(P.x) + v0 * ROWB;
#pragma unroll
      for (int c0 = 0; c0 < 32 * CPR; c0 += 32 * 8) {
        uint4 buf[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int c = c0 + u * 32 + lane;
          buf[u] = (c / CPR < nv) ? __ldg(reinterpret_cast<const uint4*>(src) + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int c = c0 + u * 32 + lane;
          *reinterpret_cast<uint4*>(stage + (c / CPR) * SROW + (c % CPR) * 16) = buf[u];
        }
      }
    }
    __syncwarp();
    // 2. this thread's row into registers (Hadamard signs applied as XOR on the raw bits: exact)
    float y[kD];
#pragma unroll
    for (int c = 0; c < CPR; ++c) {
      uint4 w = *reinterpret_cast<const uint4*>(stage + lane * SROW + c * 16);
      if (MODE == kModeHadamard) {
        w.x ^= P.xorw[4 * c + 0];
        w.y ^= P.xorw[4 * c + 1];
        w.z ^= P.xorw[4 * c + 2];
        w.w ^= P.xorw[4 * c + 3];
      }
      const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (ESZ == 4) {
          y[4 * c + k] = __uint_as_float(ws[k]);
        } else if (IN == CudaInput::BF16) {
          y[8 * c + 2 * k] = bf2f(static_cast<uint16_t>(ws[k] & 0xffffu));
          y[8 * c + 2 * k + 1] = bf2f(static_cast<uint16_t>(ws[k] >> 16));
        } else {
          y[8 * c + 2 * k] = h2f(static_cast<uint16_t>(ws[k] & 0xffffu));
          y[8 * c + 2 * k + 1] = h2f(static_cast<uint16_t>(ws[k] >> 16));
        }
      }
    }
    __syncwarp();
    float nrm;
    bool special;
    if constexpr (MODE == kModePreRotated) {
      nrm = lane < nv ? P.normsIn[v] : 0.0f;
      special = !finitePositive(nrm);
    } else {
      // 3. norm: tq::laneSumSquares (element j into lane j mod 8, ascending j; fixed tree), no FMA
      float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < kD; ++j) acc[j & 7] = __fadd_rn(acc[j & 7], __fmul_rn(y[j], y[j]));
      nrm = __fsqrt_rn(combineLanes(acc));
      special = !finitePositive(nrm);
      if (!special) {
        bool fast = true;
        if (IN != CudaInput::F16) {
          fast = nrm <= 1.099511627776e12f;  // 2^40
#pragma unroll
          for (int j = 0; j < kD; ++j) fast = fast && (y[j] == 0.0f || fabsf(y[j]) >= 8.673617379884035e-19f);  // 2^-60
        }
        if (fast) {
          const float r = __frcp_rn(nrm);
#pragma unroll
          for (int j = 0; j < kD; ++j) y[j] = divMarkstein(y[j], nrm, r);
        } else {
#pragma unroll
          for (int j = 0; j < kD; ++j) y[j] = __fdiv_rn(y[j], nrm);
        }
      } else {
#pragma unroll
        for (int j = 0; j < kD; ++j) y[j] = 0.0f;
      }
    }
    if constexpr (MODE == kModeNormalize) {
        // unit vectors out through the staging tile (coalesced), fp32 norms out
#pragma unroll
        for (int c = 0; c < kD / 4; ++c)
          *reinterpret_cast<float4*>(stage + lane * (kD * 4 + 16) + c * 16) = make_float4(y[4 * c], y[4 * c + 1], y[4 * c + 2], y[4 * c + 3]);
        __syncwarp();
        float4* dst = reinterpret_cast<float4*>(P.uOut + v0 * kD);
        for (int c = lane; c < nv * (kD / 4); c += 32)
          dst[c] = *reinterpret_cast<const float4*>(stage + (c / (kD / 4)) * (kD * 4 + 16) + (c % (kD / 4)) * 16);
        if (lane < nv) P.nOut[v] = nrm;
    } else {
    if constexpr (MODE == kModeHadamard) {
      // 4. randomized Hadamard: tq::fwht's butterflies, then the 1/sqrt(n) scale
#pragma unroll
      for (int st = 0; st < 7; ++st) {  // h = 1, 2, ..., 64 (constant trip counts: y stays in registers)
        const int h = 1 << st;
#pragma unroll
        for (int t = 0; t < kD / 2; ++t) {
          const int j = (t / h) * 2 * h + (t % h);
          const float a = y[j], b = y[j + h];
          y[j] = __fadd_rn(a, b);
          y[j + h] = __fsub_rn(a, b);
        }
      }
#pragma unroll
      for (int j = 0; j < kD; ++j) y[j] = __fmul_rn(y[j], P.hadScale);
    }
    // 5. bucketize + pack codes, residual r = n (y - c), its sequential squared norm, and the residual
    //    (scaled by a power of two) as fp16 hi + lo rows of the A tile for the tensor cores.
    uint32_t cw[CW];
#pragma unroll
    for (int w = 0; w < CW; ++w) cw[w] = 0u;
    float g[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};  // laneSumSquares of the residual
    float rscale = 1.0f;
    if (!special) {
      const int eb = static_cast<int>((__float_as_uint(nrm) >> 23) & 0xffu);
      rscale = __uint_as_float(static_cast<uint32_t>(min(261 - eb, 254)) << 23);  // n * rscale in [2^7, 2^9)
    }
    uint8_t* Ahi = stage;
    uint8_t* Alo = stage + 32 * kAStride;
#pragma unroll
    for (int c8 = 0; c8 < kD; c8 += 8) {
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        float rs[2];
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const int j = c8 + e + k;
          int idx;
          float c;
          quantizeOne(y[j], P, tab, B, idx, c);
          if (B > 0) {
            const int pos = j * B;
            cw[pos / 32] |= static_cast<uint32_t>(idx) << (pos % 32);
            if ((pos % 32) + B > 32) cw[pos / 32 + 1] |= static_cast<uint32_t>(idx) >> (32 - (pos % 32));
          }
          const float dj = B > 0 ? __fsub_rn(y[j], c) : y[j];
          const float rj = __fmul_rn(nrm, dj);
          g[j & 7] = __fadd_rn(g[j & 7], __fmul_rn(rj, rj));
          rs[k] = __fmul_rn(rj, rscale);
        }
        // fp16 hi + lo split, two values per conversion instruction
        const __half2 h2 = __floats2half2_rn(rs[0], rs[1]);
        const float2 hf = __half22float2(h2);
        const __half2 l2 = __floats2half2_rn(__fsub_rn(rs[0], hf.x), __fsub_rn(rs[1], hf.y));
        hi[e / 2] = *reinterpret_cast<const uint32_t*>(&h2);
        lo[e / 2] = *reinterpret_cast<const uint32_t*>(&l2);
      }
      if (m > 0) {
        *reinterpret_cast<uint4*>(Ahi + lane * kAStride + c8 * 2) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
        *reinterpret_cast<uint4*>(Alo + lane * kAStride + c8 * 2) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
      }
    }
    if (lane < nv) {
      if (B > 0) {
        uint4* dst = reinterpret_cast<uint4*>(P.codes + v * (kD * B / 8));
#pragma unroll
        for (int q = 0; q < CW / 4; ++q) dst[q] = make_uint4(cw[4 * q], cw[4 * q + 1], cw[4 * q + 2], cw[4 * q + 3]);
      }
      P.norms[v] = f2hBits(nrm);
      if (m > 0) P.rnorms[v] = f2hBits(__fsqrt_rn(combineLanes(g)));
    }
    if (m > 0) {
      __syncwarp();
      // 6. QJL signs on the tensor cores
      int nt0 = 0;
      for (; nt0 + 8 <= sb; nt0 += 8) qjlChunk<8>(Ahi, Alo, P.srtFrag, nt0, sgn, sb, lane);
      if (nt0 < sb) qjlChunk<4>(Ahi, Alo, P.srtFrag, nt0, sgn, sb, lane);
      __syncwarp();
      // 7. zero / inf / NaN norms: every residual coordinate equals rho = n (0 - c[idx(0)]); the CPU's
      //    GEMM then gives +-0, NaN or +-inf, whose signs depend only on each row's signs.
      if (special && lane < nv) {
        int iz;
        float cz;
        quantizeOne(0.0f, P, tab, B, iz, cz);
        const float rho = B > 0 ? __fmul_rn(nrm, __fsub_rn(0.0f, cz)) : __fmul_rn(nrm, 0.0f);
        for (int k = 0; k < sb; ++k) {
          uint32_t byte = 0;
          for (int t = 0; t < 8; ++t) {
            const uint8_t rs = P.rowSign[8 * k + t];
            const bool bit = (rho != rho || rho == 0.0f) ? true : (rho > 0.0f ? !(rs & 2) : !(rs & 1));
            byte |= (bit ? 1u : 0u) << t;
          }
          sgn[lane * sb + k] = static_cast<uint8_t>(byte);
        }
      }
      __syncwarp();
      uint32_t* dst = reinterpret_cast<uint32_t*>(P.signs + v0 * sb);
      const uint32_t* srcw = reinterpret_cast<const uint32_t*>(sgn);
      for (int w = lane; w < nv * sb / 4; w += 32) dst[w] = srcw[w];
    }
    }  // MODE != kModeNormalize
    __syncwarp();
  }
}

template <int B, int MODE, CudaInput IN>
void launchFast(Context& ctx, const FastParams& P) {
  auto kern = fastCompressKernel<B, MODE, IN>;
  static std::atomic<bool> configured{false};  // per instantiation; sweep lanes call this from several threads (repeating it is harmless)
  if (!configured.load(std::memory_order_acquire)) {
    TQ_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kFastSmem));
    configured.store(true, std::memory_order_release);
  }
  const size_t tiles = (P.n + 31) / 32;
  const int blocks = static_cast<int>(std::min<size_t>(static_cast<size_t>(ctx.multiprocessors()), (tiles + kWarps - 1) / kWarps));
  if (blocks <= 0) return;
  kern<<<blocks, kThreads, kFastSmem, static_cast<cudaStream_t>(ctx.stream())>>>(P);
  checkLaunch("fast compression kernel");
}

/// Bits 5-8 are instantiated for fp32 input only (the sweep's keys and pre-rotated vectors): compress()
/// sends fp16 / bf16 input at those widths to the generic kernel.
template <int MODE, CudaInput IN>
void dispatchBits(Context& ctx, int bits, const FastParams& P) {
  switch (bits) {
    case 0: launchFast<0, MODE, IN>(ctx, P); break;
    case 1: launchFast<1, MODE, IN>(ctx, P); break;
    case 2: launchFast<2, MODE, IN>(ctx, P); break;
    case 3: launchFast<3, MODE, IN>(ctx, P); break;
    case 4: launchFast<4, MODE, IN>(ctx, P); break;
    default:
      if constexpr (IN == CudaInput::F32 && MODE != kModeNormalize) {
        switch (bits) {
          case 5: launchFast<5, MODE, IN>(ctx, P); break;
          case 6: launchFast<6, MODE, IN>(ctx, P); break;
          case 7: launchFast<7, MODE, IN>(ctx, P); break;
          default: launchFast<8, MODE, IN>(ctx, P); break;
        }
      } else {
        throw CudaError("fast compression kernel: 5-8 bits need fp32 input", 1, false, false);
      }
  }
}

FastParams fastParams(const DevPlan& p, const void* x, size_t n, const DevCompressed& out, CudaInput type) {
  FastParams P{};
  P.x = x;
  P.n = n;
  P.codes = out.codes;
  P.signs = out.signs;
  P.norms = out.norms;
  P.rnorms = out.rnorms;
  P.srtFrag = p.srtFrag.as<const uint4>();
  P.rowSign = p.rowSign.as<const uint8_t>();
  P.m = p.projDim;
  P.hadScale = p.hadScales.empty() ? 1.0f : p.hadScales[0];
  P.bndDev = p.bnd.as<const float>();
  P.cenDev = p.cen.as<const float>();
  for (int i = 0; i < kD; ++i) P.xorw[i] = 0u;
  if (p.hadamard) {
    for (int j = 0; j < kD; ++j) {
      if (p.signsHost[static_cast<size_t>(j)] < 0.0f) {
        if (type == CudaInput::F32)
          P.xorw[j] |= 0x80000000u;
        else
          P.xorw[j / 2] |= (j & 1) ? 0x80000000u : 0x8000u;
      }
    }
  }
  for (int i = 0; i < 16; ++i) {
    P.bnd[i] = i < static_cast<int>(p.bndHost.size()) ? p.bndHost[static_cast<size_t>(i)] : 3.0e38f;
    P.cen[i] = i < static_cast<int>(p.cenHost.size()) ? p.cenHost[static_cast<size_t>(i)] : 0.0f;
  }
  return P;
}

// ------------------------------------------------------------------------------------------ generic
struct GenParams {
  const void* x;
  CudaInput type;
  size_t n;
  int d, bits, m;
  int cb, sb;
  bool hadamard;
  int nblocks;
  const int* blocks;
  const float* blockScales;
  const float* signs;
  const float* rotT;   // R^T (dense rotation)
  const float* bnd;
  const float* cen;
  const float* SRtT;   // (S R^T)^T, d x m
  uint8_t* codes;
  uint8_t* signsOut;
  uint16_t* norms;
  uint16_t* rnorms;
};

/// tq::laneSumSquares of x[0..d) (shared memory) by lanes 0..7 of a warp; the result in every lane.
__device__ __forceinline__ float warpLaneSumSquares(const float* x, int d, int lane) {
  float s = 0.0f;
  if (lane < 8)
    for (int j = lane; j < d; j += 8) s = __fadd_rn(s, __fmul_rn(x[j], x[j]));
  float a[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) a[k] = __shfl_sync(kFull, s, k);
  return combineLanes(a);
}

__global__ void __launch_bounds__(128) genericCompressKernel(const GenParams P) {
  extern __shared__ __align__(16) float gsm[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int d = P.d;
  const int per = 2 * d + (d + 3) / 4 + 4;  // floats per warp: x/u/y, r (or dense y), idx bytes
  float* A = gsm + warp * per;
  float* R = A + d;
  uint8_t* I = reinterpret_cast<uint8_t*>(R + d);
  for (size_t v = static_cast<size_t>(blockIdx.x) * 4 + warp; v < P.n; v += static_cast<size_t>(gridDim.x) * 4) {
    for (int j = lane; j < d; j += 32) A[j] = loadElem(P.x, v * d + j, P.type);
    __syncwarp();
    const float nrm = __fsqrt_rn(warpLaneSumSquares(A, d, lane));
    const bool special = !finitePositive(nrm);
    __syncwarp();
    for (int j = lane; j < d; j += 32) A[j] = special ? 0.0f : __fdiv_rn(A[j], nrm);
    __syncwarp();
    float* Y = A;
    if (P.hadamard) {
      for (int j = lane; j < d; j += 32) A[j] = __fmul_rn(A[j], P.signs[j]);
      __syncwarp();
      sharedFwht(A, P.blocks, P.nblocks, P.blockScales, lane, 32, [] { __syncwarp(); });
    } else {
      for (int i = lane; i < d; i += 32) {
        float acc = 0.0f;
        for (int j = 0; j < d; ++j) acc = fmaf(P.rotT[static_cast<size_t>(j) * d + i], A[j], acc);
        R[i] = acc;
      }
      __syncwarp();
      for (int i = lane; i < d; i += 32) A[i] = R[i];
      __syncwarp();
    }
    // bucketize, residual
    for (int j = lane; j < d; j += 32) {
      const float yj = Y[j];
      int idx = 0;
      float c = 0.0f;
      if (P.bits > 0) {
        idx = bucketize(yj, P.bnd, P.bits);
        c = P.cen[idx];
      }
      I[j] = static_cast<uint8_t>(idx);
      R[j] = __fmul_rn(nrm, P.bits > 0 ? __fsub_rn(yj, c) : yj);
    }
    __syncwarp();
    if (P.bits > 0) {
      for (int k = lane; k < P.cb; k += 32) {
        uint32_t byte = 0;
        for (int q = 0; q < 8; ++q) {
          const int s = 8 * k + q;
          const int j = s / P.bits;
          if (j < d) byte |= ((static_cast<uint32_t>(I[j]) >> (s % P.bits)) & 1u) << q;
        }
        P.codes[v * P.cb + k] = static_cast<uint8_t>(byte);
      }
    }
    if (lane == 0) P.norms[v] = f2hBits(nrm);
    if (P.m > 0) {
      const float g = warpLaneSumSquares(R, d, lane);
      if (lane == 0) P.rnorms[v] = f2hBits(__fsqrt_rn(g));
      for (int i0 = 0; i0 < P.m; i0 += 32) {
        const int i = i0 + lane;
        bool bit = false;
        if (i < P.m) {
          float p = 0.0f;
          for (int j = 0; j < d; ++j) p = fmaf(P.SRtT[static_cast<size_t>(j) * P.m + i], R[j], p);
          bit = !(p < 0.0f);
        }
        const uint32_t word = __ballot_sync(kFull, bit);
        if (lane < 4 && i0 / 8 + lane < P.sb) P.signsOut[v * P.sb + i0 / 8 + lane] = static_cast<uint8_t>(word >> (8 * lane));
      }
    }
    __syncwarp();
  }
}

}  // namespace

void compressGeneric(Context& ctx, const DevPlan& p, const void* x, CudaInput type, size_t n, const DevCompressed& out) {
  if (n == 0) return;
  GenParams P{};
  P.x = x;
  P.type = type;
  P.n = n;
  P.d = p.dim;
  P.bits = p.mseBits;
  P.m = p.projDim;
  P.cb = static_cast<int>(p.codeBytes);
  P.sb = static_cast<int>(p.signBytes);
  P.hadamard = p.hadamard;
  P.nblocks = static_cast<int>(p.hadBlocks.size());
  P.blocks = p.hadBlocksDev.as<const int>();
  P.blockScales = p.hadScalesDev.as<const float>();
  P.signs = p.signs.as<const float>();
  P.rotT = p.rotT.as<const float>();
  P.bnd = p.bnd.as<const float>();
  P.cen = p.cen.as<const float>();
  P.SRtT = p.SRtT.as<const float>();
  P.codes = out.codes;
  P.signsOut = out.signs;
  P.norms = out.norms;
  P.rnorms = out.rnorms;
  const size_t per = (2 * static_cast<size_t>(p.dim) + (static_cast<size_t>(p.dim) + 3) / 4 + 4) * sizeof(float);
  const size_t smem = 4 * per;
  if (smem > ctx.sharedPerBlockOptin()) throw CudaError("head dimension too large for the generic CUDA kernel", 1, false, false);
  TQ_CUDA_CHECK(cudaFuncSetAttribute(genericCompressKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const int blocks = static_cast<int>(std::min<size_t>(static_cast<size_t>(ctx.multiprocessors()) * 8, (n + 3) / 4));
  genericCompressKernel<<<blocks, 128, smem, static_cast<cudaStream_t>(ctx.stream())>>>(P);
  checkLaunch("generic compression kernel");
}

bool fastPath(const DevPlan& p, CudaInput type) {
  return p.fastCompress && (p.mseBits <= 4 || type == CudaInput::F32 || !p.hadamard);
}

void rotateForCompress(Context& ctx, const DevPlan& p, const void* x, CudaInput type, size_t n, float* Y, float* norms, Scratch& s) {
  if (n == 0) return;
  if (!p.fastCompress || p.hadamard) throw CudaError("rotateForCompress: the plan has no dense fast path", 1, false, false);
  s.a.ensure(n * kD * sizeof(float));
  FastParams N{};
  N.x = x;
  N.n = n;
  N.uOut = s.a.as<float>();
  N.nOut = norms;
  switch (type) {
    case CudaInput::F16: launchFast<0, kModeNormalize, CudaInput::F16>(ctx, N); break;
    case CudaInput::BF16: launchFast<0, kModeNormalize, CudaInput::BF16>(ctx, N); break;
    default: launchFast<0, kModeNormalize, CudaInput::F32>(ctx, N); break;
  }
  // Y (col-major d x n) = R (row-major d x d, i.e. col-major R^T, op T) * U (col-major d x n)
  const float one = 1.0f, zero = 0.0f;
  const cublasStatus_t st = cublasSgemm(static_cast<cublasHandle_t>(ctx.cublas()), CUBLAS_OP_T, CUBLAS_OP_N, kD, static_cast<int>(n), kD, &one,
                                        p.rot.as<const float>(), kD, s.a.as<const float>(), kD, &zero, Y, kD);
  if (st != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string("cublasSgemm (rotation): ") + cublasGetStatusString(st), 10000 + static_cast<int>(st), false, false);
}

void compressRotated(Context& ctx, const DevPlan& p, const float* Y, const float* norms, size_t n, const DevCompressed& out) {
  if (n == 0) return;
  if (!p.fastCompress || p.hadamard) throw CudaError("compressRotated: the plan has no dense fast path", 1, false, false);
  FastParams Q = fastParams(p, Y, n, out, CudaInput::F32);
  Q.normsIn = norms;
  dispatchBits<kModePreRotated, CudaInput::F32>(ctx, p.mseBits, Q);
}

void compress(Context& ctx, const DevPlan& p, const void* x, CudaInput type, size_t n, const DevCompressed& out, Scratch& s) {
  if (n == 0) return;
  if (!fastPath(p, type)) {
    compressGeneric(ctx, p, x, type, n, out);
    return;
  }
  if (p.hadamard) {
    FastParams P = fastParams(p, x, n, out, type);
    switch (type) {
      case CudaInput::F16: dispatchBits<kModeHadamard, CudaInput::F16>(ctx, p.mseBits, P); break;
      case CudaInput::BF16: dispatchBits<kModeHadamard, CudaInput::BF16>(ctx, p.mseBits, P); break;
      default: dispatchBits<kModeHadamard, CudaInput::F32>(ctx, p.mseBits, P); break;
    }
    return;
  }
  // Dense rotation: normalise (exact), rotate with cuBLAS fp32 SGEMM, then quantize, in chunks of 2^20 vectors.
  const size_t chunk = std::min<size_t>(n, size_t{1} << 20);
  s.b.ensure(chunk * kD * sizeof(float));
  s.c.ensure(chunk * sizeof(float));
  for (size_t b0 = 0; b0 < n; b0 += chunk) {
    const size_t nb = std::min(chunk, n - b0);
    rotateForCompress(ctx, p, static_cast<const uint8_t*>(x) + b0 * kD * inputSize(type), type, nb, s.b.as<float>(), s.c.as<float>(), s);
    DevCompressed o = out;
    o.codes = out.codes + b0 * p.codeBytes;
    o.signs = out.signs + b0 * p.signBytes;
    o.norms = out.norms + b0;
    o.rnorms = out.rnorms + b0;
    compressRotated(ctx, p, s.b.as<float>(), s.c.as<float>(), nb, o);
  }
}

}  // namespace cuda
}  // namespace tq
