// SPDX-License-Identifier: GPL-3.0-or-later
#include "validation/validate.h"

#include <algorithm>
#include <cmath>

#include "attention/attention.h"
#include "codebook/codebook.h"
#include "metrics/metrics.h"
#include "quant/quantizer.h"
#include "util/parallel.h"
#include "util/rng.h"

namespace tq {

namespace {
/// The quantizer of a check: the run's dimension and rotation, the given bits, mode and seed.
QuantConfig quantConfig(const ValidateConfig& c, int bits, KeyMode mode, uint64_t seed) {
  QuantConfig q;
  q.dim = c.dim;
  q.bits = bits;
  q.mode = mode;
  q.rotation = c.rotation;
  q.seed = seed;
  return q;
}
}  // namespace

bool ValidateFailures::operator()(bool cond, const std::string& what) {
  if (!cond) list.push_back(what);
  return cond;
}

std::vector<float> unitVectors(size_t n, int d, uint64_t seed, uint64_t stream) {
  std::vector<float> x(n * static_cast<size_t>(d));
  parallelRanges(n, 1024, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      double s = 0;
      float* r = x.data() + i * d;
      for (int j = 0; j < d; ++j) {
        r[j] = static_cast<float>(standardNormal(seed, stream, i * static_cast<size_t>(d) + j));
        s += static_cast<double>(r[j]) * r[j];
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(s));
      for (int j = 0; j < d; ++j) r[j] *= inv;
    }
  });
  return x;
}

json validateCodebooks(const ValidateConfig& c, ValidateFailures& check) {
  const int d = c.dim;
  const auto& bitsList = c.bits;
  // Codebook properties.
  json cbs = json::array();
  for (int b : bitsList) {
    const auto cb = codebook(d, b, CodebookLaw::Exact);
    bool sym = true, asc = true;
    for (size_t i = 0; i < cb->centroids.size(); ++i) {
      sym = sym && std::fabs(cb->centroids[i] + cb->centroids[cb->centroids.size() - 1 - i]) < 1e-12;
      if (i) asc = asc && cb->centroids[i] > cb->centroids[i - 1];
    }
    double psum = 0;
    for (double p : cb->cellProbabilities) psum += p;
    const bool conv = cb->fixedPointResidual < 1e-10;
    check(sym && asc && conv && std::fabs(psum - 1) < 1e-9, "codebook b=" + std::to_string(b) + " properties");
    cbs.push_back({{"bits", b}, {"levels", cb->centroids.size()}, {"symmetric", sym}, {"ascending", asc}, {"fixed_point_residual", cb->fixedPointResidual},
                   {"probability_sum", psum}, {"distortion_unit_vector", cb->distortionUnitVector}, {"entropy_bits", cb->entropyBits}});
  }
  return cbs;
}

json validateMse(const ValidateConfig& c, ValidateFailures& check) {
  const int d = c.dim;
  const uint64_t seed = c.seed;
  const auto& bitsList = c.bits;
  // MSE vs theory and bounds on n unit vectors.
  const size_t n = c.vectors;
  const auto X = unitVectors(n, d, seed, kStreamValidate);
  json mse = json::array();
  for (int b : bitsList) {
    const QuantConfig qc = quantConfig(c, b, KeyMode::Mse, seed);
    Quantizer q(qc);
    const auto cv = q.compress(X.data(), n);
    std::vector<float> rec(X.size());
    parallelRanges(n, 4096, [&](size_t s, size_t e) { q.decompress(cv, s, e - s, rec.data() + s * d); });
    double sum = 0;
    for (size_t i = 0; i < X.size(); ++i) sum += static_cast<double>(X[i] - rec[i]) * (X[i] - rec[i]);
    const double measured = sum / n, theory = theoryDistortion(d, b);
    const double lo = paperLowerBound(b), hi = paperUpperBound(b);
    const double rel = std::fabs(measured - theory) / theory;
    check(measured >= lo && measured <= hi, "MSE b=" + std::to_string(b) + " outside the paper's bounds");
    check(rel < 0.02, "MSE b=" + std::to_string(b) + " more than 2% from theory");
    mse.push_back({{"bits", b}, {"measured", measured}, {"theory", theory}, {"relative_error", rel}, {"lower_bound", lo}, {"upper_bound", hi}});
  }
  return mse;
}

json validateInnerProducts(const ValidateConfig& c, ValidateFailures& check) {
  const int d = c.dim;
  const uint64_t seed = c.seed;
  const auto& bitsList = c.bits;
  // Inner products on correlated pairs: q = a x + sqrt(1 - a^2) w, a uniform in [-1, 1].
  // the first np of validateMse's vectors (the generator is counter-based: the same values, no more)
  const size_t np = std::min<size_t>(c.vectors, 50000);
  const auto X = unitVectors(np, d, seed, kStreamValidate);
  const auto W = unitVectors(np, d, seed + 1, kStreamValidate + 1);
  std::vector<float> Qv(np * d);
  std::vector<double> exact(np);
  for (size_t i = 0; i < np; ++i) {
    const double alpha = 2.0 * uniformOpen(randomBits(seed, kStreamValidate + 2, i)) - 1.0;
    const double beta = std::sqrt(1 - alpha * alpha);
    double s = 0;
    for (int k = 0; k < d; ++k) {
      Qv[i * d + k] = static_cast<float>(alpha * X[i * d + k] + beta * W[i * d + k]);
      s += static_cast<double>(Qv[i * d + k]) * X[i * d + k];
    }
    exact[i] = s;
  }
  json ip = json::array();
  for (int b : bitsList) {
    for (KeyMode mode : {KeyMode::Mse, KeyMode::Prod}) {
      // Unbiasedness is an expectation over the random rotation and projection too: the pairs are
      // split over kDraws independently seeded quantizers.
      constexpr size_t kDraws = 8;
      std::vector<double> est(np);
      for (size_t draw = 0; draw < kDraws; ++draw) {
        const QuantConfig qc = quantConfig(c, b, mode, seed + 1000 * draw);
        Quantizer q(qc);
        const size_t lo = np * draw / kDraws, hi = np * (draw + 1) / kDraws;
        const auto cv = q.compress(X.data() + lo * d, hi - lo);
        parallelRanges(hi - lo, 1024, [&](size_t s, size_t e) {
          for (size_t i = s; i < e; ++i) {
            const PreparedQuery pq = q.prepare(Qv.data() + (lo + i) * d);
            float v;
            q.scores(pq, cv, i, 1, &v);
            est[lo + i] = v;
          }
        });
      }
      AttentionMetrics m;
      innerProductStats(exact.data(), est.data(), np, m);
      // noise around the fitted line (what the theory predicts); m.variance also holds the shrink
      const double noiseVar = m.variance > 0 ? m.variance - (m.slope - 1) * (m.slope - 1) * [&] {
        double mu = 0, v = 0;
        for (double e : exact) mu += e;
        mu /= np;
        for (double e : exact) v += (e - mu) * (e - mu);
        return v / (np - 1);
      }() : 0.0;
      const double expectSlope = mode == KeyMode::Mse ? 1.0 - theoryDistortion(d, b) : 1.0;
      const double predictedVar = theoryInnerProductVariance(d, b, mode, d);
      check(std::fabs(m.slope - expectSlope) < 0.01, std::string("inner-product slope ") + keyModeName(mode) + " b=" + std::to_string(b));
      ip.push_back({{"mode", keyModeName(mode)}, {"bits", b}, {"proj_dim", mode == KeyMode::Mse ? 0 : d}, {"bias", m.bias}, {"variance", m.variance},
                    {"noise_variance", noiseVar}, {"predicted_noise_variance", predictedVar}, {"slope", m.slope}, {"expected_slope", expectSlope},
                    {"correlation", m.correlation}, {"pairs", np}, {"quantizer_draws", kDraws}});
    }
  }
  return ip;

}

json validateNeedle(const ValidateConfig& c, ValidateFailures& check) {
  (void)check;  // informational: the hit rates are reported, not checked
  const int d = c.dim;
  const uint64_t seed = c.seed;
  const auto& bitsList = c.bits;
  // Needle retrieval: 4096 random unit keys, one of them correlated (0.6) with the query; top-1 found?
  json needle = json::array();
  const int trials = 20, keysN = 4096;
  for (int b : bitsList) {
    for (KeyMode mode : {KeyMode::Mse, KeyMode::Prod}) {
      const QuantConfig qc = quantConfig(c, b, mode, seed);
      Quantizer q(qc);
      int hits = 0;
      for (int t = 0; t < trials; ++t) {
        auto K = unitVectors(keysN, d, seed + 100 + t, kStreamValidate + 3);
        auto qv = unitVectors(1, d, seed + 200 + t, kStreamValidate + 4);
        const int pos = static_cast<int>(randomBits(seed, kStreamValidate + 5, t) % keysN);
        double s = 0;
        for (int k = 0; k < d; ++k) {
          K[pos * d + k] = 0.6f * qv[k] + 0.8f * K[pos * d + k];
          s += static_cast<double>(K[pos * d + k]) * K[pos * d + k];
        }
        for (int k = 0; k < d; ++k) K[pos * d + k] = static_cast<float>(K[pos * d + k] / std::sqrt(s));
        const auto cv = q.compress(K.data(), keysN);
        std::vector<float> sc(keysN);
        q.scoresMany(qv.data(), 1, cv, sc.data());
        if (std::max_element(sc.begin(), sc.end()) - sc.begin() == pos) ++hits;
      }
      needle.push_back({{"mode", keyModeName(mode)}, {"bits", b}, {"keys", keysN}, {"trials", trials}, {"hits", hits}, {"rate", hits / double(trials)}});
    }
  }
  return needle;

}

json validateKvCache(const ValidateConfig& c, ValidateFailures& check) {
  const int d = c.dim;
  const uint64_t seed = c.seed;
  const auto& bitsList = c.bits;
  // KV cache compression from bytes actually held (2 kv heads x 1024 tokens), vs the formula.
  json kv = json::array();
  {
    const int heads = 2, tokens = 1024;
    const auto K = unitVectors(static_cast<size_t>(heads) * tokens, d, seed + 7, kStreamValidate + 6);
    for (int b : bitsList) {
      const QuantConfig kc = quantConfig(c, b, KeyMode::Prod, seed);
      QuantConfig vc = kc;
      vc.mode = KeyMode::Mse;
      vc.seed = seed + 500;
      CompressedKvCache cache(kc, vc, heads);
      cache.append(K.data(), K.data(), tokens);
      const double held = static_cast<double>(cache.bytes());
      const double formula = static_cast<double>(heads) * tokens * (keyBytesPerVector(d, b, KeyMode::Prod, d) + valueBytesPerVector(d, b));
      const double fp16 = 2.0 * heads * tokens * 2.0 * d;
      check(held == formula, "cache bytes b=" + std::to_string(b) + " differ from the formula");
      kv.push_back({{"key_bits", b}, {"value_bits", b}, {"key_mode", "prod"}, {"bytes_held", held}, {"bytes_formula", formula}, {"fp16_bytes", fp16},
                    {"compression_ratio", fp16 / held}});
    }
  }
  return kv;
}

json validateEngine(const ValidateConfig& c, std::vector<std::string>* failures) {
  ValidateFailures check;
  json j;
  j["command"] = "validate";
  j["dim"] = c.dim;
  j["vectors"] = c.vectors;
  j["seed"] = c.seed;
  j["rotation"] = rotationName(c.rotation);
  j["codebooks"] = validateCodebooks(c, check);
  j["mse"] = validateMse(c, check);
  j["inner_products"] = validateInnerProducts(c, check);
  j["needle"] = validateNeedle(c, check);
  j["kv_cache"] = validateKvCache(c, check);
  j["ok"] = check.list.empty();
  j["failures"] = check.list;
  if (failures) *failures = check.list;
  return j;
}

}  // namespace tq
