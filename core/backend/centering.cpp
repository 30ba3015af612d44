// SPDX-License-Identifier: GPL-3.0-or-later
#include "backend/centering.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "metrics/metrics.h"
#include "util/half.h"

namespace tq {

const char* keyCenteringName(KeyCentering c) {
  switch (c) {
    case KeyCentering::Causal: return "causal";
    case KeyCentering::Oracle: return "oracle";
    default: return "none";
  }
}

KeyCentering parseKeyCentering(const std::string& s, int* window) {
  if (s == "none") return KeyCentering::None;
  if (s == "oracle") return KeyCentering::Oracle;
  if (s == "causal") return KeyCentering::Causal;
  if (s.rfind("causal:", 0) == 0) {
    const std::string w = s.substr(7);
    char* end = nullptr;
    const long v = std::strtol(w.c_str(), &end, 10);
    if (w.empty() || *end != 0 || v < 1 || v > (1 << 24))
      throw std::invalid_argument("centering window must be a whole number in 1..16777216, got '" + w + "'");
    if (window) *window = static_cast<int>(v);
    return KeyCentering::Causal;
  }
  throw std::invalid_argument("unknown key centering '" + s + "' (expected none, causal, causal:W or oracle)");
}

std::string keyCenteringLabel(KeyCentering c, int window) {
  if (c == KeyCentering::Causal) return "causal:" + std::to_string(window);
  return keyCenteringName(c);
}

CentredKeys centreKeys(const float* K, size_t seq, size_t d, KeyCentering c, int window) {
  CentredKeys out;
  if (c == KeyCentering::None || seq == 0 || d == 0) return out;
  const size_t from = c == KeyCentering::Causal ? std::min<size_t>(seq, static_cast<size_t>(std::max(1, window))) : seq;
  std::vector<double> acc(d, 0.0);
  for (size_t t = 0; t < from; ++t)
    for (size_t j = 0; j < d; ++j) acc[j] += K[t * d + j];
  out.mu.resize(d);
  for (size_t j = 0; j < d; ++j) out.mu[j] = roundToHalf(static_cast<float>(acc[j] / static_cast<double>(from)));
  out.keys.resize(seq * d);
  for (size_t t = 0; t < seq; ++t)
    for (size_t j = 0; j < d; ++j) out.keys[t * d + j] = K[t * d + j] - out.mu[j];
  out.window = c == KeyCentering::Causal ? from : 0;
  return out;
}

void uncentreScores(const CentredKeys& c, const float* queries, size_t nq, const float* keys, size_t seq, size_t d, float* est) {
  if (!c.active()) return;
  const size_t w = std::min(c.window, seq);
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries + i * d;
    double qm = 0;
    for (size_t j = 0; j < d; ++j) qm += static_cast<double>(q[j]) * c.mu[j];
    float* row = est + i * seq;
    for (size_t t = 0; t < seq; ++t) row[t] += static_cast<float>(qm);
    for (size_t t = 0; t < w; ++t) {
      double s = 0;
      for (size_t j = 0; j < d; ++j) s += static_cast<double>(q[j]) * keys[t * d + j];
      row[t] = static_cast<float>(s);
    }
  }
}

double centredKeyBytes(double compressedBytes, size_t seq, size_t d, const CentredKeys& c, size_t recent) {
  if (seq == 0) return compressedBytes;
  const size_t w = std::min(c.active() ? c.window : 0, seq);
  const size_t exact = w + std::min(recent, seq - w);
  return windowedKeyBytes(compressedBytes, static_cast<double>(seq), static_cast<double>(d), static_cast<double>(exact), c.active());
}

double centredKeyBytes(double compressedBytes, size_t seq, size_t d, KeyCentering c, int window, size_t recent) {
  CentredKeys k;
  if (c != KeyCentering::None) {
    k.mu.assign(d, 0.0f);
    k.window = c == KeyCentering::Causal ? std::min<size_t>(seq, static_cast<size_t>(std::max(1, window))) : 0;
  }
  return centredKeyBytes(compressedBytes, seq, d, k, recent);
}

void exactRecentScores(size_t recent, const float* queries, size_t nq, const float* keys, size_t seq, size_t d, float* est) {
  const size_t r = std::min(recent, seq);
  for (size_t i = 0; i < nq && r > 0; ++i)
    for (size_t t = seq - r; t < seq; ++t) {
      double s = 0;
      for (size_t j = 0; j < d; ++j) s += static_cast<double>(queries[i * d + j]) * keys[t * d + j];
      est[i * seq + t] = static_cast<float>(s);
    }
}

}  // namespace tq
