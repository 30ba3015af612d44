// SPDX-License-Identifier: GPL-3.0-or-later
// Scoring queries against compressed keys without decompressing: the query is rotated and projected
// once, its look-up tables (the CPU's layout: per chunk of g coordinates, the partial dot products of
// R q with every code pattern; per sign byte, the partial <S q, z> of every sign pattern) are built in
// the CPU's summation order, and every key costs one table look-up per code chunk and per sign byte,
// summed in the CPU's order. With the same R q and S q the scores are bit-identical to the CPU.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "cuda/common.cuh"

namespace tq {
namespace cuda {

namespace {

/// Programmatic dependent launch (sm_90+): the query-preparation kernel lets the scoring kernel launch
/// early; the scoring kernel loads its first keys, then waits for the prepared query (griddepcontrol.wait
/// returns once the preparation has completed and its writes are visible; a no-op for a normal launch).
__device__ __forceinline__ void pdlTrigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel, device and size (not on every call).
void ensureSmem(const void* kern, size_t bytes, int device) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> done;
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = done[{kern, device}];
  if (have >= bytes && have != 0) return;
  TQ_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  have = std::max<size_t>(bytes, 1);
}

int envInt(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::atoi(v) : dflt;
}

/// What a block needs to prepare a query and its look-up tables (from the plan).
struct QPrep {
  const float* q;   // raw queries (nq x d), or nullptr when rq / sq are given
  const float* rq;  // prepared R q (nq x d)
  const float* sq;  // prepared S q (nq x m)
  int d, m, bits, group, chunks, patterns, sb;
  int signBits, signChunks;  // sign tables over groups of signBits rows (8 = the CPU's bytes, 4 = nibbles: fast kernel)
  bool hadamard;
  int nblocks;
  const int* blocks;
  const float* blockScales;
  const float* signs;
  const float* rotT;
  const float* St;
  const float* cen;
};

/// Block-wide: R q and S q of query qi into shared memory (qS: scratch of d floats). Hadamard is exact
/// (tq::fwht's butterflies); the dense products use a fixed fp32 FMA order.
__device__ void blockPrepare(const QPrep& Q, size_t qi, float* qS, float* rqS, float* sqS, bool projS = true) {
  const int d = Q.d, m = Q.m;
  if (!Q.q) {
    for (int j = threadIdx.x; j < d; j += blockDim.x) rqS[j] = Q.rq[qi * d + j];
    for (int i = threadIdx.x; i < m; i += blockDim.x) sqS[i] = Q.sq[qi * m + i];
    return;
  }
  for (int j = threadIdx.x; j < d; j += blockDim.x) qS[j] = Q.q[qi * d + j];
  __syncthreads();
  if (Q.hadamard) {
    for (int j = threadIdx.x; j < d; j += blockDim.x) rqS[j] = __fmul_rn(qS[j], Q.signs[j]);
    __syncthreads();
    sharedFwht(rqS, Q.blocks, Q.nblocks, Q.blockScales, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), [] { __syncthreads(); });
  } else {
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
      float acc = 0.0f;
#pragma unroll 16
      for (int j = 0; j < d; ++j) acc = fmaf(Q.rotT[static_cast<size_t>(j) * d + i], qS[j], acc);
      rqS[i] = acc;
    }
  }
  if (!projS) return;  // the caller computes S q (prepareKernel, staged)
  for (int i = threadIdx.x; i < m; i += blockDim.x) {
    float acc = 0.0f;
#pragma unroll 16
    for (int j = 0; j < d; ++j) acc = fmaf(Q.St[static_cast<size_t>(j) * m + i], qS[j], acc);
    sqS[i] = acc;
  }
}

/// Block-wide: the CPU's look-up tables (Quantizer::prepare layout and summation order) into lut.
__device__ void blockBuildLut(const QPrep& Q, const float* rq, const float* sq, float* lut) {
  const int codeEntries = Q.chunks * Q.patterns;
  const int total = codeEntries + Q.sb * 256;
  const uint32_t mask = (1u << Q.bits) - 1u;
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    float s = 0.0f;
    if (e < codeEntries) {
      const int c = e / Q.patterns;
      const uint32_t p = static_cast<uint32_t>(e % Q.patterns);
      for (int t = 0; t < Q.group; ++t) {
        const int j = c * Q.group + t;
        if (j < Q.d) s = __fadd_rn(s, __fmul_rn(rq[j], Q.cen[(p >> (t * Q.bits)) & mask]));
      }
    } else {
      const int e2 = e - codeEntries;
      const int k = e2 >> 8, p = e2 & 255;
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const int j = k * 8 + t;
        if (j < Q.m) s = __fadd_rn(s, ((p >> t) & 1) ? sq[j] : -sq[j]);
      }
    }
    lut[e] = s;
  }
}

/// ms > 0: block (q, y) computes rows [y ms, y ms + ms) of S q from a slice of S^T (d x ms) that it first
/// copies to shared memory at sm + stOff with all 16-byte loads in flight (the projection's global loads
/// were a chain of latency-bound batches); same products, same order. Block y = 0 writes R q.
__global__ void prepareKernel(const QPrep Q, float* rq, float* sq, int stOff, int ms) {
  extern __shared__ __align__(16) float sm[];
  float* qS = sm;
  float* rqS = sm + Q.d;
  float* sqS = sm + 2 * Q.d;
  const size_t qi = blockIdx.x;
  const int d = Q.d, m = Q.m;
  pdlTrigger();
  float* StS = sm + stOff;
  const int i0 = static_cast<int>(blockIdx.y) * ms;
  if (ms > 0) {
    const int per = ms / 4;  // float4 per row of the slice
    const int n4 = d * per;
    float4* dst = reinterpret_cast<float4*>(StS);
    for (int e0 = threadIdx.x; e0 < n4; e0 += blockDim.x * 8) {
      float4 v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int e = e0 + u * static_cast<int>(blockDim.x);
        v[u] = e < n4 ? __ldg(reinterpret_cast<const float4*>(Q.St + static_cast<size_t>(e / per) * m + i0) + e % per) : make_float4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int e = e0 + u * static_cast<int>(blockDim.x);
        if (e < n4) dst[e] = v[u];
      }
    }
  }
  blockPrepare(Q, qi, qS, rqS, sqS, ms == 0);
  __syncthreads();
  if (blockIdx.y == 0)
    for (int j = threadIdx.x; j < d; j += blockDim.x) rq[qi * d + j] = rqS[j];
  if (ms > 0) {
    // ms (32) rows, 8 partial sums per row (warp w: coordinates [w c, w c + c)), then the 8 partials in
    // ascending order: a short FMA chain per thread instead of one d-long chain per row
    float* red = StS + d * ms;  // ms x (warps) partials, after the slice
    const int nw = static_cast<int>(blockDim.x) >> 5, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int c = (d + nw - 1) / nw;
    for (int i = lane; i < ms; i += 32) {
      float acc = 0.0f;
      const int j1 = min(d, (w + 1) * c);
      for (int j = w * c; j < j1; ++j) acc = fmaf(StS[j * ms + i], qS[j], acc);
      red[i * nw + w] = acc;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < ms; i += blockDim.x) {
      float acc = 0.0f;
      for (int k = 0; k < nw; ++k) acc = __fadd_rn(acc, red[i * nw + k]);
      sq[qi * m + i0 + i] = acc;
    }
  } else {
    for (int i = threadIdx.x; i < m; i += blockDim.x) sq[qi * m + i] = sqS[i];
  }
}

/// Block-wide: the fast kernel's tables (entry for entry the tables the former global LUT kernel built,
/// same arithmetic) from
/// R q and S q in shared memory: code chunks of Q.group coordinates (Q.patterns entries each), then sign
/// tables over groups of Q.signBits rows.
__device__ __forceinline__ void blockBuildFastLut(const QPrep& Q, const float* rqS, const float* sqS, float* out, int total) {
  const uint32_t mask = (1u << Q.bits) - 1u;
  const int codeEntries = total - (Q.signChunks << Q.signBits);
  const int chunkBits = Q.group * Q.bits;
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    float s = 0.0f;
    if (e < codeEntries) {
      const int c = e >> chunkBits;
      const uint32_t p = static_cast<uint32_t>(e) & static_cast<uint32_t>(Q.patterns - 1);
      for (int t = 0; t < Q.group; ++t) {
        const int j = c * Q.group + t;
        if (j < Q.d) s = __fadd_rn(s, __fmul_rn(rqS[j], Q.cen[(p >> (t * Q.bits)) & mask]));
      }
    } else {
      const int e2 = e - codeEntries;
      const int k = e2 >> Q.signBits, p = e2 & ((1 << Q.signBits) - 1);
      for (int t = 0; t < Q.signBits; ++t) {
        const int j = k * Q.signBits + t;
        if (j < Q.m) s = __fadd_rn(s, ((p >> t) & 1) ? sqS[j] : -sqS[j]);
      }
    }
    out[e] = s;
  }
}

QPrep makePrep(const DevPlan& p, const float* q, const float* rq, const float* sq) {
  QPrep Q{};
  Q.q = q;
  Q.rq = rq;
  Q.sq = sq;
  Q.d = p.dim;
  Q.m = p.projDim;
  Q.bits = p.mseBits;
  Q.group = p.lutGroup;
  Q.chunks = p.chunks;
  Q.patterns = p.patterns;
  Q.sb = static_cast<int>(p.signBytes);
  Q.signBits = 8;
  Q.signChunks = static_cast<int>(p.signBytes);
  Q.hadamard = p.hadamard;
  Q.nblocks = static_cast<int>(p.hadBlocks.size());
  Q.blocks = p.hadBlocksDev.as<const int>();
  Q.blockScales = p.hadScalesDev.as<const float>();
  Q.signs = p.signs.as<const float>();
  Q.rotT = p.rotT.as<const float>();
  Q.St = p.St.as<const float>();
  Q.cen = p.cen.as<const float>();
  return Q;
}

struct ScoreParams {
  const uint8_t* codes;
  const uint8_t* signs;
  const uint16_t* norms;
  const uint16_t* rnorms;
  size_t keysPerHead;
  QPrep Q;
  size_t lutFloats;
  size_t qPerHead, qPerZ;
  float* out;
  size_t outStride;
  int cb, sb, chunks, patterns, chunkBits, bits;
  float qjlScale;
  float* lutGlobal;  // generic kernel when the tables do not fit in shared memory: one table per block
};

/// The keys a thread scores in one tile (registers).
template <int KPT, int CBW>
struct KeyRegs {
  uint32_t cw[KPT][CBW > 0 ? CBW : 1];
  uint32_t sw[KPT][4];
  float nk[KPT], gk[KPT];
};

template <int KPT, int CBW>
__device__ __forceinline__ void loadKeys(const ScoreParams& P, size_t head, size_t tile, KeyRegs<KPT, CBW>& K) {
  const int sb = P.sb;
#pragma unroll
  for (int k = 0; k < KPT; ++k) {
    const size_t t = tile * 256 * KPT + static_cast<size_t>(k) * 256 + threadIdx.x;
    const bool valid = t < P.keysPerHead;
    const size_t key = head * P.keysPerHead + (valid ? t : 0);
#pragma unroll
    for (int w = 0; w < (CBW > 0 ? CBW : 1); ++w) K.cw[k][w] = 0u;
#pragma unroll
    for (int w = 0; w < 4; ++w) K.sw[k][w] = 0u;
    K.nk[k] = 0.0f;
    K.gk[k] = 0.0f;
    if (!valid) continue;
    if (CBW > 0) {
      const uint8_t* cp = P.codes + key * (CBW * 4);
      if (CBW % 4 == 0) {
#pragma unroll
        for (int w = 0; w < CBW / 4; ++w) {
          const uint4 u = __ldg(reinterpret_cast<const uint4*>(cp) + w);
          K.cw[k][4 * w] = u.x;
          K.cw[k][4 * w + 1] = u.y;
          K.cw[k][4 * w + 2] = u.z;
          K.cw[k][4 * w + 3] = u.w;
        }
      } else {
#pragma unroll
        for (int w = 0; w < CBW / 2; ++w) {
          const uint2 u = __ldg(reinterpret_cast<const uint2*>(cp) + w);
          K.cw[k][2 * w] = u.x;
          K.cw[k][2 * w + 1] = u.y;
        }
      }
      K.nk[k] = h2f(P.norms[key]);
    }
    if (sb > 0) {
      const uint8_t* sp = P.signs + key * sb;
      if (sb == 16) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(sp));
        K.sw[k][0] = u.x;
        K.sw[k][1] = u.y;
        K.sw[k][2] = u.z;
        K.sw[k][3] = u.w;
      } else if (sb % 8 == 0) {
#pragma unroll
        for (int w = 0; w < 2; ++w)
          if (8 * w < sb) {
            const uint2 u = __ldg(reinterpret_cast<const uint2*>(sp) + w);
            K.sw[k][2 * w] = u.x;
            K.sw[k][2 * w + 1] = u.y;
          }
      } else {
#pragma unroll
        for (int w = 0; w < 4; ++w)
          if (4 * w < sb) K.sw[k][w] = __ldg(reinterpret_cast<const uint32_t*>(sp) + w);
      }
      K.gk[k] = h2f(P.rnorms[key]);
    }
  }
}

/// Byte i of x as a 32-bit value (one prmt).
__device__ __forceinline__ uint32_t bytePick(uint32_t x, int i) {
  uint32_t r;
  asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(x), "r"(0x4440 | i));
  return r;
}
/// table[entry0 + byteOffset / 4] (shared memory; entry0 is a compile-time constant after unrolling).
__device__ __forceinline__ float lutAt(const float* table, int entry0, uint32_t byteOffset) {
  return *reinterpret_cast<const float*>(reinterpret_cast<const char*>(table + entry0) + byteOffset);
}

/// Scores of one tile's keys (registers) against the query whose tables are in shared memory.
/// Summation order: code chunks in ascending order, then sign nibbles in ascending order.
template <int KPT, int CBW, int CBITS>
__device__ __forceinline__ void scoreTile(const ScoreParams& P, const float* lut, const KeyRegs<KPT, CBW>& cur, size_t tile, size_t q) {
  // CBITS 4: 16-entry tables per 4 code bits (conflict-free shared-memory look-ups); 6: the CPU's 3-bit chunks
  constexpr int CHUNKS = CBITS == 4 ? CBW * 8 : (CBITS == 6 ? CBW * 32 / 6 : 0);
  const float* slut = lut + static_cast<size_t>(CHUNKS) * (CBITS == 4 ? 16 : 64);
  const int sb = P.sb;
  const int sn = 2 * sb;  // sign nibbles
  const float gs = P.qjlScale;
#pragma unroll
  for (int k = 0; k < KPT; ++k) {
    const size_t t = tile * 256 * KPT + static_cast<size_t>(k) * 256 + threadIdx.x;
    if (t >= P.keysPerHead) continue;
    float s = 0.0f;
    if (CBITS == 4) {
      float acc = 0.0f;
#pragma unroll
      for (int w = 0; w < CBW; ++w) {
        // byte offsets (4 x nibble) of the even / odd nibbles, one per byte; prmt moves one into place
        const uint32_t ev = (cur.cw[k][w] << 2) & 0x3c3c3c3cu, od = (cur.cw[k][w] >> 2) & 0x3c3c3c3cu;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc = __fadd_rn(acc, lutAt(lut, (w * 8 + e) * 16, bytePick((e & 1) ? od : ev, e >> 1)));
      }
      s = __fmul_rn(cur.nk[k], acc);
    } else if (CBITS == 6) {
      float acc = 0.0f;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) {
        const int pos = 6 * c, w = pos / 32, off = pos % 32;
        uint32_t val = cur.cw[k][w] >> off;
        if (off > 26) val |= cur.cw[k][w + 1] << (32 - off);
        acc = __fadd_rn(acc, lut[c * 64 + (val & 63u)]);
      }
      s = __fmul_rn(cur.nk[k], acc);
    }
    if (sb > 0) {
      float acc = 0.0f;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        if (8 * w >= sn) break;
        const uint32_t ev = (cur.sw[k][w] << 2) & 0x3c3c3c3cu, od = (cur.sw[k][w] >> 2) & 0x3c3c3c3cu;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc = __fadd_rn(acc, lutAt(slut, (w * 8 + e) * 16, bytePick((e & 1) ? od : ev, e >> 1)));
      }
      s = __fadd_rn(s, __fmul_rn(__fmul_rn(cur.gk[k], gs), acc));
    }
    P.out[q * P.outStride + t] = s;
  }
}

/// blockBuildFastLut for 16-entry tables with MB-bit codes (G = 4 / MB coordinates per table) and sign
/// tables over 4 rows, with the group sizes as constants: the same entries, products and summation order.
template <int MB>
__device__ __forceinline__ void blockBuildNibbleLut(const QPrep& Q, const float* rqS, const float* sqS, float* out, int total) {
  constexpr int G = MB > 0 ? 4 / MB : 1;
  constexpr uint32_t mask = (1u << (MB > 0 ? MB : 1)) - 1u;
  const int codeEntries = MB > 0 ? total - (Q.signChunks << 4) : 0;
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    float s = 0.0f;
    if (e < codeEntries) {
      const int c = e >> 4;
      const uint32_t p = static_cast<uint32_t>(e) & 15u;
#pragma unroll
      for (int t = 0; t < G; ++t) {
        const int j = c * G + t;
        if (j < Q.d) s = __fadd_rn(s, __fmul_rn(rqS[j], __ldg(Q.cen + ((p >> (t * MB)) & mask))));
      }
    } else {
      const int e2 = e - codeEntries;
      const int k = e2 >> 4, p = e2 & 15;
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const int j = k * 4 + t;
        if (j < Q.m) s = __fadd_rn(s, ((p >> t) & 1) ? sqS[j] : -sqS[j]);
      }
    }
    out[e] = s;
  }
}

/// Block-wide: R q and S q of query q from global memory, then the fast tables, into shared memory.
template <int CBITS>
__device__ __forceinline__ void blockQueryTables(const ScoreParams& P, size_t q, float* lut) {
  const int d = P.Q.d, m = P.Q.m;
  float* rqS = lut + P.lutFloats;
  float* sqS = rqS + d;
  pdlWait();  // R q / S q come from the preceding prepareKernel (the keys were written before it started)
  __syncthreads();
  for (int j = threadIdx.x; j < d; j += 256) rqS[j] = P.Q.rq[q * d + j];
  for (int i = threadIdx.x; i < m; i += 256) sqS[i] = P.Q.sq[q * m + i];
  __syncthreads();
  const int total = static_cast<int>(P.lutFloats);
  if (CBITS == 4 && P.Q.bits == 1) blockBuildNibbleLut<1>(P.Q, rqS, sqS, lut, total);
  else if (CBITS == 4 && P.Q.bits == 2) blockBuildNibbleLut<2>(P.Q, rqS, sqS, lut, total);
  else if (CBITS == 4 && P.Q.bits == 4) blockBuildNibbleLut<4>(P.Q, rqS, sqS, lut, total);
  else if (CBITS == 0) blockBuildNibbleLut<0>(P.Q, rqS, sqS, lut, total);
  else blockBuildFastLut(P.Q, rqS, sqS, lut, total);
  __syncthreads();
}

/// Thread-per-key scoring from 16-entry (or the CPU's 64-entry) tables that each block builds in shared
/// memory from R q and S q (blockBuildFastLut; when the scoring call gets raw queries, prepareKernel runs
/// first and this kernel is launched as its programmatic dependent, so its launch and first key loads
/// overlap the preparation). The keys are loaded before the tables are built.
/// PERSIST = false: one tile of 256 x KPT keys and one query per block (grid.x = tiles, all blocks resident
/// at once: every key load is in flight from the start). PERSIST = true: the block walks tiles
/// blockIdx.x, + gridDim.x, ... (next tile's keys prefetched into registers while the current one is scored).
template <int KPT, int CBW, int CBITS, bool PERSIST>
__global__ void __launch_bounds__(256) scoreFastKernel(const ScoreParams P) {
  extern __shared__ __align__(16) float lut[];
  const size_t head = blockIdx.y;
  const size_t qBegin = head * P.qPerHead + static_cast<size_t>(blockIdx.z) * P.qPerZ;
  const size_t qEnd = min(qBegin + P.qPerZ, (head + 1) * P.qPerHead);
  if (qBegin >= qEnd) return;
  [[maybe_unused]] const size_t tiles = (P.keysPerHead + 256 * KPT - 1) / (256 * KPT);
  if constexpr (!PERSIST) {
    // one query per block (qPerZ = 1): a loop over queries would let the compiler hoist every table index
    // out of it (150+ registers)
    KeyRegs<KPT, CBW> cur;
    loadKeys<KPT, CBW>(P, head, blockIdx.x, cur);
    blockQueryTables<CBITS>(P, qBegin, lut);
    scoreTile<KPT, CBW, CBITS>(P, lut, cur, blockIdx.x, qBegin);
  } else {
    for (size_t q = qBegin; q < qEnd; ++q) {
      KeyRegs<KPT, CBW> cur;
      if (blockIdx.x < tiles) loadKeys<KPT, CBW>(P, head, blockIdx.x, cur);
      blockQueryTables<CBITS>(P, q, lut);
      for (size_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        KeyRegs<KPT, CBW> nxt;
        const size_t tn = tile + gridDim.x;
        if (tn < tiles) loadKeys<KPT, CBW>(P, head, tn, nxt);
        scoreTile<KPT, CBW, CBITS>(P, lut, cur, tile, q);
        cur = nxt;
      }
    }
  }
}

/// Any layout: thread per key, code bytes read per query (L1-resident), LUT in shared or global memory.
template <bool SMEM>
__global__ void __launch_bounds__(256) scoreGenericKernel(const ScoreParams P) {
  extern __shared__ __align__(16) float lutSm[];
  const size_t head = blockIdx.y;
  const size_t qBegin = head * P.qPerHead + static_cast<size_t>(blockIdx.z) * P.qPerZ;
  const size_t qEnd = min(qBegin + P.qPerZ, (head + 1) * P.qPerHead);
  if (qBegin >= qEnd) return;
  const size_t t = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = t < P.keysPerHead;
  const size_t key = head * P.keysPerHead + (valid ? t : 0);
  const float nk = P.bits > 0 ? h2f(P.norms[key]) : 0.0f;
  const float gk = P.sb > 0 ? h2f(P.rnorms[key]) : 0.0f;
  const uint8_t* cp = P.codes + key * P.cb;
  const uint8_t* sp = P.signs + key * P.sb;
  const uint32_t mask = (1u << P.chunkBits) - 1u;
  float* lutG = P.lutGlobal + static_cast<size_t>(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)) * P.lutFloats;
  float* lut = SMEM ? lutSm : lutG;
  float* qS = lutSm + (SMEM ? P.lutFloats : 0);
  float* rqS = qS + P.Q.d;
  float* sqS = rqS + P.Q.d;
  for (size_t q = qBegin; q < qEnd; ++q) {
    __syncthreads();
    blockPrepare(P.Q, q, qS, rqS, sqS);
    __syncthreads();
    blockBuildLut(P.Q, rqS, sqS, lut);
    __syncthreads();
    if (!valid) continue;
    float s = 0.0f;
    if (P.bits > 0) {
      float acc = 0.0f;
      for (int c = 0; c < P.chunks; ++c) {
        const int bitpos = c * P.chunkBits, k = bitpos >> 3, sh = bitpos & 7;
        uint32_t v = cp[k];
        if (k + 1 < P.cb) v |= static_cast<uint32_t>(cp[k + 1]) << 8;
        acc = __fadd_rn(acc, lut[static_cast<size_t>(c) * P.patterns + ((v >> sh) & mask)]);
      }
      s = __fmul_rn(nk, acc);
    }
    if (P.sb > 0) {
      const float* slut = lut + static_cast<size_t>(P.chunks) * P.patterns;
      float acc = 0.0f;
      for (int c = 0; c < P.sb; ++c) acc = __fadd_rn(acc, slut[c * 256 + sp[c]]);
      s = __fadd_rn(s, __fmul_rn(__fmul_rn(gk, P.qjlScale), acc));
    }
    P.out[q * P.outStride + t] = s;
  }
}

/// Resident blocks per SM of a kernel (cached per kernel, device and shared-memory size).
int residentBlocks(const void* kern, size_t smem, int device) {
  static std::mutex mu;
  static std::map<std::pair<std::pair<const void*, int>, size_t>, int> done;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(std::make_pair(kern, device), smem);
  auto it = done.find(key);
  if (it != done.end()) return it->second;
  int n = 0;
  TQ_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, 256, smem));
  done[key] = n;
  return n;
}

template <int KPT, int CBW, int CBITS, bool PERSIST>
const void* scoreFastPtr() {
  return reinterpret_cast<const void*>(scoreFastKernel<KPT, CBW, CBITS, PERSIST>);
}

template <int KPT, int CBW, int CBITS, bool PERSIST>
void launchScoreFast(Context& ctx, const ScoreParams& P, dim3 grid, size_t smem, bool pdl) {
  auto kern = scoreFastKernel<KPT, CBW, CBITS, PERSIST>;
  ensureSmem(reinterpret_cast<const void*>(kern), smem, ctx.device());
  static const bool noPdl = envInt("TQ_CUDA_NO_PDL", 0) != 0;
  if (pdl && ctx.computeMajor() >= 9 && !noPdl) {
    // programmatic dependent launch: overlaps this kernel's launch and first key loads with prepareKernel
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(256);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = static_cast<cudaStream_t>(ctx.stream());
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    TQ_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kern, P));
  } else {
    kern<<<grid, 256, smem, static_cast<cudaStream_t>(ctx.stream())>>>(P);
  }
  checkLaunch("fast scoring kernel");
}

/// Code bits per look-up of the fast kernel's tables for a plan (0: no MSE stage), or -1 when it has no
/// layout for the codes. 16-entry tables over 4 code bits need whole codes in every nibble: b = 1, 2, 4
/// (4 / b coordinates per table). 64-entry tables are the CPU's own 6-bit chunks: b = 3 (2 coordinates)
/// and b = 6 (1). b = 8 packs into bytes like 1, 2 and 4, but there a nibble is half a code (4 / b = 0
/// coordinates per table: the scoring call divided by zero); b = 5, 7 and 8 take the generic kernel.
int fastTableBits(const DevPlan& p) {
  if (p.mseBits == 0) return 0;
  if (4 % p.mseBits == 0) return 4;
  if (p.chunkBits == 6) return 6;
  return -1;
}

/// The instantiated layouts: (code bits per table from fastTableBits, code words of 4 bytes) -> CBW, CBITS.
template <typename F>
bool withLayout(int tableBits, int cbw, F&& f) {
  if (tableBits == 0 && cbw == 0) f(std::integral_constant<int, 0>(), std::integral_constant<int, 0>());
  else if (tableBits == 4 && cbw == 2) f(std::integral_constant<int, 2>(), std::integral_constant<int, 4>());
  else if (tableBits == 4 && cbw == 4) f(std::integral_constant<int, 4>(), std::integral_constant<int, 4>());
  else if (tableBits == 4 && cbw == 8) f(std::integral_constant<int, 8>(), std::integral_constant<int, 4>());
  else if (tableBits == 4 && cbw == 16) f(std::integral_constant<int, 16>(), std::integral_constant<int, 4>());
  else if (tableBits == 6 && cbw == 6) f(std::integral_constant<int, 6>(), std::integral_constant<int, 6>());
  else if (tableBits == 6 && cbw == 12) f(std::integral_constant<int, 12>(), std::integral_constant<int, 6>());
  else return false;
  return true;
}

}  // namespace

void prepareQueries(Context& ctx, const DevPlan& p, const float* q, size_t nq, float* rq, float* sq) {
  if (nq == 0) return;
  const QPrep Q = makePrep(p, q, nullptr, nullptr);
  const size_t base = (2 * static_cast<size_t>(p.dim) + static_cast<size_t>(p.projDim) + 3) / 4 * 4;  // floats, 16-byte aligned end
  constexpr int kSlice = 32;  // rows of S q per block when staged
  static const bool noStage = envInt("TQ_CUDA_NO_ST_STAGE", 0) != 0;
  // few queries (decode): m / 32 blocks per query, each staging a d x 32 slice of S^T in shared memory
  const bool stage = !noStage && p.projDim > 0 && p.projDim % kSlice == 0 && static_cast<size_t>(p.dim) * kSlice * sizeof(float) <= 48 * 1024 &&
                     nq <= 4 * static_cast<size_t>(ctx.multiprocessors());
  const size_t smem = (stage ? base + static_cast<size_t>(p.dim) * kSlice + kSlice * 8 : base) * sizeof(float);  // 8 warps' partials
  ensureSmem(reinterpret_cast<const void*>(prepareKernel), smem, ctx.device());
  const dim3 grid(static_cast<unsigned>(nq), stage ? static_cast<unsigned>(p.projDim / kSlice) : 1u);
  prepareKernel<<<grid, 256, smem, static_cast<cudaStream_t>(ctx.stream())>>>(Q, rq, sq, static_cast<int>(base), stage ? kSlice : 0);
  checkLaunch("query preparation kernel");
}

void scores(Context& ctx, const DevPlan& p, const DevCompressed& keys, size_t keysPerHead, const float* queries, const float* rq, const float* sq,
            size_t nq, size_t qPerHead, float* out, size_t outStride, Scratch& s) {
  if (nq == 0 || keysPerHead == 0) return;
  ScoreParams P{};
  P.codes = keys.codes;
  P.signs = keys.signs;
  P.norms = keys.norms;
  P.rnorms = keys.rnorms;
  P.keysPerHead = keysPerHead;
  P.Q = makePrep(p, queries, rq, sq);
  P.lutFloats = p.lutFloats;
  P.qPerHead = qPerHead;
  P.out = out;
  P.outStride = outStride;
  P.cb = static_cast<int>(p.codeBytes);
  P.sb = static_cast<int>(p.signBytes);
  P.chunks = p.chunks;
  P.patterns = p.patterns;
  P.chunkBits = p.chunkBits;
  P.bits = p.mseBits;
  P.qjlScale = p.qjlScale;
  const size_t heads = (nq + qPerHead - 1) / qPerHead;
  if (heads > 65535) throw CudaError("more than 65535 key sets in one scoring call", 1, false, false);
  const size_t prepFloats = 2 * static_cast<size_t>(p.dim) + static_cast<size_t>(p.projDim);
  const size_t smem = (p.lutFloats + prepFloats) * sizeof(float);
  const size_t sms = static_cast<size_t>(ctx.multiprocessors());
  const bool lutFits = smem <= std::min<size_t>(ctx.sharedPerBlockOptin(), 160 * 1024);
  const int cbw = (p.codeBytes % 4 == 0) ? static_cast<int>(p.codeBytes / 4) : -1;
  const int tableBits = fastTableBits(p);
  // the fast kernel loads whole 4-byte sign words, at most 4 per key
  const bool fastLayout = lutFits && withLayout(tableBits, cbw, [](auto, auto) {}) && p.signBytes % 4 == 0 && p.signBytes <= 16;
  if (fastLayout) {
    // tables once per query, in the fast kernel's layout: 4-bit chunks for 1/2/4-bit codes (16 entries each),
    // the CPU's 6-bit chunks for 3- and 6-bit codes, sign tables per 4 rows
    QPrep Qf = P.Q;
    if (tableBits == 4) {
      Qf.group = 4 / p.mseBits;
      Qf.chunks = (p.dim + Qf.group - 1) / Qf.group;
      Qf.patterns = 16;
    }
    Qf.signBits = 4;
    // one table per sign nibble the kernel reads (2 per sign byte); rows >= m (the zero padding of the
    // last byte) add nothing, as in the CPU's byte tables. (With m / 4 tables, any m % 8 != 0 made the
    // kernel read nibbles past the tables' end; for m % 4 != 0 those nibbles held the last rows.)
    Qf.signChunks = 2 * static_cast<int>(p.signBytes);
    const size_t lutF = static_cast<size_t>(p.mseBits ? Qf.chunks * Qf.patterns : 0) + (static_cast<size_t>(Qf.signChunks) << 4);
    P.lutFloats = lutF;
    const bool fresh = queries != nullptr;
    if (fresh) {  // R q, S q once per query (prepareKernel), then the scoring kernel as its programmatic dependent
      s.d.ensure(nq * prepFloats * sizeof(float));
      float* rqd = s.d.as<float>();
      float* sqd = rqd + nq * static_cast<size_t>(p.dim);
      prepareQueries(ctx, p, queries, nq, rqd, sqd);
      Qf.rq = rqd;
      Qf.sq = sqd;
    }
    Qf.q = nullptr;
    ScoreParams Pf = P;
    Pf.Q = Qf;
    const size_t fsm = (lutF + static_cast<size_t>(p.dim + p.projDim)) * sizeof(float);
    static const int mode = envInt("TQ_CUDA_SCORE_MODE", 0);  // 0 auto, 1 always persistent, 2 one tile per block when it fits
    static const int perSmCap = std::max(1, envInt("TQ_CUDA_SCORE_BLOCKS_PER_SM", 6));
    bool ok = false;
    // small problems (decode over up to ~64K keys per head): one tile of 512 keys and one query per block,
    // 2 keys per thread, when all blocks are resident at once (one wave: every key load is in flight at the start)
    constexpr int kSingleKpt = 2;
    const size_t tiles2 = ceilDiv<size_t>(keysPerHead, 256 * static_cast<size_t>(kSingleKpt));
    if (mode != 1) {
      withLayout(tableBits, cbw, [&](auto cw, auto cb) {
        constexpr int CW = decltype(cw)::value, CB = decltype(cb)::value;
        const int per = residentBlocks(scoreFastPtr<kSingleKpt, CW, CB, false>(), fsm, ctx.device());
        const size_t cap = static_cast<size_t>(per) * sms;
        if (tiles2 * heads * qPerHead > cap && mode != 2) return;
        if (tiles2 > 2147483647u || qPerHead > 65535) return;
        Pf.qPerZ = 1;
        const dim3 grid(static_cast<unsigned>(tiles2), static_cast<unsigned>(heads), static_cast<unsigned>(qPerHead));
        launchScoreFast<kSingleKpt, CW, CB, false>(ctx, Pf, grid, fsm, fresh);
        ok = true;
      });
      if (ok) return;
    }
    // persistent over tiles of 256 keys (one key per thread; 4 keys per thread needs ~180 registers and
    // measured slower): about perSm blocks per SM in total
    const size_t tiles = ceilDiv<size_t>(keysPerHead, 256);
    const int perSm = std::max<int>(1, static_cast<int>(std::min<size_t>(perSmCap, ctx.sharedPerBlockOptin() / std::max<size_t>(1, fsm))));
    const size_t bx = std::max<size_t>(1, std::min(tiles, ceilDiv<size_t>(static_cast<size_t>(perSm) * sms, heads)));
    size_t zs = 1;
    while (bx * heads * zs < 2 * sms && zs < qPerHead) zs *= 2;
    Pf.qPerZ = ceilDiv<size_t>(qPerHead, zs);
    const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(heads), static_cast<unsigned>(ceilDiv<size_t>(qPerHead, Pf.qPerZ)));
    ok = withLayout(tableBits, cbw, [&](auto cw, auto cb) {
      launchScoreFast<1, decltype(cw)::value, decltype(cb)::value, true>(ctx, Pf, grid, fsm, fresh);
    });
    if (ok) return;
  }
  const size_t bx = ceilDiv<size_t>(keysPerHead, 256);
  size_t zs = 1;
  while (bx * heads * zs < 2 * sms && zs < qPerHead) zs *= 2;
  P.qPerZ = ceilDiv<size_t>(qPerHead, zs);
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(heads), static_cast<unsigned>(ceilDiv<size_t>(qPerHead, P.qPerZ)));
  if (lutFits) {
    ensureSmem(reinterpret_cast<const void*>(scoreGenericKernel<true>), smem, ctx.device());
    scoreGenericKernel<true><<<grid, 256, smem, static_cast<cudaStream_t>(ctx.stream())>>>(P);
  } else {
    const size_t blocks = static_cast<size_t>(grid.x) * grid.y * grid.z;
    s.d.ensure(blocks * p.lutFloats * sizeof(float));
    P.lutGlobal = s.d.as<float>();
    const size_t psm = prepFloats * sizeof(float);
    ensureSmem(reinterpret_cast<const void*>(scoreGenericKernel<false>), psm, ctx.device());
    scoreGenericKernel<false><<<grid, 256, psm, static_cast<cudaStream_t>(ctx.stream())>>>(P);
  }
  checkLaunch("generic scoring kernel");
}

}  // namespace cuda
}  // namespace tq
