// SPDX-License-Identifier: GPL-3.0-or-later
// Fuzzes KvDump end to end (container detection, layouts, shape validation, metadata, NaN/Inf policy,
// lazy conversion). The first input byte picks the options and the container name hint.
#include "data/kv_dump.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  static const char* names[] = {"fuzz.safetensors", "fuzz.npz", "fuzz.npy", "fuzz.bin"};
  tq::LoadOptions o;
  o.scanOnOpen = (mode & 4) != 0;
  o.nonFinite = (mode & 8) ? tq::NonFinitePolicy::Zero : tq::NonFinitePolicy::Refuse;
  o.maxInflatedBytes = 64u << 20;
  return tqfuzz::guarded([&] {
    auto d = tq::KvDump::openBuffer(names[mode & 3], tqfuzz::bytes(data + 1, size - 1), o);
    const tq::KvShape s = d->shape();
    for (int l = 0; l < s.layers; ++l) {
      for (int h = 0; h < s.kvHeads; ++h) {
        (void)d->keys(l, h);
        (void)d->values(l, h);
        (void)d->keysPreRope(l, h);
      }
      for (int h = 0; s.hasQueries && h < s.qHeads; ++h) (void)d->queries(l, h);
    }
    (void)d->tokens();
    (void)d->tokenStrings();
    (void)d->name();
    (void)d->summary().describe();
  });
}
