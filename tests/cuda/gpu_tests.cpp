// SPDX-License-Identifier: GPL-3.0-or-later
// GPU tests of the CUDA backend against the CPU engine (the reference). Plain C++ (no Qt): one
// executable, one ctest entry per case (`tq_gpu_tests <case>`). Exit 0 = pass, 1 = fail, 77 = skipped
// (no usable CUDA device).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/device_api.h"
#include "data/safetensors.h"
#include "sweep/sweep.h"
#include "synth/synthetic.h"
#include "util/half.h"

using namespace tq;

namespace {

int g_failures = 0;

#define EXPECT(cond, ...)                           \
  do {                                              \
    if (!(cond)) {                                  \
      ++g_failures;                                 \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                     \
      std::printf("\n");                            \
    }                                               \
  } while (0)

bool haveDevice() {
  const CudaDeviceInfo info = cudaProbe();
  if (!info.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", info.error.c_str());
    return false;
  }
  std::printf("device: %s\n", info.describe().c_str());
  return true;
}

/// Keys-like synthetic rows: per-channel offsets and scales, a few outlier channels.
std::vector<float> synthetic(size_t n, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> off(d), sc(d);
  for (int j = 0; j < d; ++j) {
    off[j] = 0.5f * nd(rng);
    sc[j] = 0.5f + std::fabs(nd(rng)) * ((j % 29 == 3) ? 8.0f : 1.0f);
  }
  std::vector<float> x(n * d);
  for (size_t i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) x[i * d + j] = off[j] + sc[j] * nd(rng);
  return x;
}

/// Appends vectors that exercise special cases: zero, one-hot, +-inf, NaN, tiny, huge (norm overflow).
void appendSpecial(std::vector<float>& x, int d, bool fp32Only) {
  auto add = [&](const std::function<float(int)>& f) {
    for (int j = 0; j < d; ++j) x.push_back(f(j));
  };
  add([](int) { return 0.0f; });
  add([](int j) { return j == 3 ? 1.0f : 0.0f; });
  add([](int j) { return j == 1 ? -2.5f : 0.0f; });
  add([](int j) { return j == 0 ? INFINITY : 1.0f; });
  add([](int j) { return j == 2 ? -INFINITY : 0.5f; });
  add([](int j) { return j == 5 ? NAN : 1.0f; });
  add([](int j) { return (j % 2) ? 0.001f : -0.002f; });
  add([](int j) { return (j % 3) ? 60000.0f : -60000.0f; });
  if (fp32Only) {
    add([](int j) { return (j % 2) ? 1e-30f : -3e-31f; });            // tiny: Markstein guard
    add([](int j) { return (j % 2) ? 1e20f : -1e20f; });              // squares overflow: norm = inf
    add([](int j) { return j == 0 ? 1.0f : 1e-40f; });                // subnormal coordinates
    add([](int j) { return (j % 2) ? 3.0e-39f : 1.0e-38f; });         // subnormal norm region
  }
}

std::vector<uint16_t> toBits(const std::vector<float>& x, CudaInput t) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = t == CudaInput::F16 ? floatToHalf(x[i]) : floatToBf16(x[i]);
  return b;
}

std::vector<float> fromBits(const std::vector<uint16_t>& b, CudaInput t) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = t == CudaInput::F16 ? halfToFloat(b[i]) : bf16ToFloat(b[i]);
  return x;
}

bool sameHalf(uint16_t a, uint16_t b) {
  const bool na = (a & 0x7c00u) == 0x7c00u && (a & 0x3ffu), nb = (b & 0x7c00u) == 0x7c00u && (b & 0x3ffu);
  if (na || nb) return na && nb;  // NaN sign bits may differ between x86 and CUDA NaN propagation
  return a == b;
}

struct Cmp {
  size_t vectors = 0, codeMis = 0, codeTies = 0, normMis = 0, rnormMis = 0, rnormUlp = 0, signMis = 0, signTies = 0, tieVectors = 0;
  double maxSignTieRel = 0, maxCodeTieDist = 0;
  std::string first;
  bool ok() const { return codeMis == 0 && normMis == 0 && rnormMis == 0 && signMis == 0; }
  bool tied() const { return codeTies + rnormUlp + signTies > 0; }
  /// Sums the counts of another comparison (the first failure message is kept).
  void add(const Cmp& o) {
    vectors += o.vectors;
    codeMis += o.codeMis;
    codeTies += o.codeTies;
    normMis += o.normMis;
    rnormMis += o.rnormMis;
    rnormUlp += o.rnormUlp;
    signMis += o.signMis;
    signTies += o.signTies;
    tieVectors += o.tieVectors;
    maxSignTieRel = std::max(maxSignTieRel, o.maxSignTieRel);
    maxCodeTieDist = std::max(maxCodeTieDist, o.maxCodeTieDist);
    if (first.empty()) first = o.first;
  }
  std::string str() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%zu vectors: code errors %zu (ties %zu, max |y-b| %.2e), norm errors %zu, residual-norm errors %zu (1-ulp ties %zu), "
                  "sign errors %zu (ties %zu, max rel %.2e)%s%s",
                  vectors, codeMis, codeTies, maxCodeTieDist, normMis, rnormMis, rnormUlp, signMis, signTies, maxSignTieRel,
                  first.empty() ? "" : "; first: ", first.c_str());
    return buf;
  }
};

constexpr double kSignTie = 2e-6;  // |S r| / (||S_i|| ||r||) below this: a tie
constexpr double kCodeTie = 1e-6;  // |y - boundary| below this: a tie

/// Compares a GPU result with the CPU engine's for the same fp32 input x (n x d).
Cmp compareCompressed(const Quantizer& q, const float* x, size_t n, const CompressedVectors& cpu, const CompressedVectors& gpu, bool allowCodeTies) {
  Cmp c;
  c.vectors = n;
  const int d = q.dim(), m = q.projDim(), b = q.mseBits();
  if (gpu.count != cpu.count || gpu.codes.size() != cpu.codes.size() || gpu.signs.size() != cpu.signs.size()) {
    c.codeMis = 1;
    c.first = "buffer sizes differ";
    return c;
  }
  const std::vector<float>& R = q.rotation().matrix();
  const std::vector<float>& SRt = q.projectedRotation();
  const float* bnd = b ? q.codebookPtr()->boundariesF.data() : nullptr;
  const float* cen = b ? q.codebookPtr()->centroidsF.data() : nullptr;
  std::vector<uint8_t> ia(d), ib(d);
  std::vector<float> sa(m), sbv(m), u(d), y(d), r(d);
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * d;
    float na, ra, nb, rb;
    q.unpack(cpu, v, ia.data(), sa.data(), &na, &ra);
    q.unpack(gpu, v, ib.data(), sbv.data(), &nb, &rb);
    if (!sameHalf(cpu.norms[v], gpu.norms[v])) {
      if (c.first.empty()) c.first = "norm of vector " + std::to_string(v) + ": " + std::to_string(cpu.norms[v]) + " vs " + std::to_string(gpu.norms[v]);
      ++c.normMis;
    }
    // the CPU's unit vector and (double) rotation for tie analysis
    const float nrm = std::sqrt(laneSumSquares(xv, static_cast<size_t>(d)));
    const bool special = !(nrm > 0.0f && std::isfinite(nrm));
    for (int j = 0; j < d; ++j) u[j] = special ? 0.0f : xv[j] / nrm;
    bool vecTie = false;
    if (b) {
      for (int j = 0; j < d; ++j) {
        if (ia[j] == ib[j]) continue;
        double yd = 0;
        for (int k = 0; k < d; ++k) yd += static_cast<double>(R[static_cast<size_t>(j) * d + k]) * u[k];
        double dist = 1e30;
        for (size_t t = 0; t + 1 < (size_t{1} << b); ++t) dist = std::min(dist, std::fabs(yd - bnd[t]));
        if (allowCodeTies && dist <= kCodeTie && !special) {
          ++c.codeTies;
          c.maxCodeTieDist = std::max(c.maxCodeTieDist, dist);
          vecTie = true;
        } else {
          if (c.first.empty())
            c.first = "code of vector " + std::to_string(v) + " coord " + std::to_string(j) + ": " + std::to_string(ia[j]) + " vs " + std::to_string(ib[j]) +
                      " (|y-b| " + std::to_string(dist) + ")";
          ++c.codeMis;
        }
      }
    }
    if (vecTie) {
      ++c.tieVectors;
      continue;  // a different code changes the residual: its norm and signs are not comparable
    }
    if (m > 0) {
      if (!sameHalf(cpu.residualNorms[v], gpu.residualNorms[v])) {
        const int du = std::abs(static_cast<int>(cpu.residualNorms[v]) - static_cast<int>(gpu.residualNorms[v]));
        if (allowCodeTies && du == 1) {
          ++c.rnormUlp;
        } else {
          if (c.first.empty())
            c.first = "residual norm of vector " + std::to_string(v) + ": " + std::to_string(cpu.residualNorms[v]) + " vs " + std::to_string(gpu.residualNorms[v]);
          ++c.rnormMis;
        }
      }
      bool rdone = false;
      double rn = 0;
      for (int i = 0; i < m; ++i) {
        if (sa[i] == sbv[i]) continue;
        if (!rdone) {
          q.rotation().apply(u.data(), y.data(), 1);
          rn = 0;
          for (int j = 0; j < d; ++j) {
            r[j] = nrm * (b ? y[j] - cen[ia[j]] : y[j]);
            rn += static_cast<double>(r[j]) * r[j];
          }
          rn = std::sqrt(rn);
          rdone = true;
        }
        double p = 0, sn = 0;
        for (int j = 0; j < d; ++j) {
          const double sv = SRt[static_cast<size_t>(i) * d + j];
          p += sv * r[j];
          sn += sv * sv;
        }
        const double rel = std::fabs(p) / (std::sqrt(sn) * rn);
        if (!special && std::isfinite(rel) && rel <= kSignTie) {
          ++c.signTies;
          c.maxSignTieRel = std::max(c.maxSignTieRel, rel);
        } else {
          if (c.first.empty()) c.first = "sign " + std::to_string(i) + " of vector " + std::to_string(v) + " (rel " + std::to_string(rel) + ")";
          ++c.signMis;
        }
      }
    }
    (void)bnd;
  }
  return c;
}

QuantConfig cfg(int d, int bits, KeyMode mode, int m, RotationKind rot, uint64_t seed = 42) {
  QuantConfig c;
  c.dim = d;
  c.bits = bits;
  c.mode = mode;
  c.projDim = m;
  c.rotation = rot;
  c.seed = seed;
  return c;
}

/// GPU compression through the device API (typed input), into host CompressedVectors.
CompressedVectors gpuCompress(cuda::Context& ctx, const Quantizer& q, const void* hostX, CudaInput t, size_t n, bool generic) {
  auto plan = cuda::buildPlan(ctx, q);
  const size_t bytes = n * q.dim() * (t == CudaInput::F32 ? 4 : 2);
  cuda::DevBuf x(std::max<size_t>(bytes, 16));
  ctx.upload(x.get(), hostX, bytes);
  cuda::DevCompressedBuf out;
  out.ensure(*plan, n);
  // poison the outputs: every byte must be written
  ctx.memsetAsync(out.codes.get(), 0xA5, out.codes.bytes());
  ctx.memsetAsync(out.signs.get(), 0x5A, out.signs.bytes());
  ctx.memsetAsync(out.norms.get(), 0xFF, out.norms.bytes());
  ctx.memsetAsync(out.rnorms.get(), 0xFF, out.rnorms.bytes());
  cuda::Scratch s;
  if (generic)
    cuda::compressGeneric(ctx, *plan, x.get(), t, n, out.view());
  else
    cuda::compress(ctx, *plan, x.get(), t, n, out.view(), s);
  CompressedVectors cv;
  cv.dim = q.dim();
  cv.mseBits = q.mseBits();
  cv.projDim = q.projDim();
  cv.count = n;
  cv.codes.resize(n * cv.codeBytes());
  cv.signs.resize(n * cv.signBytes());
  cv.norms.resize(n);
  if (q.projDim() > 0) cv.residualNorms.resize(n);
  ctx.download(cv.codes.data(), out.codes.get(), cv.codes.size());
  ctx.download(cv.signs.data(), out.signs.get(), cv.signs.size());
  ctx.download(cv.norms.data(), out.norms.get(), n * 2);
  if (q.projDim() > 0) ctx.download(cv.residualNorms.data(), out.rnorms.get(), n * 2);
  return cv;
}

void report(const std::string& what, const Cmp& c, bool mustPass = true) {
  std::printf("%s %s: %s\n", c.ok() ? "ok  " : "FAIL", what.c_str(), c.str().c_str());
  if (mustPass && !c.ok()) ++g_failures;
}

// ------------------------------------------------------------------------------------------ cases
int caseProbe() {
  const CudaDeviceInfo info = cudaProbe();
  std::printf("cudaProbe: %s\n", info.describe().c_str());
  if (!info.available) return 77;
  EXPECT(!info.name.empty() && info.totalMemory > 0 && info.driverVersion > 0 && info.runtimeVersion > 0, "probe fields");
  std::string why;
  auto b = makeCudaBackend(&why);
  EXPECT(b != nullptr, "makeCudaBackend failed: %s", why.c_str());
  if (b) {
    std::printf("backend: %s / %s\n", b->name().c_str(), b->device().c_str());
    EXPECT(b->name() == "CUDA", "name %s", b->name().c_str());
  }
  return g_failures ? 1 : 0;
}

/// Runs with CUDA_VISIBLE_DEVICES="" (set by ctest): no device -> clear messages and the CPU path.
int caseNoDevice() {
  const CudaDeviceInfo info = cudaProbe();
  std::printf("cudaProbe with no visible device: %s\n", info.describe().c_str());
  EXPECT(!info.available, "a device is visible although CUDA_VISIBLE_DEVICES is empty");
  EXPECT(!info.error.empty(), "no reason given");
  std::string why;
  auto b = makeCudaBackend(&why);
  EXPECT(b == nullptr && !why.empty(), "makeCudaBackend should fail with a reason");
  std::string msg;
  auto a = selectBackend(BackendChoice::Auto, &msg);
  EXPECT(a && a->name() == "CPU" && !msg.empty(), "auto should fall back to the CPU with a message");
  std::printf("auto: %s (%s)\n", a ? a->name().c_str() : "null", msg.c_str());
  auto c = selectBackend(BackendChoice::Cuda, &msg);
  EXPECT(c && c->name() == "CPU" && msg.find("requested") != std::string::npos, "cuda should fall back to the CPU with a message");
  std::printf("cuda: %s (%s)\n", c ? c->name().c_str() : "null", msg.c_str());
  auto p = selectBackend(BackendChoice::Cpu, &msg);
  EXPECT(p && p->name() == "CPU" && msg.empty(), "cpu choice");
  // the CPU path computes
  Quantizer q(cfg(16, 3, KeyMode::Prod, 16, RotationKind::Hadamard));
  const auto x = synthetic(100, 16, 1);
  CompressedVectors cv;
  a->compress(q, x.data(), 100, cv);
  EXPECT(cv.count == 100, "compress on the fallback");
  return g_failures ? 1 : 0;
}

int caseCompressFast() {
  if (!haveDevice()) return 77;
  cuda::Context ctx;
  const int d = 128;
  const size_t nBase = 20000 + 17;  // not a multiple of 32: tail tiles
  for (CudaInput t : {CudaInput::F32, CudaInput::F16, CudaInput::BF16}) {
    auto x = synthetic(nBase, d, 7 + static_cast<int>(t));
    appendSpecial(x, d, t == CudaInput::F32);
    const size_t n = x.size() / d;
    std::vector<uint16_t> bits;
    std::vector<float> ref = x;
    if (t != CudaInput::F32) {
      bits = toBits(x, t);
      ref = fromBits(bits, t);
    }
    const void* host = t == CudaInput::F32 ? static_cast<const void*>(x.data()) : static_cast<const void*>(bits.data());
    struct C {
      int bits;
      KeyMode mode;
      int m;
    };
    std::vector<C> cs = {{1, KeyMode::Mse, 0}, {2, KeyMode::Mse, 0}, {3, KeyMode::Mse, 0}, {4, KeyMode::Mse, 0},
                         {1, KeyMode::Prod, 128}, {2, KeyMode::Prod, 128}, {3, KeyMode::Prod, 128}, {4, KeyMode::Prod, 128},
                         {5, KeyMode::Prod, 128}, {3, KeyMode::Prod, 32}, {3, KeyMode::Prod, 64}, {3, KeyMode::Prod, 96},
                         {3, KeyMode::Prod, 256}, {2, KeyMode::QjlOnly, 128}, {5, KeyMode::Mse, 0}, {6, KeyMode::Mse, 0},
                         {8, KeyMode::Mse, 0}, {6, KeyMode::Prod, 64}, {7, KeyMode::Prod, 256}, {8, KeyMode::Prod, 128}};
    if (t != CudaInput::F32) cs = {{3, KeyMode::Mse, 0}, {4, KeyMode::Mse, 0}, {3, KeyMode::Prod, 128}, {2, KeyMode::Prod, 64}};
    for (const C& c : cs) {
      Quantizer q(cfg(d, c.bits, c.mode, c.m, RotationKind::Hadamard, 42 + c.bits));
      const CompressedVectors cpu = q.compress(ref.data(), n);
      const CompressedVectors gpu = gpuCompress(ctx, q, host, t, n, false);
      const std::string name = std::string(t == CudaInput::F32 ? "fp32" : (t == CudaInput::F16 ? "fp16" : "bf16")) + " hadamard d128 " + q.config().label();
      report(name + " [fused kernel]", compareCompressed(q, ref.data(), n, cpu, gpu, false));
      if (t == CudaInput::F32) {
        const CompressedVectors gen = gpuCompress(ctx, q, host, t, n, true);
        report(name + " [generic kernel]", compareCompressed(q, ref.data(), n, cpu, gen, false));
      }
    }
  }
  return g_failures ? 1 : 0;
}

int caseCompressGeneric() {
  if (!haveDevice()) return 77;
  cuda::Context ctx;
  struct C {
    int d, bits;
    KeyMode mode;
    int m;
    RotationKind rot;
  };
  const std::vector<C> cs = {{8, 2, KeyMode::Prod, 8, RotationKind::Hadamard},   {8, 3, KeyMode::Mse, 0, RotationKind::Hadamard},
                             {64, 3, KeyMode::Prod, 64, RotationKind::Hadamard}, {64, 4, KeyMode::Mse, 0, RotationKind::Hadamard},
                             {80, 3, KeyMode::Prod, 40, RotationKind::Hadamard}, {96, 2, KeyMode::Prod, 96, RotationKind::Hadamard},
                             {256, 3, KeyMode::Prod, 256, RotationKind::Hadamard}, {128, 8, KeyMode::Mse, 0, RotationKind::Hadamard},
                             {128, 6, KeyMode::Prod, 100, RotationKind::Hadamard}, {100, 5, KeyMode::Mse, 0, RotationKind::Hadamard},
                             {64, 3, KeyMode::Prod, 64, RotationKind::Haar},      {8, 2, KeyMode::Prod, 8, RotationKind::Haar},
                             {96, 4, KeyMode::Mse, 0, RotationKind::Haar}};
  for (const C& c : cs) {
    auto x = synthetic(3001, c.d, 100 + c.d + c.bits);
    appendSpecial(x, c.d, true);
    const size_t n = x.size() / c.d;
    Quantizer q(cfg(c.d, c.bits, c.mode, c.m, c.rot, 7));
    const CompressedVectors cpu = q.compress(x.data(), n);
    const CompressedVectors gpu = gpuCompress(ctx, q, x.data(), CudaInput::F32, n, false);
    report("d" + std::to_string(c.d) + " " + q.config().label(), compareCompressed(q, x.data(), n, cpu, gpu, c.rot != RotationKind::Hadamard));
  }
  return g_failures ? 1 : 0;
}

int caseCompressDense() {
  if (!haveDevice()) return 77;
  cuda::Context ctx;
  const int d = 128;
  auto x = synthetic(20000, d, 5);
  appendSpecial(x, d, true);
  const size_t n = x.size() / d;
  for (int bits : {1, 2, 3, 4, 5, 6, 8}) {
    for (KeyMode mode : {KeyMode::Mse, KeyMode::Prod}) {
      Quantizer q(cfg(d, bits, mode, mode == KeyMode::Prod ? 128 : 0, RotationKind::Haar, 11 + bits));
      const CompressedVectors cpu = q.compress(x.data(), n);
      const CompressedVectors gpu = gpuCompress(ctx, q, x.data(), CudaInput::F32, n, false);
      report("haar d128 " + q.config().label() + " [normalise + cuBLAS + fused]", compareCompressed(q, x.data(), n, cpu, gpu, true));
    }
  }
  // fp16 input on the dense path
  {
    const auto bits16 = toBits(x, CudaInput::F16);
    const auto ref = fromBits(bits16, CudaInput::F16);
    Quantizer q(cfg(d, 3, KeyMode::Prod, 64, RotationKind::Haar, 3));
    const CompressedVectors cpu = q.compress(ref.data(), n);
    const CompressedVectors gpu = gpuCompress(ctx, q, bits16.data(), CudaInput::F16, n, false);
    report("haar d128 fp16 " + q.config().label(), compareCompressed(q, ref.data(), n, cpu, gpu, true));
  }
  // the reference's explicit tensors (golden file): unit vectors and non-unit keys
  try {
    SafetensorsFile f(TQ_TEST_DATA_DIR "/seed_golden_d128.safetensors");
    std::vector<float> xs = f.readFloat("d128.unit_vectors");
    const std::vector<float> keys = f.readFloat("d128.keys");
    xs.insert(xs.end(), keys.begin(), keys.end());
    const size_t ng = xs.size() / d;
    for (int b : {2, 3, 4}) {
      const std::string g = "d128.b" + std::to_string(b) + ".prod_m128.";
      const std::vector<float> R = f.readFloat(g + "rotation");
      const std::vector<float> cenF = f.readFloat(g + "centroids");
      const std::vector<double> cen(cenF.begin(), cenF.end());
      Quantizer q(d, Rotation::fromMatrix(d, R), cen, f.readFloat(g + "qjl_matrix"), 128);
      const CompressedVectors cpu = q.compress(xs.data(), ng);
      const CompressedVectors gpu = gpuCompress(ctx, q, xs.data(), CudaInput::F32, ng, false);
      report("golden " + g + " explicit rotation", compareCompressed(q, xs.data(), ng, cpu, gpu, true));
    }
  } catch (const std::exception& e) {
    EXPECT(false, "golden file: %s", e.what());
  }
  return g_failures ? 1 : 0;
}

/// max over rows of max |a - b| / max |a| (at least minScale[r] when given)
double rowRelError(const float* a, const float* b, size_t rows, size_t cols, const double* minScale = nullptr) {
  double worst = 0;
  for (size_t r = 0; r < rows; ++r) {
    double mx = minScale ? minScale[r] : 0.0, err = 0;
    for (size_t c = 0; c < cols; ++c) {
      mx = std::max(mx, std::fabs(static_cast<double>(a[r * cols + c])));
      err = std::max(err, std::fabs(static_cast<double>(a[r * cols + c]) - b[r * cols + c]));
    }
    worst = std::max(worst, mx > 0 ? err / mx : err);
  }
  return worst;
}

size_t countDifferent(const float* a, const float* b, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) k += std::memcmp(a + i, b + i, 4) != 0;
  return k;
}

/// Scores of nq queries against keys on the CUDA backend and on the CPU: max error of the row's yardstick
/// (infinite when the CUDA call fell back to the CPU); *same = bit-identical scores, *plain = max error of
/// the row's largest |score| alone. The yardstick is the row's largest |score| or, when larger, the
/// largest QJL term without cancellation in S q, max_t gamma_t sqrt(pi/2)/m sum_i sum_j |S_ij q_j|: the
/// fp32 rounding of S q (the CPU's Eigen product, the device's FMA chain) scales with that sum, and with few
/// rows all scores of a row can be small by cancellation (m = 1: every score is a multiple of S_0 q).
double scoreError(Backend& cpu, CudaBackend& be, const Quantizer& q, const CompressedVectors& keys, const float* queries, size_t nq, size_t* same = nullptr,
                  double* plain = nullptr) {
  const size_t n = keys.count, d = static_cast<size_t>(q.dim()), m = static_cast<size_t>(q.projDim());
  std::vector<float> a(nq * n), b(nq * n, NAN);
  cpu.scores(q, keys, queries, nq, a.data());
  be.scores(q, keys, queries, nq, b.data());
  if (same) *same = nq * n - countDifferent(a.data(), b.data(), nq * n);
  if (be.fellBack()) return INFINITY;
  std::vector<double> scale(nq, 0.0);
  if (m > 0) {
    double gmax = 0;
    for (size_t t = 0; t < n; ++t) gmax = std::max(gmax, static_cast<double>(halfToFloat(keys.residualNorms[t])));
    const std::vector<float>& S = q.qjlMatrix();
    for (size_t i = 0; i < nq; ++i) {
      double sumAbs = 0;
      for (size_t r = 0; r < m; ++r)
        for (size_t j = 0; j < d; ++j) sumAbs += std::fabs(static_cast<double>(S[r * d + j]) * queries[i * d + j]);
      scale[i] = gmax * std::sqrt(M_PI / 2.0) / static_cast<double>(m) * sumAbs;
    }
  }
  if (plain) *plain = rowRelError(a.data(), b.data(), nq, n);
  return rowRelError(a.data(), b.data(), nq, n, scale.data());
}

/// nq rows of softmax-like weights over n tokens; w[3] = 0 and, in row 1, a causal-style mask (zero beyond
/// token 1000 and in [200, 460)): whole warp steps of the aggregation kernels are skipped.
std::vector<float> testWeights(size_t nq, size_t n) {
  std::vector<float> w(nq * n);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  for (size_t i = 0; i < nq; ++i) {
    double s = 0;
    for (size_t t = 0; t < n; ++t) s += (w[i * n + t] = std::exp(6.0f * ud(rng)));
    for (size_t t = 0; t < n; ++t) w[i * n + t] = static_cast<float>(w[i * n + t] / s);
  }
  w[3] = 0.0f;
  for (size_t t = 0; t < n; ++t)
    if (t > 1000 || (t >= 200 && t < 460)) w[n + t] = 0.0f;
  return w;
}

/// Decompression and weighted sums (testWeights, 5 rows) of values on the CUDA backend against the CPU:
/// reconstructions bit-identical for Hadamard, else within 1e-5 of the row's largest |value|; sums within 1e-5.
struct ValueCheck {
  size_t values = 0, differ = 0;
  double err = 0, werr = 0;
  bool exact = false, decompressOk = false, sumOk = false;
};
ValueCheck compareValues(Backend& cpu, CudaBackend& be, const Quantizer& q, const CompressedVectors& cv) {
  ValueCheck r;
  const size_t n = cv.count, d = static_cast<size_t>(q.dim());
  std::vector<float> a(n * d), b(n * d, NAN);
  cpu.decompress(q, cv, a.data());
  be.decompress(q, cv, b.data());
  r.values = a.size();
  r.err = be.fellBack() ? INFINITY : rowRelError(a.data(), b.data(), n, d);
  r.differ = countDifferent(a.data(), b.data(), a.size());
  r.exact = q.rotation().kind() == RotationKind::Hadamard;
  r.decompressOk = r.exact ? r.differ == 0 : r.err <= 1e-5;
  const size_t nq = 5;
  const std::vector<float> w = testWeights(nq, n);
  std::vector<float> oa(nq * d), ob(nq * d, NAN);
  cpu.weightedSum(q, cv, w.data(), nq, oa.data());
  be.weightedSum(q, cv, w.data(), nq, ob.data());
  r.werr = be.fellBack() ? INFINITY : rowRelError(oa.data(), ob.data(), nq, d);
  r.sumOk = r.werr <= 1e-5;
  return r;
}

int caseScores() {
  if (!haveDevice()) return 77;
  std::string why;
  auto be = makeCudaBackend(&why);
  auto cpu = makeCpuBackend();
  struct C {
    int d, bits;
    KeyMode mode;
    int m;
    RotationKind rot;
    size_t nq;
  };
  const std::vector<C> cs = {{128, 3, KeyMode::Prod, 128, RotationKind::Hadamard, 1}, {128, 3, KeyMode::Prod, 128, RotationKind::Hadamard, 40},
                             {128, 2, KeyMode::Prod, 64, RotationKind::Hadamard, 8},  {128, 4, KeyMode::Prod, 32, RotationKind::Hadamard, 3},
                             {128, 3, KeyMode::Mse, 0, RotationKind::Hadamard, 5},    {128, 4, KeyMode::Mse, 0, RotationKind::Hadamard, 5},
                             {128, 1, KeyMode::Prod, 128, RotationKind::Hadamard, 5}, {128, 3, KeyMode::Prod, 128, RotationKind::Haar, 6},
                             {128, 6, KeyMode::Mse, 0, RotationKind::Hadamard, 2},    {64, 3, KeyMode::Prod, 64, RotationKind::Haar, 4},
                             {80, 3, KeyMode::Prod, 40, RotationKind::Hadamard, 4},   {8, 2, KeyMode::Prod, 8, RotationKind::Hadamard, 9}};
  for (const C& c : cs) {
    Quantizer q(cfg(c.d, c.bits, c.mode, c.m, c.rot, 9));
    const size_t n = 5000;
    const auto x = synthetic(n, c.d, 31 + c.d);
    const auto qs = synthetic(c.nq, c.d, 77 + c.d);
    const CompressedVectors cv = q.compress(x.data(), n);
    size_t same = 0;
    const double err = scoreError(*cpu, static_cast<CudaBackend&>(*be), q, cv, qs.data(), c.nq, &same);
    const bool ok = err <= 1e-5;
    std::printf("%s scores %s nq=%zu: max error %.2e of the row's largest |score| (%zu of %zu bit-identical)\n", ok ? "ok  " : "FAIL",
                q.config().label().c_str(), c.nq, err, same, c.nq * n);
    if (!ok) ++g_failures;
  }
  return g_failures ? 1 : 0;
}

int caseValues() {
  if (!haveDevice()) return 77;
  std::string why;
  auto be = makeCudaBackend(&why);
  auto cpu = makeCpuBackend();
  struct C {
    int d, bits;
    RotationKind rot;
  };
  for (const C& c : std::vector<C>{{128, 4, RotationKind::Hadamard}, {128, 3, RotationKind::Hadamard}, {128, 2, RotationKind::Hadamard},
                                   {128, 8, RotationKind::Hadamard}, {128, 1, RotationKind::Hadamard}, {128, 6, RotationKind::Hadamard},
                                   {128, 4, RotationKind::Haar}, {64, 3, RotationKind::Hadamard},
                                   {80, 3, RotationKind::Hadamard}, {8, 3, RotationKind::Haar}}) {
    Quantizer q(cfg(c.d, c.bits, KeyMode::Mse, 0, c.rot, 13));
    const size_t n = 7000;
    auto x = synthetic(n, c.d, 3 + c.d);
    const CompressedVectors cv = q.compress(x.data(), n);
    const ValueCheck v = compareValues(*cpu, static_cast<CudaBackend&>(*be), q, cv);
    std::printf("%s decompress %s: %zu of %zu values differ, max error %.2e%s\n", v.decompressOk ? "ok  " : "FAIL", q.config().label().c_str(), v.differ,
                v.values, v.err, v.exact ? " (Hadamard: bit-identical expected)" : "");
    std::printf("%s weightedSum %s: max error %.2e of the row's largest |value|\n", v.sumOk ? "ok  " : "FAIL", q.config().label().c_str(), v.werr);
    if (!v.decompressOk || !v.sumOk) ++g_failures;
  }
  return g_failures ? 1 : 0;
}

/// Real keys/values/queries (stories260K dumps, fp16 and fp32 files) and the reference's golden inputs.
int caseRealData() {
  if (!haveDevice()) return 77;
  std::string why;
  auto beBase = makeCudaBackend(&why);
  auto& be = static_cast<CudaBackend&>(*beBase);
  auto cpu = makeCpuBackend();
  for (const char* file : {"stories260K_lily_512.safetensors", "stories260K_tom_256_f32.safetensors"}) {
    SafetensorsFile f(std::string(TQ_TEST_DATA_DIR "/") + file);
    for (int layer = 0; layer < 5; ++layer) {
      const std::string pre = "layers." + std::to_string(layer) + ".";
      const TensorInfo& kt = f.require(pre + "k");
      const int heads = static_cast<int>(kt.shape[0]), seq = static_cast<int>(kt.shape[1]), d = static_cast<int>(kt.shape[2]);
      const std::vector<float> K = f.readFloat(kt), V = f.readFloat(pre + "v"), Qall = f.readFloat(pre + "q");
      const size_t n = static_cast<size_t>(heads) * seq;
      for (RotationKind rot : {RotationKind::Hadamard, RotationKind::Haar}) {
        for (int bits : {2, 3, 4}) {
          Quantizer kq(cfg(d, bits, KeyMode::Prod, d, rot, 100 + layer));
          Quantizer vq(cfg(d, bits, KeyMode::Mse, 0, rot, 200 + layer));
          CompressedVectors kc, kg, vc, vg;
          cpu->compress(kq, K.data(), n, kc);
          if (kt.dtype == DType::F16) {
            // raw fp16 bits straight from the file
            be.compressTyped(kq, f.bytes(kt), CudaInput::F16, n, kg);
          } else {
            be.compress(kq, K.data(), n, kg);
          }
          cpu->compress(vq, V.data(), n, vc);
          be.compress(vq, V.data(), n, vg);
          const bool ties = rot != RotationKind::Hadamard;
          const std::string tag = std::string(file) + " layer " + std::to_string(layer) + " ";
          report(tag + "keys " + kq.config().label(), compareCompressed(kq, K.data(), n, kc, kg, ties));
          report(tag + "values " + vq.config().label(), compareCompressed(vq, V.data(), n, vc, vg, ties));
          // real queries of the first query head against kv head 0; attention on CUDA vs CPU pieces
          const size_t nq = 16;
          std::vector<float> qs(Qall.begin(), Qall.begin() + nq * d);
          CompressedVectors k0, v0;
          cpu->compress(kq, K.data(), static_cast<size_t>(seq), k0);
          cpu->compress(vq, V.data(), static_cast<size_t>(seq), v0);
          std::vector<float> sa(nq * seq), sb(nq * seq);
          cpu->scores(kq, k0, qs.data(), nq, sa.data());
          be.scores(kq, k0, qs.data(), nq, sb.data());
          const double err = rowRelError(sa.data(), sb.data(), nq, static_cast<size_t>(seq));
          EXPECT(err <= 1e-5 && !be.fellBack(), "%s real-query scores error %.2e", tag.c_str(), err);
          std::vector<float> att(nq * d), ref(nq * d);
          const float scale = 1.0f / std::sqrt(static_cast<float>(d));
          be.attention(kq, k0, vq, v0, qs.data(), nq, scale, att.data());
          std::vector<float> w(nq * seq);
          for (size_t i = 0; i < nq; ++i) {
            double mx = -1e300, z = 0;
            for (int t = 0; t < seq; ++t) mx = std::max(mx, static_cast<double>(scale) * sa[i * seq + t]);
            for (int t = 0; t < seq; ++t) z += std::exp(static_cast<double>(scale) * sa[i * seq + t] - mx);
            for (int t = 0; t < seq; ++t) w[i * seq + t] = static_cast<float>(std::exp(static_cast<double>(scale) * sa[i * seq + t] - mx) / z);
          }
          cpu->weightedSum(vq, v0, w.data(), nq, ref.data());
          const double aerr = rowRelError(ref.data(), att.data(), nq, static_cast<size_t>(d));
          EXPECT(aerr <= 1e-4 && !be.fellBack(), "%s attention error %.2e", tag.c_str(), aerr);
        }
      }
    }
  }
  return g_failures ? 1 : 0;
}

/// Row-by-row differences between two runs of one grid (the CPU backend's, then the CUDA backend's).
struct SweepDiff {
  bool sameRows = true;   ///< same row count, variants, layers, heads and bytes per vector
  double worst[11] = {0}; ///< logit cos, attention cos, KL, top-5, output error, bias, variance, slope, correlation, key / value vector MSE
  double biasFloor1e3 = 0; ///< the bias's worst relative difference with the 1e-3 floor alone (reported only)
  size_t rows = 0, compared = 0, top1Diff = 0;
  /// The tolerances: relative (floor 1e-3) 1e-4 for the cosines, top-5, slope and correlation, errorTol for
  /// the metrics of the estimation error itself (KL, output error, bias, variance), 1e-6 for the vector
  /// MSEs (same reconstructions); top-1 may flip at near-ties of the argmax (< 2 % of the compared rows).
  bool ok(double errorTol) const {
    bool r = sameRows;
    for (int k = 0; k < 9; ++k) r = r && worst[k] <= ((k == 2 || k == 4 || k == 5 || k == 6) ? errorTol : 1e-4);
    return r && worst[9] <= 1e-6 && worst[10] <= 1e-6 && top1Diff * 50 <= compared;
  }
  std::string str() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%zu rows (%zu compared); worst rel. diff logitcos %.1e attcos %.1e KL %.1e top5 %.1e out %.1e bias %.1e (floor 1e-3 alone: %.1e) "
                  "var %.1e slope %.1e corr %.1e kMSE %.1e vMSE %.1e; top-1 differs in %zu rows%s",
                  rows, compared, worst[0], worst[1], worst[2], worst[3], worst[4], worst[5], biasFloor1e3, worst[6], worst[7], worst[8], worst[9], worst[10],
                  top1Diff,
                  sameRows ? "" : "; THE ROWS DIFFER");
    return buf;
  }
};

/// Metric differences per row; rows for which skip(row) holds are only checked for identity (same variant,
/// head, sizes). The bias is a mean of the estimates' errors, so its floor also includes their standard
/// error sqrt(variance / tokens): a mean of errors near zero is otherwise compared to 1e-7 absolute, below
/// what the exact fp32 logits (cuBLAS vs the CPU's summation order) reproduce over a few hundred keys.
SweepDiff diffSweeps(const SweepResult& a, const SweepResult& b, const std::function<bool(const SweepRow&)>& skip = {}) {
  SweepDiff r;
  r.rows = b.rows.size();
  r.sameRows = a.rows.size() == b.rows.size();
  for (size_t i = 0; r.sameRows && i < a.rows.size(); ++i) {
    const SweepRow &x = a.rows[i], &y = b.rows[i];
    if (!(x.key == y.key) || x.valueBits != y.valueBits || x.layer != y.layer || x.qHead != y.qHead || x.keyBytesPerVector != y.keyBytesPerVector ||
        x.valueBytesPerVector != y.valueBytesPerVector) {
      r.sameRows = false;
      break;
    }
    if (skip && skip(x)) continue;
    ++r.compared;
    const double pairs[11][2] = {{x.m.logitCosine, y.m.logitCosine}, {x.m.attentionCosine, y.m.attentionCosine}, {x.m.kl, y.m.kl},
                                 {x.m.top5, y.m.top5}, {x.m.outputError, y.m.outputError}, {x.m.bias, y.m.bias},
                                 {x.m.variance, y.m.variance}, {x.m.slope, y.m.slope}, {x.m.correlation, y.m.correlation},
                                 {x.keyVectorMse, y.keyVectorMse}, {x.valueVectorMse, y.valueVectorMse}};
    for (int k = 0; k < 11; ++k) {
      double floor = 1e-3;
      if (k == 5) floor = std::max(floor, std::sqrt(std::max(0.0, x.m.variance) / static_cast<double>(std::max<size_t>(1, x.tokens))));
      const double e = std::fabs(pairs[k][0] - pairs[k][1]) / std::max(floor, std::fabs(pairs[k][0]));
      r.worst[k] = std::max(r.worst[k], e);
    }
    r.biasFloor1e3 = std::max(r.biasFloor1e3, std::fabs(x.m.bias - y.m.bias) / std::max(1e-3, std::fabs(x.m.bias)));
    if (x.m.top1 != y.m.top1) ++r.top1Diff;
  }
  return r;
}

/// runSweep through the CUDA backend (whole tasks on the device: evaluateTask) against the CPU backend:
/// same grid, same rows; metrics within tolerances set by the scores' own CPU/GPU difference (<= 5e-7 of
/// the row's largest |score|) and the fp32 exact logits (cuBLAS vs the CPU's sum order).
int caseSweep() {
  if (!haveDevice()) return 77;
  setenv("TQ_CUDA_RESIDENT", "1", 1);  // resident cells (off by default until measured on a device), checked below
  std::string why;
  auto be = makeCudaBackend(&why);
  auto cpu = makeCpuBackend();
  struct C {
    SyntheticKind kind;
    int layers, qHeads, kvHeads, tokens, dim;
    RotationKind rot;
    QuerySource qs;
  };
  for (const C& c : std::vector<C>{{SyntheticKind::OutlierChannels, 2, 4, 2, 700, 128, RotationKind::Hadamard, QuerySource::Dump},
                                   {SyntheticKind::LowRank, 1, 3, 1, 300, 64, RotationKind::Haar, QuerySource::Dump},
                                   {SyntheticKind::OutlierChannels, 1, 2, 2, 513, 128, RotationKind::Hadamard, QuerySource::Random},
                                   {SyntheticKind::OutlierChannels, 1, 2, 1, 600, 128, RotationKind::Haar, QuerySource::Dump}}) {
    SyntheticSpec spec;
    spec.kind = c.kind;
    spec.layers = c.layers;
    spec.qHeads = c.qHeads;
    spec.kvHeads = c.kvHeads;
    spec.tokens = c.tokens;
    spec.headDim = c.dim;
    spec.seed = 9;
    SyntheticKv src(spec);
    SweepConfig sc;
    sc.keyBits = {1, 2, 3, 4};
    sc.valueBits = {2, 4};
    sc.modes = {KeyMode::Mse, KeyMode::Prod, KeyMode::QjlOnly};
    sc.projDims = {c.dim / 4, c.dim};
    sc.rotation = c.rot;
    sc.queries = c.qs;
    sc.maxQueries = 16;
    const SweepResult a = runSweep(src, sc, *cpu);
    const SweepResult b = runSweep(src, sc, *be);
    const SweepDiff diff = diffSweeps(a, b);
    const bool ok = diff.ok(1e-4) && !static_cast<CudaBackend&>(*be).fellBack(true);
    std::printf("%s sweep %s d=%d %s %s (CPU %.2f s, CUDA %.2f s): %s\n", ok ? "ok  " : "FAIL", syntheticKindName(c.kind), c.dim, rotationName(c.rot),
                querySourceName(c.qs), a.seconds, b.seconds, diff.str().c_str());
    if (!ok) ++g_failures;
    // Resident cells: a second sweep of the same source reads every cell's inputs and exact references
    // kept on the device by the first and gives the same numbers bit for bit; a new source object (the same
    // content) is uploaded again
    {
      auto& cb = static_cast<CudaBackend&>(*be);
      const auto r0 = cb.residentStats();
      const SweepResult again = runSweep(src, sc, *be);
      const auto r1 = cb.residentStats();
      SyntheticKv twin(spec);
      const SweepResult fresh = runSweep(twin, sc, *be);
      const auto r2 = cb.residentStats();
      auto identical = [](const SweepResult& x, const SweepResult& y) {
        if (x.rows.size() != y.rows.size()) return false;
        for (size_t i = 0; i < x.rows.size(); ++i) {
          const SweepRow &p = x.rows[i], &q = y.rows[i];
          const AttentionMetrics &m = p.m, &n = q.m;
          if (!(p.key == q.key && p.valueBits == q.valueBits && p.layer == q.layer && p.qHead == q.qHead && p.keyVectorMse == q.keyVectorMse &&
                p.valueVectorMse == q.valueVectorMse && m.logitCosine == n.logitCosine && m.attentionCosine == n.attentionCosine && m.kl == n.kl &&
                m.top1 == n.top1 && m.top5 == n.top5 && m.bias == n.bias && m.variance == n.variance && m.slope == n.slope &&
                m.correlation == n.correlation && m.outputError == n.outputError))
            return false;
        }
        return true;
      };
      const long long cells = static_cast<long long>(c.layers) * c.kvHeads;
      const bool resOk = identical(b, again) && identical(b, fresh) && r1.hits - r0.hits >= cells && r1.fills == r0.fills &&
                         r2.fills - r1.fills == cells && r2.hits == r1.hits && r2.bytes > 0;
      std::printf("%s sweep %s d=%d: resident cells: again %lld read, %lld filled; a new source %lld filled; same numbers: %s / %s\n",
                  resOk ? "ok  " : "FAIL", syntheticKindName(c.kind), c.dim, r1.hits - r0.hits, r1.fills - r0.fills, r2.fills - r1.fills,
                  identical(b, again) ? "yes" : "NO", identical(b, fresh) ? "yes" : "NO");
      if (!resOk) ++g_failures;
    }
    // The shared work (one evaluation per distinct quantizer, MSE stages, S q and the keys' rotation once per
    // task) gives the numbers of evaluating every variant alone, bit for bit, except the output errors: a
    // chunk's outputs are one cuBLAS product over all its variants, whose kernel (summation order) cuBLAS
    // picks by the product's size, and the distinct evaluation has fewer variants per chunk
    setenv("TQ_CUDA_SWEEP_SHARE", "0", 1);
    setenv("TQ_CUDA_SWEEP_ROTATE_ONCE", "0", 1);
    setenv("TQ_SWEEP_ALL_VARIANTS", "1", 1);
    const SweepResult alone = runSweep(src, sc, *be);
    unsetenv("TQ_CUDA_SWEEP_SHARE");
    unsetenv("TQ_CUDA_SWEEP_ROTATE_ONCE");
    unsetenv("TQ_SWEEP_ALL_VARIANTS");
    size_t differ = alone.rows.size() == b.rows.size() ? 0 : 1;
    double outWorst = 0;
    for (size_t i = 0; i < std::min(alone.rows.size(), b.rows.size()); ++i) {
      const SweepRow &x = alone.rows[i], &y = b.rows[i];
      const AttentionMetrics &p = x.m, &q = y.m;
      const bool same = x.key == y.key && x.valueBits == y.valueBits && x.layer == y.layer && x.qHead == y.qHead && x.keyVectorMse == y.keyVectorMse &&
                        x.valueVectorMse == y.valueVectorMse && p.logitCosine == q.logitCosine && p.attentionCosine == q.attentionCosine &&
                        p.kl == q.kl && p.top1 == q.top1 && p.top5 == q.top5 && p.bias == q.bias && p.variance == q.variance && p.slope == q.slope &&
                        p.correlation == q.correlation;
      differ += same ? 0 : 1;
      outWorst = std::max(outWorst, std::fabs(p.outputError - q.outputError) / std::max(1e-3, std::fabs(p.outputError)));
    }
    const bool shareOk = differ == 0 && outWorst <= 1e-5;
    std::printf("%s sweep %s d=%d: shared work vs every variant alone on the device: %zu of %zu rows differ in a key metric; output error "
                "within %.1e relative\n",
                shareOk ? "ok  " : "FAIL", syntheticKindName(c.kind), c.dim, differ, b.rows.size(), outWorst);
    if (!shareOk) ++g_failures;
  }
  return g_failures ? 1 : 0;
}

/// Key variants and value widths of a one-layer, one-kv-head sweep whose device codes (cuda::compress, as
/// evaluateTask runs it) differ from the CPU's at ties: a coordinate within 1e-6 of a boundary after the
/// dense rotation (many boundaries at 5-8 bits), a projection within 2e-6 relative of zero. Their rows
/// compare different keys or values and are left out of the metric comparison; a difference that is not
/// a tie is a failure (counted here).
struct SweepTies {
  std::vector<KeyVariant> keys;
  std::vector<int> valueBits;
  Cmp total;
  bool skip(const SweepRow& r) const {
    return std::find(keys.begin(), keys.end(), r.key) != keys.end() || std::find(valueBits.begin(), valueBits.end(), r.valueBits) != valueBits.end();
  }
};
SweepTies sweepTies(const KvSource& src, const SweepConfig& sc, Backend& cpu, CudaBackend& be) {
  SweepTies t;
  const int d = src.shape().headDim;
  const std::vector<float> K = src.keys(0, 0), V = src.values(0, 0);
  const size_t n = K.size() / static_cast<size_t>(d);
  auto tied = [&](KeyMode mode, int bits, int m, bool isValue) {
    QuantConfig qc = cfg(d, bits, mode, m, sc.rotation, layerSeed(sc.seed, 0, isValue));  // as runSweep builds them
    qc.law = sc.law;
    qc.referenceOneBit = sc.referenceOneBit;
    const Quantizer q(qc);
    const std::vector<float>& x = isValue ? V : K;
    CompressedVectors a, b;
    cpu.compress(q, x.data(), n, a);
    be.compress(q, x.data(), n, b);
    const Cmp c = compareCompressed(q, x.data(), n, a, b, sc.rotation != RotationKind::Hadamard);
    if (!c.ok() || be.fellBack()) report(std::string("sweep ") + (isValue ? "values " : "keys ") + q.config().label(), c);
    if (be.fellBack()) ++g_failures;
    t.total.add(c);
    return c.tied();
  };
  for (const KeyVariant& v : keyVariants(sc, d))
    if (tied(v.mode, v.bits, v.projDim, false)) t.keys.push_back(v);
  for (int vb : sc.valueBits)
    if (tied(KeyMode::Mse, vb, 0, true)) t.valueBits.push_back(vb);
  return t;
}

/// Everything the app can ask for: key bits 1-8 x MSE / Prod (also the reference's 1 + 1 bits) /
/// QJL-only x m in {1, 8, d/4, d/2, d, 2d, 40, d+8, 30} (the GUI's grid uses d/2, d, 2d; 30 and 40 are not
/// multiples of 8 or 32) x d in {256, 128, 96, 64, 16, 8} x Hadamard / Haar. Each key configuration is
/// compressed on the device (the fused kernel where it applies, and the generic one at d = 128) and
/// compared with the CPU bit for bit (Haar: except ties), scored through the backend with 3 queries (each
/// block prepares its query) and with 20 (prepareQueries first) against the CPU's scores; every MSE width
/// (the value widths) is decompressed and aggregated. Then runSweep over the same grid, all value widths,
/// through evaluateTask against the CPU backend. 300 keys (+ 12 special vectors for compression), so the
/// ~1200 configurations take seconds. Largest d first, so that a crash at a small d (8-bit codes at
/// d <= 64 once divided by zero in the scoring call) comes after the results of the larger ones.
int caseGrid() {
  if (!haveDevice()) return 77;
  cuda::Context ctx;
  std::string why;
  auto beBase = makeCudaBackend(&why);
  auto& be = static_cast<CudaBackend&>(*beBase);
  auto cpu = makeCpuBackend();
  const size_t nKeys = 300;
  size_t configs = 0;
  for (int d : {256, 128, 96, 64, 16, 8}) {
    std::vector<int> ms;
    for (int m : {1, 8, d / 4, d / 2, d, 2 * d, 40, d + 8, 30})
      if (std::find(ms.begin(), ms.end(), m) == ms.end()) ms.push_back(m);
    auto x = synthetic(nKeys, d, 500 + d);
    appendSpecial(x, d, true);
    const size_t n = x.size() / d;
    const auto qs = synthetic(20, d, 900 + d);
    for (RotationKind rot : {RotationKind::Hadamard, RotationKind::Haar}) {
      const auto t0 = std::chrono::steady_clock::now();
      struct K {
        int bits;
        KeyMode mode;
        int m;
        bool reference;
      };
      std::vector<K> ks;
      for (int b = 1; b <= 8; ++b) ks.push_back({b, KeyMode::Mse, 0, false});
      for (int m : ms) {
        for (int b = 1; b <= 8; ++b) ks.push_back({b, KeyMode::Prod, m, false});
        ks.push_back({1, KeyMode::Prod, m, true});
        ks.push_back({1, KeyMode::QjlOnly, m, false});  // QJL-only ignores the bit width
      }
      Cmp fused, generic;
      double scoreErr = 0, scorePlain = 0, decErr = 0, sumErr = 0;
      size_t decDiffer = 0, failed = 0;
      for (const K& k : ks) {
        QuantConfig c = cfg(d, k.bits, k.mode, k.m, rot, 21 + static_cast<uint64_t>(k.bits));
        c.referenceOneBit = k.reference;
        const Quantizer q(c);
        const std::string name = "grid d" + std::to_string(d) + " " + q.config().label();
        const int before = g_failures;
        // compression: bit-identical codes, norms and signs (Haar: except ties)
        const CompressedVectors cc = q.compress(x.data(), n);
        const bool ties = rot != RotationKind::Hadamard;
        const Cmp cf = compareCompressed(q, x.data(), n, cc, gpuCompress(ctx, q, x.data(), CudaInput::F32, n, false), ties);
        if (!cf.ok()) report(name + " [compress]", cf);
        fused.add(cf);
        if (d == 128) {
          const Cmp cg = compareCompressed(q, x.data(), n, cc, gpuCompress(ctx, q, x.data(), CudaInput::F32, n, true), ties);
          if (!cg.ok()) report(name + " [generic kernel]", cg);
          generic.add(cg);
        }
        // scores (keys without the special vectors, whose scores are inf / NaN)
        const CompressedVectors keys = q.compress(x.data(), nKeys);
        for (size_t nq : {size_t{3}, size_t{20}}) {
          double plain = 0;
          const double err = scoreError(*cpu, be, q, keys, qs.data(), nq, nullptr, &plain);
          EXPECT(err <= 1e-5, "%s scores nq=%zu: max error %.2e of the row's yardstick (%.2e of its largest |score|)", name.c_str(), nq, err, plain);
          scoreErr = std::max(scoreErr, err);
          scorePlain = std::max(scorePlain, plain);
        }
        // MSE configurations are the value widths: decompression, weighted sums
        if (k.mode == KeyMode::Mse) {
          const ValueCheck v = compareValues(*cpu, be, q, keys);
          EXPECT(v.decompressOk, "%s decompress: %zu of %zu values differ, max error %.2e", name.c_str(), v.differ, v.values, v.err);
          EXPECT(v.sumOk, "%s weightedSum: max error %.2e", name.c_str(), v.werr);
          decErr = std::max(decErr, v.err);
          sumErr = std::max(sumErr, v.werr);
          decDiffer += v.differ;
        }
        failed += g_failures != before;
        ++configs;
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%s grid d=%d %s: %zu key configurations (%.2f s), %zu failed; compression %s%s%s; scores max error %.2e of the row's yardstick "
                  "(%.2e of its largest |score|); decompress max error %.2e (%zu values differ), weightedSum %.2e\n",
                  failed ? "FAIL" : "ok  ", d, rotationName(rot), ks.size(), secs, failed, fused.str().c_str(), d == 128 ? "; generic kernel " : "",
                  d == 128 ? generic.str().c_str() : "", scoreErr, scorePlain, decErr, decDiffer, sumErr);
      // the same grid through runSweep: evaluateTask on the device against the CPU backend's per-call path
      SyntheticSpec spec;
      spec.layers = 1;
      spec.qHeads = 2;
      spec.kvHeads = 1;
      spec.tokens = static_cast<int>(nKeys);
      spec.headDim = d;
      spec.seed = 11;
      const SyntheticKv src(spec);
      for (bool reference : {false, true}) {
        SweepConfig sc;
        sc.keyBits = reference ? std::vector<int>{1} : std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8};
        sc.valueBits = reference ? std::vector<int>{3} : std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8};
        sc.modes = reference ? std::vector<KeyMode>{KeyMode::Prod} : std::vector<KeyMode>{KeyMode::Mse, KeyMode::Prod, KeyMode::QjlOnly};
        sc.projDims = ms;
        sc.rotation = rot;
        sc.referenceOneBit = reference;
        sc.maxQueries = 8;
        const SweepResult a = runSweep(src, sc, *cpu);
        const SweepResult b = runSweep(src, sc, be);
        const SweepTies t = sweepTies(src, sc, *cpu, be);
        const SweepDiff diff = diffSweeps(a, b, [&](const SweepRow& r) { return t.skip(r); });
        // 5-8-bit keys estimate the logits to ~1e-3 and better, so the CPU/GPU differences of the logits
        // (~1e-7 relative: the exact ones from cuBLAS vs Eigen, the estimates within 5e-7 of the row's largest)
        // are up to ~1e-4 of the errors that KL, output error, bias and variance measure (1.6e-4 measured):
        // 1e-3 for those (gpu_sweep's 1-4-bit grids keep 1e-4); a wrong table gives 1e-2 to 1e-1.
        const bool ok = diff.ok(1e-3) && !be.fellBack(true) && t.total.ok();
        std::printf("%s grid sweep d=%d %s%s (CPU %.2f s, CUDA %.2f s): %s; device codes differ at ties for %zu key variants and %zu value widths "
                    "(their rows not compared): %s\n",
                    ok ? "ok  " : "FAIL", d, rotationName(rot), reference ? " 1+1-bit reference" : "", a.seconds, b.seconds, diff.str().c_str(),
                    t.keys.size(), t.valueBits.size(), t.total.str().c_str());
        if (!ok) ++g_failures;
      }
    }
  }
  std::printf("%zu key configurations\n", configs);
  return g_failures ? 1 : 0;
}

int caseFallback() {
  if (!haveDevice()) return 77;
  // 1. a real out-of-memory error is reported, recoverable, and the context keeps working
  {
    cuda::Context ctx;
    bool threw = false;
    try {
      cuda::DevBuf huge(size_t{1} << 50);
    } catch (const cuda::CudaError& e) {
      threw = true;
      std::printf("ok   out of memory reported: %s (oom=%d sticky=%d)\n", e.what(), e.outOfMemory(), e.sticky());
      EXPECT(e.outOfMemory() && !e.sticky(), "OOM classification");
    }
    EXPECT(threw, "a 1 PiB allocation did not fail");
    cuda::DevBuf small(1024);
    ctx.memsetAsync(small.get(), 0, 1024);
    ctx.sync();
  }
  // 2. an error inside a backend call (injected through TQ_CUDA_INJECT_ERROR) -> CPU result + reason
  Quantizer q(cfg(128, 3, KeyMode::Prod, 128, RotationKind::Hadamard));
  const auto x = synthetic(1000, 128, 3);
  auto cpu = makeCpuBackend();
  CompressedVectors ref;
  cpu->compress(q, x.data(), 1000, ref);
  {
    setenv("TQ_CUDA_INJECT_ERROR", "compress", 1);
    std::string why;
    auto b = makeCudaBackend(&why);
    auto& cb = static_cast<CudaBackend&>(*b);
    CompressedVectors cv;
    b->compress(q, x.data(), 1000, cv);
    EXPECT(cb.fellBack() && !cb.fallbackReason().empty(), "injected error did not fall back");
    EXPECT(cv.codes == ref.codes && cv.signs == ref.signs && cv.norms == ref.norms && cv.residualNorms == ref.residualNorms, "fallback result differs");
    EXPECT(b->name() == "CUDA", "a recoverable error must keep the CUDA backend");
    std::printf("ok   injected recoverable error: %s\n", cb.fallbackReason().c_str());
    unsetenv("TQ_CUDA_INJECT_ERROR");
    CompressedVectors cv2;
    b->compress(q, x.data(), 1000, cv2);
    EXPECT(!cb.fellBack() && cv2.codes == ref.codes, "CUDA path after a recoverable error");
  }
  {
    setenv("TQ_CUDA_INJECT_ERROR", "sticky", 1);
    std::string why;
    auto b = makeCudaBackend(&why);
    auto& cb = static_cast<CudaBackend&>(*b);
    std::vector<float> s1(1000), s2(1000);
    b->scores(q, ref, x.data(), 1, s1.data());
    cpu->scores(q, ref, x.data(), 1, s2.data());
    EXPECT(cb.fellBack() && b->name() == "CPU" && s1 == s2, "sticky error should move the backend to the CPU for good");
    std::printf("ok   injected sticky error: name %s, device %s\n", b->name().c_str(), b->device().c_str());
    unsetenv("TQ_CUDA_INJECT_ERROR");
  }
  return g_failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // line-buffered: when a case dies on a signal (the grid's former SIGFPE), ctest's log keeps every line
  // printed before it (a pipe is block-buffered, and the buffer is lost with the process)
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::map<std::string, std::function<int()>> cases = {
      {"probe", caseProbe},           {"no_device", caseNoDevice},  {"compress_fast", caseCompressFast}, {"compress_generic", caseCompressGeneric},
      {"compress_dense", caseCompressDense}, {"scores", caseScores}, {"values", caseValues},          {"real_data", caseRealData},
      {"fallback", caseFallback},     {"sweep", caseSweep},          {"grid", caseGrid}};
  if (argc != 2 || !cases.count(argv[1])) {
    std::printf("usage: %s <case>; cases:", argv[0]);
    for (const auto& c : cases) std::printf(" %s", c.first.c_str());
    std::printf("\n");
    return 2;
  }
  try {
    const int rc = cases.at(argv[1])();
    if (rc == 77) return 77;
    std::printf("%s: %s\n", argv[1], g_failures ? "FAILED" : "passed");
    return g_failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("FAIL: exception: %s\n", e.what());
    return 1;
  }
}
