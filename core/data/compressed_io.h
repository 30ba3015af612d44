// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Saving and loading a compressed KV cache (format tq-compressed/1, a safetensors file; see
/// docs/KVDUMP.md): packed codes, QJL signs, fp16 norms and residual norms per (layer, kv head, K/V), the
/// QuantConfig of every layer's keys and values and their codebooks. Loading rebuilds each Quantizer
/// from its configuration (deterministic from the seed) and verifies that the stored codebook and the
/// rotation / QJL fingerprints equal the rebuilt ones, so scores from a reloaded cache are bit-identical.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/kv_source.h"
#include "quant/quantizer.h"

namespace tq {

struct CompressedLayer {
  int sourceLayer = 0;                     ///< layer index in the source dump
  QuantConfig keyConfig;
  QuantConfig valueConfig;                 ///< meaningful when values is non-empty (mode Mse)
  std::vector<CompressedVectors> keys;     ///< one per kv head
  std::vector<CompressedVectors> values;   ///< one per kv head; empty for a keys-only cache
};

struct CompressedCache {
  std::vector<CompressedLayer> layers;
  std::map<std::string, std::string> metadata;  ///< provenance (model, source file, ...), saved verbatim
  /// Bytes held by all code/sign/norm buffers.
  size_t bytes() const;
};

/// Compresses every kv head of the chosen layers (empty = all) of src. Per-layer seeds follow the sweep:
/// layerSeed(cfg.seed, layer, isValue). valueCfg.mode is forced to Mse.
CompressedCache compressCache(const KvSource& src, const QuantConfig& keyCfg, const QuantConfig& valueCfg, bool withValues = true,
                              const std::vector<int>& layers = {});

/// The file's bytes. Throws std::invalid_argument for an inconsistent cache (buffer sizes that do not
/// match their counts, an Explicit rotation that cannot be rebuilt from a seed).
std::vector<uint8_t> serializeCompressed(const CompressedCache& cache);
/// Writes atomically (temporary file + rename). Throws DataError on I/O errors.
void saveCompressed(const std::string& path, const CompressedCache& cache);

struct LoadedCompressedCache {
  CompressedCache cache;
  std::vector<std::shared_ptr<const Quantizer>> keyQuantizers;    ///< per layer
  std::vector<std::shared_ptr<const Quantizer>> valueQuantizers;  ///< per layer; null for keys-only
};

/// Loads and verifies; any problem (including a codebook or rotation that differs from the rebuilt one)
/// is a DataError naming the file.
LoadedCompressedCache loadCompressed(const std::string& path);
LoadedCompressedCache loadCompressedBuffer(const std::string& name, std::vector<uint8_t> bytes);

/// What a loaded cache holds, for `info` and the GUI's Open (one summary, two renderings).
struct CompressedSummary {
  size_t layers = 0, kvHeads = 0, tokens = 0;
  size_t bytes = 0;                    ///< codes, signs and norms of every buffer
  std::vector<std::string> layerLines; ///< "layer 3: keys 3-bit prod (m = 128), values 2-bit mse; 52 + 34 B/vector"
  /// Several lines: the counts, one line per layer, and what was verified.
  std::string describe() const;
};
CompressedSummary summarizeCompressed(const CompressedCache& cache);

/// True when `path` is a safetensors file whose metadata says tq-compressed/1. Never throws.
bool isCompressedCacheFile(const std::string& path);

}  // namespace tq
