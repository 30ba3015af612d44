// SPDX-License-Identifier: GPL-3.0-or-later
// Device probing, error handling, memory, the per-device context and quantizer plans.
#include <cstdlib>
#include <cublas_v2.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "cuda/common.cuh"
#include "util/half.h"

namespace tq {
namespace cuda {

namespace {

bool isSticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorUnknown:
    case cudaErrorContextIsDestroyed:
      return true;
    default:
      return false;
  }
}

}  // namespace

void check(int code, const char* what) {
  const cudaError_t e = static_cast<cudaError_t>(code);
  if (e == cudaSuccess) return;
  const bool sticky = isSticky(e);
  if (!sticky) cudaGetLastError();  // clear a non-sticky error so the context stays usable
  std::ostringstream os;
  os << what << ": " << cudaGetErrorName(e) << " (" << cudaGetErrorString(e) << ")";
  throw CudaError(os.str(), code, sticky, e == cudaErrorMemoryAllocation);
}

void checkLaunch(const char* what) {
  check(static_cast<int>(cudaGetLastError()), what);
}

// ------------------------------------------------------------------------------------------ memory
DevBuf::~DevBuf() {
  release();
}

DevBuf& DevBuf::operator=(DevBuf&& o) noexcept {
  if (this != &o) {
    release();
    m_ptr = o.m_ptr;
    m_bytes = o.m_bytes;
    m_view = o.m_view;
    o.m_ptr = nullptr;
    o.m_bytes = 0;
    o.m_view = false;
  }
  return *this;
}

void DevBuf::setView(void* p, size_t bytes) {
  release();
  m_ptr = p;
  m_bytes = bytes;
  m_view = p != nullptr;
}

void DevBuf::ensure(size_t bytes) {
  if (bytes <= m_bytes && m_ptr) return;
  release();
  if (bytes == 0) return;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    std::ostringstream os;
    os << "cudaMalloc of " << bytes << " bytes";
    check(static_cast<int>(e), os.str().c_str());
  }
  m_ptr = p;
  m_bytes = bytes;
}

void DevBuf::release() {
  if (m_ptr && !m_view) cudaFree(m_ptr);
  m_ptr = nullptr;
  m_bytes = 0;
  m_view = false;
}

PinnedBuf::~PinnedBuf() {
  if (m_ptr) cudaFreeHost(m_ptr);
}

void PinnedBuf::ensure(size_t bytes) {
  if (bytes <= m_bytes && m_ptr) return;
  if (m_ptr) cudaFreeHost(m_ptr);
  m_ptr = nullptr;
  m_bytes = 0;
  TQ_CUDA_CHECK(cudaMallocHost(&m_ptr, bytes));
  m_bytes = bytes;
}

// ------------------------------------------------------------------------------------------ context
Context::Context(int device, bool background) : m_device(device) {
  TQ_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s = nullptr;
  static const bool priorities = !(std::getenv("TQ_CUDA_STREAM_PRIORITY") && std::string(std::getenv("TQ_CUDA_STREAM_PRIORITY")) == "0");
  int least = 0, greatest = 0;
  if (priorities) TQ_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  TQ_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, background ? least : greatest));
  m_stream = s;
  cublasHandle_t h = nullptr;
  const cublasStatus_t st = cublasCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(s);
    m_stream = nullptr;
    throw CudaError(std::string("cublasCreate failed: ") + cublasGetStatusString(st), 10000 + static_cast<int>(st), false,
                    st == CUBLAS_STATUS_ALLOC_FAILED);
  }
  cublasSetStream(h, s);
  cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
  m_cublas = h;
  TQ_CUDA_CHECK(cudaDeviceGetAttribute(&m_sms, cudaDevAttrMultiProcessorCount, device));
  int optin = 0;
  TQ_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  m_smemOptin = static_cast<size_t>(optin);
  TQ_CUDA_CHECK(cudaDeviceGetAttribute(&m_ccMajor, cudaDevAttrComputeCapabilityMajor, device));
}

Context::~Context() {
  if (m_cublas) cublasDestroy(static_cast<cublasHandle_t>(m_cublas));
  if (m_stream) cudaStreamDestroy(static_cast<cudaStream_t>(m_stream));
}

void Context::sync() {
  TQ_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(m_stream)));
}

void Context::upload(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  TQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(m_stream)));
  sync();
}

void Context::download(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  TQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(m_stream)));
  sync();
}

void Context::copyAsyncH2D(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  TQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(m_stream)));
}

void Context::copyAsyncD2H(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  TQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(m_stream)));
}

void Context::copyAsyncD2D(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  TQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(m_stream)));
}

void Context::memsetAsync(void* dst, int value, size_t bytes) {
  if (!bytes) return;
  TQ_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(m_stream)));
}

size_t Context::freeMemory() const {
  size_t freeB = 0, totalB = 0;
  TQ_CUDA_CHECK(cudaMemGetInfo(&freeB, &totalB));
  return freeB;
}

// ------------------------------------------------------------------------------------------ plans
namespace {

/// A plan's host arrays, gathered into one staging buffer (256-byte aligned pieces) and uploaded with one
/// allocation and one copy; each DevBuf becomes a view of its piece. (Ten cudaMalloc + copy pairs a
/// plan, from 16 sweep threads at once, cost ~8 ms a plan on the H200 host.)
class PlanUpload {
 public:
  template <typename T>
  void add(DevBuf& buf, const std::vector<T>& v) {
    if (v.empty()) return;
    const size_t off = (m_host.size() + 255) / 256 * 256, bytes = v.size() * sizeof(T);
    m_host.resize(off + bytes);
    std::memcpy(m_host.data() + off, v.data(), bytes);
    m_pieces.push_back({&buf, off, bytes});
  }
  void finish(DevBuf& arena) {
    if (m_host.empty()) return;
    arena.ensure(m_host.size());
    // legacy default stream, not a context's (non-blocking) stream: a plan built by one sweep thread does
    // not wait for the kernels another thread has queued; synchronised before any kernel uses the plan
    TQ_CUDA_CHECK(cudaMemcpyAsync(arena.get(), m_host.data(), m_host.size(), cudaMemcpyHostToDevice, 0));
    TQ_CUDA_CHECK(cudaStreamSynchronize(0));
    for (const auto& pc : m_pieces) pc.buf->setView(static_cast<uint8_t*>(arena.get()) + pc.offset, pc.bytes);
  }

 private:
  struct Piece {
    DevBuf* buf;
    size_t offset, bytes;
  };
  std::vector<uint8_t> m_host;
  std::vector<Piece> m_pieces;
};

std::vector<float> transpose(const std::vector<float>& a, int rows, int cols) {
  std::vector<float> t(a.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t[static_cast<size_t>(c) * rows + r] = a[static_cast<size_t>(r) * cols + c];
  return t;
}

}  // namespace

uint64_t planFingerprint(const Quantizer& q) {
  // everything a plan holds is hashed once, when the quantizer is built (Quantizer::contentHash)
  return q.contentHash();
}

std::shared_ptr<DevPlan> buildPlan(Context& ctx, const Quantizer& q) {
  auto p = std::make_shared<DevPlan>();
  const int d = q.dim(), b = q.mseBits(), m = q.projDim();
  p->dim = d;
  p->mseBits = b;
  p->projDim = m;
  p->hadamard = q.rotation().kind() == RotationKind::Hadamard;
  if (p->hadamard) {
    p->hadBlocks = q.rotation().hadamardBlocks();
    for (int blk : p->hadBlocks) p->hadScales.push_back(1.0f / std::sqrt(static_cast<float>(blk)));  // as tq::fwht
    p->signsHost = q.rotation().hadamardSigns();
  }
  if (const Codebook* cb = q.codebookPtr()) {
    p->bndHost = cb->boundariesF;
    p->cenHost = cb->centroidsF;
  }
  p->codeBytes = (static_cast<size_t>(d) * static_cast<size_t>(b) + 7) / 8;
  p->signBytes = (static_cast<size_t>(m) + 7) / 8;
  p->lutGroup = b == 0 ? 1 : std::max(1, (b == 3 ? 6 : 8) / b);  // Quantizer::buildDerived
  p->chunkBits = p->lutGroup * b;
  p->chunks = b ? (d + p->lutGroup - 1) / p->lutGroup : 0;
  p->patterns = b ? (1 << p->chunkBits) : 0;
  p->lutFloats = static_cast<size_t>(p->chunks) * static_cast<size_t>(p->patterns) + p->signBytes * 256;
  p->qjlScale = m > 0 ? static_cast<float>(std::sqrt(M_PI / 2.0) / static_cast<double>(m)) : 0.0f;
  const bool singleBlock = p->hadamard && p->hadBlocks.size() == 1 && p->hadBlocks[0] == d;
  p->fastCompress = d == 128 && (m == 0 || (m % 32 == 0 && m <= 256)) && (!p->hadamard || singleBlock);

  (void)ctx;
  PlanUpload up;
  up.add(p->rot, q.rotation().matrix());
  up.add(p->rotT, transpose(q.rotation().matrix(), d, d));
  up.add(p->signs, p->signsHost);
  up.add(p->bnd, p->bndHost);
  up.add(p->cen, p->cenHost);
  up.add(p->hadBlocksDev, p->hadBlocks);
  up.add(p->hadScalesDev, p->hadScales);
  if (m > 0) {
    const std::vector<float>& S = q.qjlMatrix();
    const std::vector<float>& SRt = q.projectedRotation();
    up.add(p->S, S);
    up.add(p->St, transpose(S, m, d));
    up.add(p->SRt, SRt);
    up.add(p->SRtT, transpose(SRt, m, d));
    std::vector<uint8_t> rs(static_cast<size_t>(m), 0);
    for (int i = 0; i < m; ++i) {
      bool pos = true, neg = true;
      for (int j = 0; j < d; ++j) {
        const float v = SRt[static_cast<size_t>(i) * d + j];
        pos = pos && v > 0.0f;
        neg = neg && v < 0.0f;
      }
      rs[static_cast<size_t>(i)] = static_cast<uint8_t>((pos ? 1 : 0) | (neg ? 2 : 0));
    }
    up.add(p->rowSign, rs);
    if (p->fastCompress) {
      // mma.sync m16n8k16 B fragments of (S R^T * 256) split into fp16 hi + lo: for n8-tile nt, k16-step
      // ks and lane (g = lane/4, t = lane%4): row i = 8 nt + g, k0 = 16 ks + 2 t;
      // {b0_hi, b1_hi, b0_lo, b1_lo} with b0 = (k0, k0+1), b1 = (k0+8, k0+9), low half = lower k.
      const int KS = d / 16, NT = m / 8;
      std::vector<uint32_t> frag(static_cast<size_t>(NT) * KS * 32 * 4);
      auto split = [&](int i, int k, uint16_t& hi, uint16_t& lo) {
        const float v = SRt[static_cast<size_t>(i) * d + k] * 256.0f;
        hi = floatToHalf(v);
        lo = floatToHalf(v - halfToFloat(hi));
      };
      for (int nt = 0; nt < NT; ++nt)
        for (int ks = 0; ks < KS; ++ks)
          for (int lane = 0; lane < 32; ++lane) {
            const int i = nt * 8 + lane / 4, k0 = ks * 16 + 2 * (lane % 4);
            uint16_t h0, l0, h1, l1, h8, l8, h9, l9;
            split(i, k0, h0, l0);
            split(i, k0 + 1, h1, l1);
            split(i, k0 + 8, h8, l8);
            split(i, k0 + 9, h9, l9);
            uint32_t* f = &frag[((static_cast<size_t>(nt) * KS + ks) * 32 + lane) * 4];
            f[0] = static_cast<uint32_t>(h0) | (static_cast<uint32_t>(h1) << 16);
            f[1] = static_cast<uint32_t>(h8) | (static_cast<uint32_t>(h9) << 16);
            f[2] = static_cast<uint32_t>(l0) | (static_cast<uint32_t>(l1) << 16);
            f[3] = static_cast<uint32_t>(l8) | (static_cast<uint32_t>(l9) << 16);
          }
      up.add(p->srtFrag, frag);
    }
  }
  up.finish(p->arena);
  p->fingerprint = planFingerprint(q);
  return p;
}

void DevCompressedBuf::ensure(const DevPlan& p, size_t n) {
  plan = &p;
  count = n;
  codes.ensure(std::max<size_t>(16, n * p.codeBytes + 16));
  signs.ensure(std::max<size_t>(16, n * p.signBytes + 16));
  norms.ensure(std::max<size_t>(16, n * 2 + 16));
  rnorms.ensure(std::max<size_t>(16, n * 2 + 16));
}

DevCompressed DevCompressedBuf::view(size_t offset) const {
  DevCompressed v;
  v.codes = codes.as<uint8_t>() + offset * (plan ? plan->codeBytes : 0);
  v.signs = signs.as<uint8_t>() + offset * (plan ? plan->signBytes : 0);
  v.norms = norms.as<uint16_t>() + offset;
  v.rnorms = rnorms.as<uint16_t>() + offset;
  v.count = count > offset ? count - offset : 0;
  return v;
}

}  // namespace cuda

// ------------------------------------------------------------------------------------------ probe
std::string CudaDeviceInfo::describe() const {
  if (!available) return "no CUDA device (" + error + ")";
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << name << " (" << static_cast<double>(totalMemory) / (1024.0 * 1024.0 * 1024.0) << " GiB, cc " << computeMajor << "." << computeMinor << ", "
     << multiprocessors << " SMs, driver " << driverVersion / 1000 << "." << (driverVersion % 1000) / 10 << ", runtime " << runtimeVersion / 1000
     << "." << (runtimeVersion % 1000) / 10;
  if (peakBandwidthGBs > 0) os << ", " << peakBandwidthGBs / 1000.0 << " TB/s peak";
  os << ")";
  return os.str();
}

CudaDeviceInfo cudaProbe() {
  CudaDeviceInfo info;
  try {
    cudaRuntimeGetVersion(&info.runtimeVersion);
    const cudaError_t de = cudaDriverGetVersion(&info.driverVersion);
    if (de != cudaSuccess || info.driverVersion == 0) {
      info.error = "no CUDA driver found (libcuda could not be loaded)";
      cudaGetLastError();
      return info;
    }
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      info.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
      cudaGetLastError();
      return info;
    }
    if (n == 0) {
      info.error = "the CUDA driver reports no device";
      return info;
    }
    cudaDeviceProp prop;
    const cudaError_t pe = cudaGetDeviceProperties(&prop, 0);
    if (pe != cudaSuccess) {
      info.error = std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(pe);
      cudaGetLastError();
      return info;
    }
    info.name = prop.name;
    info.totalMemory = prop.totalGlobalMem;
    info.computeMajor = prop.major;
    info.computeMinor = prop.minor;
    info.multiprocessors = prop.multiProcessorCount;
    int memClockKHz = 0;
    if (cudaDeviceGetAttribute(&memClockKHz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess && memClockKHz > 0 && prop.memoryBusWidth > 0)
      info.peakBandwidthGBs = 2.0 * static_cast<double>(memClockKHz) * 1e3 * (prop.memoryBusWidth / 8.0) / 1e9;
    cudaGetLastError();
    if (info.computeMajor < 8) {
      info.error = "compute capability " + std::to_string(info.computeMajor) + "." + std::to_string(info.computeMinor) +
                   " is below 8.0, which this build needs";
      return info;
    }
    size_t freeB = 0, totalB = 0;
    const cudaError_t me = cudaMemGetInfo(&freeB, &totalB);
    if (me != cudaSuccess) {
      info.error = std::string("could not create a context on ") + info.name + ": " + cudaGetErrorName(me) + ": " + cudaGetErrorString(me);
      cudaGetLastError();
      return info;
    }
    info.freeMemory = freeB;
    info.available = true;
  } catch (...) {
    info.available = false;
    if (info.error.empty()) info.error = "unexpected failure while probing CUDA";
  }
  return info;
}

}  // namespace tq
