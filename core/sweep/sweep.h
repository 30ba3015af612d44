// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The experiment runner: one immutable SweepConfig over a KvSource -> one SweepResult table.
/// The GUI, the CLI and the tests all run experiments through runSweep().
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "data/kv_source.h"
#include "metrics/metrics.h"
#include "quant/quantizer.h"

namespace tq {

enum class QuerySource {
  Dump,     ///< the dump's real queries (causal: query t sees keys 0..t)
  LastKey,  ///< proxy: the last token's key as the query (overstates fidelity)
  Random,   ///< proxy: Gaussian queries with the keys' mean norm
};
const char* querySourceName(QuerySource q);
/// "dump", "last-key", "random"; throws std::invalid_argument otherwise.
QuerySource parseQuerySource(const std::string& s);

struct SweepConfig {
  std::vector<int> keyBits{3};
  std::vector<int> valueBits{3};
  std::vector<KeyMode> modes{KeyMode::Prod};
  std::vector<int> projDims{0};  ///< 0 = head_dim; ignored for MSE keys
  RotationKind rotation = RotationKind::Haar;
  CodebookLaw law = CodebookLaw::Exact;
  uint64_t seed = 42;
  bool referenceOneBit = false;
  std::vector<int> layers;  ///< empty = all
  std::vector<int> qHeads;  ///< empty = all query heads
  QuerySource queries = QuerySource::Dump;
  int maxQueries = 32;      ///< queries per head (Dump: evenly spaced positions in [seq/4, seq))
  bool evaluateValues = true;
  /// Throws std::invalid_argument naming the problem (bits out of range, empty lists...).
  void validate() const;
};

/// Seeds: one rotation per (layer, K/V) shared by all heads (ALGORITHM.md section 3).
uint64_t layerSeed(uint64_t seed, int layer, bool values);

struct KeyVariant {
  KeyMode mode = KeyMode::Prod;
  int bits = 3;
  int projDim = 0;  ///< resolved (0 for MSE)
  bool operator==(const KeyVariant& o) const { return mode == o.mode && bits == o.bits && projDim == o.projDim; }
};
/// Expands the grid's key axes (MSE ignores projDims; projDim 0 resolved to head_dim).
std::vector<KeyVariant> keyVariants(const SweepConfig& c, int headDim);

struct SweepRow {
  KeyVariant key;
  int valueBits = 0;
  int layer = 0, qHead = 0, kvHead = 0;
  AttentionMetrics m;          ///< mean over the queries of this head
  double keyVectorMse = 0;     ///< ||k - k_mse||^2 / ||k||^2 (MSE stage)
  double valueVectorMse = 0;
  size_t keyBytesPerVector = 0, valueBytesPerVector = 0;  ///< measured from the buffers
  size_t tokens = 0;
};

struct SweepSummary {
  KeyVariant key;
  int valueBits = 0;
  AttentionMetrics mean;   ///< mean over (layer, head) rows
  AttentionMetrics worst;  ///< min of cosines/top-k, max of KL/output error/|bias|
  size_t rows = 0;
  size_t keyBytesPerVector = 0, valueBytesPerVector = 0;
};

struct SweepResult {
  SweepConfig config;
  std::string sourceName, modelName;
  std::string queryLabel;   ///< e.g. "dump queries" or "proxy: last key"
  std::string backend, device;
  int headDim = 0;
  size_t tokens = 0;
  std::vector<SweepRow> rows;
  double seconds = 0;
  bool cancelled = false;
  std::vector<SweepSummary> summary() const;
};

/// Progress: called with (done, total) units; return false to cancel. May be called from worker
/// threads (serialised by the runner).
using ProgressFn = std::function<bool(size_t done, size_t total)>;

/// Runs the grid. Throws std::invalid_argument / DataError for bad configurations or input.
SweepResult runSweep(const KvSource& src, const SweepConfig& cfg, Backend& backend, const ProgressFn& progress = {});

}  // namespace tq
