// SPDX-License-Identifier: GPL-3.0-or-later
#include "methods/methods.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <mutex>
#include <stdexcept>

#include "quant/bitpack.h"
#include "util/half.h"

namespace tq {

MethodSpec parseMethod(const std::string& s) {
  if (s == "tq-mse") return {Method::TurboQuant, KeyMode::Mse};
  if (s == "tq-prod") return {Method::TurboQuant, KeyMode::Prod};
  if (s == "tq-qjl") return {Method::TurboQuant, KeyMode::QjlOnly};
  if (s == "tq-mse-nc") return {Method::TqMseNormCorrected, KeyMode::Mse};
  if (s == "tq-ref11") return {Method::TqRef11, KeyMode::Prod};
  if (s == "tq-mse-oc") return {Method::TqMseOutliers, KeyMode::Mse};
  if (s == "kivi") return {Method::Kivi, KeyMode::Mse};
  if (s == "int-rot") return {Method::IntRot, KeyMode::Mse};
  if (s == "fp8-e4m3") return {Method::Fp8E4M3, KeyMode::Mse};
  if (s == "fp8-e5m2") return {Method::Fp8E5M2, KeyMode::Mse};
  if (s == "fp16") return {Method::Fp16, KeyMode::Mse};
  throw std::invalid_argument("unknown method '" + s + "' (expected tq-mse, tq-prod, tq-qjl, tq-ref11, tq-mse-nc, tq-mse-oc, kivi, int-rot, fp8-e4m3, fp8-e5m2 or fp16)");
}

void parseMethodList(const std::string& list, std::vector<KeyMode>& modes, std::vector<Method>& methods) {
  modes.clear();
  methods.clear();
  size_t from = 0;
  while (from <= list.size()) {
    const size_t comma = std::min(list.find(',', from), list.size());
    const std::string item = list.substr(from, comma - from);
    from = comma + 1;
    if (item.empty()) continue;
    const MethodSpec m = parseMethod(item);
    if (m.method == Method::TurboQuant) {
      if (std::find(modes.begin(), modes.end(), m.mode) == modes.end()) modes.push_back(m.mode);
    } else if (std::find(methods.begin(), methods.end(), m.method) == methods.end()) {
      methods.push_back(m.method);
    }
  }
  if (modes.empty() && methods.empty()) throw std::invalid_argument("the list of methods is empty");
}

std::string methodListLabel(const std::vector<Method>& methods) {
  std::string s;
  for (Method m : methods) s += (s.empty() ? "" : ",") + methodName(m);
  return s;
}

std::string methodName(Method m, KeyMode mode) {
  switch (m) {
    case Method::TurboQuant: return mode == KeyMode::Mse ? "tq-mse" : mode == KeyMode::Prod ? "tq-prod" : "tq-qjl";
    case Method::TqMseNormCorrected: return "tq-mse-nc";
    case Method::TqMseOutliers: return "tq-mse-oc";
    case Method::TqRef11: return "tq-ref11";
    case Method::Kivi: return "kivi";
    case Method::IntRot: return "int-rot";
    case Method::Fp8E4M3: return "fp8-e4m3";
    case Method::Fp8E5M2: return "fp8-e5m2";
    case Method::Fp16: return "fp16";
  }
  return "?";
}

Method valueFamily(Method m) { return m == Method::TqRef11 ? Method::TurboQuant : m; }
int methodMaxBits(Method m) { return m == Method::TqMseOutliers ? 7 : 8; }
bool methodHasBits(Method m) { return methodFixedBits(m) == 0; }
int methodFixedBits(Method m) {
  switch (m) {
    case Method::Fp8E4M3:
    case Method::Fp8E5M2: return 8;
    case Method::Fp16: return 16;
    case Method::TqRef11: return 1;
    default: return 0;
  }
}

void MethodOptions::validate() const {
  if (group < 1 || group > 65536) throw std::invalid_argument("the KIVI group size must be in 1..65536, got " + std::to_string(group));
  if (window < 0 || window > (1 << 24)) throw std::invalid_argument("the KIVI residual window must be in 0..16777216 tokens, got " + std::to_string(window));
  if (outlierChannels < 0 || outlierChannels > kMaxHeadDimension)
    throw std::invalid_argument("the outlier channel count must be in 0..4096, got " + std::to_string(outlierChannels));
}

std::string methodOptionsLabel(Method m, const MethodOptions& opt) {
  if (m == Method::Kivi) return "G=" + std::to_string(opt.group) + " R=" + std::to_string(opt.window);
  if (m == Method::IntRot) return "H32 blocks";
  if (m == Method::TqMseOutliers) return opt.outlierChannels > 0 ? "K=" + std::to_string(opt.outlierChannels) + " at b+1" : "K=d/2 at b+1";
  if (m == Method::Fp8E4M3 || m == Method::Fp8E5M2) return "per-head fp32 scale";
  return {};
}

// ---- fp8 -------------------------------------------------------------------------------------------

namespace {

/// The non-negative finite values of an fp8 format by code (0 .. maxCode), ascending.
struct Fp8Table {
  int maxCode = 0;
  std::array<float, 128> value{};
  Fp8Table(int expBits, int manBits, int bias, int maxCodeIn) : maxCode(maxCodeIn) {
    for (int c = 0; c <= maxCode; ++c) {
      const int e = c >> manBits, m = c & ((1 << manBits) - 1);
      const double frac = static_cast<double>(m) / static_cast<double>(1 << manBits);
      value[static_cast<size_t>(c)] = static_cast<float>(e == 0 ? std::ldexp(frac, 1 - bias) : std::ldexp(1.0 + frac, e - bias));
    }
    (void)expBits;
  }
  uint8_t encode(float f) const {
    const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
    if (std::isnan(f)) return static_cast<uint8_t>(0x7f);  // a NaN code of both formats
    const float a = std::min(std::fabs(f), value[static_cast<size_t>(maxCode)]);  // saturate
    // the first code whose value is >= a; then nearest, ties to the even code
    const auto it = std::lower_bound(value.begin(), value.begin() + maxCode + 1, a);
    int hi = static_cast<int>(it - value.begin());
    if (hi > maxCode) hi = maxCode;
    int c = hi;
    if (hi > 0 && value[static_cast<size_t>(hi)] != a) {
      const int lo = hi - 1;
      const float dl = a - value[static_cast<size_t>(lo)], dh = value[static_cast<size_t>(hi)] - a;
      c = dl < dh ? lo : dh < dl ? hi : ((lo & 1) == 0 ? lo : hi);
    }
    return static_cast<uint8_t>(sign | c);
  }
  float decode(uint8_t c, bool e5m2) const {
    const int mag = c & 0x7f;
    const float s = (c & 0x80) ? -1.0f : 1.0f;
    if (mag > maxCode) {
      if (e5m2 && mag == 0x7c) return s * INFINITY;
      return NAN;
    }
    return s * value[static_cast<size_t>(mag)];
  }
};

const Fp8Table& e4m3() {
  static const Fp8Table t(4, 3, 7, 0x7e);  // e4m3fn: no infinity, 0x7f is NaN, max 448
  return t;
}
const Fp8Table& e5m2() {
  static const Fp8Table t(5, 2, 15, 0x7b);  // IEEE-like: 0x7c inf, above NaN, max 57344
  return t;
}

void requireFinite(const float* x, size_t count, const char* method) {
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i])) throw std::invalid_argument(std::string(method) + " cannot store a non-finite value");
}

}  // namespace

uint8_t floatToFp8E4M3(float f) { return e4m3().encode(f); }
float fp8E4M3ToFloat(uint8_t c) { return e4m3().decode(c, false); }
uint8_t floatToFp8E5M2(float f) { return e5m2().encode(f); }
float fp8E5M2ToFloat(uint8_t c) { return e5m2().decode(c, true); }

// ---- int-rot's rotation -----------------------------------------------------------------------------

size_t intRotBlock(size_t d) {
  size_t b = 32;
  while (b > 1 && d % b != 0) b /= 2;
  return b;
}

void blockHadamard(float* x, size_t n, size_t d, size_t block) {
  if (block == 0 || d % block != 0 || (block & (block - 1)) != 0) throw std::invalid_argument("blockHadamard: the block must be a power of two dividing d");
  const float inv = 1.0f / std::sqrt(static_cast<float>(block));
  for (size_t r = 0; r < n; ++r)
    for (size_t b0 = 0; b0 < d; b0 += block) {
      float* v = x + r * d + b0;
      for (size_t h = 1; h < block; h *= 2)
        for (size_t i = 0; i < block; i += 2 * h)
          for (size_t j = i; j < i + h; ++j) {
            const float a = v[j], b = v[j + h];
            v[j] = a + b;
            v[j + h] = a - b;
          }
      for (size_t j = 0; j < block; ++j) v[j] *= inv;
    }
}

// ---- codecs -----------------------------------------------------------------------------------------

namespace {

void requireBits(int bits, const char* method) {
  if (bits < 1 || bits > 8) throw std::invalid_argument(std::string(method) + " takes 1..8 bits, got " + std::to_string(bits));
}

class Fp16Codec final : public VectorCodec {
 public:
  explicit Fp16Codec(bool values) : m_values(values) {}
  Method method() const override { return Method::Fp16; }
  int bits() const override { return 16; }
  bool forValues() const override { return m_values; }
  EncodedMatrix encode(const float* x, size_t n, size_t d) const override {
    requireFinite(x, n * d, "fp16");
    EncodedMatrix e{n, d, {}, std::vector<uint16_t>(n * d), {}};
    for (size_t i = 0; i < n * d; ++i) e.halves[i] = floatToHalf(x[i]);
    return e;
  }
  void decode(const EncodedMatrix& e, float* out) const override {
    for (size_t i = 0; i < e.rows * e.dim; ++i) out[i] = halfToFloat(e.halves[i]);
  }
  double formulaBytes(size_t n, size_t d) const override { return methodBytes(Method::Fp16, 16, m_values, n, d, {}); }

 private:
  bool m_values;
};

class Fp8Codec final : public VectorCodec {
 public:
  Fp8Codec(Method m, bool values) : m_method(m), m_values(values) {}
  Method method() const override { return m_method; }
  int bits() const override { return 8; }
  bool forValues() const override { return m_values; }
  std::string options() const override { return methodOptionsLabel(m_method, {}); }
  EncodedMatrix encode(const float* x, size_t n, size_t d) const override {
    requireFinite(x, n * d, methodName(m_method).c_str());
    const bool e4 = m_method == Method::Fp8E4M3;
    float amax = 0;
    for (size_t i = 0; i < n * d; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = amax > 0 ? amax / (e4 ? kFp8E4M3Max : kFp8E5M2Max) : 1.0f;
    EncodedMatrix e{n, d, std::vector<uint8_t>(n * d), {}, {scale}};
    for (size_t i = 0; i < n * d; ++i) e.codes[i] = e4 ? floatToFp8E4M3(x[i] / scale) : floatToFp8E5M2(x[i] / scale);
    return e;
  }
  void decode(const EncodedMatrix& e, float* out) const override {
    const bool e4 = m_method == Method::Fp8E4M3;
    const float s = e.floats.at(0);
    for (size_t i = 0; i < e.rows * e.dim; ++i) out[i] = (e4 ? fp8E4M3ToFloat(e.codes[i]) : fp8E5M2ToFloat(e.codes[i])) * s;
  }
  double formulaBytes(size_t n, size_t d) const override { return methodBytes(m_method, 8, m_values, n, d, {}); }

 private:
  Method m_method;
  bool m_values;
};

/// Asymmetric b-bit integers of one group: zero = fp16(min), scale = fp16(max(0, max - zero) / (2^b - 1)).
struct AsymGroup {
  float zero, scale;
  uint16_t zh, sh;
};
AsymGroup asymGroup(float lo, float hi, int bits) {
  AsymGroup g;
  g.zh = floatToHalf(lo);
  g.zero = halfToFloat(g.zh);
  const float levels = static_cast<float>((1 << bits) - 1);
  g.sh = floatToHalf(std::max(0.0f, hi - g.zero) / levels);
  g.scale = halfToFloat(g.sh);
  return g;
}
uint8_t asymCode(float x, const AsymGroup& g, int bits) {
  if (!(g.scale > 0)) return 0;
  const float q = std::nearbyint((x - g.zero) / g.scale);
  return static_cast<uint8_t>(std::clamp(q, 0.0f, static_cast<float>((1 << bits) - 1)));
}

class KiviCodec final : public VectorCodec {
 public:
  KiviCodec(int bits, bool values, const MethodOptions& o) : m_bits(bits), m_values(values), m_opt(o) {
    requireBits(bits, "kivi");
    o.validate();
  }
  Method method() const override { return Method::Kivi; }
  int bits() const override { return m_bits; }
  bool forValues() const override { return m_values; }
  std::string options() const override { return methodOptionsLabel(Method::Kivi, m_opt); }
  /// Tokens held as integers (the rest, the most recent, in fp16): keys in whole groups of G tokens.
  size_t quantizedTokens(size_t n) const {
    const size_t resid = std::min(n, static_cast<size_t>(m_opt.window));
    const size_t avail = n - resid, G = static_cast<size_t>(m_opt.group);
    return m_values ? avail : avail / G * G;
  }
  size_t groupsPerToken(size_t d) const { return (d + static_cast<size_t>(m_opt.group) - 1) / static_cast<size_t>(m_opt.group); }
  EncodedMatrix encode(const float* x, size_t n, size_t d) const override {
    requireFinite(x, n * d, "kivi");
    const size_t nq = quantizedTokens(n), G = static_cast<size_t>(m_opt.group);
    std::vector<uint8_t> codes(nq * d, 0);
    std::vector<uint16_t> scales, zeros;
    if (!m_values) {
      // per channel: groups of G tokens
      for (size_t g0 = 0; g0 < nq; g0 += G)
        for (size_t j = 0; j < d; ++j) {
          float lo = x[g0 * d + j], hi = lo;
          for (size_t t = g0; t < g0 + G; ++t) lo = std::min(lo, x[t * d + j]), hi = std::max(hi, x[t * d + j]);
          const AsymGroup g = asymGroup(lo, hi, m_bits);
          scales.push_back(g.sh);
          zeros.push_back(g.zh);
          for (size_t t = g0; t < g0 + G; ++t) codes[t * d + j] = asymCode(x[t * d + j], g, m_bits);
        }
    } else {
      // per token: groups of G channels (the last one may be shorter)
      for (size_t t = 0; t < nq; ++t)
        for (size_t j0 = 0; j0 < d; j0 += G) {
          const size_t j1 = std::min(d, j0 + G);
          float lo = x[t * d + j0], hi = lo;
          for (size_t j = j0; j < j1; ++j) lo = std::min(lo, x[t * d + j]), hi = std::max(hi, x[t * d + j]);
          const AsymGroup g = asymGroup(lo, hi, m_bits);
          scales.push_back(g.sh);
          zeros.push_back(g.zh);
          for (size_t j = j0; j < j1; ++j) codes[t * d + j] = asymCode(x[t * d + j], g, m_bits);
        }
    }
    EncodedMatrix e;
    e.rows = n;
    e.dim = d;
    e.codes.resize(packedBytes(nq * d, m_bits));
    packCodes(codes.data(), nq * d, m_bits, e.codes.data());
    e.halves = scales;
    e.halves.insert(e.halves.end(), zeros.begin(), zeros.end());
    for (size_t i = nq * d; i < n * d; ++i) e.halves.push_back(floatToHalf(x[i]));
    return e;
  }
  void decode(const EncodedMatrix& e, float* out) const override {
    const size_t n = e.rows, d = e.dim, nq = quantizedTokens(n), G = static_cast<size_t>(m_opt.group);
    std::vector<uint8_t> codes(nq * d);
    unpackCodes(e.codes.data(), nq * d, m_bits, codes.data());
    const size_t groups = m_values ? nq * groupsPerToken(d) : (nq / G) * d;
    const uint16_t* scales = e.halves.data();
    const uint16_t* zeros = scales + groups;
    const uint16_t* tail = zeros + groups;
    size_t gi = 0;
    auto rec = [&](size_t i, size_t g) { out[i] = halfToFloat(zeros[g]) + static_cast<float>(codes[i]) * halfToFloat(scales[g]); };
    if (!m_values) {
      for (size_t g0 = 0; g0 < nq; g0 += G)
        for (size_t j = 0; j < d; ++j, ++gi)
          for (size_t t = g0; t < g0 + G; ++t) rec(t * d + j, gi);
    } else {
      for (size_t t = 0; t < nq; ++t)
        for (size_t j0 = 0; j0 < d; j0 += G, ++gi)
          for (size_t j = j0; j < std::min(d, j0 + G); ++j) rec(t * d + j, gi);
    }
    for (size_t i = nq * d; i < n * d; ++i) out[i] = halfToFloat(tail[i - nq * d]);
  }
  double formulaBytes(size_t n, size_t d) const override { return methodBytes(Method::Kivi, m_bits, m_values, n, d, m_opt); }

 private:
  int m_bits;
  bool m_values;
  MethodOptions m_opt;
};

class IntRotCodec final : public VectorCodec {
 public:
  IntRotCodec(int bits, bool values) : m_bits(bits), m_values(values) { requireBits(bits, "int-rot"); }
  Method method() const override { return Method::IntRot; }
  int bits() const override { return m_bits; }
  bool forValues() const override { return m_values; }
  std::string options() const override { return methodOptionsLabel(Method::IntRot, {}); }
  EncodedMatrix encode(const float* x, size_t n, size_t d) const override {
    requireFinite(x, n * d, "int-rot");
    const size_t B = intRotBlock(d);
    std::vector<float> y(x, x + n * d);
    blockHadamard(y.data(), n, d, B);
    const int half = 1 << (m_bits - 1);
    std::vector<uint8_t> codes(n * d);
    EncodedMatrix e;
    e.rows = n;
    e.dim = d;
    for (size_t b0 = 0; b0 < n * d; b0 += B) {
      float m = 0, am = 0;  // the block's element of largest magnitude, with its sign (the first one on ties)
      for (size_t j = b0; j < b0 + B; ++j)
        if (std::fabs(y[j]) > am) am = std::fabs(y[j]), m = y[j];
      const uint16_t sh = floatToHalf(m / -static_cast<float>(half));
      const float s = halfToFloat(sh);
      e.halves.push_back(sh);
      for (size_t j = b0; j < b0 + B; ++j) {
        const float q = s != 0.0f ? std::clamp(std::nearbyint(y[j] / s), -static_cast<float>(half), static_cast<float>(half - 1)) : 0.0f;
        codes[j] = static_cast<uint8_t>(static_cast<int>(q) + half);
      }
    }
    e.codes.resize(packedBytes(n * d, m_bits));
    packCodes(codes.data(), n * d, m_bits, e.codes.data());
    return e;
  }
  void decode(const EncodedMatrix& e, float* out) const override {
    const size_t n = e.rows, d = e.dim, B = intRotBlock(d);
    std::vector<uint8_t> codes(n * d);
    unpackCodes(e.codes.data(), n * d, m_bits, codes.data());
    const int half = 1 << (m_bits - 1);
    for (size_t i = 0; i < n * d; ++i) out[i] = static_cast<float>(static_cast<int>(codes[i]) - half) * halfToFloat(e.halves[i / B]);
    blockHadamard(out, n, d, B);
  }
  double formulaBytes(size_t n, size_t d) const override { return methodBytes(Method::IntRot, m_bits, m_values, n, d, {}); }

 private:
  int m_bits;
  bool m_values;
};

class TqNormCorrectedCodec final : public VectorCodec {
 public:
  TqNormCorrectedCodec(std::shared_ptr<const Quantizer> q, bool values) : m_q(std::move(q)), m_values(values) {
    if (!m_q || m_q->config().mode != KeyMode::Mse || m_q->projDim() != 0) throw std::invalid_argument("tq-mse-nc needs a TurboQuant-MSE quantizer");
  }
  Method method() const override { return Method::TqMseNormCorrected; }
  int bits() const override { return m_q->mseBits(); }
  bool forValues() const override { return m_values; }
  EncodedMatrix encode(const float* x, size_t n, size_t d) const override {
    if (d != static_cast<size_t>(m_q->dim())) throw std::invalid_argument("tq-mse-nc: the quantizer's dimension is not the data's");
    CompressedVectors cv = m_q->compress(x, n);
    EncodedMatrix e;
    e.rows = n;
    e.dim = d;
    e.codes = std::move(cv.codes);
    e.halves = std::move(cv.norms);
    return e;
  }
  void decode(const EncodedMatrix& e, float* out) const override {
    CompressedVectors cv;
    cv.dim = static_cast<int>(e.dim);
    cv.mseBits = m_q->mseBits();
    cv.count = e.rows;
    cv.codes = e.codes;
    cv.norms = e.halves;
    m_q->decompress(cv, 0, e.rows, out);
    for (size_t i = 0; i < e.rows; ++i) {
      float* r = out + i * e.dim;
      double s = 0;
      for (size_t j = 0; j < e.dim; ++j) s += static_cast<double>(r[j]) * r[j];
      if (s <= 0) continue;
      const float f = static_cast<float>(static_cast<double>(halfToFloat(e.halves[i])) / std::sqrt(s));
      for (size_t j = 0; j < e.dim; ++j) r[j] *= f;
    }
  }
  double formulaBytes(size_t n, size_t d) const override { return methodBytes(Method::TqMseNormCorrected, m_q->mseBits(), m_values, n, d, {}); }

 private:
  std::shared_ptr<const Quantizer> m_q;
  bool m_values;
};

/// Two TurboQuant-MSE quantizers over complementary channel sets: outliers (K channels, b+1 bits) and the
/// rest (d - K, b bits). Layout: codes of the outliers then of the rest, per vector, each padded to whole
/// bytes; halves: per vector the two norms; then the K indices as uint16 (in `halves`, charged 2 B each).
class TqOutlierCodec final : public VectorCodec {
 public:
  TqOutlierCodec(int bits, bool values, const MethodOptions& o, std::shared_ptr<const Quantizer> tq)
      : m_bits(bits), m_values(values), m_opt(o), m_tq(std::move(tq)) {
    if (bits < 1 || bits > 7) throw std::invalid_argument("tq-mse-oc takes 1..7 bits (its outliers get one more), got " + std::to_string(bits));
    if (!m_tq) throw std::invalid_argument("tq-mse-oc needs a TurboQuant quantizer for its rotation, law and seed");
    o.validate();
  }
  Method method() const override { return Method::TqMseOutliers; }
  int bits() const override { return m_bits; }
  bool forValues() const override { return m_values; }
  std::string options() const override { return methodOptionsLabel(Method::TqMseOutliers, m_opt); }
  size_t outliers(size_t d) const {
    const size_t k = m_opt.outlierChannels > 0 ? static_cast<size_t>(m_opt.outlierChannels) : d / 2;
    if (k < 1 || k + 1 > d || (d - k) < static_cast<size_t>(kMinHeadDimension) || k < static_cast<size_t>(kMinHeadDimension))
      throw std::invalid_argument("tq-mse-oc: " + std::to_string(k) + " outlier channels of " + std::to_string(d) + " leave a set of fewer than 2 channels");
    return k;
  }
  std::pair<std::shared_ptr<const Quantizer>, std::shared_ptr<const Quantizer>> quantizers(size_t d) const {
    const size_t k = outliers(d);
    std::lock_guard<std::mutex> lock(m_mutex);
    if (m_hi && static_cast<size_t>(m_hi->dim()) == k && static_cast<size_t>(m_lo->dim()) == d - k) return {m_hi, m_lo};
    QuantConfig c = m_tq->config();
    c.mode = KeyMode::Mse;
    c.projDim = 0;
    c.dim = static_cast<int>(k);
    c.bits = m_bits + 1;
    c.seed = m_tq->config().seed ^ 0x0c0c0c0c0c0c0c0cull;
    m_hi = std::make_shared<const Quantizer>(c);
    c.dim = static_cast<int>(d - k);
    c.bits = m_bits;
    c.seed = m_tq->config().seed ^ 0x5a5a5a5a5a5a5a5aull;
    m_lo = std::make_shared<const Quantizer>(c);
    return {m_hi, m_lo};
  }
  EncodedMatrix encode(const float* x, size_t n, size_t d) const override {
    const size_t k = outliers(d);
    const auto [hi, lo] = quantizers(d);
    const std::vector<int> idx = outlierChannels(x, n, d, k);
    std::vector<char> isOut(d, 0);
    for (int j : idx) isOut[static_cast<size_t>(j)] = 1;
    std::vector<float> xh(n * k), xl(n * (d - k));
    for (size_t t = 0; t < n; ++t)
      for (size_t j = 0, a = 0, b = 0; j < d; ++j) (isOut[j] ? xh[t * k + a++] : xl[t * (d - k) + b++]) = x[t * d + j];
    const CompressedVectors ch = hi->compress(xh.data(), n), cl = lo->compress(xl.data(), n);
    EncodedMatrix e;
    e.rows = n;
    e.dim = d;
    const size_t bh = ch.codeBytes(), bl = cl.codeBytes();
    e.codes.resize(n * (bh + bl));
    for (size_t t = 0; t < n; ++t) {
      std::copy_n(ch.codes.begin() + static_cast<long>(t * bh), bh, e.codes.begin() + static_cast<long>(t * (bh + bl)));
      std::copy_n(cl.codes.begin() + static_cast<long>(t * bl), bl, e.codes.begin() + static_cast<long>(t * (bh + bl) + bh));
      e.halves.push_back(ch.norms[t]);
      e.halves.push_back(cl.norms[t]);
    }
    for (int j : idx) e.halves.push_back(static_cast<uint16_t>(j));
    return e;
  }
  void decode(const EncodedMatrix& e, float* out) const override {
    const size_t n = e.rows, d = e.dim, k = outliers(d);
    const auto [hi, lo] = quantizers(d);
    CompressedVectors ch, cl;
    ch.dim = static_cast<int>(k);
    ch.mseBits = m_bits + 1;
    cl.dim = static_cast<int>(d - k);
    cl.mseBits = m_bits;
    ch.count = cl.count = n;
    const size_t bh = ch.codeBytes(), bl = cl.codeBytes();
    for (size_t t = 0; t < n; ++t) {
      ch.codes.insert(ch.codes.end(), e.codes.begin() + static_cast<long>(t * (bh + bl)), e.codes.begin() + static_cast<long>(t * (bh + bl) + bh));
      cl.codes.insert(cl.codes.end(), e.codes.begin() + static_cast<long>(t * (bh + bl) + bh), e.codes.begin() + static_cast<long>((t + 1) * (bh + bl)));
      ch.norms.push_back(e.halves[2 * t]);
      cl.norms.push_back(e.halves[2 * t + 1]);
    }
    std::vector<char> isOut(d, 0);
    for (size_t i = 0; i < k; ++i) {
      const size_t j = e.halves.at(2 * n + i);
      if (j >= d) throw std::invalid_argument("tq-mse-oc: a stored channel index is out of range");
      isOut[j] = 1;
    }
    std::vector<float> xh(n * k), xl(n * (d - k));
    hi->decompress(ch, 0, n, xh.data());
    lo->decompress(cl, 0, n, xl.data());
    for (size_t t = 0; t < n; ++t)
      for (size_t j = 0, a = 0, b = 0; j < d; ++j) out[t * d + j] = isOut[j] ? xh[t * k + a++] : xl[t * (d - k) + b++];
  }
  double formulaBytes(size_t n, size_t d) const override {
    (void)outliers(d);  // refuses a K the shape cannot take
    return methodBytes(Method::TqMseOutliers, m_bits, m_values, n, d, m_opt);
  }

 private:
  int m_bits;
  bool m_values;
  MethodOptions m_opt;
  std::shared_ptr<const Quantizer> m_tq;
  mutable std::mutex m_mutex;
  mutable std::shared_ptr<const Quantizer> m_hi, m_lo;
};

}  // namespace

double methodBytes(Method m, int bits, bool forValues, size_t n, size_t d, const MethodOptions& opt) {
  const double N = static_cast<double>(n), D = static_cast<double>(d);
  switch (m) {
    case Method::Fp16: return 2.0 * N * D;
    case Method::Fp8E4M3:
    case Method::Fp8E5M2: return N * D + 4.0;
    case Method::TurboQuant:
    case Method::TqMseNormCorrected: return N * static_cast<double>(packedBytes(d, bits) + 2);
    case Method::TqRef11: return N * static_cast<double>(packedBytes(d, 1) + packedBytes(d, 1) + 4);  // 1 MSE bit, m = d signs, 2 norms
    case Method::TqMseOutliers: {
      const size_t k = opt.outlierChannels > 0 ? static_cast<size_t>(opt.outlierChannels) : d / 2;
      if (k >= d) throw std::invalid_argument("tq-mse-oc: more outlier channels than coordinates");
      return N * static_cast<double>(packedBytes(k, bits + 1) + packedBytes(d - k, bits) + 4) + 2.0 * static_cast<double>(k);
    }
    case Method::IntRot: return static_cast<double>(packedBytes(n * d, bits)) + 2.0 * static_cast<double>(n * d / intRotBlock(d));
    case Method::Kivi: {
      const size_t G = static_cast<size_t>(std::max(1, opt.group)), resid = std::min(n, static_cast<size_t>(std::max(0, opt.window)));
      const size_t avail = n - resid, nq = forValues ? avail : avail / G * G;
      const double groups = forValues ? static_cast<double>(nq * ((d + G - 1) / G)) : static_cast<double>(nq / G * d);
      return static_cast<double>(packedBytes(nq * d, bits)) + 4.0 * groups + 2.0 * static_cast<double>((n - nq) * d);
    }
  }
  return 0;
}

std::vector<int> outlierChannels(const float* x, size_t n, size_t d, size_t K) {
  const size_t m = std::min(n, kOutlierCalibrationTokens);
  std::vector<double> mag(d, 0.0);
  for (size_t t = 0; t < m; ++t)
    for (size_t j = 0; j < d; ++j) mag[j] += std::fabs(static_cast<double>(x[t * d + j]));
  std::vector<int> order(d);
  for (size_t j = 0; j < d; ++j) order[j] = static_cast<int>(j);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return mag[static_cast<size_t>(a)] > mag[static_cast<size_t>(b)]; });
  order.resize(std::min(K, d));
  std::sort(order.begin(), order.end());
  return order;
}

std::shared_ptr<const VectorCodec> makeCodec(Method m, int bits, bool forValues, const MethodOptions& opt, std::shared_ptr<const Quantizer> tq) {
  switch (m) {
    case Method::Fp16: return std::make_shared<Fp16Codec>(forValues);
    case Method::Fp8E4M3:
    case Method::Fp8E5M2: return std::make_shared<Fp8Codec>(m, forValues);
    case Method::Kivi: return std::make_shared<KiviCodec>(bits, forValues, opt);
    case Method::IntRot: return std::make_shared<IntRotCodec>(bits, forValues);
    case Method::TqMseNormCorrected: return std::make_shared<TqNormCorrectedCodec>(std::move(tq), forValues);
    case Method::TqMseOutliers: return std::make_shared<TqOutlierCodec>(bits, forValues, opt, std::move(tq));
    case Method::TurboQuant:
    case Method::TqRef11: break;
  }
  throw std::invalid_argument("TurboQuant's estimator is not a reconstruction codec; use a Quantizer");
}

}  // namespace tq
