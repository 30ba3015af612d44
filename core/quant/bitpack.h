// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Dense bit packing: b-bit codes of one vector form an LSB-first bit stream (coordinate j occupies
/// stream bits [j b, (j+1) b), stream bit k is bit k%8 of byte k/8), padded to whole bytes per vector.
#include <cstddef>
#include <cstdint>

namespace tq {

/// Bytes that n codes of b bits occupy: ceil(n b / 8).
inline size_t packedBytes(size_t count, int bits) { return (count * static_cast<size_t>(bits) + 7) / 8; }

/// Packs count codes (each < 2^bits) into packedBytes(count, bits) bytes at out (overwritten).
void packCodes(const uint8_t* codes, size_t count, int bits, uint8_t* out);
/// Unpacks count codes of the given width.
void unpackCodes(const uint8_t* in, size_t count, int bits, uint8_t* codes);

/// Packs signs (bit set = non-negative, i.e. +1) of count values into ceil(count/8) bytes.
void packSigns(const float* values, size_t count, uint8_t* out);
/// +1 / -1 for each packed sign.
void unpackSigns(const uint8_t* in, size_t count, float* signs);

}  // namespace tq
