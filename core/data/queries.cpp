// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/queries.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "util/rng.h"

namespace tq {

const char* querySourceName(QuerySource q) {
  switch (q) {
    case QuerySource::Dump: return "dump";
    case QuerySource::LastKey: return "last-key";
    default: return "random";
  }
}

QuerySource parseQuerySource(const std::string& s) {
  if (s == "dump") return QuerySource::Dump;
  if (s == "last-key" || s == "lastkey" || s == "last_key") return QuerySource::LastKey;
  if (s == "random") return QuerySource::Random;
  throw std::invalid_argument("unknown query source '" + s + "' (expected dump, last-key or random)");
}

std::string querySourceLabel(QuerySource q) {
  switch (q) {
    case QuerySource::Dump: return "dump queries";
    case QuerySource::LastKey: return "proxy: last key";
    default: return "proxy: random queries";
  }
}

uint64_t layerSeed(uint64_t seed, int layer, bool values) {
  return seed + 1000003ull * static_cast<uint64_t>(layer) + (values ? 500ull : 0ull);
}

std::vector<int> evaluationPositions(QuerySource q, int seq, int maxQueries) {
  if (seq <= 0) return {};
  if (q == QuerySource::LastKey) return {seq - 1};
  const int lo = std::max(0, seq / 4);
  const int n = std::max(1, std::min(maxQueries, seq - lo));
  std::vector<int> pos;
  pos.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    pos.push_back(n == 1 ? seq - 1 : lo + static_cast<int>(std::llround(static_cast<double>(i) * (seq - 1 - lo) / (n - 1))));
  return pos;
}

std::vector<float> queryVectors(const KvSource& src, QuerySource q, uint64_t seed, int layer, int qHead, const std::vector<float>& keys,
                                const std::vector<int>& positions) {
  const KvShape sh = src.shape();
  const size_t D = static_cast<size_t>(sh.headDim);
  const int seq = sh.seq;
  for (int t : positions)
    if (t < 0 || t >= seq) throw std::out_of_range("query position " + std::to_string(t) + " outside 0.." + std::to_string(seq - 1));
  if (keys.size() != static_cast<size_t>(seq) * D) throw std::invalid_argument("queryVectors: keys of the wrong size");
  std::vector<float> out;
  out.reserve(positions.size() * D);
  if (q == QuerySource::Dump) {
    out = src.queryRows(layer, qHead, positions);
    if (out.size() != positions.size() * D)
      throw std::invalid_argument("the source has no queries for layer " + std::to_string(layer) + " head " + std::to_string(qHead) +
                                  ": choose a proxy query source (last-key or random)");
    return out;
  }
  if (q == QuerySource::LastKey) {
    for (size_t i = 0; i < positions.size(); ++i) out.insert(out.end(), keys.end() - static_cast<long>(D), keys.end());
    return out;
  }
  double meanNorm = 0;
  for (int t = 0; t < seq; ++t) {
    double s = 0;
    for (size_t j = 0; j < D; ++j) s += static_cast<double>(keys[t * D + j]) * keys[t * D + j];
    meanNorm += std::sqrt(s);
  }
  meanNorm /= std::max(1, seq);
  const uint64_t sd = layerSeed(seed, layer, false) ^ 0x51ed270b27f2a9ull;
  std::vector<float> v(D);
  for (int t : positions) {
    double s = 0;
    for (size_t j = 0; j < D; ++j) {
      v[j] = static_cast<float>(standardNormal(sd, kStreamValidate + static_cast<uint64_t>(qHead), static_cast<uint64_t>(t) * D + j));
      s += static_cast<double>(v[j]) * v[j];
    }
    const float sc = static_cast<float>(meanNorm / std::max(1e-30, std::sqrt(s)));
    for (size_t j = 0; j < D; ++j) out.push_back(v[j] * sc);
  }
  return out;
}

}  // namespace tq
