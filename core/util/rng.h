// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Counter-based random numbers: value i of stream s under seed k is a pure function of (k, s, i),
/// computed with integer arithmetic and IEEE +,-,*,/,sqrt only, so every platform and backend
/// (CPU or GPU, any standard library) produces the same numbers for the same seed.
#include <cstdint>

namespace tq {

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// 64 random bits for (seed, stream, counter).
inline uint64_t randomBits(uint64_t seed, uint64_t stream, uint64_t counter) {
  return mix64(mix64(seed ^ mix64(stream * 0xd1342543de82ef95ull + 0x2545f4914f6cdd1dull)) + counter * 0x9e3779b97f4a7c15ull);
}

/// Uniform double in the open interval (0, 1) with 53 random bits.
inline double uniformOpen(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/// Natural log from frexp-free bit manipulation and an atanh series: the same result everywhere
/// (std::log may differ in the last bit between C libraries).
double portableLog(double x);

/// Standard normal number i of stream s (Marsaglia's polar method; attempt j uses counters 2(i*64+j)
/// and 2(i*64+j)+1, so the result depends only on (seed, stream, i)).
double standardNormal(uint64_t seed, uint64_t stream, uint64_t index);

/// Random sign (+1 or -1) number i of stream s.
inline float randomSign(uint64_t seed, uint64_t stream, uint64_t index) {
  return (randomBits(seed, stream, index) >> 63) ? -1.0f : 1.0f;
}

/// Well-known stream ids so that different objects drawn from one seed are independent.
enum RngStream : uint64_t {
  kStreamHaar = 1,
  kStreamHadamardSigns = 2,
  kStreamQjl = 3,
  kStreamSynthetic = 100,
  kStreamValidate = 200,
};

}  // namespace tq
