// SPDX-License-Identifier: GPL-3.0-or-later
#include "quant/quantizer.h"

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <sstream>
#include <stdexcept>

#include "quant/bitpack.h"
#include "util/half.h"
#include "util/parallel.h"
#include "util/rng.h"

namespace tq {

void requireStorableNorms(const float* x, size_t n, size_t d, const std::string& what) {
  size_t bad = 0;
  float worst = 0;
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t j = 0; j < d; ++j) s += static_cast<double>(x[i * d + j]) * x[i * d + j];
    const double nrm = std::sqrt(s);
    if (!(nrm <= kMaxStorableNorm)) {
      ++bad;
      worst = std::isfinite(nrm) ? std::max(worst, static_cast<float>(nrm)) : worst;
    }
  }
  if (bad)
    throw std::invalid_argument(what + ": " + std::to_string(bad) + " of " + std::to_string(n) + " vectors have a norm above 65504 (largest " +
                                std::to_string(worst) + "), more than the fp16 norm that TurboQuant stores per vector can hold");
}

namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
std::atomic<int> g_threads{0};
constexpr size_t kChunk = 256;  // vectors per compression block
}  // namespace

float laneSumSquares(const float* x, size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (size_t k = 0; k < 8; ++k) acc[k] += x[j + k] * x[j + k];
  for (size_t k = 0; j < n; ++j, ++k) acc[k] += x[j] * x[j];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

int cpuThreads() {
  const int t = g_threads.load();
  if (t > 0) return t;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}
void setCpuThreads(int n) {
  g_threads.store(n);
}

const char* keyModeName(KeyMode m) {
  switch (m) {
    case KeyMode::Mse:
      return "mse";
    case KeyMode::Prod:
      return "prod";
    default:
      return "qjl";
  }
}

KeyMode parseKeyMode(const std::string& s) {
  if (s == "mse") return KeyMode::Mse;
  if (s == "prod" || s == "mse+qjl") return KeyMode::Prod;
  if (s == "qjl" || s == "qjl-only") return KeyMode::QjlOnly;
  throw std::invalid_argument("unknown key mode '" + s + "' (expected mse, prod or qjl)");
}

int QuantConfig::mseBits() const {
  switch (mode) {
    case KeyMode::Mse:
      return bits;
    case KeyMode::Prod:
      return bits > 1 ? bits - 1 : (referenceOneBit ? 1 : 0);
    default:
      return 0;
  }
}

int QuantConfig::qjlRows() const {
  return mode == KeyMode::Mse ? 0 : (projDim > 0 ? projDim : dim);
}

void orthogonaliseRows(std::vector<float>& S, size_t m, size_t d) {
  // modified Gram-Schmidt in double over each block of d rows (a block has at most d independent rows)
  std::vector<double> rows(m * d);
  for (size_t i = 0; i < m * d; ++i) rows[i] = S[i];
  const double target = std::sqrt(static_cast<double>(d));
  for (size_t b0 = 0; b0 < m; b0 += d) {
    const size_t b1 = std::min(m, b0 + d);
    for (size_t i = b0; i < b1; ++i) {
      double* r = rows.data() + i * d;
      for (size_t j = b0; j < i; ++j) {
        const double* q = rows.data() + j * d;
        double dot = 0;
        for (size_t k = 0; k < d; ++k) dot += r[k] * q[k];
        for (size_t k = 0; k < d; ++k) r[k] -= dot * q[k];
      }
      double n2 = 0;
      for (size_t k = 0; k < d; ++k) n2 += r[k] * r[k];
      const double n = std::sqrt(n2);
      if (!(n > 1e-12)) throw std::runtime_error("orthogonalising the QJL matrix: a row is degenerate");
      for (size_t k = 0; k < d; ++k) r[k] /= n;  // unit rows while orthogonalising
    }
  }
  for (size_t i = 0; i < m * d; ++i) S[i] = static_cast<float>(rows[i] * target);
}

std::string QuantConfig::label() const {
  std::ostringstream os;
  os << bits << "-bit " << keyModeName(mode);
  if (qjlRows()) os << " m=" << qjlRows();
  if (mode == KeyMode::Prod && bits == 1 && referenceOneBit) os << " (1+1 reference)";
  if (qjlRows() && orthogonalQjl) os << " orthogonal S";
  os << " " << rotationName(rotation) << " " << lawName(law) << " seed " << seed;
  return os.str();
}

void CompressedVectors::clear() {
  count = 0;
  codes.clear();
  signs.clear();
  norms.clear();
  residualNorms.clear();
}

void CompressedVectors::reserve(size_t n) {
  codes.reserve(n * codeBytes());
  signs.reserve(n * signBytes());
  norms.reserve(n);
  if (projDim > 0) residualNorms.reserve(n);
}

namespace {
uint64_t mixWord(uint64_t h, uint64_t w) {
  h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return h;
}

template <typename T>
uint64_t hashVec(uint64_t h, const std::vector<T>& v) {
  const size_t bytes = v.size() * sizeof(T);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(v.data());
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mixWord(h, w);
  }
  uint64_t tail = 0;
  if (i < bytes) std::memcpy(&tail, p + i, bytes - i);
  return mixWord(mixWord(h, tail), bytes);
}
}  // namespace

namespace {
/// S (m x d, drawn from (seed, kStreamQjl), orthogonalised if asked) and S R^T for a config's rotation.
struct QjlMatrices {
  std::vector<float> S, SRt;
};
std::vector<float> projectRotation(const std::vector<float>& S, const Rotation& rot, int m, int d) {
  // S R^T lets the residual be projected from rotated space: S r = S R^T (R r) (products in double)
  Eigen::Map<const RowMat> Sm(S.data(), m, d);
  Eigen::Map<const RowMat> R(rot.matrix().data(), d, d);
  std::vector<float> out(S.size());
  Eigen::Map<RowMat> SRt(out.data(), m, d);
  Eigen::MatrixXd prod = Sm.cast<double>() * R.cast<double>().transpose();
  SRt = prod.cast<float>();
  return out;
}
/// Memoised per (rotation kind, d, seed, m, orthogonal) for the process, like Rotation::cached: a sweep
/// builds one quantizer per (layer, variant), and the 48 QJL variants of a layer share 3 matrices (drawing
/// and projecting them was most of a layer's set-up). Bounded: at most 64 MB held.
std::shared_ptr<const QjlMatrices> qjlMatrices(const QuantConfig& cfg, int m, const Rotation& rot) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, uint64_t, int, bool>, std::shared_ptr<const QjlMatrices>> cache;
  static size_t held = 0;
  const auto key = std::make_tuple(static_cast<int>(cfg.rotation), cfg.dim, cfg.seed, m, cfg.orthogonalQjl);
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto q = std::make_shared<QjlMatrices>();
  q->S.resize(static_cast<size_t>(m) * static_cast<size_t>(cfg.dim));
  for (size_t i = 0; i < q->S.size(); ++i) q->S[i] = static_cast<float>(standardNormal(cfg.seed, kStreamQjl, i));
  if (cfg.orthogonalQjl) orthogonaliseRows(q->S, static_cast<size_t>(m), static_cast<size_t>(cfg.dim));
  q->SRt = projectRotation(q->S, rot, m, cfg.dim);
  const size_t bytes = 2 * q->S.size() * sizeof(float);
  std::lock_guard<std::mutex> lock(mutex);
  if (bytes > (size_t{16} << 20)) return q;  // a huge one is not kept
  if (held + bytes > (size_t{64} << 20)) cache.clear(), held = 0;
  auto r = cache.emplace(key, std::move(q));
  if (r.second) held += bytes;
  return r.first->second;
}
}  // namespace

Quantizer::Quantizer(const QuantConfig& cfg) : m_cfg(cfg) {
  if (cfg.dim < kMinHeadDimension || cfg.dim > kMaxHeadDimension)
    throw std::invalid_argument("head dimension must be in [" + std::to_string(kMinHeadDimension) + ", " + std::to_string(kMaxHeadDimension) +
                                "], got " + std::to_string(cfg.dim));
  if (cfg.bits < 1 || cfg.bits > 8) throw std::invalid_argument("bits must be in [1, 8], got " + std::to_string(cfg.bits));
  if (cfg.projDim < 0 || cfg.projDim > 16384) throw std::invalid_argument("proj_dim must be in [0, 16384], got " + std::to_string(cfg.projDim));
  m_dim = cfg.dim;
  m_mseBits = cfg.mseBits();
  m_projDim = cfg.qjlRows();
  m_rotation = *Rotation::cached(cfg.rotation, cfg.dim, cfg.seed);
  if (m_mseBits > 0) m_codebook = codebook(cfg.dim, m_mseBits, cfg.law);
  if (m_projDim > 0) {
    const auto qm = qjlMatrices(cfg, m_projDim, m_rotation);
    m_S = qm->S;
    m_SRt = qm->SRt;
  }
  buildDerived();
}

Quantizer::Quantizer(int dim, Rotation rotation, const std::vector<double>& centroids, std::vector<float> qjlMatrix, int projDim)
    : m_dim(dim), m_projDim(projDim), m_rotation(std::move(rotation)), m_S(std::move(qjlMatrix)) {
  if (m_rotation.dim() != dim) throw std::invalid_argument("rotation dimension does not match");
  if (m_S.size() != static_cast<size_t>(projDim) * static_cast<size_t>(dim)) throw std::invalid_argument("QJL matrix is not m x d");
  if (!centroids.empty()) {
    const int bits = static_cast<int>(std::lround(std::log2(static_cast<double>(centroids.size()))));
    if ((size_t{1} << bits) != centroids.size() || bits < 1 || bits > 8) throw std::invalid_argument("codebook size must be 2^b with b in 1..8");
    m_codebook = std::make_shared<const Codebook>(codebookFromCentroids(dim, centroids, CodebookLaw::Gaussian));
    m_mseBits = bits;
  }
  m_cfg.dim = dim;
  m_cfg.bits = m_mseBits + (projDim > 0 ? 1 : 0);
  m_cfg.mode = projDim > 0 ? (m_mseBits ? KeyMode::Prod : KeyMode::QjlOnly) : KeyMode::Mse;
  m_cfg.projDim = projDim;
  m_cfg.rotation = RotationKind::Explicit;
  buildDerived();
}

void Quantizer::buildDerived() {
  if (m_projDim > 0 && m_SRt.size() != m_S.size()) m_SRt = projectRotation(m_S, m_rotation, m_projDim, m_dim);
  m_group = m_mseBits == 0 ? 1 : std::max(1, (m_mseBits == 3 ? 6 : 8) / m_mseBits);
  uint64_t h = 0x7a5f3c1d2b4e6f80ull;
  h = mixWord(h, static_cast<uint64_t>(m_dim));
  h = mixWord(h, static_cast<uint64_t>(m_mseBits));
  h = mixWord(h, static_cast<uint64_t>(m_rotation.kind()));
  h = hashVec(h, m_rotation.matrix());
  h = hashVec(h, m_rotation.hadamardSigns());
  if (m_codebook) {
    h = hashVec(h, m_codebook->centroidsF);
    h = hashVec(h, m_codebook->boundariesF);
  }
  m_mseHash = m_mseBits > 0 ? h : 0;
  m_rotHash = hashVec(hashVec(mixWord(mixWord(0x510e527fade682d1ull, static_cast<uint64_t>(m_dim)), static_cast<uint64_t>(m_rotation.kind())),
                              m_rotation.matrix()),
                      m_rotation.hadamardSigns());
  uint64_t hq = mixWord(mixWord(0x3c6ef372fe94f82bull, static_cast<uint64_t>(m_dim)), static_cast<uint64_t>(m_projDim));
  m_qjlHash = m_projDim > 0 ? hashVec(hq, m_S) : 0;
  h = mixWord(h, static_cast<uint64_t>(m_projDim));
  h = hashVec(h, m_S);
  h = hashVec(h, m_SRt);
  m_hash = h;
}

CompressedVectors Quantizer::compress(const float* x, size_t n) const {
  CompressedVectors cv;
  compress(x, n, cv);
  return cv;
}

size_t Quantizer::appendSlots(CompressedVectors& out, size_t n) const {
  if (out.count == 0) {
    out.dim = m_dim;
    out.mseBits = m_mseBits;
    out.projDim = m_projDim;
  } else if (out.dim != m_dim || out.mseBits != m_mseBits || out.projDim != m_projDim) {
    throw std::invalid_argument("compressed buffer was made by a different quantizer");
  }
  const size_t offset = out.count;
  out.count += n;
  out.codes.resize(out.count * out.codeBytes());
  out.signs.resize(out.count * out.signBytes());
  out.norms.resize(out.count);
  if (m_projDim > 0) out.residualNorms.resize(out.count);
  return offset;
}

void Quantizer::compress(const float* x, size_t n, CompressedVectors& out) const {
  const size_t offset = appendSlots(out, n);
  const size_t chunks = (n + kChunk - 1) / kChunk;
  parallelRanges(chunks, 2, [&](size_t cb, size_t ce) {
    for (size_t c = cb; c < ce; ++c) {
      const size_t b = c * kChunk, e = std::min(n, b + kChunk);
      compressChunk(x + b * static_cast<size_t>(m_dim), e - b, out, offset + b);
    }
  });
}

bool RotatedVectors::rotatedBy(const Quantizer& q) const {
  const Rotation& r = q.rotation();
  return dim == q.dim() && kind == r.kind() && matrix == r.matrix() && signs == r.hadamardSigns();
}

RotatedVectors Quantizer::rotate(const float* x, size_t n) const {
  RotatedVectors rv;
  rv.dim = m_dim;
  rv.count = n;
  rv.kind = m_rotation.kind();
  rv.matrix = m_rotation.matrix();
  rv.signs = m_rotation.hadamardSigns();
  const size_t d = static_cast<size_t>(m_dim);
  rv.rotated.resize(n * d);
  rv.norms.resize(n);
  const size_t chunks = (n + kChunk - 1) / kChunk;
  parallelRanges(chunks, 2, [&](size_t cb, size_t ce) {
    std::vector<float> unit(kChunk * d);
    for (size_t c = cb; c < ce; ++c) {  // the blocks compress() rotates: the same products
      const size_t b = c * kChunk, e = std::min(n, b + kChunk);
      rotateChunk(x + b * d, e - b, unit.data(), rv.rotated.data() + b * d, rv.norms.data() + b);
    }
  });
  return rv;
}

void Quantizer::compressRotated(const RotatedVectors& rv, size_t begin, size_t n, CompressedVectors& out) const {
  if (!rv.rotatedBy(*this)) throw std::invalid_argument("compressRotated: the vectors were rotated by a different rotation");
  if (begin + n > rv.count) throw std::out_of_range("compressRotated: range past the end");
  if (begin % kChunk != 0) throw std::invalid_argument("compressRotated: a range must start at a block boundary");
  const size_t offset = appendSlots(out, n), d = static_cast<size_t>(m_dim);
  const size_t chunks = (n + kChunk - 1) / kChunk;
  parallelRanges(chunks, 2, [&](size_t cb, size_t ce) {
    for (size_t c = cb; c < ce; ++c) {
      const size_t b = c * kChunk, e = std::min(n, b + kChunk);
      for (size_t i = b; i < e; ++i) out.norms[offset + i] = floatToHalf(rv.norms[begin + i]);
      quantizeChunk(rv.rotated.data() + (begin + b) * d, rv.norms.data() + begin + b, e - b, out, offset + b);
    }
  });
}

void Quantizer::rotateChunk(const float* x, size_t n, float* unitOut, float* rotOut, float* normOut) const {
  const size_t d = static_cast<size_t>(m_dim);
  float* __restrict unit = unitOut;
  float* __restrict norm = normOut;
  for (size_t i = 0; i < n; ++i) {
    const float* __restrict xi = x + i * d;
    const float nrm = std::sqrt(laneSumSquares(xi, d));
    norm[i] = nrm;
    float* __restrict ui = unit + i * d;
    if (nrm > 0.0f && std::isfinite(nrm)) {
      for (size_t j = 0; j < d; ++j) ui[j] = xi[j] / nrm;
    } else {
      for (size_t j = 0; j < d; ++j) ui[j] = 0.0f;
    }
  }
  m_rotation.apply(unitOut, rotOut, n);
}

void Quantizer::compressChunk(const float* x, size_t n, CompressedVectors& out, size_t offset) const {
  const size_t d = static_cast<size_t>(m_dim);
  thread_local std::vector<float> unitBuf, rotBuf, normBuf;
  unitBuf.resize(n * d);
  rotBuf.resize(n * d);
  normBuf.resize(n);
  rotateChunk(x, n, unitBuf.data(), rotBuf.data(), normBuf.data());
  for (size_t i = 0; i < n; ++i) out.norms[offset + i] = floatToHalf(normBuf[i]);
  quantizeChunk(rotBuf.data(), normBuf.data(), n, out, offset);
}

void Quantizer::quantizeChunk(const float* rotIn, const float* normIn, size_t n, CompressedVectors& out, size_t offset) const {
  const size_t d = static_cast<size_t>(m_dim);
  thread_local std::vector<float> residBuf, projBuf;
  thread_local std::vector<uint8_t> idxBuf;
  idxBuf.resize(d);
  // Raw, non-aliasing pointers: stores through uint8_t would otherwise force the compiler to reload
  // the vectors' data pointers on every iteration and keep these loops scalar.
  const float* __restrict rot = rotIn;
  const float* __restrict norm = normIn;
  uint8_t* __restrict idx = idxBuf.data();
  const size_t cbytes = out.codeBytes();
  float* __restrict resid = nullptr;
  if (m_projDim > 0) {
    residBuf.resize(n * d);
    resid = residBuf.data();
  }
  const float* __restrict bnd = m_codebook ? m_codebook->boundariesF.data() : nullptr;
  const float* __restrict cen = m_codebook ? m_codebook->centroidsF.data() : nullptr;
  const int nb = m_codebook ? static_cast<int>(m_codebook->boundariesF.size()) : 0;
  uint8_t* __restrict codes = out.codes.data();
  for (size_t i = 0; i < n; ++i) {
    const float* __restrict yi = rot + i * d;
    if (m_mseBits > 0) {
      if (nb <= 15) {
        for (size_t j = 0; j < d; ++j) idx[j] = 0;
        for (int t = 0; t < nb; ++t) {  // boundary-major: vectorises over coordinates
          const float bt = bnd[t];
          for (size_t j = 0; j < d; ++j) idx[j] = static_cast<uint8_t>(idx[j] + (yi[j] > bt ? 1 : 0));
        }
      } else if (nb == (1 << m_mseBits) - 1) {
        // 2^b - 1 sorted boundaries: a branch-free binary search for the number strictly below y (what
        // lower_bound returns; ties go to the lower cell), b steps of a fixed shape
        const int top = 1 << (m_mseBits - 1);
        for (size_t j = 0; j < d; ++j) {
          const float y = yi[j];
          int k = 0;
          for (int step = top; step > 0; step >>= 1) k += bnd[k + step - 1] < y ? step : 0;
          idx[j] = static_cast<uint8_t>(k);
        }
      } else {
        for (size_t j = 0; j < d; ++j) idx[j] = static_cast<uint8_t>(std::lower_bound(bnd, bnd + nb, yi[j]) - bnd);
      }
      packCodes(idx, d, m_mseBits, codes + (offset + i) * cbytes);
    }
    if (m_projDim > 0) {
      // Rotated residual R r = n (y - c[idx]) against the exact-norm reconstruction (as the paper and
      // the reference do; the fp16 norm only enters at decode time); its norm is ||r||.
      float* __restrict ri = resid + i * d;
      const float nrm = norm[i];
      if (m_mseBits > 0) {
        for (size_t j = 0; j < d; ++j) ri[j] = nrm * (yi[j] - cen[idx[j]]);
      } else {
        for (size_t j = 0; j < d; ++j) ri[j] = nrm * yi[j];
      }
      out.residualNorms[offset + i] = floatToHalf(std::sqrt(laneSumSquares(ri, d)));
    }
  }
  if (m_projDim > 0) {
    projBuf.resize(n * static_cast<size_t>(m_projDim));
    Eigen::Map<const RowMat> Rr(resid, static_cast<Eigen::Index>(n), m_dim);
    Eigen::Map<const RowMat> SRt(m_SRt.data(), m_projDim, m_dim);
    Eigen::Map<RowMat> P(projBuf.data(), static_cast<Eigen::Index>(n), m_projDim);
    P.noalias() = Rr * SRt.transpose();
    const size_t sb = out.signBytes();
    for (size_t i = 0; i < n; ++i)
      packSigns(projBuf.data() + i * static_cast<size_t>(m_projDim), static_cast<size_t>(m_projDim), out.signs.data() + (offset + i) * sb);
  }
}

void Quantizer::decompress(const CompressedVectors& cv, size_t begin, size_t n, float* out) const {
  if (begin + n > cv.count) throw std::out_of_range("decompress range past the end");
  const size_t d = static_cast<size_t>(m_dim);
  if (m_mseBits == 0) {
    std::fill(out, out + n * d, 0.0f);
    return;
  }
  std::vector<float> rot(n * d);
  std::vector<uint8_t> idx(d);
  const float* cen = m_codebook->centroidsF.data();
  for (size_t i = 0; i < n; ++i) {
    unpackCodes(cv.codes.data() + (begin + i) * cv.codeBytes(), d, m_mseBits, idx.data());
    const float n16 = halfToFloat(cv.norms[begin + i]);
    for (size_t j = 0; j < d; ++j) rot[i * d + j] = n16 * cen[idx[j]];
  }
  m_rotation.applyTranspose(rot.data(), out, n);
}

void Quantizer::unpack(const CompressedVectors& cv, size_t i, uint8_t* indices, float* signs, float* norm, float* residualNorm) const {
  if (i >= cv.count) throw std::out_of_range("vector index past the end");
  if (indices && m_mseBits > 0) unpackCodes(cv.codes.data() + i * cv.codeBytes(), static_cast<size_t>(m_dim), m_mseBits, indices);
  if (signs && m_projDim > 0) unpackSigns(cv.signs.data() + i * cv.signBytes(), static_cast<size_t>(m_projDim), signs);
  if (norm) *norm = halfToFloat(cv.norms[i]);
  if (residualNorm) *residualNorm = m_projDim > 0 ? halfToFloat(cv.residualNorms[i]) : 0.0f;
}

PreparedQuery Quantizer::prepare(const float* query) const {
  PreparedQuery pq;
  const size_t d = static_cast<size_t>(m_dim);
  pq.rotated.resize(d);
  m_rotation.apply(query, pq.rotated.data(), 1);
  if (m_mseBits > 0) {
    const int g = m_group, b = m_mseBits;
    const size_t chunks = (d + static_cast<size_t>(g) - 1) / static_cast<size_t>(g);
    const size_t patterns = size_t{1} << (g * b);
    pq.codeLut.assign(chunks * patterns, 0.0f);
    const float* cen = m_codebook->centroidsF.data();
    const uint32_t mask = (1u << b) - 1u;
    for (size_t c = 0; c < chunks; ++c) {
      float* lut = pq.codeLut.data() + c * patterns;
      for (size_t p = 0; p < patterns; ++p) {
        float s = 0.0f;
        for (int t = 0; t < g; ++t) {
          const size_t j = c * static_cast<size_t>(g) + static_cast<size_t>(t);
          if (j < d) s += pq.rotated[j] * cen[(p >> (t * b)) & mask];
        }
        lut[p] = s;
      }
    }
  }
  if (m_projDim > 0) {
    const size_t m = static_cast<size_t>(m_projDim);
    pq.projected.resize(m);
    Eigen::Map<const RowMat> S(m_S.data(), m_projDim, m_dim);
    Eigen::Map<const Eigen::VectorXf> q(query, m_dim);
    Eigen::Map<Eigen::VectorXf>(pq.projected.data(), m_projDim).noalias() = S * q;
    const size_t nbytes = (m + 7) / 8;
    pq.signLut.assign(nbytes * 256, 0.0f);
    for (size_t k = 0; k < nbytes; ++k) {
      float* lut = pq.signLut.data() + k * 256;
      for (int p = 0; p < 256; ++p) {
        float s = 0.0f;
        for (int t = 0; t < 8; ++t) {
          const size_t j = k * 8 + static_cast<size_t>(t);
          if (j < m) s += ((p >> t) & 1) ? pq.projected[j] : -pq.projected[j];
        }
        lut[p] = s;
      }
    }
    pq.qjlScale = static_cast<float>(std::sqrt(M_PI / 2.0) / static_cast<double>(m));
  }
  return pq;
}

void Quantizer::scores(const PreparedQuery& q, const CompressedVectors& cv, size_t begin, size_t n, float* out) const {
  if (begin + n > cv.count) throw std::out_of_range("score range past the end");
  const size_t cb = cv.codeBytes(), sb = cv.signBytes();
  const int g = m_group, b = m_mseBits;
  const int chunkBits = g * b;
  const size_t patterns = size_t{1} << chunkBits;
  const size_t chunks = b ? (static_cast<size_t>(m_dim) + static_cast<size_t>(g) - 1) / static_cast<size_t>(g) : 0;
  const float* lut = q.codeLut.data();
  const float* slut = q.signLut.data();
  for (size_t i = 0; i < n; ++i) {
    const size_t k = begin + i;
    float s = 0.0f;
    if (b > 0) {
      const uint8_t* p = cv.codes.data() + k * cb;
      float acc = 0.0f;
      if (chunkBits == 8) {
        for (size_t c = 0; c < chunks; ++c) acc += lut[c * 256 + p[c]];
      } else {
        const uint32_t mask = static_cast<uint32_t>(patterns - 1);
        uint64_t buf = 0;
        int filled = 0;
        size_t byte = 0;
        for (size_t c = 0; c < chunks; ++c) {
          while (filled < chunkBits) {
            buf |= static_cast<uint64_t>(byte < cb ? p[byte] : 0) << filled;
            ++byte;
            filled += 8;
          }
          acc += lut[c * patterns + (buf & mask)];
          buf >>= chunkBits;
          filled -= chunkBits;
        }
      }
      s = halfToFloat(cv.norms[k]) * acc;
    }
    if (m_projDim > 0) {
      const uint8_t* z = cv.signs.data() + k * sb;
      float acc = 0.0f;
      for (size_t c = 0; c < sb; ++c) acc += slut[c * 256 + z[c]];
      s += halfToFloat(cv.residualNorms[k]) * q.qjlScale * acc;
    }
    out[i] = s;
  }
}

void Quantizer::scoresMany(const float* queries, size_t nq, const CompressedVectors& cv, float* out) const {
  const size_t d = static_cast<size_t>(m_dim);
  for (size_t qi = 0; qi < nq; ++qi) {
    const PreparedQuery pq = prepare(queries + qi * d);
    parallelRanges(cv.count, 4096, [&](size_t b, size_t e) { scores(pq, cv, b, e - b, out + qi * cv.count + b); });
  }
}

void Quantizer::weightedSum(const CompressedVectors& cv, const float* weights, float* out) const {
  const size_t d = static_cast<size_t>(m_dim);
  std::vector<double> acc(d, 0.0);
  if (m_mseBits > 0) {
    std::vector<uint8_t> idx(d);
    const float* cen = m_codebook->centroidsF.data();
    for (size_t i = 0; i < cv.count; ++i) {
      const double w = static_cast<double>(weights[i]) * halfToFloat(cv.norms[i]);
      if (w == 0.0) continue;
      unpackCodes(cv.codes.data() + i * cv.codeBytes(), d, m_mseBits, idx.data());
      for (size_t j = 0; j < d; ++j) acc[j] += w * cen[idx[j]];
    }
  }
  std::vector<float> accf(acc.begin(), acc.end());
  m_rotation.applyTranspose(accf.data(), out, 1);
}

}  // namespace tq
