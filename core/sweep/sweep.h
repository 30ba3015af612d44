// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The experiment runner: one immutable SweepConfig over a KvSource -> one SweepResult table.
/// The GUI, the CLI and the tests all run experiments through runSweep().
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/centering.h"
#include "data/kv_source.h"
#include "data/queries.h"
#include "methods/methods.h"
#include "metrics/metrics.h"
#include "quant/quantizer.h"

namespace tq {

/// Evaluates a sweep task on the backend (on the CPU when a device backend declines it; *cpuFallback is
/// then set) with each distinct key quantizer once: variants with the same codes (QJL-only at every width,
/// TurboQuant-prod at 1 bit) and value family get copies of one evaluation's results. The output equals
/// evaluating every variant. TQ_SWEEP_ALL_VARIANTS=1 evaluates every variant (for comparisons).
void evaluateTaskDistinct(Backend& backend, const SweepTaskInput& in, SweepTaskOutput& out, bool* cpuFallback);

/// One configuration of the keys. TurboQuant: mode, bits, m. The other methods (core/methods): method,
/// bits (fp8: 8, fp16: 16), mode Mse and m 0. A row's values use the same method (TurboQuant: MSE).
struct KeyVariant {
  KeyMode mode = KeyMode::Prod;
  int bits = 3;
  int projDim = 0;  ///< resolved (0 for MSE)
  Method method = Method::TurboQuant;
  bool operator==(const KeyVariant& o) const { return mode == o.mode && bits == o.bits && projDim == o.projDim && method == o.method; }
  std::string methodName() const { return tq::methodName(method, mode); }
};

/// Key centering (KeyCentering, centreKeys): core/backend/centering.h.
struct SweepConfig {
  std::vector<int> keyBits{3};
  std::vector<int> valueBits{3};
  std::vector<KeyMode> modes{KeyMode::Prod};  ///< TurboQuant's key modes (may be empty when `methods` is not)
  /// Other methods (core/methods) on the same heads: each at every key bit-width (its values at every
  /// value bit-width), fp8 / fp16 once at their own width.
  std::vector<Method> methods;
  MethodOptions methodOptions;
  std::vector<int> projDims{0};  ///< 0 = head_dim; ignored for MSE keys
  RotationKind rotation = RotationKind::Haar;
  CodebookLaw law = CodebookLaw::Exact;
  uint64_t seed = 42;
  bool referenceOneBit = false;
  bool orthogonalQjl = false;  ///< QuantConfig::orthogonalQjl for every QJL stage of the grid
  std::vector<int> layers;  ///< empty = all
  std::vector<int> qHeads;  ///< empty = all query heads
  QuerySource queries = QuerySource::Dump;
  int maxQueries = 32;      ///< queries per head (evaluationPositions: evenly spaced in [seq/4, seq); last-key: one)
  size_t sampleCells = 0;   ///< 0 = every (layer, kv head) cell; N = the first N cells of the seeded order (an estimate)
  /// Progressive order only (the rows do not depend on it): these key variants (e.g. the GUI's current
  /// series) are evaluated first, on the first 8 cells of the order, before the others.
  std::vector<KeyVariant> firstVariants;
  bool evaluateValues = true;
  KeyCentering centering = KeyCentering::None;
  int centerWindow = 128;  ///< Causal: the tokens mu is taken from, kept exact
  /// The reference's V3 idea, an option of every method with a bit-width: the first and the last
  /// protectLayers layers use protectBits for keys and values (rows keep the variant's nominal widths;
  /// their bytes are those of the widths used). 0: none.
  int protectLayers = 0;
  int protectBits = 8;
  /// The reference's V3 fp16 window, an option of every method: the last recentWindow tokens of the dump
  /// (the most recent ones of the cache it leaves) keep their keys and values in fp16; the method encodes
  /// the others. Charged 2 d bytes per window token, keys and values, amortised over the tokens. 0: none.
  int recentWindow = 0;
  /// Throws std::invalid_argument naming the problem (bits out of range, empty lists...).
  void validate() const;
};

/// "none" or "N:BITS"; parseProtectLayers throws std::invalid_argument naming the text.
std::string protectLayersLabel(const SweepConfig& c);
void parseProtectLayers(const std::string& s, int* layers, int* bits);
/// Whether layer l of a model with `layers` layers is protected by c.
bool isProtectedLayer(const SweepConfig& c, int l, int layers);
bool isProtectedLayer(int protectLayers, int l, int layers);

/// What encodes one key or value variant in layer l of a model of `layers` layers: TurboQuant's quantizer
/// (TurboQuant, tq-ref11) or a codec (the other methods), protected layers at their width; the layer's
/// seed, rotation, law, QJL matrix and method options from c. The one definition the sweep and the
/// detail views use. Throws std::invalid_argument for a width the method does not take.
struct VariantCoder {
  std::shared_ptr<const Quantizer> quantizer;
  std::shared_ptr<const VectorCodec> codec;
};
VariantCoder makeVariantCoder(const SweepConfig& c, Method m, KeyMode mode, int bits, int projDim, bool isValue, int l, int layers, int dim);

/// Expands the grid's key axes (MSE ignores projDims; projDim 0 resolved to head_dim), TurboQuant's
/// variants first, then those of `methods` in their order.
std::vector<KeyVariant> keyVariants(const SweepConfig& c, int headDim);

/// A value configuration: TurboQuant-MSE or another method at a width.
struct ValueVariant {
  Method method = Method::TurboQuant;
  int bits = 3;
  bool operator==(const ValueVariant& o) const { return method == o.method && bits == o.bits; }
};
/// The value variants of a grid: TurboQuant-MSE at every value width (when a key mode is chosen), then
/// each method's.
std::vector<ValueVariant> valueVariants(const SweepConfig& c);

struct SweepRow {
  KeyVariant key;
  int valueBits = 0;
  int layer = 0, qHead = 0, kvHead = 0;
  AttentionMetrics m;          ///< mean over the queries of this head
  double keyVectorMse = 0;     ///< ||k - k_mse||^2 / ||k||^2 (MSE stage)
  double valueVectorMse = 0;
  /// Bytes per (token, kv head) from the buffers' sizes; keys include centering's mu and window, amortised.
  double keyBytesPerVector = 0;
  double valueBytesPerVector = 0;
  size_t tokens = 0;
};

struct SweepSummary {
  KeyVariant key;
  int valueBits = 0;
  AttentionMetrics mean;   ///< mean over (layer, head) rows
  AttentionMetrics worst;  ///< min of cosines/top-k, max of KL/output error/|bias|
  size_t rows = 0;
  double keyBytesPerVector = 0;
  double valueBytesPerVector = 0;
};

struct SweepResult {
  SweepConfig config;
  std::string sourceName, modelName;
  std::string queryLabel;   ///< e.g. "dump queries" or "proxy: last key"
  std::string backend, device;
  int headDim = 0;
  int headDimV = 0;
  size_t tokens = 0;
  std::vector<SweepRow> rows;
  double seconds = 0;
  bool cancelled = false;
  size_t cellsDone = 0, cellsTotal = 0;  ///< (layer, kv head) cells evaluated / in the grid (after sampleCells)
  size_t cellsInGrid = 0;                ///< cells of the whole grid (before sampleCells)
  size_t cpuFallbackCells = 0;           ///< cells a device backend declined, evaluated on the CPU instead
  size_t firstPassCells = 0;             ///< cells on which config.firstVariants have been evaluated (>= cellsDone)
  bool partial() const { return cellsDone < cellsTotal; }
  std::vector<SweepSummary> summary() const;
};

/// Progress: called with (done, total) units; return false to cancel. May be called from worker
/// threads (serialised by the runner). The sweep counts (layer, kv head) cells.
using ProgressFn = std::function<bool(size_t done, size_t total)>;
/// Partial results of a progressive sweep: every row of the cells evaluated so far (sorted as the final
/// result), called from a worker thread (serialised) at most every `intervalMs` and not after a cancel.
struct PartialSink {
  std::function<void(const SweepResult& partial)> fn;
  int intervalMs = 200;
};

/// The (layer, kv head) cells of a grid in the order a sweep visits them: a random permutation seeded
/// by cfg.seed, so that any prefix is an unbiased sample of the grid (the first sampleCells when set).
struct SweepCell {
  int layer = 0, kvHead = 0;
  std::vector<int> qHeads;  ///< the query heads (or proxy heads) that read this kv head
};
std::vector<SweepCell> sweepCells(const KvShape& shape, const SweepConfig& cfg, size_t* cellsInGrid = nullptr);

/// Runs the grid, cells in the seeded order of sweepCells, streaming partial results to `partial`. The
/// final rows are sorted by (mode, bits, m, value bits, layer, head) and do not depend on the order or on
/// the number of threads. Throws std::invalid_argument / DataError for bad configurations or input.
SweepResult runSweep(const KvSource& src, const SweepConfig& cfg, Backend& backend, const ProgressFn& progress = {}, const PartialSink& partial = {});

}  // namespace tq
