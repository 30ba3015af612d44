// SPDX-License-Identifier: GPL-3.0-or-later
#include "metrics/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace tq {

void AttentionMetrics::accumulate(const AttentionMetrics& m) {
  logitCosine += m.logitCosine;
  attentionCosine += m.attentionCosine;
  kl += m.kl;
  top1 += m.top1;
  top5 += m.top5;
  outputError += m.outputError;
  bias += m.bias;
  variance += m.variance;
  slope += m.slope;
  correlation += m.correlation;
  ++count;
}

void AttentionMetrics::finish() {
  if (count == 0) return;
  const double k = static_cast<double>(count);
  logitCosine /= k;
  attentionCosine /= k;
  kl /= k;
  top1 /= k;
  top5 /= k;
  outputError /= k;
  bias /= k;
  variance /= k;
  slope /= k;
  correlation /= k;
}

double cosine(const double* a, const double* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  if (aa == 0 || bb == 0) return aa == bb ? 1.0 : 0.0;
  return ab / std::sqrt(aa * bb);
}

namespace {
/// p_i = exp(scale s_i - max); returns their sum, *mx = max_i scale s_i.
double shiftedExp(const float* s, size_t n, double scale, double* p, double* mx) {
  double m = -INFINITY;
  for (size_t i = 0; i < n; ++i) m = std::max(m, scale * s[i]);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    p[i] = std::exp(scale * s[i] - m);
    sum += p[i];
  }
  *mx = m;
  return sum;
}
}  // namespace

void softmax(const float* s, size_t n, double scale, double* p) {
  if (n == 0) return;
  double mx = 0;
  const double sum = shiftedExp(s, n, scale, p, &mx);
  for (size_t i = 0; i < n; ++i) p[i] /= sum;
}

void innerProductStats(const double* exact, const double* est, size_t n, AttentionMetrics& m) {
  if (n == 0) return;
  double me = 0, mx = 0, mdiff = 0;
  for (size_t i = 0; i < n; ++i) {
    me += est[i];
    mx += exact[i];
    mdiff += est[i] - exact[i];
  }
  me /= n;
  mx /= n;
  mdiff /= n;
  double vx = 0, ve = 0, cxe = 0, vd = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dx = exact[i] - mx, de = est[i] - me, dd = est[i] - exact[i] - mdiff;
    vx += dx * dx;
    ve += de * de;
    cxe += dx * de;
    vd += dd * dd;
  }
  m.bias = mdiff;
  m.variance = n > 1 ? vd / static_cast<double>(n - 1) : 0.0;
  m.slope = vx > 0 ? cxe / vx : 0.0;
  m.correlation = (vx > 0 && ve > 0) ? cxe / std::sqrt(vx * ve) : 0.0;
}

void logSoftmax(const float* s, size_t n, double scale, double* p, double* logp) {
  if (n == 0) return;
  double mx = 0;
  const double sum = shiftedExp(s, n, scale, p, &mx);
  const double lse = std::log(sum);
  for (size_t i = 0; i < n; ++i) {
    p[i] /= sum;
    logp[i] = scale * s[i] - mx - lse;
  }
}

AttentionMetrics attentionMetrics(const float* exact, const double* exactP, const double* exactLogP, const float* estimated, size_t n, double scale,
                                  double* estP) {
  AttentionMetrics m;
  if (n == 0) return m;
  std::vector<double> s(exact, exact + n), sh(estimated, estimated + n), lph(n);
  std::vector<double> local;
  if (!estP) {
    local.resize(n);
    estP = local.data();
  }
  m.logitCosine = cosine(s.data(), sh.data(), n);
  logSoftmax(estimated, n, scale, estP, lph.data());
  m.attentionCosine = cosine(exactP, estP, n);
  // KL(p || p_hat) with p_hat floored at 1e-300 (as the CUDA backend and the per-call path define it): an
  // estimate that gives no representable probability to a key the exact softmax attends costs log(1e300)
  static const double kLogFloor = std::log(1e-300);
  double kl = 0;
  for (size_t i = 0; i < n; ++i)
    if (exactP[i] > 0) kl += exactP[i] * (exactLogP[i] - std::max(lph[i], kLogFloor));
  m.kl = std::max(0.0, kl);
  const size_t am = static_cast<size_t>(std::max_element(s.begin(), s.end()) - s.begin());
  const size_t amh = static_cast<size_t>(std::max_element(sh.begin(), sh.end()) - sh.begin());
  m.top1 = am == amh ? 1.0 : 0.0;
  // exact argmax within the estimated top 5: count estimated scores strictly above it
  size_t above = 0;
  for (size_t i = 0; i < n; ++i)
    if (sh[i] > sh[am]) ++above;
  m.top5 = above < 5 ? 1.0 : 0.0;
  innerProductStats(s.data(), sh.data(), n, m);
  m.count = 1;
  return m;
}

AttentionMetrics attentionMetrics(const float* exact, const float* estimated, size_t n, double scale, const float* exactOut,
                                  const float* estimatedOut, size_t dv) {
  if (n == 0) return {};
  std::vector<double> p(n), lp(n);
  logSoftmax(exact, n, scale, p.data(), lp.data());
  AttentionMetrics m = attentionMetrics(exact, p.data(), lp.data(), estimated, n, scale, nullptr);
  if (exactOut && estimatedOut && dv > 0) m.outputError = outputError(exactOut, estimatedOut, dv);
  return m;
}

double outputError(const float* exactOut, const float* estimatedOut, size_t dv) {
  double num = 0, den = 0;
  for (size_t j = 0; j < dv; ++j) {
    const double d = static_cast<double>(exactOut[j]) - estimatedOut[j];
    num += d * d;
    den += static_cast<double>(exactOut[j]) * exactOut[j];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void vectorMseAccumulate(const float* x, const float* xhat, size_t n, size_t d, double& sum, size_t& used) {
  for (size_t i = 0; i < n; ++i) {
    double num = 0, den = 0;
    for (size_t j = 0; j < d; ++j) {
      const double e = static_cast<double>(x[i * d + j]) - xhat[i * d + j];
      num += e * e;
      den += static_cast<double>(x[i * d + j]) * x[i * d + j];
    }
    if (den > 0) {
      sum += num / den;
      ++used;
    }
  }
}

double vectorMse(const float* x, const float* xhat, size_t n, size_t d) {
  double sum = 0;
  size_t used = 0;
  vectorMseAccumulate(x, xhat, n, d, sum, used);
  return used ? sum / static_cast<double>(used) : 0.0;
}

double theoryDistortion(int dim, int bits, CodebookLaw law) {
  if (bits <= 0) return 1.0;
  return codebook(dim, bits, law)->distortionUnitVector;
}

double theoryInnerProductVariance(int dim, int bits, KeyMode mode, int projDim) {
  const int m = projDim > 0 ? projDim : dim;
  switch (mode) {
    case KeyMode::Mse: return theoryDistortion(dim, bits) / dim;
    case KeyMode::Prod: return M_PI / 2.0 * theoryDistortion(dim, bits - 1) / m;
    default: return M_PI / 2.0 / m;
  }
}

const std::vector<ModelPreset>& modelPresets() {
  static const std::vector<ModelPreset> presets = {
      {"qwen2.5-3b", "Qwen2.5-3B", 36, 16, 2, 128, "GQA 16q/2kv"},
      {"llama-3.1-8b", "Llama-3.1-8B", 32, 32, 8, 128, "GQA 32q/8kv"},
      {"mistral-7b", "Mistral-7B-v0.3", 32, 32, 8, 128, "GQA 32q/8kv (sliding window not modelled: full cache)"},
      {"qwen2.5-7b", "Qwen2.5-7B", 28, 28, 4, 128, "GQA 28q/4kv"},
      {"llama-3.1-70b", "Llama-3.1-70B", 80, 64, 8, 128, "GQA 64q/8kv"},
      {"smollm2-135m", "SmolLM2-135M", 30, 9, 3, 64, "GQA 9q/3kv"},
      {"stories260k", "stories260K", 5, 8, 4, 8, "llama2.c toy model"},
  };
  return presets;
}

const ModelPreset& findPreset(const std::string& id) {
  std::string low(id);
  std::transform(low.begin(), low.end(), low.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const auto& p : modelPresets())
    if (p.id == low) return p;
  std::string ids;
  for (const auto& p : modelPresets()) ids += (ids.empty() ? "" : ", ") + p.id;
  throw std::invalid_argument("unknown model preset '" + id + "' (known: " + ids + ")");
}

size_t keyBytesPerVector(int headDim, int bits, KeyMode mode, int projDim) {
  QuantConfig c;
  c.dim = headDim;
  c.bits = bits;
  c.mode = mode;
  c.projDim = projDim;
  CompressedVectors cv;
  cv.dim = headDim;
  cv.mseBits = c.mseBits();
  cv.projDim = c.qjlRows();
  return cv.bytesPerVector();
}

size_t valueBytesPerVector(int headDim, int bits) { return keyBytesPerVector(headDim, bits, KeyMode::Mse, 0); }

double sphereMarginalDensity(int d, double t) {
  if (std::fabs(t) >= 1 || d < 2) return 0;
  const double c = std::lgamma(d / 2.0) - 0.5 * std::log(M_PI) - std::lgamma((d - 1) / 2.0);
  return std::exp(c + (d - 3) / 2.0 * std::log(1 - t * t));
}

double windowedKeyBytes(double compressedBytes, double seq, double d, double window, bool mean) {
  if (seq <= 0 || (window <= 0 && !mean)) return compressedBytes;
  const double w = std::min(window, seq);
  return ((seq - w) * compressedBytes + w * 2.0 * d + (mean ? 2.0 * d : 0.0)) / seq;
}

MemoryReport memoryModel(const MemoryConfig& c) {
  if (c.layers <= 0 || c.kvHeads <= 0 || c.headDim <= 0 || c.tokens < 0) throw std::invalid_argument("layers, kv heads and head_dim must be positive");
  if (c.keyBits < 1 || c.keyBits > 8 || c.valueBits < 1 || c.valueBits > 8) throw std::invalid_argument("bits must be in 1..8");
  MemoryReport r;
  r.keyBytesPerVector = keyBytesPerVector(c.headDim, c.keyBits, c.keyMode, c.projDim);
  r.valueBytesPerVector = valueBytesPerVector(c.headDim, c.valueBits);
  const double T = static_cast<double>(c.tokens);
  const double w = std::min(static_cast<double>(std::max<long long>(0, c.exactKeys)), T);
  const double recent = std::min(static_cast<double>(std::max<long long>(0, c.recentTokens)), T - w);
  r.keyBytesCharged = windowedKeyBytes(static_cast<double>(r.keyBytesPerVector), T, c.headDim, w + recent, c.keyMean);
  r.valueBytesCharged = windowedKeyBytes(static_cast<double>(r.valueBytesPerVector), T, c.headDim, recent, false);
  const double perLayerHead = r.keyBytesCharged + r.valueBytesCharged;
  r.bytesPerToken = perLayerHead * c.layers * c.kvHeads;
  r.totalBytes = r.bytesPerToken * static_cast<double>(c.tokens);
  r.fp16Bytes = 2.0 * 2.0 * c.headDim * c.layers * c.kvHeads * static_cast<double>(c.tokens);
  r.fp8Bytes = r.fp16Bytes / 2.0;
  r.ratioVsFp16 = r.totalBytes > 0 ? r.fp16Bytes / r.totalBytes : 0;
  r.ratioVsFp8 = r.totalBytes > 0 ? r.fp8Bytes / r.totalBytes : 0;
  r.keyBitsPerCoordinate = 8.0 * r.keyBytesCharged / c.headDim;
  r.valueBitsPerCoordinate = 8.0 * r.valueBytesCharged / c.headDim;
  return r;
}

double meanEnergyShare(const float* x, size_t n, size_t d) {
  if (n == 0 || d == 0) return 0;
  std::vector<double> mean(d, 0.0);
  double energy = 0;
  for (size_t t = 0; t < n; ++t)
    for (size_t j = 0; j < d; ++j) {
      const double v = x[t * d + j];
      mean[j] += v;
      energy += v * v;
    }
  if (!(energy > 0)) return 0;
  double m2 = 0;
  for (size_t j = 0; j < d; ++j) m2 += (mean[j] / static_cast<double>(n)) * (mean[j] / static_cast<double>(n));
  return std::min(1.0, m2 / (energy / static_cast<double>(n)));
}

}  // namespace tq
