// SPDX-License-Identifier: GPL-3.0-or-later
#include "quant/bitpack.h"

#include <cstring>

namespace tq {

void packCodes(const uint8_t* __restrict codes, size_t count, int bits, uint8_t* __restrict out) {
  if (count == 0) return;  // (empty buffers may be null)
  const size_t nbytes = packedBytes(count, bits);
  if (bits == 8) {
    std::memcpy(out, codes, count);
    return;
  }
  if (bits == 1 || bits == 2 || bits == 4) {  // whole codes per byte
    const unsigned per = 8u / static_cast<unsigned>(bits);
    const size_t full = count / per;
    for (size_t k = 0; k < full; ++k) {
      unsigned b = 0;
      for (unsigned t = 0; t < per; ++t) b |= static_cast<unsigned>(codes[k * per + t]) << (t * static_cast<unsigned>(bits));
      out[k] = static_cast<uint8_t>(b);
    }
    if (full * per < count) {
      unsigned b = 0;
      for (size_t j = full * per; j < count; ++j) b |= static_cast<unsigned>(codes[j]) << ((j - full * per) * static_cast<unsigned>(bits));
      out[full] = static_cast<uint8_t>(b);
    }
    return;
  }
  if (bits == 3 && count % 8 == 0) {  // 8 codes -> 3 bytes
    for (size_t g = 0; g < count / 8; ++g) {
      uint32_t v = 0;
      for (unsigned t = 0; t < 8; ++t) v |= static_cast<uint32_t>(codes[g * 8 + t]) << (3 * t);
      out[3 * g] = static_cast<uint8_t>(v);
      out[3 * g + 1] = static_cast<uint8_t>(v >> 8);
      out[3 * g + 2] = static_cast<uint8_t>(v >> 16);
    }
    return;
  }
  std::memset(out, 0, nbytes);
  uint64_t acc = 0;
  int filled = 0;
  size_t o = 0;
  for (size_t j = 0; j < count; ++j) {
    acc |= static_cast<uint64_t>(codes[j]) << filled;
    filled += bits;
    while (filled >= 8) {
      out[o++] = static_cast<uint8_t>(acc);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) out[o++] = static_cast<uint8_t>(acc);
}

void unpackCodes(const uint8_t* in, size_t count, int bits, uint8_t* codes) {
  if (count == 0) return;
  if (bits == 8) {
    std::memcpy(codes, in, count);
    return;
  }
  const uint64_t mask = (1u << bits) - 1u;
  uint64_t acc = 0;
  int filled = 0;
  size_t i = 0;
  for (size_t j = 0; j < count; ++j) {
    if (filled < bits) {
      acc |= static_cast<uint64_t>(in[i++]) << filled;
      filled += 8;
    }
    codes[j] = static_cast<uint8_t>(acc & mask);
    acc >>= bits;
    filled -= bits;
  }
}

void packSigns(const float* values, size_t count, uint8_t* out) {
  const size_t full = count / 8;
  for (size_t k = 0; k < full; ++k) {  // branch-free, vectorisable: one byte per 8 values
    const float* v = values + 8 * k;
    unsigned b = 0;
    for (unsigned t = 0; t < 8; ++t) b |= static_cast<unsigned>(!(v[t] < 0.0f)) << t;
    out[k] = static_cast<uint8_t>(b);
  }
  if (count % 8) {
    unsigned b = 0;
    for (size_t j = full * 8; j < count; ++j) b |= static_cast<unsigned>(!(values[j] < 0.0f)) << (j & 7);
    out[full] = static_cast<uint8_t>(b);
  }
}

void unpackSigns(const uint8_t* in, size_t count, float* signs) {
  for (size_t j = 0; j < count; ++j) signs[j] = ((in[j >> 3] >> (j & 7)) & 1u) ? 1.0f : -1.0f;
}

}  // namespace tq
