// SPDX-License-Identifier: GPL-3.0-or-later
// Device-side evaluation of one sweep task ((layer, kv head) x every key variant and value bit-width):
// the metrics of core/metrics (attentionMetrics, vectorMse) computed on the GPU in double precision from
// the same compressed keys/values and scores the other kernels produce, so a task costs one upload of its
// keys, values and queries and one download of the metric arrays instead of a host round trip per call.
// Exact logits are an fp32 cuBLAS product (the CPU's exactScores sums in another order: differences of a
// few fp32 ulps), exact outputs a double cuBLAS product of the exact softmax with the values. Reductions
// use a fixed order (no atomics): results are reproducible run to run.
#include <cublas_v2.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/common.cuh"
#include "cuda/device_api.h"

namespace tq {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

void blasCheck(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) throw CudaError(std::string(what) + ": " + cublasGetStatusString(st), 10000 + static_cast<int>(st), false, false);
}

/// Block sum in a fixed order (warp shuffles, then the warps' partials in ascending order); every thread
/// gets the result.
__device__ double blockSum(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kWarps; ++w) s += red[w];
  return s;
}

__device__ double blockMax(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  double s = red[0];
  for (int w = 1; w < kWarps; ++w) s = fmax(s, red[w]);
  return s;
}

/// Orderable key of (value, index): larger value first, then the lower index (std::max_element's first maximum).
__device__ __forceinline__ unsigned long long argKey(float x, size_t i) {
  const uint32_t u = __float_as_uint(x);
  const uint32_t ord = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(ord) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

__device__ unsigned long long blockArgMax(unsigned long long k, unsigned long long* red) {
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long x = __shfl_xor_sync(kFull, k, o);
    k = x > k ? x : k;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = k;
  __syncthreads();
  unsigned long long b = red[0];
  for (int w = 1; w < kWarps; ++w) b = red[w] > b ? red[w] : b;
  return b;
}

/// Exact softmax of query row i over its visible keys (limit[i] + 1), in double like tq::softmax; zero
/// beyond. One block per row.
__global__ void __launch_bounds__(kThreads) exactSoftmaxKernel(const float* S, size_t seq, const int* limit, double scale, double* P) {
  __shared__ double red[kWarps];
  const size_t i = blockIdx.x;
  const float* s = S + i * seq;
  double* p = P + i * seq;
  const size_t n = static_cast<size_t>(limit[i]) + 1;
  double mx = -INFINITY;
  for (size_t t = threadIdx.x; t < n; t += kThreads) mx = fmax(mx, scale * static_cast<double>(s[t]));
  mx = blockMax(mx, red);
  double z = 0;
  for (size_t t = threadIdx.x; t < n; t += kThreads) z += exp(scale * static_cast<double>(s[t]) - mx);
  z = blockSum(z, red);
  for (size_t t = threadIdx.x; t < seq; t += kThreads) p[t] = t < n ? exp(scale * static_cast<double>(s[t]) - mx) / z : 0.0;
}

/// attentionMetrics (key part) of query row i for one key variant, in double: cosine of the logits,
/// cosine of the softmaxes, KL(p || p_hat), top-1, top-5, bias / variance / slope / correlation of
/// s_hat - s; writes the estimated softmax as fp32 weights (zero beyond the causal limit) for the values.
/// Batched over key variants: blockIdx.y is the variant, whose estimates, weights and results follow the
/// previous variant's (nq rows of seq, nq rows of seq, nq x 9).
__global__ void __launch_bounds__(kThreads)
    keyMetricsKernel(const float* S, const float* Sh, const double* P, size_t seq, size_t nq, const int* limit, double scale, float* W, double* out) {
  __shared__ double red[kWarps];
  __shared__ unsigned long long redk[kWarps];
  const size_t i = blockIdx.x, v = blockIdx.y;
  Sh += v * nq * seq;
  W += v * nq * seq;
  out += v * nq * 9;
  const float* s = S + i * seq;
  const float* e = Sh + i * seq;
  const double* p = P + i * seq;
  float* w = W + i * seq;
  const size_t n = static_cast<size_t>(limit[i]) + 1;
  const double dn = static_cast<double>(n);
  // pass 1: sums, maxima, argmaxima
  double ab = 0, aa = 0, bb = 0, se = 0, sx = 0, sd = 0, mh = -INFINITY;
  unsigned long long ks = 0, ke = 0;
  for (size_t t = threadIdx.x; t < n; t += kThreads) {
    const double a = s[t], b = e[t];
    ab += a * b;
    aa += a * a;
    bb += b * b;
    se += b;
    sx += a;
    sd += b - a;
    mh = fmax(mh, scale * b);
    const unsigned long long k1 = argKey(s[t], t), k2 = argKey(e[t], t);
    ks = k1 > ks ? k1 : ks;
    ke = k2 > ke ? k2 : ke;
  }
  ab = blockSum(ab, red);
  aa = blockSum(aa, red);
  bb = blockSum(bb, red);
  const double me = blockSum(se, red) / dn, mx = blockSum(sx, red) / dn, mdiff = blockSum(sd, red) / dn;
  mh = blockMax(mh, red);
  const size_t am = 0xffffffffu - static_cast<uint32_t>(blockArgMax(ks, redk) & 0xffffffffull);
  const size_t amh = 0xffffffffu - static_cast<uint32_t>(blockArgMax(ke, redk) & 0xffffffffull);
  const float top = e[am];
  // pass 2: centred sums, softmax normaliser of the estimate, estimates above the exact argmax
  double vx = 0, ve = 0, cxe = 0, vd = 0, zh = 0, above = 0;
  for (size_t t = threadIdx.x; t < n; t += kThreads) {
    const double a = s[t], b = e[t];
    const double dx = a - mx, de = b - me, dd = b - a - mdiff;
    vx += dx * dx;
    ve += de * de;
    cxe += dx * de;
    vd += dd * dd;
    zh += exp(scale * b - mh);
    above += e[t] > top ? 1.0 : 0.0;
  }
  vx = blockSum(vx, red);
  ve = blockSum(ve, red);
  cxe = blockSum(cxe, red);
  vd = blockSum(vd, red);
  zh = blockSum(zh, red);
  above = blockSum(above, red);
  // pass 3: the estimated softmax against the exact one
  double pq = 0, pp = 0, qq = 0, kl = 0;
  for (size_t t = threadIdx.x; t < seq; t += kThreads) {
    if (t >= n) {
      w[t] = 0.0f;
      continue;
    }
    const double q = exp(scale * static_cast<double>(e[t]) - mh) / zh, pt = p[t];
    w[t] = static_cast<float>(q);
    pq += pt * q;
    pp += pt * pt;
    qq += q * q;
    if (pt > 0) kl += pt * (log(pt) - log(fmax(q, 1e-300)));
  }
  pq = blockSum(pq, red);
  pp = blockSum(pp, red);
  qq = blockSum(qq, red);
  kl = blockSum(kl, red);
  if (threadIdx.x == 0) {
    auto cosv = [](double x, double xx, double yy) { return (xx == 0 || yy == 0) ? (xx == yy ? 1.0 : 0.0) : x / sqrt(xx * yy); };
    double* o = out + i * 9;
    o[0] = cosv(ab, aa, bb);
    o[1] = cosv(pq, pp, qq);
    o[2] = fmax(0.0, kl);
    o[3] = am == amh ? 1.0 : 0.0;
    o[4] = above < 5 ? 1.0 : 0.0;
    o[5] = mdiff;
    o[6] = n > 1 ? vd / (dn - 1) : 0.0;
    o[7] = vx > 0 ? cxe / vx : 0.0;
    o[8] = (vx > 0 && ve > 0) ? cxe / sqrt(vx * ve) : 0.0;
  }
}

/// Warp-wide sums of (a_j - e_j)^2 and a_j^2 over j = lane, lane + 32, ... < d (double); every lane gets both.
template <typename A, typename E>
__device__ __forceinline__ void warpErrorSums(A a, E e, int d, int lane, double& num, double& den) {
  num = 0;
  den = 0;
  for (int j = lane; j < d; j += 32) {
    const double x = a(j), r = x - e(j);
    num += r * r;
    den += x * x;
  }
  for (int o = 16; o > 0; o >>= 1) {
    num += __shfl_xor_sync(kFull, num, o);
    den += __shfl_xor_sync(kFull, den, o);
  }
}

/// ||O - O_hat|| / ||O|| per query row (the exact output rounded to fp32 first, like the CPU's), one warp per
/// row. Rows of nv variants: estimated row r = v * nq + i against exact row i, result at out[v * outStride + i].
__global__ void outputErrorKernel(const double* Ox, const float* Oe, size_t nq, size_t nv, int dv, double* out, size_t outStride) {
  const size_t r = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (r >= nq * nv) return;
  const size_t v = r / nq, i = r - v * nq;
  double num, den;
  warpErrorSums([&](int j) { return static_cast<double>(static_cast<float>(Ox[i * dv + j])); },
                [&](int j) { return static_cast<double>(Oe[r * dv + j]); }, dv, lane, num, den);
  if (lane == 0) out[v * outStride + i] = den > 0 ? sqrt(num / den) : sqrt(num);
}

/// Per vector ||x - x_hat||^2 / ||x||^2 (double), or -1 for a zero vector (skipped, like vectorMse).
__global__ void vectorErrorKernel(const float* x, const float* xh, size_t n, int d, double* out) {
  const size_t v = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (v >= n) return;
  double num, den;
  warpErrorSums([&](int j) { return static_cast<double>(x[v * d + j]); }, [&](int j) { return static_cast<double>(xh[v * d + j]); }, d, lane, num,
                den);
  if (lane == 0) out[v] = den > 0 ? num / den : -1.0;
}

/// Mean of the non-negative entries of row blockIdx.x (n entries; one block, fixed order) into out[blockIdx.x].
__global__ void __launch_bounds__(kThreads) meanKernel(const double* x, size_t n, double* out) {
  __shared__ double red[kWarps];
  x += static_cast<size_t>(blockIdx.x) * n;
  out += blockIdx.x;
  double s = 0, c = 0;
  for (size_t i = threadIdx.x; i < n; i += kThreads)
    if (x[i] >= 0) {
      s += x[i];
      c += 1;
    }
  s = blockSum(s, red);
  c = blockSum(c, red);
  if (threadIdx.x == 0) *out = c > 0 ? s / c : 0.0;
}

__global__ void setKernel(double* p, double v) {
  *p = v;
}

__global__ void floatToDoubleKernel(const float* in, size_t n, double* out) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) out[i] = in[i];
}

/// The keys' QJL signs as rows of +-c_t (c_t = sqrt(pi/2)/m * fp16 ||r_t||, the CPU's addQjlTerm layout):
/// Z (seq x m), bit j of key t at byte j / 8, bit j % 8.
__global__ void expandSignsKernel(const uint8_t* signs, const uint16_t* rnorms, size_t seq, int m, size_t signBytes, float scale, float* Z) {
  const size_t total = seq * static_cast<size_t>(m);
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t t = i / static_cast<size_t>(m);
    const int j = static_cast<int>(i - t * static_cast<size_t>(m));
    const float c = h2f(rnorms[t]) * scale;
    Z[i] = ((signs[t * signBytes + (j >> 3)] >> (j & 7)) & 1u) ? c : -c;
  }
}

unsigned gridFor(size_t n, size_t per, int sms) {
  return static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(sms) * 16, (n + per - 1) / per)));
}

}  // namespace

ResidentCell::~ResidentCell() {
  if (ready) cudaEventDestroy(static_cast<cudaEvent_t>(ready));
}

size_t residentCellBytes(size_t seq, size_t d, size_t dv, size_t nq, bool values) {
  return seq * d * 4 + nq * d * 4 + nq * 4 + nq * seq * 4 + nq * seq * 8 + (values ? seq * dv * 4 + seq * dv * 8 + nq * dv * 8 : 0);
}

void evaluateTask(Context& ctx, const std::vector<const DevPlan*>& keyPlans, const std::vector<const DevPlan*>& valuePlans, const SweepTaskInput& in,
                  SweepTaskOutput& out, TaskBuffers& b, Scratch& s, ResidentCell* cell, bool cellFilled) {
  // TQ_SWEEP_PROFILE=1: host-side time per phase (uploads, enqueueing the variants, waiting at the end)
  static const bool profile = std::getenv("TQ_SWEEP_PROFILE") != nullptr;
  // TQ_SWEEP_PROFILE=2: in addition, the stream synchronised after every phase and the time summed per
  // phase (run with TQ_CUDA_LANES=1: each phase's device time plus its launch costs; slower overall)
  static const bool phases = profile && std::atoi(std::getenv("TQ_SWEEP_PROFILE")) >= 2;
  enum { kPhUpload, kPhCompress, kPhMseStage, kPhCopies, kPhQjl, kPhMetrics, kPhOutputs, kPhCount };
  static const char* phaseNames[kPhCount] = {"uploads + exact", "compress", "MSE stage", "copies", "QJL term", "key metrics", "outputs"};
  static std::atomic<int64_t> usPhase[kPhCount] = {};
  static std::atomic<int64_t> usUpload{0}, usEnqueue{0}, usWait{0}, tasks{0};
  using Clock = std::chrono::steady_clock;
  auto us = [](Clock::time_point a) { return static_cast<int64_t>(std::chrono::duration<double, std::micro>(Clock::now() - a).count()); };
  const auto t0 = Clock::now();
  auto tPhase = t0;
  auto phase = [&](int id) {
    if (!phases) return;
    ctx.sync();
    const auto now = Clock::now();
    usPhase[id] += static_cast<int64_t>(std::chrono::duration<double, std::micro>(now - tPhase).count());
    tPhase = now;
  };
  const size_t seq = in.seq, nq = in.nq, d = static_cast<size_t>(in.d), dv = static_cast<size_t>(in.dv);
  const size_t nk = keyPlans.size(), nvq = in.values ? valuePlans.size() : 0, nvOut = std::max<size_t>(1, nvq);
  const cudaStream_t st = static_cast<cudaStream_t>(ctx.stream());
  const int sms = ctx.multiprocessors();
  cublasHandle_t hb = static_cast<cublasHandle_t>(ctx.cublas());
  // the cell's inputs and exact references: this lane's buffers, or a resident cell's (filled here, or by an
  // earlier task on any lane: then only waited for)
  DevBuf& Kd = cell ? cell->keys : b.keys;
  DevBuf& Qd = cell ? cell->queries : b.queries;
  DevBuf& Ld = cell ? cell->limits : b.limits;
  DevBuf& Xd = cell ? cell->exact : b.exact;
  DevBuf& Pd = cell ? cell->probs : b.probs;
  DevBuf& Vd = cell ? cell->values : b.values;
  DevBuf& VDd = cell ? cell->valuesD : b.valuesD;
  DevBuf& XOd = cell ? cell->exactOut : b.exactOut;
  const bool fill = !(cell && cellFilled);
  const float one = 1.0f, zero = 0.0f;
  if (fill) {
    // upload
    Kd.ensure(seq * d * 4);
    Qd.ensure(nq * d * 4);
    Ld.ensure(nq * 4);
    ctx.copyAsyncH2D(Kd.get(), in.keys, seq * d * 4);
    ctx.copyAsyncH2D(Qd.get(), in.queries, nq * d * 4);
    ctx.copyAsyncH2D(Ld.get(), in.limits, nq * 4);
    // exact logits (fp32) and softmax (double)
    Xd.ensure(nq * seq * 4);
    Pd.ensure(nq * seq * 8);
    blasCheck(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(seq), static_cast<int>(nq), static_cast<int>(d), &one, Kd.as<float>(),
                          static_cast<int>(d), Qd.as<float>(), static_cast<int>(d), &zero, Xd.as<float>(), static_cast<int>(seq)),
              "exact logits (cublasSgemm)");
    exactSoftmaxKernel<<<static_cast<unsigned>(nq), kThreads, 0, st>>>(Xd.as<float>(), seq, Ld.as<int>(), in.scale, Pd.as<double>());
    checkLaunch("exact softmax kernel");
  } else {
    check(cudaStreamWaitEvent(st, static_cast<cudaEvent_t>(cell->ready), 0), "waiting for a resident cell");
  }
  // results on the device, downloaded once at the end
  const size_t nRes = nk * nq * 9 + nk * nvOut * nq + nk + nvq;
  b.results.ensure(nRes * 8);
  double* rKey = b.results.as<double>();
  double* rOut = rKey + nk * nq * 9;
  double* rKmse = rOut + nk * nvOut * nq;
  double* rVmse = rKmse + nk;
  // Key variants are evaluated in chunks of G (below); G depends only on the sizes (a fixed 256 MB for the
  // chunk's estimates and weights), so results do not depend on the device's free memory.
  // TQ_CUDA_SWEEP_CHUNK=N caps G (1: one variant at a time, the former launch sequence, for comparisons).
  static const size_t chunkCap =
      std::getenv("TQ_CUDA_SWEEP_CHUNK") ? static_cast<size_t>(std::max(1, std::atoi(std::getenv("TQ_CUDA_SWEEP_CHUNK")))) : 0;
  size_t G = std::max<size_t>(1, std::min(nk, (size_t{256} << 20) / std::max<size_t>(1, nq * seq * 8)));
  if (chunkCap) G = std::min(G, chunkCap);
  b.perVector.ensure(G * seq * 8);
  b.recon.ensure(seq * std::max(d, dv) * 4);
  // values: exact outputs O = P V (double), compression, vector MSE
  // (a resident cell always holds the values' references when the task has values: a later task of the cell
  // may have value widths where this one has none)
  if (fill && in.values && (nvq > 0 || cell)) {
    Vd.ensure(seq * dv * 4);
    VDd.ensure(seq * dv * 8);
    XOd.ensure(nq * dv * 8);
    ctx.copyAsyncH2D(Vd.get(), in.values, seq * dv * 4);
    floatToDoubleKernel<<<gridFor(seq * dv, 256, sms), 256, 0, st>>>(Vd.as<float>(), seq * dv, VDd.as<double>());
    checkLaunch("fp32 -> double");
    const double dOne = 1.0, dZero = 0.0;
    blasCheck(cublasDgemm(hb, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(dv), static_cast<int>(nq), static_cast<int>(seq), &dOne, VDd.as<double>(),
                          static_cast<int>(dv), Pd.as<double>(), static_cast<int>(seq), &dZero, XOd.as<double>(), static_cast<int>(dv)),
              "exact outputs (cublasDgemm)");
  }
  if (fill && cell) {
    // later tasks of this cell, on any stream, wait for this point of the filling stream
    if (!cell->ready) {
      cudaEvent_t ev = nullptr;
      check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "an event for a resident cell");
      cell->ready = ev;
    }
    check(cudaEventRecord(static_cast<cudaEvent_t>(cell->ready), st), "recording a resident cell");
  }
  if (nvq > 0) {
    if (b.compValues.size() < nvq) b.compValues.resize(nvq);
    if (b.valueRecon.size() < nvq) b.valueRecon.resize(nvq);
    for (size_t vi = 0; vi < nvq; ++vi) {
      const DevPlan& vp = *valuePlans[vi];
      b.compValues[vi].ensure(vp, seq);
      compress(ctx, vp, Vd.get(), CudaInput::F32, seq, b.compValues[vi].view(), s);
      // reconstructed once per width: its MSE here, and every chunk's outputs as one product with it below
      b.valueRecon[vi].ensure(seq * dv * 4);
      decompress(ctx, vp, b.compValues[vi].view(), seq, b.valueRecon[vi].get(), false, s);
      vectorErrorKernel<<<static_cast<unsigned>((seq + 7) / 8), 256, 0, st>>>(Vd.as<float>(), b.valueRecon[vi].as<float>(), seq, in.dv,
                                                                              b.perVector.as<double>());
      meanKernel<<<1, kThreads, 0, st>>>(b.perVector.as<double>(), seq, rVmse + vi);
      checkLaunch("value error kernels");
    }
  }
  if (profile) {
    ctx.sync();
    usUpload += us(t0);
  }
  phase(kPhUpload);
  const auto t1 = Clock::now();
  // Key variants in chunks of G. Per variant: its compression, vector errors and estimated logits. Per
  // chunk, one launch each: the logit / softmax metrics of all its variants, their vector-error means and,
  // per value width, the weighted sums of all their softmaxes and the output errors. One variant's metrics
  // are only nq blocks; batched, they fill the device, and a cell costs a few hundred launches fewer.
  b.estimate.ensure(G * nq * seq * 4);
  b.weights.ensure(G * nq * seq * 4);
  b.estOut.ensure(G * nq * dv * 4);
  static const bool lutScoring = std::getenv("TQ_CUDA_SWEEP_LUT") != nullptr;  // the former scoring, for comparisons
  static const bool aggKernel = std::getenv("TQ_CUDA_SWEEP_AGG") != nullptr;    // the former output sums, for comparisons
  // Shared work between variants. An MSE stage (MSE bits, rotation, codebook, compression path) gives the
  // same codes to every variant that has it: TurboQuant-prod at b bits holds MSE at b - 1 bits. Its
  // <q, x_mse> and vector errors are computed once per task (into a slot) and copied to the others; an
  // MSE variant whose stage is already there needs no compression at all. S q likewise once per QJL
  // matrix. The copies are of the same numbers, so the results equal computing each variant alone
  // (TQ_CUDA_SWEEP_SHARE=0: each variant alone, for comparisons).
  const char* shareEnv = std::getenv("TQ_CUDA_SWEEP_SHARE");  // read per task: a GPU test compares both
  const bool share = !(shareEnv && std::strcmp(shareEnv, "0") == 0);
  std::vector<int> stageSlot(nk, -1), sqSlot(nk, -1);
  std::vector<uint64_t> stageKeys, sqKeys;
  const size_t slotBytes = nq * seq * 4, stageCap = share ? std::min<size_t>(nk, (size_t{128} << 20) / std::max<size_t>(1, slotBytes)) : 0;
  if (share && !lutScoring)
    for (size_t k = 0; k < nk; ++k) {
      const Quantizer& q = *in.keyQuantizers[k];
      if (q.mseBits() > 0) {
        const uint64_t key = q.mseStageHash() ^ (fastPath(*keyPlans[k], CudaInput::F32) ? 0x9e3779b97f4a7c15ull : 0);
        auto it = std::find(stageKeys.begin(), stageKeys.end(), key);
        if (it != stageKeys.end()) stageSlot[k] = static_cast<int>(it - stageKeys.begin());
        else if (stageKeys.size() < stageCap) stageSlot[k] = static_cast<int>(stageKeys.size()), stageKeys.push_back(key);
      }
      if (q.projDim() > 0) {
        auto it = std::find(sqKeys.begin(), sqKeys.end(), q.qjlMatrixHash());
        if (it != sqKeys.end()) sqSlot[k] = static_cast<int>(it - sqKeys.begin());
        else if (sqKeys.size() < 16) sqSlot[k] = static_cast<int>(sqKeys.size()), sqKeys.push_back(q.qjlMatrixHash());
      }
    }
  std::vector<char> stageDone(stageKeys.size(), 0), sqDone(sqKeys.size(), 0);
  // The keys rotated once per task (dense rotation on the fast path): compress() normalises, rotates (one
  // cuBLAS product over all seq keys) and quantizes; here the first two run once and every variant with
  // that rotation quantizes the same rotated keys, which gives compress()'s bytes (the same product for the
  // same n; compress() works in chunks of 2^20 keys, so longer tasks compress variant by variant).
  // TQ_CUDA_SWEEP_ROTATE_ONCE=0: every variant rotates (for comparisons).
  const char* rotEnv = std::getenv("TQ_CUDA_SWEEP_ROTATE_ONCE");
  const bool rotateOnce = !(rotEnv && std::strcmp(rotEnv, "0") == 0) && seq <= (size_t{1} << 20);
  uint64_t rotatedBy = 0;
  bool haveRotated = false;
  if (!stageKeys.empty()) {
    b.stageEst.ensure(stageKeys.size() * slotBytes);
    b.stageErr.ensure(stageKeys.size() * seq * 8);
  }
  size_t maxM = 0;
  for (size_t k = 0; k < nk; ++k) maxM = std::max(maxM, static_cast<size_t>(keyPlans[k]->projDim));
  if (maxM > 0) b.sq.ensure((sqKeys.size() + 1) * nq * maxM * 4);  // a slot per QJL matrix, the last for one without
  for (size_t c0 = 0; c0 < nk; c0 += G) {
    const size_t nc = std::min(G, nk - c0);
    for (size_t kj = 0; kj < nc; ++kj) {
      const size_t k = c0 + kj;
      const DevPlan& kp = *keyPlans[k];
      const int slot = stageSlot[k];
      const bool stageReady = slot >= 0 && stageDone[static_cast<size_t>(slot)];
      float* est = b.estimate.as<float>() + kj * nq * seq;
      double* err = b.perVector.as<double>() + kj * seq;
      if (!(stageReady && kp.projDim == 0)) {
        b.compKeys.ensure(kp, seq);
        if (rotateOnce && fastPath(kp, CudaInput::F32) && !kp.hadamard) {
          const uint64_t rh = in.keyQuantizers[k]->rotationHash();
          if (!haveRotated || rh != rotatedBy) {
            b.rotY.ensure(seq * d * 4);
            b.rotN.ensure(seq * 4);
            rotateForCompress(ctx, kp, Kd.get(), CudaInput::F32, seq, b.rotY.as<float>(), b.rotN.as<float>(), s);
            rotatedBy = rh;
            haveRotated = true;
          }
          compressRotated(ctx, kp, b.rotY.as<float>(), b.rotN.as<float>(), seq, b.compKeys.view());
        } else {
          compress(ctx, kp, Kd.get(), CudaInput::F32, seq, b.compKeys.view(), s);
        }
        phase(kPhCompress);
      }
      if (lutScoring) {
        if (kp.mseBits > 0) {
          decompress(ctx, kp, b.compKeys.view(), seq, b.recon.get(), false, s);
          vectorErrorKernel<<<static_cast<unsigned>((seq + 7) / 8), 256, 0, st>>>(Kd.as<float>(), b.recon.as<float>(), seq, in.d, err);
          checkLaunch("key error kernel");
        }
        scores(ctx, kp, b.compKeys.view(), seq, Qd.as<float>(), nullptr, nullptr, nq, nq, est, seq, s);
        continue;
      }
      // Estimated logits in the dense form of the CPU sweep (core/backend/cpu_task): <q, x_mse> as a product
      // with the reconstruction, plus the QJL term as S q times the keys' scaled signs. Two cuBLAS products
      // cost a fraction of the look-up-table scoring, whose generic kernel (5-8 bits, m = 2d) took ~0.8 ms a
      // variant at 8192 keys and 128 queries on an H200 (docs/EXPLORER.md).
      if (kp.mseBits > 0) {
        float* mseEst = slot >= 0 ? b.stageEst.as<float>() + static_cast<size_t>(slot) * nq * seq : est;
        double* mseErr = slot >= 0 ? b.stageErr.as<double>() + static_cast<size_t>(slot) * seq : err;
        if (!stageReady) {
          decompress(ctx, kp, b.compKeys.view(), seq, b.recon.get(), false, s);
          vectorErrorKernel<<<static_cast<unsigned>((seq + 7) / 8), 256, 0, st>>>(Kd.as<float>(), b.recon.as<float>(), seq, in.d, mseErr);
          checkLaunch("key error kernel");
          blasCheck(
              cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(seq), static_cast<int>(nq), static_cast<int>(d), &one, b.recon.as<float>(),
                          static_cast<int>(d), Qd.as<float>(), static_cast<int>(d), &zero, mseEst, static_cast<int>(seq)),
              "estimated logits (cublasSgemm)");
          if (slot >= 0) stageDone[static_cast<size_t>(slot)] = 1;
          phase(kPhMseStage);
        }
        if (slot >= 0) {
          ctx.copyAsyncD2D(est, mseEst, nq * seq * 4);
          ctx.copyAsyncD2D(err, mseErr, seq * 8);
        }
      } else {
        ctx.memsetAsync(est, 0, nq * seq * 4);
      }
      phase(kPhCopies);
      if (kp.projDim > 0) {
        const size_t m = static_cast<size_t>(kp.projDim);
        const int qs = sqSlot[k];
        float* sq = b.sq.as<float>() + (qs >= 0 ? static_cast<size_t>(qs) : sqKeys.size()) * nq * maxM;
        if (qs < 0 || !sqDone[static_cast<size_t>(qs)]) {
          blasCheck(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(nq), static_cast<int>(d), &one, kp.S.as<float>(),
                                static_cast<int>(d), Qd.as<float>(), static_cast<int>(d), &zero, sq, static_cast<int>(m)),
                    "S q (cublasSgemm)");
          if (qs >= 0) sqDone[static_cast<size_t>(qs)] = 1;
        }
        b.z.ensure(seq * m * 4);
        expandSignsKernel<<<gridFor(seq * m, 256, sms), 256, 0, st>>>(b.compKeys.view().signs, b.compKeys.view().rnorms, seq, kp.projDim,
                                                                      kp.signBytes, kp.qjlScale, b.z.as<float>());
        checkLaunch("QJL sign expansion kernel");
        blasCheck(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(seq), static_cast<int>(nq), static_cast<int>(m), &one, b.z.as<float>(),
                              static_cast<int>(m), sq, static_cast<int>(m), &one, est, static_cast<int>(seq)),
                  "QJL term (cublasSgemm)");
        phase(kPhQjl);
      }
    }
    keyMetricsKernel<<<dim3(static_cast<unsigned>(nq), static_cast<unsigned>(nc)), kThreads, 0, st>>>(
        Xd.as<float>(), b.estimate.as<float>(), Pd.as<double>(), seq, nq, Ld.as<int>(), in.scale, b.weights.as<float>(),
        rKey + c0 * nq * 9);
    meanKernel<<<static_cast<unsigned>(nc), kThreads, 0, st>>>(b.perVector.as<double>(), seq, rKmse + c0);
    checkLaunch("key metrics kernels");
    for (size_t kj = 0; kj < nc; ++kj)
      if (keyPlans[c0 + kj]->mseBits == 0) setKernel<<<1, 1, 0, st>>>(rKmse + c0 + kj, 1.0);  // no MSE stage: vectorMse is defined as 1
    phase(kPhMetrics);
    for (size_t vi = 0; vi < nvq; ++vi) {
      // every row of the chunk (nc variants x nq queries) against the same values: one product
      // O (rows x dv) = W (rows x seq) V_hat (seq x dv), as the CPU sweep computes it (cuBLAS, column-major:
      // O^T = V_hat^T W^T). TQ_CUDA_SWEEP_AGG=1: the aggregation kernel on the codes instead (the former path,
      // for comparisons; ~8.6 GFLOP a chunk at 8192 tokens that a GEMM does several times faster).
      if (aggKernel) {
        weightedSum(ctx, *valuePlans[vi], b.compValues[vi].view(), 0, seq, b.weights.as<float>(), seq, nc * nq, nq, b.estOut.as<float>(), s);
      } else {
        blasCheck(cublasSgemm(hb, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(dv), static_cast<int>(nc * nq), static_cast<int>(seq), &one,
                              b.valueRecon[vi].as<float>(), static_cast<int>(dv), b.weights.as<float>(), static_cast<int>(seq), &zero,
                              b.estOut.as<float>(), static_cast<int>(dv)),
                  "estimated outputs (cublasSgemm)");
      }
      outputErrorKernel<<<static_cast<unsigned>((nc * nq + 7) / 8), 256, 0, st>>>(XOd.as<double>(), b.estOut.as<float>(), nq, nc, in.dv,
                                                                                  rOut + (c0 * nvOut + vi) * nq, nvOut * nq);
      checkLaunch("output error kernel");
    }
    if (nvq == 0) ctx.memsetAsync(rOut + c0 * nvOut * nq, 0, nc * nvOut * nq * 8);
    phase(kPhOutputs);
  }
  std::vector<double> host(nRes);
  const auto t2 = Clock::now();
  ctx.copyAsyncD2H(host.data(), b.results.get(), nRes * 8);
  ctx.sync();
  if (profile) {
    usEnqueue += static_cast<int64_t>(std::chrono::duration<double, std::micro>(t2 - t1).count());
    usWait += us(t2);
    if (++tasks % 64 == 0)
      std::fprintf(
          stderr,
          "evaluateTask profile after %lld tasks: uploads + exact references (synced) %.3f s, enqueueing variants %.3f s, final wait %.3f s\n",
          static_cast<long long>(tasks.load()), usUpload.load() * 1e-6, usEnqueue.load() * 1e-6, usWait.load() * 1e-6);
    if (phases && tasks % 64 == 0) {
      std::fprintf(stderr, "evaluateTask phases (synchronised) after %lld tasks:", static_cast<long long>(tasks.load()));
      for (int i = 0; i < kPhCount; ++i) std::fprintf(stderr, " %s %.3f s;", phaseNames[i], usPhase[i].load() * 1e-6);
      std::fprintf(stderr, "\n");
    }
  }
  out.keyMetrics.assign(host.begin(), host.begin() + static_cast<long>(nk * nq * 9));
  out.outputError.assign(host.begin() + static_cast<long>(nk * nq * 9), host.begin() + static_cast<long>(nk * nq * 9 + nk * nvOut * nq));
  out.keyMse.assign(host.begin() + static_cast<long>(nk * nq * 9 + nk * nvOut * nq),
                    host.begin() + static_cast<long>(nk * nq * 9 + nk * nvOut * nq + nk));
  out.valueMse.assign(host.end() - static_cast<long>(nvq), host.end());
}

}  // namespace cuda
}  // namespace tq
