// SPDX-License-Identifier: GPL-3.0-or-later
// Fuzzes the .npy reader: magic, version, header length, the Python-dict header, data size.
#include <memory>

#include "data/npy.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tqfuzz::guarded([&] {
    tq::NpyFile f(std::make_shared<const tq::MappedFile>("fuzz.npy", tqfuzz::bytes(data, size)));
    (void)f.readFloat();
  });
}
