// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/samples.h"

#include <stdexcept>

// The files are assembled into the object with .incbin (paths from CMake; the object is rebuilt when they
// change): no generated multi-megabyte C array, no Qt resource, nothing read at run time.
#if !defined(TQ_SAMPLE_DEFAULT_PATH) || !defined(TQ_SAMPLE_TINY_PATH)
#error "TQ_SAMPLE_DEFAULT_PATH and TQ_SAMPLE_TINY_PATH must name the embedded sample files"
#endif
__asm__(".section .rodata\n"
        ".balign 16\n"
        ".global tq_sample_default_begin\n"
        "tq_sample_default_begin:\n"
        ".incbin \"" TQ_SAMPLE_DEFAULT_PATH "\"\n"
        ".global tq_sample_default_end\n"
        "tq_sample_default_end:\n"
        ".balign 16\n"
        ".global tq_sample_tiny_begin\n"
        "tq_sample_tiny_begin:\n"
        ".incbin \"" TQ_SAMPLE_TINY_PATH "\"\n"
        ".global tq_sample_tiny_end\n"
        "tq_sample_tiny_end:\n"
        ".previous\n");
extern "C" const unsigned char tq_sample_default_begin[], tq_sample_default_end[], tq_sample_tiny_begin[], tq_sample_tiny_end[];

namespace tq {

const std::vector<SampleInfo>& samples() {
  static const std::vector<SampleInfo> list = {
      {SampleId::Default, "default", TQ_SAMPLE_DEFAULT_NAME, "Qwen2.5-Coder-1.5B · head_dim 128"},
      {SampleId::Tiny, "tiny", TQ_SAMPLE_TINY_NAME, "stories260K · head_dim 8 (tiny)"},
  };
  return list;
}

const SampleInfo& sampleInfo(SampleId id) { return samples()[id == SampleId::Default ? 0 : 1]; }

bool parseSampleArgument(const std::string& arg, SampleId* id) {
  if (arg == "sample" || arg == "sample:default") {
    *id = SampleId::Default;
    return true;
  }
  if (arg == "sample:tiny") {
    *id = SampleId::Tiny;
    return true;
  }
  return false;
}

std::vector<uint8_t> sampleBytes(SampleId id) {
  const unsigned char* b = id == SampleId::Default ? tq_sample_default_begin : tq_sample_tiny_begin;
  const unsigned char* e = id == SampleId::Default ? tq_sample_default_end : tq_sample_tiny_end;
  return std::vector<uint8_t>(b, e);
}

std::unique_ptr<KvDump> openSample(SampleId id, const LoadOptions& options) {
  return KvDump::openBuffer(std::string("sample:") + sampleInfo(id).key, sampleBytes(id), options);
}

std::unique_ptr<KvDump> openDumpArgument(const std::string& arg, const LoadOptions& options) {
  SampleId id;
  if (parseSampleArgument(arg, &id)) return openSample(id, options);
  return KvDump::open(arg, options);
}

}  // namespace tq
