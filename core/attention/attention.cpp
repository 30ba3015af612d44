// SPDX-License-Identifier: GPL-3.0-or-later
#include "attention/attention.h"

#include <Eigen/Dense>
#include <stdexcept>

#include "metrics/metrics.h"

namespace tq {

namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}

void exactScores(const float* queries, size_t nq, const float* keys, size_t n, size_t d, float* out) {
  if (nq == 0 || n == 0) return;
  const auto D = static_cast<Eigen::Index>(d);
  Eigen::Map<const RowMat> Q(queries, static_cast<Eigen::Index>(nq), D);
  Eigen::Map<const RowMat> K(keys, static_cast<Eigen::Index>(n), D);
  Eigen::Map<RowMat> S(out, static_cast<Eigen::Index>(nq), static_cast<Eigen::Index>(n));
  S.noalias() = Q * K.transpose();
}

void weightedValues(const double* p, size_t n, const float* values, size_t dv, float* out) {
  std::vector<double> acc(dv, 0.0);
  for (size_t i = 0; i < n; ++i) {
    if (p[i] == 0) continue;
    const float* v = values + i * dv;
    for (size_t j = 0; j < dv; ++j) acc[j] += p[i] * v[j];
  }
  for (size_t j = 0; j < dv; ++j) out[j] = static_cast<float>(acc[j]);
}

std::vector<CompressedVectors> compressHeads(const Quantizer& q, const HeadTensor& x) {
  if (x.dim != q.dim()) throw std::invalid_argument("tensor head_dim does not match the quantizer");
  std::vector<CompressedVectors> out(static_cast<size_t>(x.heads));
  for (int h = 0; h < x.heads; ++h) q.compress(x.row(h, 0), static_cast<size_t>(x.seq), out[static_cast<size_t>(h)]);
  return out;
}

CompressedKvCache::CompressedKvCache(const QuantConfig& keyCfg, const QuantConfig& valueCfg, int kvHeads)
    : m_keyQ(std::make_unique<Quantizer>(keyCfg)), m_valueQ(std::make_unique<Quantizer>(valueCfg)) {
  if (kvHeads <= 0) throw std::invalid_argument("kv heads must be positive");
  if (valueCfg.mode != KeyMode::Mse) throw std::invalid_argument("values use the MSE quantizer");
  m_keys.resize(static_cast<size_t>(kvHeads));
  m_values.resize(static_cast<size_t>(kvHeads));
}

void CompressedKvCache::append(const float* keys, const float* values, size_t tokens) {
  const size_t dk = static_cast<size_t>(m_keyQ->dim()), dv = static_cast<size_t>(m_valueQ->dim());
  for (size_t h = 0; h < m_keys.size(); ++h) {
    m_keyQ->compress(keys + h * tokens * dk, tokens, m_keys[h]);
    m_valueQ->compress(values + h * tokens * dv, tokens, m_values[h]);
  }
  m_tokens += tokens;
}

void CompressedKvCache::scores(int kvHead, const float* query, float* out) const {
  const PreparedQuery pq = m_keyQ->prepare(query);
  const auto& k = keys(kvHead);
  m_keyQ->scores(pq, k, 0, k.count, out);
}

void CompressedKvCache::attend(int kvHead, const float* query, float scale, float* out) const {
  std::vector<float> s(m_tokens);
  scores(kvHead, query, s.data());
  std::vector<double> p(m_tokens);
  softmax(s.data(), m_tokens, scale, p.data());
  std::vector<float> w(p.begin(), p.end());
  m_valueQ->weightedSum(values(kvHead), w.data(), out);
}

size_t CompressedKvCache::bytes() const {
  size_t b = 0;
  for (const auto& k : m_keys) b += k.bytes();
  for (const auto& v : m_values) b += v.bytes();
  return b;
}

}  // namespace tq
