// SPDX-License-Identifier: GPL-3.0-or-later
#include "util/rng.h"

#include <cmath>
#include <cstring>

namespace tq {

double portableLog(double x) {
  // x > 0 and finite here (callers pass values in (0, 1]).
  uint64_t bits;
  std::memcpy(&bits, &x, 8);
  int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;  // mantissa in [1, 2)
  double m;
  std::memcpy(&m, &bits, 8);
  if (m > 1.4142135623730951) { m *= 0.5; ++e; }                  // m in [0.707, 1.414]
  const double z = (m - 1.0) / (m + 1.0);                          // |z| <= 0.1716
  const double z2 = z * z;
  // 2 atanh(z) = 2 (z + z^3/3 + z^5/5 + ...); 14 terms reach z^27 ~ 1e-21 relative.
  static const double inv[14] = {1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21, 1.0 / 23, 1.0 / 25, 1.0 / 27};
  double term = z, sum = 0.0;
  for (int k = 0; k < 14; ++k) {
    sum += term * inv[k];
    term *= z2;
  }
  return 2.0 * sum + static_cast<double>(e) * 0.69314718055994530942;
}

double standardNormal(uint64_t seed, uint64_t stream, uint64_t index) {
  for (uint64_t j = 0;; ++j) {
    const uint64_t c = 2 * (index * 64 + (j & 63)) + (j >> 6) * 0x100000000000ull;
    const double u = 2.0 * uniformOpen(randomBits(seed, stream, c)) - 1.0;
    const double v = 2.0 * uniformOpen(randomBits(seed, stream, c + 1)) - 1.0;
    const double s = u * u + v * v;
    if (s > 0.0 && s < 1.0) return u * std::sqrt(-2.0 * portableLog(s) / s);
  }
}

}  // namespace tq
