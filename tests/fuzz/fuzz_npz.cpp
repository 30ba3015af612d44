// SPDX-License-Identifier: GPL-3.0-or-later
// Fuzzes the zip central directory parser, inflation limits and the member .npy headers; reads every array
// both whole (inflated, CRC-checked) and streamed.
#include <memory>

#include "data/npz.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tqfuzz::guarded([&] {
    tq::ZipLimits limits;
    limits.maxTotalInflated = 64u << 20;  // keep single inputs cheap; the ratio check bounds the rest
    tq::NpzFile f(std::make_shared<const tq::MappedFile>("fuzz.npz", tqfuzz::bytes(data, size)), limits);
    for (const auto& t : f.tensors()) {
      size_t streamed = 0;
      f.streamData(t, [&](const uint8_t*, size_t n) {
        streamed += n;
        return true;
      });
      const tq::SharedBytes b = f.data(t);
      if (b.size != t.header.dataBytes || streamed != b.size) __builtin_trap();
      (void)f.readFloat(t.name);
    }
  });
}
