// SPDX-License-Identifier: GPL-3.0-or-later
#include "metrics/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
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
inline double expImpl(double x) {
  // 2^k e^r with k = round(x / ln 2), |r| <= ln2 / 2 (Cody-Waite), e^r by its Taylor series to degree 13
  // (truncation below 1e-17); 2^k from the exponent bits. No branch and no call: loops over it vectorise.
  constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52: x + kShift holds round(x) in its low bits
  const double xc = std::min(std::max(x, -708.0), 709.0);  // (unconditional compares: the loops if-convert)
  const double t = xc * kLog2e + kShift;
  const double k = t - kShift;
  const double r = (xc - k * kLn2Hi) - k * kLn2Lo;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  uint64_t tb, sb;  // unsigned: a NaN's bits must not overflow (its result is replaced below)
  std::memcpy(&tb, &t, sizeof tb);
  std::memcpy(&sb, &kShift, sizeof sb);
  const uint64_t bits = (tb - sb + 1023u) << 52;
  double two;
  std::memcpy(&two, &bits, sizeof two);
  const double e = p * two;
  const bool under = x < -708.0, nan = x != x;
  const double z = under ? 0.0 : e;
  return nan ? x : z;
}

constexpr size_t kLanes = 4;  // independent partial sums per reduction: the loops vectorise

// Four doubles (GCC / Clang vector extensions: AVX2 on x86-64-v3, two SSE2 halves on the portable
// build). Entry i of a row always goes to lane i mod 4, the tail included, so a row's sums do not
// depend on the machine; the operations are the scalar ones, element by element, in the same order.
typedef double V4d __attribute__((vector_size(32)));
typedef float V4f __attribute__((vector_size(16)));
typedef unsigned long long V4l __attribute__((vector_size(32)));
typedef int V4i __attribute__((vector_size(16)));
inline V4d splat(double x) { return V4d{x, x, x, x}; }
inline V4d load4(const float* p) {
  V4f f;
  std::memcpy(&f, p, sizeof f);
  return __builtin_convertvector(f, V4d);
}
inline V4f load4f(const float* p) {
  V4f f;
  std::memcpy(&f, p, sizeof f);
  return f;
}
inline V4d load4(const double* p) {
  V4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(double* p, V4d v) { std::memcpy(p, &v, sizeof v); }
inline double total(V4d a) { return (a[0] + a[1]) + (a[2] + a[3]); }

/// expImpl on four lanes: the same operations.
inline V4d expImpl4(V4d x) {
  constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kShift = 6755399441055744.0;
  const V4d lo = splat(-708.0), hi = splat(709.0);
  V4d xc = x < lo ? lo : x;  // std::max(x, lo)
  xc = hi < xc ? hi : xc;    // std::min(xc, hi)
  const V4d t = xc * splat(kLog2e) + splat(kShift);
  const V4d k = t - splat(kShift);
  const V4d r = (xc - k * splat(kLn2Hi)) - k * splat(kLn2Lo);
  V4d p = splat(1.0 / 6227020800.0);
  p = p * r + splat(1.0 / 479001600.0);
  p = p * r + splat(1.0 / 39916800.0);
  p = p * r + splat(1.0 / 3628800.0);
  p = p * r + splat(1.0 / 362880.0);
  p = p * r + splat(1.0 / 40320.0);
  p = p * r + splat(1.0 / 5040.0);
  p = p * r + splat(1.0 / 720.0);
  p = p * r + splat(1.0 / 120.0);
  p = p * r + splat(1.0 / 24.0);
  p = p * r + splat(1.0 / 6.0);
  p = p * r + splat(0.5);
  p = p * r + splat(1.0);
  p = p * r + splat(1.0);
  // a cast between vector types of one size keeps the bits (GCC / Clang)
  const V4l bits = (((V4l)t - (V4l)splat(kShift)) + 1023u) << 52;
  const V4d e = p * (V4d)bits;
  const V4d z = x < lo ? splat(0.0) : e;
  return x != x ? x : z;
}


/// p_i = exp(scale s_i - max); returns their sum, *mx = max_i scale s_i.
double shiftedExp(const float* s, size_t n, double scale, double* p, double* mx) {
  double m = -INFINITY;
  for (size_t i = 0; i < n; ++i) m = std::max(m, scale * s[i]);
  V4d acc{};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const V4d e = expImpl4(splat(scale) * load4(s + i) - splat(m));
    store4(p + i, e);
    acc += e;
  }
  for (size_t k = 0; i < n; ++i, ++k) {
    p[i] = expImpl(scale * s[i] - m);
    acc[k] += p[i];
  }
  *mx = m;
  return total(acc);
}

}  // namespace

double expShifted(double x) { return expImpl(x); }

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
  std::vector<double> local;
  if (!estP) {
    local.resize(n);
    estP = local.data();
  }
  // Three passes over the row, each reduction in four lanes (a sweep cell evaluates ~7,000 rows of a few
  // thousand keys: one scalar pass per quantity was a third of its CPU time).
  const V4d vscale = splat(scale);
  // 1: the logits' cosine and sums, the estimate's largest scaled logit
  V4d ab{}, aa{}, bb{}, se{}, sh{}, mxl = splat(-INFINITY);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const V4d x = load4(exact + i), y = load4(estimated + i), sy = vscale * y;
    ab += x * y;
    aa += x * x;
    bb += y * y;
    se += x;
    sh += y;
    mxl = mxl < sy ? sy : mxl;  // std::max(mxl, sy)
  }
  for (size_t k = 0; i < n; ++i, ++k) {
    const double x = exact[i], y = estimated[i];
    ab[k] += x * y;
    aa[k] += x * x;
    bb[k] += y * y;
    se[k] += x;
    sh[k] += y;
    mxl[k] = std::max(mxl[k], scale * y);
  }
  const double mx = std::max(std::max(mxl[0], mxl[1]), std::max(mxl[2], mxl[3]));
  const double abT = total(ab), aaT = total(aa), bbT = total(bb);
  m.logitCosine = (aaT == 0 || bbT == 0) ? (aaT == bbT ? 1.0 : 0.0) : abT / std::sqrt(aaT * bbT);
  const size_t am = static_cast<size_t>(std::max_element(exact, exact + n) - exact);
  const size_t amh = static_cast<size_t>(std::max_element(estimated, estimated + n) - estimated);
  m.top1 = am == amh ? 1.0 : 0.0;
  // 2: the estimate's softmax numerators; top-5: estimated scores strictly above the exact argmax's
  V4d ps{};
  V4i above4{};
  const float atAm = estimated[am];
  const V4f atAm4 = V4f{atAm, atAm, atAm, atAm};
  const V4d vmx = splat(mx);
  i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const V4d e = expImpl4(vscale * load4(estimated + i) - vmx);
    store4(estP + i, e);
    ps += e;
    above4 -= load4f(estimated + i) > atAm4;  // a true comparison is -1
  }
  size_t above = static_cast<size_t>((above4[0] + above4[1]) + (above4[2] + above4[3]));
  for (size_t k = 0; i < n; ++i, ++k) {
    estP[i] = expImpl(scale * estimated[i] - mx);
    ps[k] += estP[i];
    above += estimated[i] > atAm ? 1 : 0;
  }
  m.top5 = above < 5 ? 1.0 : 0.0;
  const double sum = total(ps), lse = std::log(sum);
  // 3: normalised softmax, its cosine with the exact one, KL(p || p_hat) with p_hat floored at 1e-300 (as
  // the CUDA backend and the per-call path define it: an estimate that gives no representable probability
  // to a key the exact softmax attends costs log(1e300)), and the centred second moments of the logits
  static const double kLogFloor = std::log(1e-300);
  const double meanE = total(se) / static_cast<double>(n), meanH = total(sh) / static_cast<double>(n), meanD = meanH - meanE;
  V4d pq{}, pp{}, qq{}, kl{}, vx{}, ve{}, cxe{}, vd{};
  const V4d vsum = splat(sum), vlse = splat(lse), vfloor = splat(kLogFloor), vmE = splat(meanE), vmH = splat(meanH), vmD = splat(meanD);
  i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const V4d q = load4(estP + i) / vsum;
    store4(estP + i, q);
    const V4d p = load4(exactP + i);
    pq += p * q;
    pp += p * p;
    qq += q * q;
    const V4d x = load4(exact + i), y = load4(estimated + i);
    V4d lph = vscale * y - vmx - vlse;
    lph = lph < vfloor ? vfloor : lph;  // std::max(lph, floor)
    const V4d term = p * (load4(exactLogP + i) - lph);
    kl += p > splat(0.0) ? term : splat(0.0);
    const V4d dx = x - vmE, de = y - vmH, dd = y - x - vmD;
    vx += dx * dx;
    ve += de * de;
    cxe += dx * de;
    vd += dd * dd;
  }
  for (size_t k = 0; i < n; ++i, ++k) {
    const double q = estP[i] / sum;
    estP[i] = q;
    const double p = exactP[i];
    pq[k] += p * q;
    pp[k] += p * p;
    qq[k] += q * q;
    const double x = exact[i], y = estimated[i];
    const double lph = std::max(scale * y - mx - lse, kLogFloor);
    kl[k] += p > 0 ? p * (exactLogP[i] - lph) : 0.0;
    const double dx = x - meanE, de = y - meanH, dd = y - x - meanD;
    vx[k] += dx * dx;
    ve[k] += de * de;
    cxe[k] += dx * de;
    vd[k] += dd * dd;
  }
  const double pqT = total(pq), ppT = total(pp), qqT = total(qq);
  m.attentionCosine = (ppT == 0 || qqT == 0) ? (ppT == qqT ? 1.0 : 0.0) : pqT / std::sqrt(ppT * qqT);
  m.kl = std::max(0.0, total(kl));
  const double vxT = total(vx), veT = total(ve), cxeT = total(cxe), vdT = total(vd);
  m.bias = meanD;
  m.variance = n > 1 ? vdT / static_cast<double>(n - 1) : 0.0;
  m.slope = vxT > 0 ? cxeT / vxT : 0.0;
  m.correlation = (vxT > 0 && veT > 0) ? cxeT / std::sqrt(vxT * veT) : 0.0;
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
