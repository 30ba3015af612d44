// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// libFuzzer glue: every reader must either accept the input or throw tq::DataError. Anything else
// (another exception escapes -> abort, ASan/UBSan report, timeout, out-of-memory) is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/safetensors.h"

namespace tqfuzz {

inline std::vector<uint8_t> bytes(const uint8_t* data, size_t size) { return std::vector<uint8_t>(data, data + size); }

template <class F>
int guarded(F&& f) {
  try {
    f();
  } catch (const tq::DataError&) {
  }
  return 0;
}

}  // namespace tqfuzz
