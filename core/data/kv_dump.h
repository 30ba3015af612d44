// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// KvDump: a KV dump file (docs/KVDUMP.md) as a KvSource. Containers: safetensors, NumPy .npz (stored or
/// deflate) and single .npy; layouts: tq-kvdump/1 (`layers.L.k/v/q`), Hugging Face `past_key_values.L.key`,
/// `model.layers.L.self_attn.k`, `layerL.k`, one stacked 5-D tensor `kv` / `past_key_values`
/// [layers, 2, heads, seq, dim], a bare keys array in an .npy. Tensors stay in the memory map (or, for
/// deflate members, compressed in it) and are converted to fp32 per (layer, head) on request, so a dump
/// larger than RAM can be browsed layer by layer. Every problem with the file is a DataError naming the
/// file and the problem.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/kv_source.h"
#include "data/safetensors.h"

namespace tq {

/// What to do with NaN or Inf in keys, values or queries.
enum class NonFinitePolicy {
  Refuse,  ///< DataError naming the file, the tensor and the count
  Zero,    ///< replace by 0 in the converted data; the count is reported
};

struct LoadOptions {
  NonFinitePolicy nonFinite = NonFinitePolicy::Refuse;
  /// Scan every key/value/query tensor once at open (streaming, bounded memory, with progress): NaN/Inf are
  /// counted (and refused under Refuse) before any experiment runs, and npz members are inflated once to
  /// verify their CRC. Off: open reads headers only (fast for huge files); the policy is then applied to
  /// each (layer, head) when it is converted, and keys()/values()/queries() may throw DataError.
  bool scanOnOpen = true;
  /// npz: total declared uncompressed size of deflate members accepted.
  uint64_t maxInflatedBytes = 16ull << 30;
  /// npz: inflated members kept for repeated access (a layer's q, k, v and k_prerope).
  size_t inflateCacheMembers = 4;
};

/// Thrown by KvDump::open when the progress callback returned false.
class LoadCancelled : public std::runtime_error {
 public:
  explicit LoadCancelled(const std::string& path) : std::runtime_error(path + ": loading cancelled") {}
};

enum class Container { Safetensors, Npz, Npy };
const char* containerName(Container c);

struct KvDumpSummary {
  int layers = 0;
  int qHeads = 0;   ///< == kvHeads when there are no queries
  int kvHeads = 0;
  int seq = 0;
  int headDim = 0;
  int headDimV = 0;  ///< 0 for keys-only dumps
  DType dtype = DType::F16;  ///< dtype of the keys (values/queries may differ; all are converted to fp32)
  bool hasQueries = false;
  bool hasValues = false;
  bool hasPreRopeKeys = false;
  bool hasTokens = false;
  /// NaN/Inf found by the scan at open (0 when scanOnOpen was off: see KvDump::nonFiniteReplaced()).
  uint64_t nonfiniteCount = 0;
  bool nonfiniteScanned = false;
  /// Tensors holding NaN/Inf with their counts (scan at open).
  std::vector<std::pair<std::string, uint64_t>> nonfiniteTensors;
  std::map<std::string, std::string> metadata;
  Container container = Container::Safetensors;
  std::string layout;   ///< "tq-kvdump/1", "hf-past-key-values", "hf-model-layers", "layerN", "stacked-5d", "bare-keys"
  uint64_t fileBytes = 0;
  uint64_t tensorBytes = 0;  ///< bytes of the key/value/query tensors as stored (uncompressed)
  std::vector<std::string> ignoredTensors;  ///< tensors that are not part of the layout
  std::vector<std::string> warnings;         ///< e.g. metadata that disagrees with the tensors
  KvShape shape() const;
  /// One line, e.g. "5 layers, 8 q / 4 kv heads, 512 tokens, head_dim 8, F16, safetensors (tq-kvdump/1)".
  std::string describe() const;
};

class KvDump : public KvSource {
 public:
  using Progress = std::function<bool(size_t done, size_t total)>;

  /// Opens and validates a dump. The container is recognised by its signature (zip, \x93NUMPY, else
  /// safetensors). progress(done, total) is called during the scan (bytes) or header parsing (tensors);
  /// returning false throws LoadCancelled. Never returns nullptr: throws DataError (bad file) or
  /// LoadCancelled.
  static std::unique_ptr<KvDump> open(const std::string& path, const LoadOptions& options = {}, const Progress& progress = {});
  /// Same from bytes in memory (embedded resources, tests); name is used in messages and name().
  static std::unique_ptr<KvDump> openBuffer(const std::string& name, std::vector<uint8_t> bytes, const LoadOptions& options = {},
                                            const Progress& progress = {});
  /// Same from an already mapped file.
  static std::unique_ptr<KvDump> openFile(std::shared_ptr<const MappedFile> file, const LoadOptions& options = {}, const Progress& progress = {});

  ~KvDump() override;

  const KvDumpSummary& summary() const;
  const std::string& path() const;

  // KvSource. Indices out of range throw std::out_of_range; conversion problems (NaN/Inf under Refuse
  // without the scan at open, corrupt deflate data) throw DataError.
  KvShape shape() const override;
  std::string name() const override;
  std::vector<float> keys(int layer, int kvHead) const override;
  std::vector<float> values(int layer, int kvHead) const override;
  std::vector<float> queries(int layer, int qHead) const override;
  /// Converts only the requested rows (the sweep reads a few query positions of each head).
  std::vector<float> queryRows(int layer, int qHead, const std::vector<int>& rows) const override;
  float softmaxScale() const override;
  std::vector<std::string> tokenStrings() const override;
  std::string modelName() const override;

  /// Keys before the rotary embedding ([seq, headDim]); empty when the dump has none.
  std::vector<float> keysPreRope(int layer, int kvHead) const;
  /// Token ids (empty when the dump has none).
  std::vector<int64_t> tokens() const;
  const std::map<std::string, std::string>& metadata() const;
  /// NaN/Inf replaced by 0 in conversions so far (NonFinitePolicy::Zero).
  uint64_t nonFiniteReplaced() const;

 private:
  struct Impl;
  explicit KvDump(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> d;
};

}  // namespace tq
