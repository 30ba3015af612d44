// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The KV dumps embedded in every binary (CLI and GUI alike, no Qt resources): the default sample, a real
/// head_dim-128 slice of Qwen2.5-Coder-1.5B-Instruct, and the tiny stories260K fixture (head_dim 8). The
/// CLI accepts "sample" and "sample:tiny" wherever it takes a FILE; the GUI's Sample button and menu open
/// the same bytes. Provenance: tests/data/README.md.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/kv_dump.h"

namespace tq {

enum class SampleId { Default, Tiny };

struct SampleInfo {
  SampleId id;
  const char* key;       ///< "default" / "tiny": what follows "sample:" on the command line
  const char* fileName;  ///< the file it was embedded from (resources/)
  const char* label;     ///< short human label for menus and captions
};

const std::vector<SampleInfo>& samples();
const SampleInfo& sampleInfo(SampleId id);
/// "sample" -> Default, "sample:tiny" -> Tiny, "sample:default" -> Default; false for anything else.
bool parseSampleArgument(const std::string& arg, SampleId* id);
/// The embedded bytes (a copy).
std::vector<uint8_t> sampleBytes(SampleId id);
/// Opens the embedded dump; its path() is "sample:<key>" and its name the embedded file's.
std::unique_ptr<KvDump> openSample(SampleId id, const LoadOptions& options = {});
/// A FILE argument of the CLI: an embedded sample when `arg` names one, else the file.
std::unique_ptr<KvDump> openDumpArgument(const std::string& arg, const LoadOptions& options = {});

}  // namespace tq
