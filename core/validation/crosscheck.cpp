// SPDX-License-Identifier: GPL-3.0-or-later
#include "validation/crosscheck.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <set>

#include "data/safetensors.h"
#include "quant/bitpack.h"
#include "quant/quantizer.h"
#include "util/half.h"
#include "util/memory_budget.h"

namespace tq {

bool CrossCheckGroup::pass() const {
  return std::all_of(items.begin(), items.end(), [](const CrossCheckItem& i) { return i.pass(); });
}
bool CrossCheckReport::pass() const {
  return !groups.empty() && std::all_of(groups.begin(), groups.end(), [](const CrossCheckGroup& g) { return g.pass(); });
}

namespace {

constexpr double kTie = 1e-6;
const double kSqrtHalfPi = std::sqrt(M_PI / 2.0);

struct Ctx {
  const SafetensorsFile& f;
  /// The tensor's values, after checking that it exists and holds exactly `expected` values (the size the
  /// engine's side of the comparison has), so that no comparison reads past either array.
  std::vector<float> get(const std::string& n, size_t expected) const {
    const TensorInfo& t = f.require(n);
    if (t.elements() != expected)
      throw DataError(f.path(), "tensor " + n + " holds " + std::to_string(t.elements()) + " values, but the group needs " + std::to_string(expected));
    return read(t);
  }
  /// The tensor's values when their count is a positive multiple of `unit`; *count = elements / unit.
  std::vector<float> getRows(const std::string& n, size_t unit, size_t* count) const {
    const TensorInfo& t = f.require(n);
    if (t.elements() == 0 || t.elements() % unit != 0)
      throw DataError(f.path(), "tensor " + n + " holds " + std::to_string(t.elements()) + " values, not a positive multiple of " + std::to_string(unit));
    *count = static_cast<size_t>(t.elements() / unit);
    return read(t);
  }
  std::vector<float> read(const TensorInfo& t) const {
    try {
      checkMemory(4.0 * static_cast<double>(t.elements()), "reading tensor " + t.name + " as float");
    } catch (const BudgetError& e) {
      throw DataError(f.path(), e.what());
    }
    return f.readFloat(t);
  }
};

std::vector<double> toDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// y = R x in double for n rows.
std::vector<double> rotateD(const std::vector<float>& R, const float* x, size_t n, size_t d) {
  std::vector<double> y(n * d, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < d; ++j) {
      double s = 0;
      for (size_t k = 0; k < d; ++k) s += static_cast<double>(R[j * d + k]) * x[i * d + k];
      y[i * d + j] = s;
    }
  return y;
}

bool nearBoundary(double y, const std::vector<double>& boundaries) {
  for (double b : boundaries)
    if (std::fabs(y - b) < kTie) return true;
  return false;
}

std::vector<double> midpoints(const std::vector<double>& c) {
  std::vector<double> b;
  for (size_t i = 1; i < c.size(); ++i) b.push_back(0.5 * (c[i - 1] + c[i]));
  return b;
}

CrossCheckItem compareIndices(const Quantizer& q, const CompressedVectors& cv, const std::vector<float>& ref,
                              const std::vector<double>& yUnit, const std::vector<double>& boundaries) {
  CrossCheckItem it;
  it.what = "indices";
  const size_t d = static_cast<size_t>(q.dim());
  std::vector<uint8_t> idx(d);
  for (size_t i = 0; i < cv.count; ++i) {
    q.unpack(cv, i, idx.data(), nullptr, nullptr, nullptr);
    for (size_t j = 0; j < d; ++j) {
      ++it.compared;
      if (idx[j] != static_cast<uint8_t>(ref[i * d + j])) {
        if (nearBoundary(yUnit[i * d + j], boundaries)) ++it.ties;
        else ++it.mismatches;
      }
    }
  }
  it.note = "ties: rotated coordinate within 1e-6 of a boundary";
  return it;
}

CrossCheckItem compareAbs(const std::string& what, const std::vector<double>& ours, const std::vector<float>& ref, double tol, bool relToMax) {
  CrossCheckItem it;
  it.what = what;
  it.tolerance = tol;
  double scale = 1.0;
  if (relToMax) {
    scale = 0;
    for (float r : ref) scale = std::max(scale, static_cast<double>(std::fabs(r)));
    if (scale == 0) scale = 1;
    it.note = "error relative to the largest |value|";
  }
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(ours[i] - ref[i]) / scale;
    it.maxError = std::max(it.maxError, e);
    ++it.compared;
    if (!(e <= tol)) ++it.mismatches;
  }
  return it;
}

// Error in units of the reference value's fp16 ulp.
// Error in fp16 ulps (of the larger of the two values). Rows flagged in tieRows (a rotated coordinate
// within 1e-6 of a boundary, so the index may legitimately differ) are counted as ties.
CrossCheckItem compareHalfUlps(const std::string& what, const std::vector<double>& ours, const std::vector<float>& ref, double maxUlps,
                               const std::vector<bool>& tieRows = {}, size_t rowLen = 1) {
  CrossCheckItem it;
  it.what = what;
  it.tolerance = maxUlps;
  it.note = "error in fp16 ulps (ulp floor at 1e-3 of the row maximum)";
  for (size_t i = 0; i < ref.size(); ++i) {
    const float r = ref[i];
    // Entries far below their row's scale are dominated by fp32 summation order (cancellation), so
    // the ulp is taken at no less than 1e-3 of the row's largest |value|.
    float rowMax = 0;
    const size_t row = i / rowLen;
    for (size_t k = row * rowLen; k < std::min(ref.size(), (row + 1) * rowLen); ++k) rowMax = std::max(rowMax, std::fabs(ref[k]));
    int e;
    std::frexp(std::max({std::fabs(r), static_cast<float>(std::fabs(ours[i])), 1e-3f * rowMax, 6.1035156e-05f}), &e);
    const double ulp = std::ldexp(1.0, e - 11);
    const double err = std::fabs(ours[i] - r) / ulp;
    ++it.compared;
    if (!(err <= maxUlps) && !tieRows.empty() && tieRows[i / rowLen]) {
      ++it.ties;
      continue;
    }
    it.maxError = std::max(it.maxError, err);
    if (!(err <= maxUlps)) ++it.mismatches;
  }
  return it;
}

// Sign comparison; a differing sign is a tie when the projected value is within 1e-6 of zero
// relative to ||S_i|| ||r||.
CrossCheckItem compareSigns(const std::string& what, const std::vector<float>& ours, const std::vector<float>& ref,
                            const std::vector<double>& projected, const std::vector<double>& scale) {
  CrossCheckItem it;
  it.what = what;
  it.note = "ties: |S r| within 1e-6 of 0 relative to ||S_i|| ||r||";
  for (size_t i = 0; i < ref.size(); ++i) {
    ++it.compared;
    if ((ours[i] > 0) != (ref[i] > 0)) {
      if (std::fabs(projected[i]) <= kTie * scale[i]) ++it.ties;
      else ++it.mismatches;
    }
  }
  return it;
}

// Projects rows r (n x d, double) with S (m x d): returns n x m values and their tie scales.
void project(const std::vector<float>& S, size_t m, const std::vector<double>& r, size_t n, size_t d,
             std::vector<double>& out, std::vector<double>& scale) {
  out.assign(n * m, 0);
  scale.assign(n * m, 0);
  std::vector<double> rowNorm(m, 0);
  for (size_t a = 0; a < m; ++a) {
    double s = 0;
    for (size_t k = 0; k < d; ++k) s += static_cast<double>(S[a * d + k]) * S[a * d + k];
    rowNorm[a] = std::sqrt(s);
  }
  for (size_t i = 0; i < n; ++i) {
    double rn = 0;
    for (size_t k = 0; k < d; ++k) rn += r[i * d + k] * r[i * d + k];
    rn = std::sqrt(rn);
    for (size_t a = 0; a < m; ++a) {
      double s = 0;
      for (size_t k = 0; k < d; ++k) s += static_cast<double>(S[a * d + k]) * r[i * d + k];
      out[i * m + a] = s;
      scale[i * m + a] = rowNorm[a] * rn;
    }
  }
}

std::vector<float> oursSigns(const Quantizer& q, const CompressedVectors& cv) {
  const size_t m = static_cast<size_t>(q.projDim());
  std::vector<float> s(cv.count * m);
  for (size_t i = 0; i < cv.count; ++i) q.unpack(cv, i, nullptr, s.data() + i * m, nullptr, nullptr);
  return s;
}

CrossCheckGroup checkMse(const Ctx& c, const std::string& pre, int d, int b, const std::vector<float>& X, size_t n) {
  CrossCheckGroup g;
  g.name = pre + ".mse";
  g.dim = d;
  g.bits = b;
  const size_t D = static_cast<size_t>(d);
  const auto R = c.get(g.name + ".rotation", D * D);
  const auto cen = toDouble(c.get(g.name + ".centroids", size_t{1} << b));
  Quantizer q(d, Rotation::fromMatrix(d, R), cen, {}, 0);
  const CompressedVectors cv = q.compress(X.data(), n);
  const auto y = rotateD(R, X.data(), n, D);
  g.items.push_back(compareIndices(q, cv, c.get(g.name + ".indices", n * D), y, midpoints(cen)));
  std::vector<float> rec(n * D);
  q.decompress(cv, 0, n, rec.data());
  g.items.push_back(compareAbs("reconstruction", toDouble(rec), c.get(g.name + ".reconstruction", n * D), 1e-6, false));
  return g;
}

CrossCheckGroup checkProd(const Ctx& c, const std::string& name, int d, int b, int m, const std::vector<float>& X, size_t n,
                          const std::vector<float>& Y, size_t nq) {
  CrossCheckGroup g;
  g.name = name;
  g.dim = d;
  g.bits = b;
  const size_t D = static_cast<size_t>(d), M = static_cast<size_t>(m);
  const auto R = c.get(name + ".rotation", D * D);
  const auto cen = toDouble(c.get(name + ".centroids", size_t{1} << std::max(1, b - 1)));
  const auto S = c.get(name + ".qjl_matrix", M * D);
  Quantizer q(d, Rotation::fromMatrix(d, R), cen, S, m);
  const CompressedVectors cv = q.compress(X.data(), n);
  const auto y = rotateD(R, X.data(), n, D);
  g.items.push_back(compareIndices(q, cv, c.get(name + ".mse_indices", n * D), y, midpoints(cen)));
  std::vector<float> xm(n * D);
  q.decompress(cv, 0, n, xm.data());
  std::vector<double> r(n * D), rn(n);
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t k = 0; k < D; ++k) {
      r[i * D + k] = static_cast<double>(X[i * D + k]) - xm[i * D + k];
      s += r[i * D + k] * r[i * D + k];
    }
    rn[i] = std::sqrt(s);
  }
  std::vector<double> proj, scale;
  project(S, M, r, n, D, proj, scale);
  const auto zs = oursSigns(q, cv);
  g.items.push_back(compareSigns("signs", zs, c.get(name + ".qjl_signs", n * M), proj, scale));
  g.items.push_back(compareAbs("residual_norm", rn, c.get(name + ".residual_norm", n), 1e-6, false));
  // Inner products by the reference's formula from our codes, signs and fp32 residual norm.
  std::vector<double> ip(nq * n), ipEngine(nq * n);
  std::vector<float> eng(n);
  for (size_t qi = 0; qi < nq; ++qi) {
    const float* yq = Y.data() + qi * D;
    std::vector<double> sq(M, 0);
    for (size_t a = 0; a < M; ++a)
      for (size_t k = 0; k < D; ++k) sq[a] += static_cast<double>(S[a * D + k]) * yq[k];
    for (size_t i = 0; i < n; ++i) {
      double dot = 0, qj = 0;
      for (size_t k = 0; k < D; ++k) dot += static_cast<double>(yq[k]) * xm[i * D + k];
      for (size_t a = 0; a < M; ++a) qj += sq[a] * zs[i * M + a];
      ip[qi * n + i] = dot + rn[i] * kSqrtHalfPi / static_cast<double>(m) * qj;
    }
    const PreparedQuery pq = q.prepare(yq);
    q.scores(pq, cv, 0, n, eng.data());
    for (size_t i = 0; i < n; ++i) ipEngine[qi * n + i] = eng[i];
  }
  const auto refIp = c.get(name + ".inner_products", nq * n);
  g.items.push_back(compareAbs("inner_products", ip, refIp, 1e-5, true));
  auto e = compareAbs("inner_products (engine, fp16 norms)", ipEngine, refIp, 1e-3, true);
  e.informational = true;
  e.note = "engine's own look-up-table scores with fp16 residual norms; error relative to the largest |value|";
  g.items.push_back(e);
  return g;
}

CrossCheckGroup checkV2(const Ctx& c, const std::string& pre, int d, int b, const std::vector<float>& K, size_t n,
                        const std::vector<float>& Qs, size_t heads, size_t nqPerHead) {
  CrossCheckGroup g;
  g.name = pre + ".v2";
  g.dim = d;
  g.bits = b;
  const size_t D = static_cast<size_t>(d);
  const auto R = c.get(g.name + ".rotation", D * D);
  const auto cen = toDouble(c.get(g.name + ".centroids", size_t{1} << std::max(1, b - 1)));
  size_t M = 0;
  const auto S = c.getRows(g.name + ".qjl_matrix", D, &M);
  if (M > 16384) throw DataError(c.f.path(), g.name + ".qjl_matrix has " + std::to_string(M) + " rows (at most 16384)");
  Quantizer q(d, Rotation::fromMatrix(d, R), cen, S, static_cast<int>(M));
  const CompressedVectors cv = q.compress(K.data(), n);
  // Emulate the reference: residual against fp32 ||k|| R^T c[idx]; that reconstruction and ||r|| stored as fp16.
  std::vector<uint8_t> idx(D);
  std::vector<double> kmse16(n * D), r(n * D), rn16(n), kEngine(n * D);
  std::vector<float> tmp(D), back(D), eng(n * D);
  q.decompress(cv, 0, n, eng.data());
  for (size_t i = 0; i < n; ++i) {
    q.unpack(cv, i, idx.data(), nullptr, nullptr, nullptr);
    double nn = 0;
    for (size_t k = 0; k < D; ++k) nn += static_cast<double>(K[i * D + k]) * K[i * D + k];
    const float nrm = static_cast<float>(std::sqrt(nn));
    for (size_t k = 0; k < D; ++k) tmp[k] = static_cast<float>(cen[idx[k]]);
    for (size_t k = 0; k < D; ++k) {
      double s = 0;
      for (size_t j = 0; j < D; ++j) s += static_cast<double>(R[j * D + k]) * tmp[j];
      back[k] = static_cast<float>(s);
    }
    double rs = 0;
    for (size_t k = 0; k < D; ++k) {
      const float km = back[k] * nrm;  // the reference takes the residual before fp16 storage
      kmse16[i * D + k] = roundToHalf(km);
      r[i * D + k] = static_cast<double>(K[i * D + k]) - km;
      rs += r[i * D + k] * r[i * D + k];
      kEngine[i * D + k] = eng[i * D + k];
    }
    rn16[i] = roundToHalf(static_cast<float>(std::sqrt(rs)));
  }
  // v2 stores no indices: a key whose rotated unit vector has a coordinate at a boundary may differ.
  std::vector<bool> tieRows(n, false);
  {
    std::vector<float> U(K);
    for (size_t i = 0; i < n; ++i) {
      double s = 0;
      for (size_t k = 0; k < D; ++k) s += static_cast<double>(K[i * D + k]) * K[i * D + k];
      for (size_t k = 0; k < D; ++k) U[i * D + k] = static_cast<float>(K[i * D + k] / (std::sqrt(s) + 1e-8));
    }
    const auto yu = rotateD(R, U.data(), n, D);
    const auto bnd = midpoints(cen);
    for (size_t i = 0; i < n; ++i)
      for (size_t k = 0; k < D; ++k)
        if (nearBoundary(yu[i * D + k], bnd)) tieRows[i] = true;
  }
  const auto refRec = c.get(g.name + ".key_reconstruction_mse", n * D);
  g.items.push_back(compareHalfUlps("key_reconstruction_mse (emulated fp16 storage)", kmse16, refRec, 1.0, tieRows, D));
  auto er = compareAbs("key_reconstruction_mse (engine)", kEngine, refRec, 1e-3, true);
  er.informational = true;
  g.items.push_back(er);
  std::vector<double> proj, scale;
  project(S, M, r, n, D, proj, scale);
  std::vector<float> emulSigns(n * M);
  for (size_t i = 0; i < n * M; ++i) emulSigns[i] = proj[i] < 0 ? -1.0f : 1.0f;
  const auto refSigns = c.get(g.name + ".qjl_signs", n * M);
  g.items.push_back(compareSigns("signs (emulated fp16 storage)", emulSigns, refSigns, proj, scale));
  auto es = compareSigns("signs (engine)", oursSigns(q, cv), refSigns, proj, scale);
  es.informational = true;
  es.note = "engine takes the residual against its own fp32 reconstruction; differences are expected near zero";
  g.items.push_back(es);
  g.items.push_back(compareHalfUlps("residual_norm (emulated)", rn16, c.get(g.name + ".residual_norm", n), 1.0, {}, rn16.size()));
  // Scores [heads, nq, seq]: keys of head h are rows h*seq ...
  const size_t seq = n / heads;
  std::vector<double> sc(heads * nqPerHead * seq), scEngine(sc.size());
  std::vector<float> engScores(seq);
  for (size_t h = 0; h < heads; ++h)
    for (size_t qi = 0; qi < nqPerHead; ++qi) {
      const float* yq = Qs.data() + (h * nqPerHead + qi) * D;
      std::vector<double> sq(M, 0);
      for (size_t a = 0; a < M; ++a)
        for (size_t k = 0; k < D; ++k) sq[a] += static_cast<double>(S[a * D + k]) * yq[k];
      for (size_t t = 0; t < seq; ++t) {
        const size_t i = h * seq + t;
        double dot = 0, qj = 0;
        for (size_t k = 0; k < D; ++k) dot += static_cast<double>(yq[k]) * kmse16[i * D + k];
        for (size_t a = 0; a < M; ++a) qj += sq[a] * emulSigns[i * M + a];
        sc[(h * nqPerHead + qi) * seq + t] = dot + kSqrtHalfPi / static_cast<double>(M) * qj * rn16[i];
      }
      const PreparedQuery pq = q.prepare(yq);
      q.scores(pq, cv, h * seq, seq, engScores.data());
      for (size_t t = 0; t < seq; ++t) scEngine[(h * nqPerHead + qi) * seq + t] = engScores[t];
    }
  const auto refSc = c.get(g.name + ".scores", heads * nqPerHead * seq);
  g.items.push_back(compareAbs("scores (emulated fp16 storage)", sc, refSc, 5e-5, true));
  g.items.push_back(compareAbs("scores (engine storage)", scEngine, refSc, 1e-3, true));
  return g;
}

CrossCheckGroup checkValues(const Ctx& c, const std::string& pre, int d, int b, const std::vector<float>& V, size_t n) {
  CrossCheckGroup g;
  g.name = pre + ".values";
  g.dim = d;
  g.bits = b;
  const size_t D = static_cast<size_t>(d);
  const auto R = c.get(g.name + ".rotation", D * D);
  const auto cen = toDouble(c.get(g.name + ".centroids", size_t{1} << b));
  Quantizer q(d, Rotation::fromMatrix(d, R), cen, {}, 0);
  const CompressedVectors cv = q.compress(V.data(), n);
  std::vector<double> yUnit(n * D);
  {
    std::vector<float> U(V);
    for (size_t i = 0; i < n; ++i) {
      double s = 0;
      for (size_t k = 0; k < D; ++k) s += static_cast<double>(V[i * D + k]) * V[i * D + k];
      const double nn = std::sqrt(s);
      for (size_t k = 0; k < D; ++k) U[i * D + k] = static_cast<float>(V[i * D + k] / nn);
    }
    yUnit = rotateD(R, U.data(), n, D);
  }
  g.items.push_back(compareIndices(q, cv, c.get(g.name + ".indices", n * D), yUnit, midpoints(cen)));
  std::vector<double> norms(n);
  for (size_t i = 0; i < n; ++i) norms[i] = halfToFloat(cv.norms[i]);
  g.items.push_back(compareHalfUlps("norms", norms, c.get(g.name + ".norms", n), 1.0, {}, norms.size()));
  std::vector<float> rec(n * D);
  q.decompress(cv, 0, n, rec.data());
  g.items.push_back(compareAbs("reconstruction", toDouble(rec), c.get(g.name + ".reconstruction", n * D), 1e-3, true));
  return g;
}

}  // namespace

CrossCheckReport crossCheckReference(const std::string& path) {
  SafetensorsFile f(path);
  Ctx c{f};
  CrossCheckReport rep;
  rep.file = path;
  const std::regex re(R"(^d(\d{1,6})\.b(\d{1,3})\.(mse|prod_m(\d{1,6})|v2|values)\.rotation$)");
  std::vector<std::tuple<int, int, std::string, int>> found;
  for (const auto& t : f.tensors()) {
    std::smatch m;
    if (!std::regex_match(t.name, m, re)) continue;
    const int d = std::atoi(m[1].str().c_str()), b = std::atoi(m[2].str().c_str()), pm = m[4].matched ? std::atoi(m[4].str().c_str()) : 0;
    const std::string kind = m[3].str();
    // Limits of the engine's quantizer, checked before any tensor of the group is read.
    if (d < 2 || d > 4096) throw DataError(path, "group " + t.name + ": head dimension " + std::to_string(d) + " is outside the quantizer's 2..4096");
    if (b < 1 || b > 8) throw DataError(path, "group " + t.name + ": " + std::to_string(b) + " bits is outside 1..8");
    if (kind.rfind("prod", 0) == 0 && (pm < 1 || pm > 16384))
      throw DataError(path, "group " + t.name + ": projection size " + std::to_string(pm) + " is outside 1..16384");
    found.emplace_back(d, b, kind, pm);
  }
  std::sort(found.begin(), found.end());
  if (found.empty()) throw DataError(path, "no groups named like d{D}.b{B}.{mse|prod_m{M}|v2|values}.rotation were found");
  for (const auto& [d, b, kind, m] : found) {
    const std::string pre = "d" + std::to_string(d) + ".b" + std::to_string(b);
    const std::string dp = "d" + std::to_string(d);
    const size_t D = static_cast<size_t>(d);
    const std::string group = pre + "." + kind;  // structured bindings cannot be captured in C++17 (clang)
    const int dim = d;
    auto boundWork = [&](size_t n) {  // the double-precision rotation of every row: n d^2 multiply-adds
      const double ops = static_cast<double>(n) * static_cast<double>(D) * static_cast<double>(D);
      if (ops > 2e10)
        throw DataError(path, "group " + group + ": " + std::to_string(n) + " vectors of dimension " + std::to_string(dim) +
                                  " need " + std::to_string(static_cast<long long>(ops / 1e9)) + " G multiply-adds, more than the 20 G limit of crosscheck");
    };
    try {
      if (kind == "mse" || kind.rfind("prod", 0) == 0) {
        size_t n = 0;
        const auto X = c.getRows(dp + ".unit_vectors", D, &n);
        boundWork(n);
        if (kind == "mse") {
          rep.groups.push_back(checkMse(c, pre, d, b, X, n));
        } else {
          size_t nq = 0;
          const auto Y = c.getRows(dp + ".unit_queries", D, &nq);
          rep.groups.push_back(checkProd(c, pre + "." + kind, d, b, m, X, n, Y, nq));
        }
      } else {
        const auto& kt = f.require(dp + ".keys");
        size_t n = 0;
        const auto K = c.getRows(dp + ".keys", D, &n);
        boundWork(n);
        if (kind == "v2") {
          const size_t heads = kt.shape.size() == 3 ? static_cast<size_t>(kt.shape[0]) : 1;
          if (heads == 0 || n % heads != 0)
            throw DataError(path, "tensor " + dp + ".keys: " + std::to_string(n) + " keys do not divide into " + std::to_string(heads) + " heads");
          size_t nq = 0;
          const auto Qs = c.getRows(dp + ".key_queries", D * heads, &nq);
          rep.groups.push_back(checkV2(c, pre, d, b, K, n, Qs, heads, nq));
        } else {
          rep.groups.push_back(checkValues(c, pre, d, b, K, n));
        }
      }
    } catch (const DataError&) {
      throw;
    } catch (const std::exception& e) {
      throw DataError(path, "group " + pre + "." + kind + ": " + e.what());
    }
  }
  return rep;
}

}  // namespace tq
