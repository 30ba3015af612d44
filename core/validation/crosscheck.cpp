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
  std::vector<float> get(const std::string& n) const { return f.readFloat(n); }
  bool has(const std::string& n) const { return f.find(n) != nullptr; }
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
  const auto R = c.get(g.name + ".rotation");
  const auto cen = toDouble(c.get(g.name + ".centroids"));
  Quantizer q(d, Rotation::fromMatrix(d, R), cen, {}, 0);
  const CompressedVectors cv = q.compress(X.data(), n);
  const auto y = rotateD(R, X.data(), n, static_cast<size_t>(d));
  g.items.push_back(compareIndices(q, cv, c.get(g.name + ".indices"), y, midpoints(cen)));
  std::vector<float> rec(n * static_cast<size_t>(d));
  q.decompress(cv, 0, n, rec.data());
  g.items.push_back(compareAbs("reconstruction", toDouble(rec), c.get(g.name + ".reconstruction"), 1e-6, false));
  return g;
}

CrossCheckGroup checkProd(const Ctx& c, const std::string& name, int d, int b, int m, const std::vector<float>& X, size_t n,
                          const std::vector<float>& Y, size_t nq) {
  CrossCheckGroup g;
  g.name = name;
  g.dim = d;
  g.bits = b;
  const size_t D = static_cast<size_t>(d), M = static_cast<size_t>(m);
  const auto R = c.get(name + ".rotation");
  const auto cen = toDouble(c.get(name + ".centroids"));
  const auto S = c.get(name + ".qjl_matrix");
  Quantizer q(d, Rotation::fromMatrix(d, R), cen, S, m);
  const CompressedVectors cv = q.compress(X.data(), n);
  const auto y = rotateD(R, X.data(), n, D);
  g.items.push_back(compareIndices(q, cv, c.get(name + ".mse_indices"), y, midpoints(cen)));
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
  g.items.push_back(compareSigns("signs", zs, c.get(name + ".qjl_signs"), proj, scale));
  g.items.push_back(compareAbs("residual_norm", rn, c.get(name + ".residual_norm"), 1e-6, false));
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
  const auto refIp = c.get(name + ".inner_products");
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
  const auto R = c.get(g.name + ".rotation");
  const auto cen = toDouble(c.get(g.name + ".centroids"));
  const auto S = c.get(g.name + ".qjl_matrix");
  const size_t M = S.size() / D;
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
  const auto refRec = c.get(g.name + ".key_reconstruction_mse");
  g.items.push_back(compareHalfUlps("key_reconstruction_mse (emulated fp16 storage)", kmse16, refRec, 1.0, tieRows, D));
  auto er = compareAbs("key_reconstruction_mse (engine)", kEngine, refRec, 1e-3, true);
  er.informational = true;
  g.items.push_back(er);
  std::vector<double> proj, scale;
  project(S, M, r, n, D, proj, scale);
  std::vector<float> emulSigns(n * M);
  for (size_t i = 0; i < n * M; ++i) emulSigns[i] = proj[i] < 0 ? -1.0f : 1.0f;
  const auto refSigns = c.get(g.name + ".qjl_signs");
  g.items.push_back(compareSigns("signs (emulated fp16 storage)", emulSigns, refSigns, proj, scale));
  auto es = compareSigns("signs (engine)", oursSigns(q, cv), refSigns, proj, scale);
  es.informational = true;
  es.note = "engine takes the residual against its own fp32 reconstruction; differences are expected near zero";
  g.items.push_back(es);
  g.items.push_back(compareHalfUlps("residual_norm (emulated)", rn16, c.get(g.name + ".residual_norm"), 1.0, {}, rn16.size()));
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
  const auto refSc = c.get(g.name + ".scores");
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
  const auto R = c.get(g.name + ".rotation");
  const auto cen = toDouble(c.get(g.name + ".centroids"));
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
  g.items.push_back(compareIndices(q, cv, c.get(g.name + ".indices"), yUnit, midpoints(cen)));
  std::vector<double> norms(n);
  for (size_t i = 0; i < n; ++i) norms[i] = halfToFloat(cv.norms[i]);
  g.items.push_back(compareHalfUlps("norms", norms, c.get(g.name + ".norms"), 1.0, {}, norms.size()));
  std::vector<float> rec(n * D);
  q.decompress(cv, 0, n, rec.data());
  g.items.push_back(compareAbs("reconstruction", toDouble(rec), c.get(g.name + ".reconstruction"), 1e-3, true));
  return g;
}

}  // namespace

CrossCheckReport crossCheckReference(const std::string& path) {
  SafetensorsFile f(path);
  Ctx c{f};
  CrossCheckReport rep;
  rep.file = path;
  const std::regex re(R"(^d(\d+)\.b(\d+)\.(mse|prod_m(\d+)|v2|values)\.rotation$)");
  std::vector<std::tuple<int, int, std::string, int>> found;
  for (const auto& t : f.tensors()) {
    std::smatch m;
    if (std::regex_match(t.name, m, re))
      found.emplace_back(std::stoi(m[1]), std::stoi(m[2]), m[3].str(), m[4].matched ? std::stoi(m[4]) : 0);
  }
  std::sort(found.begin(), found.end());
  if (found.empty()) throw DataError(path, "no groups named like d{D}.b{B}.{mse|prod_m{M}|v2|values}.rotation were found");
  for (const auto& [d, b, kind, m] : found) {
    const std::string pre = "d" + std::to_string(d) + ".b" + std::to_string(b);
    const std::string dp = "d" + std::to_string(d);
    try {
      if (kind == "mse" || kind.rfind("prod", 0) == 0) {
        const auto& ti = f.require(dp + ".unit_vectors");
        const auto X = f.readFloat(ti);
        const size_t n = X.size() / static_cast<size_t>(d);
        if (kind == "mse") {
          rep.groups.push_back(checkMse(c, pre, d, b, X, n));
        } else {
          const auto Y = f.readFloat(dp + ".unit_queries");
          rep.groups.push_back(checkProd(c, pre + "." + kind, d, b, m, X, n, Y, Y.size() / static_cast<size_t>(d)));
        }
      } else {
        const auto& kt = f.require(dp + ".keys");
        const auto K = f.readFloat(kt);
        const size_t n = K.size() / static_cast<size_t>(d);
        if (kind == "v2") {
          const auto& qt = f.require(dp + ".key_queries");
          const auto Qs = f.readFloat(qt);
          const size_t heads = kt.shape.size() == 3 ? static_cast<size_t>(kt.shape[0]) : 1;
          const size_t nqPerHead = Qs.size() / static_cast<size_t>(d) / heads;
          rep.groups.push_back(checkV2(c, pre, d, b, K, n, Qs, heads, nqPerHead));
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
