// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Exact attention for comparison, and a streaming compressed KV cache (like the reference's
/// TurboQuantKVCache): append tokens, score queries from compressed keys, aggregate compressed values.
#include <cstddef>
#include <memory>
#include <vector>

#include "quant/quantizer.h"

namespace tq {

/// out (nq x n) = raw inner products of queries (nq x d) with keys (n x d).
void exactScores(const float* queries, size_t nq, const float* keys, size_t n, size_t d, float* out);
/// out (dv) = sum_i p_i v_i.
void weightedValues(const double* p, size_t n, const float* values, size_t dv, float* out);

/// A batch of [heads, seq, dim] vectors (row-major, fp32).
struct HeadTensor {
  int heads = 0, seq = 0, dim = 0;
  std::vector<float> data;
  HeadTensor() = default;
  HeadTensor(int h, int s, int d) : heads(h), seq(s), dim(d), data(static_cast<size_t>(h) * s * d) {}
  float* row(int h, int t) { return data.data() + (static_cast<size_t>(h) * seq + t) * dim; }
  const float* row(int h, int t) const { return data.data() + (static_cast<size_t>(h) * seq + t) * dim; }
};

/// Compresses every head of a [heads, seq, dim] tensor with one quantizer (shared rotation).
std::vector<CompressedVectors> compressHeads(const Quantizer& q, const HeadTensor& x);

class CompressedKvCache {
 public:
  /// keyCfg.dim / valueCfg.dim are the head dims; one quantizer each shared by all heads.
  CompressedKvCache(const QuantConfig& keyCfg, const QuantConfig& valueCfg, int kvHeads);

  /// Appends tokens: keys and values are [kvHeads, tokens, dim] row-major.
  void append(const float* keys, const float* values, size_t tokens);
  size_t tokens() const { return m_tokens; }
  int kvHeads() const { return static_cast<int>(m_keys.size()); }
  const Quantizer& keyQuantizer() const { return *m_keyQ; }
  const Quantizer& valueQuantizer() const { return *m_valueQ; }
  const CompressedVectors& keys(int head) const { return m_keys.at(static_cast<size_t>(head)); }
  const CompressedVectors& values(int head) const { return m_values.at(static_cast<size_t>(head)); }

  /// Estimated <q, k_t> for every cached token of one kv head.
  void scores(int kvHead, const float* query, float* out) const;
  /// softmax(scale * scores) . V_hat for one query (out has the value dim).
  void attend(int kvHead, const float* query, float scale, float* out) const;
  /// Bytes held by all compressed buffers.
  size_t bytes() const;

 private:
  std::unique_ptr<Quantizer> m_keyQ, m_valueQ;
  std::vector<CompressedVectors> m_keys, m_values;
  size_t m_tokens = 0;
};

}  // namespace tq
