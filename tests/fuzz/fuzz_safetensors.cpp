// SPDX-License-Identifier: GPL-3.0-or-later
// Fuzzes SafetensorsFile: header length, JSON, dtypes, shapes, offsets; then reads every tensor.
#include <memory>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tqfuzz::guarded([&] {
    tq::SafetensorsFile f(std::make_shared<const tq::MappedFile>("fuzz.safetensors", tqfuzz::bytes(data, size)));
    for (const auto& t : f.tensors()) {
      if (tq::isFloatingDType(t.dtype)) {
        const auto v = f.readFloat(t);
        tq::countNonFinite(f.bytes(t), t.dtype, static_cast<size_t>(t.elements()));
        (void)v;
      } else {
        (void)f.readInt(t);
      }
    }
  });
}
