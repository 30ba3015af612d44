// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// What an experiment reads: keys, values and (optionally) queries per layer and head.
/// Implemented by KvDump (files) and SyntheticKv (generated).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace tq {

struct KvShape {
  int layers = 0;
  int qHeads = 0;    ///< query heads (== kvHeads when the source has no queries)
  int kvHeads = 0;
  int seq = 0;
  int headDim = 0;
  int headDimV = 0;
  bool hasQueries = false;
  bool hasValues = true;
  /// GQA: query head h reads kv head h / (qHeads / kvHeads).
  int kvHeadOf(int qHead) const { return kvHeads > 0 && qHeads >= kvHeads ? qHead / (qHeads / kvHeads) : qHead; }
};

class KvSource {
 public:
  KvSource() : m_instanceId(nextInstanceId()) {}
  virtual ~KvSource() = default;
  /// Unique in this process for each source object (never reused, unlike an address): what a backend keeps
  /// derived data under (a device keeps a sweep cell's inputs resident across sweeps under it).
  uint64_t instanceId() const { return m_instanceId; }
  virtual KvShape shape() const = 0;
  /// Short human name, e.g. "stories260K · lily · 512 tokens".
  virtual std::string name() const = 0;
  /// Row-major [seq, headDim] keys of one (layer, kv head); converted to fp32.
  virtual std::vector<float> keys(int layer, int kvHead) const = 0;
  /// Row-major [seq, headDimV] values; empty for keys-only sources.
  virtual std::vector<float> values(int layer, int kvHead) const = 0;
  /// Row-major [seq, headDim] queries of one query head; empty when the source has none.
  virtual std::vector<float> queries(int layer, int qHead) const = 0;
  /// The given rows (token positions, each in [0, seq)) of queries(layer, qHead), row-major
  /// [rows.size(), headDim]; empty when the source has none. Sources that can read single rows override it.
  virtual std::vector<float> queryRows(int layer, int qHead, const std::vector<int>& rows) const {
    const std::vector<float> all = queries(layer, qHead);
    if (all.empty()) return {};
    const size_t d = static_cast<size_t>(shape().headDim);
    std::vector<float> out;
    out.reserve(rows.size() * d);
    for (int r : rows) {
      if (r < 0 || static_cast<size_t>(r + 1) * d > all.size()) return {};
      out.insert(out.end(), all.begin() + static_cast<long>(static_cast<size_t>(r) * d), all.begin() + static_cast<long>(static_cast<size_t>(r + 1) * d));
    }
    return out;
  }
  /// Logit scale (default 1/sqrt(headDim)).
  virtual float softmaxScale() const { return 1.0f / std::sqrt(static_cast<float>(shape().headDim)); }
  /// Decoded text of every token (may be empty).
  virtual std::vector<std::string> tokenStrings() const { return {}; }
  /// Model name from the metadata, or "synthetic".
  virtual std::string modelName() const { return {}; }

 private:
  static uint64_t nextInstanceId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1);
  }
  uint64_t m_instanceId;
};

}  // namespace tq
