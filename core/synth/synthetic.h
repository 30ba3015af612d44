// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Synthetic KV data: generated deterministically per (layer, head) from the seed, on request.
#include <cstdint>
#include <string>

#include "data/kv_source.h"

namespace tq {

enum class SyntheticKind {
  Gaussian,         ///< i.i.d. N(0, 1) coordinates
  Sphere,           ///< uniform on the unit sphere
  OutlierChannels,  ///< Gaussian with a few channels scaled up (like real keys)
  LowRank,          ///< rank-r signal plus isotropic noise
  RopeLike,         ///< a per-head base vector rotated by RoPE angles of the position, plus noise
};
const char* syntheticKindName(SyntheticKind k);
/// "gaussian", "sphere", "outliers", "lowrank", "rope"; throws std::invalid_argument otherwise.
SyntheticKind parseSyntheticKind(const std::string& s);

struct SyntheticSpec {
  SyntheticKind kind = SyntheticKind::OutlierChannels;
  int layers = 2, qHeads = 4, kvHeads = 2, tokens = 512, headDim = 64;
  uint64_t seed = 1;
  int outlierChannels = 4;
  float outlierStrength = 8.0f;
  int rank = 8;
  float noise = 0.3f;
  bool needle = false;          ///< plant one key that every query attends to
  int needlePosition = -1;      ///< -1: the middle token
  float needleStrength = 4.0f;
  bool withQueries = true;
  /// Throws std::invalid_argument naming the bad field.
  void validate() const;
  std::string describe() const;
};

class SyntheticKv : public KvSource {
 public:
  explicit SyntheticKv(const SyntheticSpec& spec);
  KvShape shape() const override;
  std::string name() const override;
  std::vector<float> keys(int layer, int kvHead) const override;
  std::vector<float> values(int layer, int kvHead) const override;
  std::vector<float> queries(int layer, int qHead) const override;
  std::vector<float> queryRows(int layer, int qHead, const std::vector<int>& rows) const override;
  std::string modelName() const override { return "synthetic"; }
  const SyntheticSpec& spec() const { return m_spec; }
  int needleToken() const;

 private:
  std::vector<float> generate(int layer, int head, int role, const std::vector<int>* rows = nullptr) const;
  SyntheticSpec m_spec;
};

}  // namespace tq
