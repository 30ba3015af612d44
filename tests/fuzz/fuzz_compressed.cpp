// SPDX-License-Identifier: GPL-3.0-or-later
// Fuzzes loading a compressed cache (tq-compressed/1): configuration JSON, tensor shapes, codebook checks.
#include "data/compressed_io.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tqfuzz::guarded([&] { (void)tq::loadCompressedBuffer("fuzz.safetensors", tqfuzz::bytes(data, size)); });
}
