// SPDX-License-Identifier: GPL-3.0-or-later
// CudaBackend: the Backend interface on top of the device API, with the CPU engine as the fallback.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

#include "cuda/device_api.h"

namespace tq {

struct CudaBackend::Impl {
  CudaDeviceInfo info;
  std::unique_ptr<cuda::Context> ctx;
  std::unique_ptr<Backend> cpu = makeCpuBackend();
  std::map<uint64_t, std::shared_ptr<cuda::DevPlan>> plans;
  cuda::Scratch scratch;
  cuda::DevBuf input, queries, rq, sq, outBuf, weights, scoresBuf;
  cuda::DevCompressedBuf comp, comp2;
  bool broken = false, lastFell = false, everFell = false;
  std::string reason, brokenReason;
  std::mutex mutex;

  const cuda::DevPlan& plan(const Quantizer& q) { return *planPtr(q); }
  /// The cached plan of q (shared, so that a caller holding several stays valid if the cache is cleared).
  /// Thread-safe on its own (plansMutex): evaluateTask builds its plans outside the main lock, so sweep
  /// threads hash and build them in parallel while another task runs on the device.
  std::shared_ptr<cuda::DevPlan> planPtr(const Quantizer& q) {
    const uint64_t fp = cuda::planFingerprint(q);
    std::unique_lock<std::mutex> lock(plansMutex);
    for (;;) {  // one build per plan: a thread that finds it being built waits for it
      auto it = plans.find(fp);
      if (it != plans.end()) return it->second;
      if (!building.count(fp)) break;
      plansCv.wait(lock);
    }
    building.insert(fp);
    ++plansBuilt;
    lock.unlock();
    std::shared_ptr<cuda::DevPlan> p;
    const auto tb = std::chrono::steady_clock::now();
    try {
      p = cuda::buildPlan(*ctx, q);
      usBuild += static_cast<int64_t>(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - tb).count());
    } catch (...) {
      lock.lock();
      building.erase(fp);
      plansCv.notify_all();
      throw;
    }
    lock.lock();
    building.erase(fp);
    if (plans.size() >= maxPlans) plans.clear();  // up to ~0.8 MB of device memory per plan (d = 128, m = 256)
    auto r = plans.emplace(fp, p).first->second;
    plansCv.notify_all();
    return r;
  }
  /// Plans kept: an eighth of the free device memory at 1 MB a plan, 256..4096. The GUI's grid on a
  /// 32-layer model needs 32 x 57 plans: with 1024, the cache was cleared mid-sweep (each cudaFree
  /// synchronising the device) and rebuilt.
  size_t maxPlans = 1024;
  std::atomic<int64_t> plansBuilt{0}, usBuild{0};
  /// TQ_SWEEP_PROFILE: host time of evaluateTask's phases, summed over the calling threads
  std::atomic<int64_t> usPlans{0}, usStage{0}, usLaneWait{0}, usDevice{0}, profTasks{0};
  std::mutex plansMutex;
  std::condition_variable plansCv;
  std::set<uint64_t> building;
  /// Resident sweep cells (SweepTaskInput::cellId): a cell's keys, values, queries and exact references stay
  /// on the device across sweeps, within a budget (TQ_CUDA_RESIDENT_MB, else 40 % of the device memory free
  /// at the first use). When it is full, cells of other data sets go first (least recently used first);
  /// cells of the data set being swept are never dropped for each other (no freeing, which synchronises the
  /// device, in the middle of a sweep): a cell that does not fit is not kept. Off unless TQ_CUDA_RESIDENT=1:
  /// not yet measured on a device (see docs/CUDA.md).
  struct ResidentEntry {
    uint64_t key = 0, dataId = 0;
    std::shared_ptr<cuda::ResidentCell> cell;
    bool filled = false;  // false: its first task is filling it (others meanwhile use their own buffers)
    size_t bytes = 0;
  };
  std::mutex residentMutex;
  std::list<ResidentEntry> resident;  // most recently used first
  size_t residentBytes = 0, residentBudget = 0;
  bool residentBudgetSet = false;
  std::atomic<int64_t> residentHits{0}, residentFills{0};

  /// The resident cell for `key` (bytes: its size): *filled true when it holds the data (read it), false when
  /// the caller fills it (then residentDone); nullptr: none (off, over budget, or another task is filling it).
  std::shared_ptr<cuda::ResidentCell> residentFor(uint64_t key, uint64_t dataId, size_t bytes, bool* filled) {
    static const bool off = [] {
      const char* v = std::getenv("TQ_CUDA_RESIDENT");
      return !(v && std::strcmp(v, "1") == 0);
    }();
    if (off || key == 0) return nullptr;
    std::lock_guard<std::mutex> lock(residentMutex);
    if (!residentBudgetSet) {
      residentBudgetSet = true;
      const char* mb = std::getenv("TQ_CUDA_RESIDENT_MB");
      residentBudget = mb ? static_cast<size_t>(std::max(0, std::atoi(mb))) << 20 : ctx->freeMemory() / 10 * 4;
    }
    for (auto it = resident.begin(); it != resident.end(); ++it) {
      if (it->key != key) continue;
      if (!it->filled) return nullptr;
      resident.splice(resident.begin(), resident, it);
      *filled = true;
      ++residentHits;
      return it->cell;
    }
    if (bytes > residentBudget) return nullptr;
    // make room: the least recently used filled cells of other data sets go (one in use by a task lives
    // until that task ends)
    while (residentBytes + bytes > residentBudget) {
      auto victim = resident.end();
      for (auto it = resident.begin(); it != resident.end(); ++it)
        if (it->filled && it->dataId != dataId) victim = it;
      if (victim == resident.end()) return nullptr;
      residentBytes -= victim->bytes;
      resident.erase(victim);
    }
    ResidentEntry e;
    e.key = key;
    e.dataId = dataId;
    e.cell = std::make_shared<cuda::ResidentCell>();
    e.bytes = bytes;
    resident.push_front(e);
    residentBytes += bytes;
    *filled = false;
    ++residentFills;
    return e.cell;
  }
  /// After the filling task: ok -> the cell serves later tasks; else it is dropped.
  void residentDone(uint64_t key, bool ok) {
    std::lock_guard<std::mutex> lock(residentMutex);
    for (auto it = resident.begin(); it != resident.end(); ++it)
      if (it->key == key && !it->filled) {
        if (ok) {
          it->filled = true;
        } else {
          residentBytes -= it->bytes;
          resident.erase(it);
        }
        return;
      }
  }

  /// Page-locked staging buffers for evaluateTask's inputs (filled outside the main lock, one per thread at a time).
  std::mutex stagingMutex;
  std::vector<std::unique_ptr<cuda::PinnedBuf>> staging;
  /// evaluateTask runs on lanes of its own (a stream, a cuBLAS handle and task buffers each): several sweep
  /// threads keep the device busy at once, and the detail views' calls (on ctx, under `mutex`) do not wait
  /// behind a sweep task. TQ_CUDA_LANES (1..16, default 4) sets how many.
  struct Lane {
    std::unique_ptr<cuda::Context> ctx;
    cuda::TaskBuffers task;
    cuda::Scratch scratch;
  };
  std::mutex laneMutex;
  std::condition_variable laneCv;
  std::vector<std::unique_ptr<Lane>> idleLanes;
  int lanesMade = 0;
  static int maxLanes() {
    const char* v = std::getenv("TQ_CUDA_LANES");
    const int n = v ? std::atoi(v) : 4;
    return std::clamp(n, 1, 16);
  }
  /// A lane for one task (waits while all are busy); throws cuda::CudaError when a new one cannot be made.
  std::unique_ptr<Lane> takeLane() {
    std::unique_lock<std::mutex> lock(laneMutex);
    laneCv.wait(lock, [&] { return !idleLanes.empty() || lanesMade < maxLanes(); });
    if (!idleLanes.empty()) {
      auto l = std::move(idleLanes.back());
      idleLanes.pop_back();
      return l;
    }
    ++lanesMade;
    lock.unlock();
    try {
      auto l = std::make_unique<Lane>();
      l->ctx = std::make_unique<cuda::Context>(ctx->device(), true);  // the sweep yields to the views' calls
      return l;
    } catch (...) {
      std::lock_guard<std::mutex> again(laneMutex);
      --lanesMade;
      laneCv.notify_one();
      throw;
    }
  }
  void giveLane(std::unique_ptr<Lane> l) {
    std::lock_guard<std::mutex> lock(laneMutex);
    idleLanes.push_back(std::move(l));
    laneCv.notify_one();
  }

  /// Vectors per device round trip so that a chunk uses at most a third of the free memory.
  size_t chunkFor(size_t n, size_t bytesPerVector) {
    const size_t freeB = ctx->freeMemory();
    size_t c = std::max<size_t>(1024, freeB / 3 / std::max<size_t>(1, bytesPerVector));
    c = std::min<size_t>(c, size_t{1} << 21);
    return std::min(n, c);
  }

  /// Runs gpu(); on a CUDA error prints the reason, runs cpu() instead and (for errors that leave the
  /// context unusable) moves this backend to the CPU for good.
  template <typename G, typename C>
  void guarded(const char* op, G gpu, C cpuFn) {
    std::lock_guard<std::mutex> lock(mutex);
    lastFell = false;
    if (!broken) {
      try {
        // Fault injection for the tests: TQ_CUDA_INJECT_ERROR=<operation> (recoverable) or =sticky.
        if (const char* inj = std::getenv("TQ_CUDA_INJECT_ERROR")) {
          if (std::strcmp(inj, op) == 0) throw cuda::CudaError("injected failure (TQ_CUDA_INJECT_ERROR)", 999, false, false);
          if (std::strcmp(inj, "sticky") == 0) throw cuda::CudaError("injected sticky failure (TQ_CUDA_INJECT_ERROR)", 999, true, false);
        }
        gpu();
        return;
      } catch (const cuda::CudaError& e) {
        lastFell = everFell = true;
        reason = std::string("CUDA error in ") + op + ": " + e.what();
        if (e.sticky()) {
          broken = true;
          brokenReason = reason;
          std::cerr << "tqstudio: " << reason << "; the CUDA backend is disabled for this process and the CPU engine takes over\n";
        } else {
          std::cerr << "tqstudio: " << reason << (e.outOfMemory() ? " (out of device memory)" : "") << "; this call runs on the CPU engine\n";
        }
        // release scratch so that a later call starts from a clean slate
        scratch = cuda::Scratch();
      }
    }
    cpuFn();
  }

  void uploadCompressed(const cuda::DevPlan& p, const CompressedVectors& cv, cuda::DevCompressedBuf& dst) {
    dst.ensure(p, cv.count);
    ctx->copyAsyncH2D(dst.codes.get(), cv.codes.data(), cv.codes.size());
    ctx->copyAsyncH2D(dst.signs.get(), cv.signs.data(), cv.signs.size());
    ctx->copyAsyncH2D(dst.norms.get(), cv.norms.data(), cv.norms.size() * 2);
    ctx->copyAsyncH2D(dst.rnorms.get(), cv.residualNorms.data(), cv.residualNorms.size() * 2);
  }

  void compressImpl(const Quantizer& q, const void* x, CudaInput type, size_t n, CompressedVectors& out, size_t offset) {
    const cuda::DevPlan& p = plan(q);
    const size_t d = static_cast<size_t>(q.dim());
    const size_t esz = type == CudaInput::F32 ? 4 : 2;
    const size_t chunk = chunkFor(n, d * esz + p.codeBytes + p.signBytes + 4 + d * 8);
    input.ensure(chunk * d * esz);
    comp.ensure(p, chunk);
    for (size_t b0 = 0; b0 < n; b0 += chunk) {
      const size_t nb = std::min(chunk, n - b0);
      ctx->copyAsyncH2D(input.get(), static_cast<const uint8_t*>(x) + b0 * d * esz, nb * d * esz);
      cuda::compress(*ctx, p, input.get(), type, nb, comp.view(), scratch);
      const size_t o = offset + b0;
      if (p.codeBytes) ctx->copyAsyncD2H(out.codes.data() + o * p.codeBytes, comp.codes.get(), nb * p.codeBytes);
      if (p.signBytes) ctx->copyAsyncD2H(out.signs.data() + o * p.signBytes, comp.signs.get(), nb * p.signBytes);
      ctx->copyAsyncD2H(out.norms.data() + o, comp.norms.get(), nb * 2);
      if (p.projDim > 0) ctx->copyAsyncD2H(out.residualNorms.data() + o, comp.rnorms.get(), nb * 2);
      ctx->sync();
    }
  }
};

namespace {

/// Prepares `out` like Quantizer::compress (same checks, same sizes); returns the append offset.
size_t prepareOut(const Quantizer& q, size_t n, CompressedVectors& out) {
  if (out.count == 0) {
    out.dim = q.dim();
    out.mseBits = q.mseBits();
    out.projDim = q.projDim();
  } else if (out.dim != q.dim() || out.mseBits != q.mseBits() || out.projDim != q.projDim()) {
    throw std::invalid_argument("compressed buffer was made by a different quantizer");
  }
  const size_t offset = out.count;
  out.count += n;
  out.codes.resize(out.count * out.codeBytes());
  out.signs.resize(out.count * out.signBytes());
  out.norms.resize(out.count);
  if (q.projDim() > 0) out.residualNorms.resize(out.count);
  return offset;
}

void restoreOut(CompressedVectors& out, size_t count) {
  out.count = count;
  out.codes.resize(count * out.codeBytes());
  out.signs.resize(count * out.signBytes());
  out.norms.resize(count);
  if (out.projDim > 0) out.residualNorms.resize(count);
}

void checkMatches(const Quantizer& q, const CompressedVectors& cv) {
  if (cv.count == 0) return;
  if (cv.dim != q.dim() || cv.mseBits != q.mseBits() || cv.projDim != q.projDim())
    throw std::invalid_argument("compressed buffer was made by a different quantizer");
}

std::vector<float> toFloat(const void* x, CudaInput type, size_t count) {
  std::vector<float> f(count);
  const uint16_t* h = static_cast<const uint16_t*>(x);
  if (type == CudaInput::F32) {
    std::memcpy(f.data(), x, count * sizeof(float));
  } else {
    for (size_t i = 0; i < count; ++i) {
      if (type == CudaInput::F16) {
        // exact fp16 -> fp32 (util/half.h is header-only, but keep this file free of extra includes)
        const uint32_t sign = static_cast<uint32_t>(h[i] & 0x8000u) << 16;
        const uint32_t e = (h[i] >> 10) & 0x1fu;
        uint32_t m = h[i] & 0x3ffu, bits;
        if (e == 0) {
          if (m == 0) {
            bits = sign;
          } else {
            int ee = -1;
            do {
              ++ee;
              m <<= 1;
            } while ((m & 0x400u) == 0);
            m &= 0x3ffu;
            bits = sign | (static_cast<uint32_t>(112 - ee) << 23) | (m << 13);
          }
        } else if (e == 31) {
          bits = sign | 0x7f800000u | (m << 13);
        } else {
          bits = sign | ((e + 112u) << 23) | (m << 13);
        }
        std::memcpy(&f[i], &bits, 4);
      } else {
        const uint32_t bits = static_cast<uint32_t>(h[i]) << 16;
        std::memcpy(&f[i], &bits, 4);
      }
    }
  }
  return f;
}

}  // namespace

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

std::string CudaBackend::name() const {
  return m_impl->broken ? "CPU" : "CUDA";
}

std::string CudaBackend::device() const {
  if (m_impl->broken) return m_impl->cpu->device() + " (CUDA disabled after: " + m_impl->brokenReason + ")";
  return m_impl->info.describe();
}

bool CudaBackend::fellBack(bool ever) const {
  return ever ? m_impl->everFell : m_impl->lastFell;
}
std::string CudaBackend::fallbackReason() const {
  return m_impl->reason;
}
const CudaDeviceInfo& CudaBackend::info() const {
  return m_impl->info;
}

void CudaBackend::compress(const Quantizer& q, const float* x, size_t n, CompressedVectors& out) {
  compressTyped(q, x, CudaInput::F32, n, out);
}

void CudaBackend::compressTyped(const Quantizer& q, const void* x, CudaInput type, size_t n, CompressedVectors& out) {
  const size_t before = out.count;
  const size_t offset = prepareOut(q, n, out);
  if (n == 0) return;
  Impl& I = *m_impl;
  I.guarded(
      "compress", [&] { I.compressImpl(q, x, type, n, out, offset); },
      [&] {
        restoreOut(out, before);
        if (type == CudaInput::F32) {
          I.cpu->compress(q, static_cast<const float*>(x), n, out);
        } else {
          const std::vector<float> f = toFloat(x, type, n * static_cast<size_t>(q.dim()));
          I.cpu->compress(q, f.data(), n, out);
        }
      });
}

void CudaBackend::scores(const Quantizer& q, const CompressedVectors& keys, const float* queries, size_t nq, float* out) {
  checkMatches(q, keys);
  if (nq == 0 || keys.count == 0) return;
  Impl& I = *m_impl;
  I.guarded(
      "scores",
      [&] {
        const cuda::DevPlan& p = I.plan(q);
        const size_t d = static_cast<size_t>(q.dim()), m = static_cast<size_t>(q.projDim());
        I.uploadCompressed(p, keys, I.comp);
        // queries in chunks (the score matrix is the large part)
        const size_t perQuery = keys.count * 4 + (2 * d + m) * 4 + p.lutFloats * 4;
        const size_t qc = std::max<size_t>(1, std::min(nq, I.chunkFor(nq, perQuery)));
        I.queries.ensure(qc * d * 4);
        I.rq.ensure(qc * d * 4);
        I.sq.ensure(std::max<size_t>(4, qc * m * 4));
        I.outBuf.ensure(qc * keys.count * 4);
        for (size_t q0 = 0; q0 < nq; q0 += qc) {
          const size_t nb = std::min(qc, nq - q0);
          I.ctx->copyAsyncH2D(I.queries.get(), queries + q0 * d, nb * d * 4);
          if (nb >= 16) {  // many queries: rotate/project each once instead of once per block
            cuda::prepareQueries(*I.ctx, p, I.queries.as<float>(), nb, I.rq.as<float>(), I.sq.as<float>());
            cuda::scores(*I.ctx, p, I.comp.view(), keys.count, nullptr, I.rq.as<float>(), I.sq.as<float>(), nb, nb, I.outBuf.as<float>(), keys.count,
                         I.scratch);
          } else {
            cuda::scores(*I.ctx, p, I.comp.view(), keys.count, I.queries.as<float>(), nullptr, nullptr, nb, nb, I.outBuf.as<float>(), keys.count,
                         I.scratch);
          }
          I.ctx->copyAsyncD2H(out + q0 * keys.count, I.outBuf.get(), nb * keys.count * 4);
          I.ctx->sync();
        }
      },
      [&] { I.cpu->scores(q, keys, queries, nq, out); });
}

void CudaBackend::decompress(const Quantizer& q, const CompressedVectors& cv, float* out) {
  checkMatches(q, cv);
  if (cv.count == 0) return;
  Impl& I = *m_impl;
  I.guarded(
      "decompress",
      [&] {
        const cuda::DevPlan& p = I.plan(q);
        const size_t d = static_cast<size_t>(q.dim());
        const size_t chunk = I.chunkFor(cv.count, d * 12 + p.codeBytes + 2);
        I.comp.ensure(p, chunk);
        I.outBuf.ensure(chunk * d * 4);
        for (size_t b0 = 0; b0 < cv.count; b0 += chunk) {
          const size_t nb = std::min(chunk, cv.count - b0);
          I.ctx->copyAsyncH2D(I.comp.codes.get(), cv.codes.data() + b0 * p.codeBytes, nb * p.codeBytes);
          I.ctx->copyAsyncH2D(I.comp.norms.get(), cv.norms.data() + b0, nb * 2);
          cuda::decompress(*I.ctx, p, I.comp.view(), nb, I.outBuf.get(), false, I.scratch);
          I.ctx->copyAsyncD2H(out + b0 * d, I.outBuf.get(), nb * d * 4);
          I.ctx->sync();
        }
      },
      [&] { I.cpu->decompress(q, cv, out); });
}

void CudaBackend::weightedSum(const Quantizer& q, const CompressedVectors& values, const float* weights, size_t nq, float* out) {
  checkMatches(q, values);
  if (nq == 0) return;
  Impl& I = *m_impl;
  I.guarded(
      "weightedSum",
      [&] {
        const cuda::DevPlan& p = I.plan(q);
        const size_t d = static_cast<size_t>(q.dim());
        I.uploadCompressed(p, values, I.comp);
        const size_t qc = std::max<size_t>(1, std::min(nq, I.chunkFor(nq, values.count * 4 + d * 4)));
        I.weights.ensure(std::max<size_t>(4, qc * values.count * 4));
        I.outBuf.ensure(qc * d * 4);
        for (size_t q0 = 0; q0 < nq; q0 += qc) {
          const size_t nb = std::min(qc, nq - q0);
          I.ctx->copyAsyncH2D(I.weights.get(), weights + q0 * values.count, nb * values.count * 4);
          cuda::weightedSum(*I.ctx, p, I.comp.view(), values.count, values.count, I.weights.as<float>(), values.count, nb, nb, I.outBuf.as<float>(),
                            I.scratch);
          I.ctx->copyAsyncD2H(out + q0 * d, I.outBuf.get(), nb * d * 4);
          I.ctx->sync();
        }
      },
      [&] { I.cpu->weightedSum(q, values, weights, nq, out); });
}

CudaBackend::ResidentStats CudaBackend::residentStats() const {
  Impl& I = *m_impl;
  std::lock_guard<std::mutex> lock(I.residentMutex);
  return {I.residentHits.load(), I.residentFills.load(), I.residentBytes};
}

bool CudaBackend::evaluateTask(const SweepTaskInput& in, SweepTaskOutput& out) {
  if (in.seq == 0 || in.nq == 0 || in.keyQuantizers.empty()) return false;
  if (in.compressKeys || in.keyOffset || in.exactKeys || in.recentExact)
    return false;                                                      // key centering, the recent window: evaluated on the CPU (counted as such)
  if (!in.keyCodecs.empty() || !in.valueCodecs.empty()) return false;  // baselines (core/methods): CPU only, counted as such
  if (cancelRequested(in)) {
    out = SweepTaskOutput{};
    return true;
  }
  for (const Quantizer* q : in.keyQuantizers)
    if (!q || q->dim() != in.d) throw std::invalid_argument("evaluateTask: a key quantizer does not match the keys' dimension");
  for (const Quantizer* q : in.valueQuantizers)
    if (!q || q->dim() != in.dv) throw std::invalid_argument("evaluateTask: a value quantizer does not match the values' dimension");
  Impl& I = *m_impl;
  using Clock = std::chrono::steady_clock;
  auto us = [](Clock::time_point a) { return static_cast<int64_t>(std::chrono::duration<double, std::micro>(Clock::now() - a).count()); };
  const auto tPlans = Clock::now();
  // plans first, outside the main lock (hashing and building them is host work)
  std::vector<std::shared_ptr<cuda::DevPlan>> hold;
  std::vector<const cuda::DevPlan*> kp, vp;
  {
    std::unique_lock<std::mutex> lock(I.mutex);
    if (I.broken) return false;
  }
  try {
    for (const Quantizer* q : in.keyQuantizers) {
      hold.push_back(I.planPtr(*q));
      kp.push_back(hold.back().get());
    }
    if (in.values)
      for (const Quantizer* q : in.valueQuantizers) {
        hold.push_back(I.planPtr(*q));
        vp.push_back(hold.back().get());
      }
  } catch (const cuda::CudaError& e) {
    std::cerr << "tqstudio: CUDA error while preparing a sweep task: " << e.what() << "; the task runs call by call\n";
    return false;
  }
  I.usPlans += us(tPlans);
  // the cell's inputs and exact references: resident on the device from an earlier sweep, or to be kept
  uint64_t residentKey = 0;
  bool residentFilled = false;
  std::shared_ptr<cuda::ResidentCell> cell;
  if (in.cellId) {
    // the cell under the sizes and the queries' content (a query source, seed or count of its own)
    uint64_t h = in.cellId ^ 0xcbf29ce484222325ull;
    auto mix = [&h](const void* p, size_t n) {
      const auto* c = static_cast<const uint8_t*>(p);
      for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 0x100000001b3ull;
    };
    const uint64_t sizes[5] = {in.seq, static_cast<uint64_t>(in.d), static_cast<uint64_t>(in.dv), in.nq, in.values ? 1u : 0u};
    mix(sizes, sizeof sizes);
    mix(&in.scale, sizeof in.scale);
    mix(in.queries, in.nq * static_cast<size_t>(in.d) * 4);
    mix(in.limits, in.nq * 4);
    residentKey = h ? h : 1;
    cell = I.residentFor(residentKey, in.dataId, cuda::residentCellBytes(in.seq, static_cast<size_t>(in.d), static_cast<size_t>(in.dv), in.nq, in.values != nullptr),
                         &residentFilled);
  }
  struct ResidentOutcome {
    Impl& I;
    uint64_t key;
    bool pending, ok = false;
    ~ResidentOutcome() {
      if (pending) I.residentDone(key, ok);
    }
  } residentOutcome{I, residentKey, cell && !residentFilled};
  const auto tStage = Clock::now();
  // inputs into page-locked memory, also outside the main lock: the uploads then run asynchronously
  std::unique_ptr<cuda::PinnedBuf> stage;
  {
    std::lock_guard<std::mutex> lock(I.stagingMutex);
    if (!I.staging.empty()) {
      stage = std::move(I.staging.back());
      I.staging.pop_back();
    }
  }
  if (!stage) stage = std::make_unique<cuda::PinnedBuf>();
  SweepTaskInput pin = in;
  if (!residentFilled) try {
    const size_t kb = in.seq * static_cast<size_t>(in.d) * 4, vb = in.values ? in.seq * static_cast<size_t>(in.dv) * 4 : 0,
                 qb = in.nq * static_cast<size_t>(in.d) * 4, lb = in.nq * 4;
    stage->ensure(kb + vb + qb + lb);
    uint8_t* base = static_cast<uint8_t*>(stage->get());
    std::memcpy(base, in.keys, kb);
    pin.keys = reinterpret_cast<const float*>(base);
    if (in.values) {
      std::memcpy(base + kb, in.values, vb);
      pin.values = reinterpret_cast<const float*>(base + kb);
    }
    std::memcpy(base + kb + vb, in.queries, qb);
    pin.queries = reinterpret_cast<const float*>(base + kb + vb);
    std::memcpy(base + kb + vb + qb, in.limits, lb);
    pin.limits = reinterpret_cast<const int*>(base + kb + vb + qb);
  } catch (const cuda::CudaError&) {
    pin = in;  // no page-locked memory: pageable uploads (slower, same results)
  }
  struct Return {
    Impl& I;
    std::unique_ptr<cuda::PinnedBuf>& b;
    ~Return() {
      std::lock_guard<std::mutex> lock(I.stagingMutex);
      I.staging.push_back(std::move(b));
    }
  } giveBack{I, stage};
  I.usStage += us(tStage);
  const auto tLane = Clock::now();
  std::unique_ptr<Impl::Lane> lane;
  try {
    lane = I.takeLane();
  } catch (const cuda::CudaError& e) {
    std::cerr << "tqstudio: cannot open a CUDA stream for a sweep task (" << e.what() << "); the task runs on the CPU\n";
    return false;
  }
  struct LaneBack {
    Impl& I;
    std::unique_ptr<Impl::Lane>& l;
    ~LaneBack() { I.giveLane(std::move(l)); }
  } laneBack{I, lane};
  try {
    // Fault injection for the tests, as in guarded(): TQ_CUDA_INJECT_ERROR=evaluateTask or =sticky.
    if (const char* inj = std::getenv("TQ_CUDA_INJECT_ERROR")) {
      if (std::strcmp(inj, "evaluateTask") == 0) throw cuda::CudaError("injected failure (TQ_CUDA_INJECT_ERROR)", 999, false, false);
      if (std::strcmp(inj, "sticky") == 0) throw cuda::CudaError("injected sticky failure (TQ_CUDA_INJECT_ERROR)", 999, true, false);
    }
    // a task that waited for a lane while the sweep was cancelled is not run (its output is empty; the
    // sweep discards it)
    I.usLaneWait += us(tLane);
    const auto tDev = Clock::now();
    if (cancelRequested(in)) {
      out = SweepTaskOutput{};
    } else {
      cuda::evaluateTask(*lane->ctx, kp, vp, pin, out, lane->task, lane->scratch, cell.get(), residentFilled);
      residentOutcome.ok = true;  // a cell it filled serves later tasks (the fill precedes every cancellation point)
    }
    I.usDevice += us(tDev);
    static const bool profile = std::getenv("TQ_SWEEP_PROFILE") != nullptr;
    if (profile && ++I.profTasks % 64 == 0)
      std::fprintf(stderr,
                   "CUDA sweep tasks: %lld; summed over threads: plans %.3f s (%lld built in %.3f s), staging %.3f s, waiting for a lane %.3f s, on "
                   "a lane %.3f s; resident cells: %lld read, %lld filled\n",
                   static_cast<long long>(I.profTasks.load()), I.usPlans.load() * 1e-6, static_cast<long long>(I.plansBuilt.load()),
                   I.usBuild.load() * 1e-6, I.usStage.load() * 1e-6, I.usLaneWait.load() * 1e-6, I.usDevice.load() * 1e-6,
                   static_cast<long long>(I.residentHits.load()), static_cast<long long>(I.residentFills.load()));
    return true;
  } catch (const cuda::CudaError& e) {
    lane->task = cuda::TaskBuffers();
    lane->scratch = cuda::Scratch();
    std::lock_guard<std::mutex> lock(I.mutex);
    I.lastFell = I.everFell = true;
    I.reason = std::string("CUDA error in evaluateTask: ") + e.what();
    if (e.sticky()) {
      I.broken = true;
      I.brokenReason = I.reason;
      std::cerr << "tqstudio: " << I.reason << "; the CUDA backend is disabled for this process and the CPU engine takes over\n";
    } else {
      std::cerr << "tqstudio: " << I.reason << (e.outOfMemory() ? " (out of device memory)" : "") << "; this task runs on the CPU engine\n";
    }
    return false;
  }
}

void CudaBackend::attention(const Quantizer& kq, const CompressedVectors& keys, const Quantizer& vq, const CompressedVectors& values,
                            const float* queries, size_t nq, float scale, float* out) {
  checkMatches(kq, keys);
  checkMatches(vq, values);
  if (keys.count != values.count) throw std::invalid_argument("attention needs as many values as keys");
  if (nq == 0) return;
  Impl& I = *m_impl;
  const size_t n = keys.count, d = static_cast<size_t>(kq.dim()), dv = static_cast<size_t>(vq.dim());
  auto cpuPath = [&] {
    std::vector<float> s(nq * n), w(nq * n);
    I.cpu->scores(kq, keys, queries, nq, s.data());
    for (size_t i = 0; i < nq; ++i) {
      float mx = -INFINITY;
      for (size_t t = 0; t < n; ++t) mx = std::max(mx, scale * s[i * n + t]);
      double sum = 0;
      for (size_t t = 0; t < n; ++t) sum += std::exp(static_cast<double>(scale * s[i * n + t] - mx));
      for (size_t t = 0; t < n; ++t) w[i * n + t] = static_cast<float>(std::exp(static_cast<double>(scale * s[i * n + t] - mx)) / sum);
    }
    I.cpu->weightedSum(vq, values, w.data(), nq, out);
  };
  if (n == 0) {
    std::fill(out, out + nq * dv, 0.0f);
    return;
  }
  I.guarded(
      "attention",
      [&] {
        const cuda::DevPlan& pk = I.plan(kq);
        const cuda::DevPlan& pv = I.plan(vq);
        const size_t m = static_cast<size_t>(kq.projDim());
        I.uploadCompressed(pk, keys, I.comp);
        I.uploadCompressed(pv, values, I.comp2);
        I.queries.ensure(nq * d * 4);
        I.rq.ensure(nq * d * 4);
        I.sq.ensure(std::max<size_t>(4, nq * m * 4));
        I.scoresBuf.ensure(nq * n * 4);
        I.weights.ensure(nq * n * 4);
        I.outBuf.ensure(nq * dv * 4);
        I.ctx->copyAsyncH2D(I.queries.get(), queries, nq * d * 4);
        cuda::prepareQueries(*I.ctx, pk, I.queries.as<float>(), nq, I.rq.as<float>(), I.sq.as<float>());
        cuda::scores(*I.ctx, pk, I.comp.view(), n, nullptr, I.rq.as<float>(), I.sq.as<float>(), nq, nq, I.scoresBuf.as<float>(), n, I.scratch);
        cuda::softmaxRows(*I.ctx, I.scoresBuf.as<float>(), nq, n, n, scale, I.weights.as<float>());
        cuda::weightedSum(*I.ctx, pv, I.comp2.view(), n, n, I.weights.as<float>(), n, nq, nq, I.outBuf.as<float>(), I.scratch);
        I.ctx->copyAsyncD2H(out, I.outBuf.get(), nq * dv * 4);
        I.ctx->sync();
      },
      cpuPath);
}

std::unique_ptr<Backend> makeCudaBackend(std::string* why) {
  CudaDeviceInfo info = cudaProbe();
  if (!info.available) {
    if (why) *why = info.error;
    return nullptr;
  }
  auto impl = std::make_unique<CudaBackend::Impl>();
  impl->info = info;
  try {
    impl->ctx = std::make_unique<cuda::Context>(0);
    impl->maxPlans = std::clamp<size_t>(impl->ctx->freeMemory() / 8 / (size_t{1} << 20), 256, 4096);
  } catch (const std::exception& e) {
    if (why) *why = std::string("could not initialise CUDA on ") + info.name + ": " + e.what();
    return nullptr;
  }
  return std::unique_ptr<Backend>(new CudaBackend(std::move(impl)));
}

std::unique_ptr<Backend> selectBackend(BackendChoice choice, std::string* message) {
  if (message) message->clear();
  if (choice == BackendChoice::Cpu) return makeCpuBackend();
  std::string why;
  auto b = makeCudaBackend(&why);
  if (b) return b;
  if (message)
    *message =
        (choice == BackendChoice::Cuda ? "CUDA backend requested but unavailable: " : "no usable CUDA device: ") + why + "; using the CPU engine";
  return makeCpuBackend();
}

std::string backendFallbackNote(const Backend& b) {
  const auto* c = dynamic_cast<const CudaBackend*>(&b);
  return c ? c->fallbackReason() : std::string();
}

}  // namespace tq
