// SPDX-License-Identifier: GPL-3.0-or-later
#include "rotation/rotation.h"

#include <Eigen/Dense>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <stdexcept>

#include "util/rng.h"

namespace tq {

const char* rotationName(RotationKind k) {
  switch (k) {
    case RotationKind::Haar: return "haar";
    case RotationKind::Hadamard: return "hadamard";
    default: return "explicit";
  }
}

RotationKind parseRotation(const std::string& s) {
  if (s == "haar") return RotationKind::Haar;
  if (s == "hadamard") return RotationKind::Hadamard;
  throw std::invalid_argument("unknown rotation '" + s + "' (expected haar or hadamard)");
}

namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
void checkDim(int dim) {
  if (dim < 1 || dim > 4096) throw std::invalid_argument("rotation dimension must be in [1, 4096], got " + std::to_string(dim));
}
}  // namespace

Rotation Rotation::haar(int dim, uint64_t seed) {
  checkDim(dim);
  // Two-pass Gram-Schmidt costs 2 d^3 operations in a fixed scalar order (reproducible everywhere): about
  // 2 s at d = 1024 on one core, minutes at 4096, with no point to cancel at. Above 1024 it is refused.
  if (dim > kMaxHaarDimension)
    throw std::invalid_argument("a Haar rotation of dimension " + std::to_string(dim) + " needs " +
                                std::to_string(static_cast<long long>(2.0 * dim * dim * static_cast<double>(dim) / 1e9)) +
                                " G operations (the limit is dimension " + std::to_string(kMaxHaarDimension) +
                                "); use the Hadamard rotation (--rotation hadamard) for head_dim above " + std::to_string(kMaxHaarDimension));
  const size_t d = static_cast<size_t>(dim);
  // Column j of the Gaussian matrix G is a[j*d .. j*d+d); G[i][j] = normal(index i*d + j).
  std::vector<double> a(d * d);
  for (size_t i = 0; i < d; ++i)
    for (size_t j = 0; j < d; ++j) a[j * d + i] = standardNormal(seed, kStreamHaar, i * d + j);
  // Modified Gram-Schmidt, two passes, plain scalar loops in a fixed order (reproducible everywhere).
  for (size_t j = 0; j < d; ++j) {
    double* v = &a[j * d];
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t k = 0; k < j; ++k) {
        const double* q = &a[k * d];
        double dot = 0;
        for (size_t i = 0; i < d; ++i) dot += q[i] * v[i];
        for (size_t i = 0; i < d; ++i) v[i] -= dot * q[i];
      }
    }
    double nrm = 0;
    for (size_t i = 0; i < d; ++i) nrm += v[i] * v[i];
    nrm = std::sqrt(nrm);
    for (size_t i = 0; i < d; ++i) v[i] /= nrm;
  }
  Rotation r;
  r.m_dim = dim;
  r.m_kind = RotationKind::Haar;
  r.m_matrix.resize(d * d);
  // R = Q (columns q_j): R[i][j] = q_j[i].
  for (size_t i = 0; i < d; ++i)
    for (size_t j = 0; j < d; ++j) r.m_matrix[i * d + j] = static_cast<float>(a[j * d + i]);
  return r;
}

void fwht(float* v, int n) {
  int h = 1;
  if (n < 8) {
    for (; h < n; h <<= 1)
      for (int i = 0; i < n; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const float x = v[j], y = v[j + h];
          v[j] = x + y;
          v[j + h] = x - y;
        }
    h = n;
  } else {
    // The first three stages (h = 1, 2, 4) inside each block of 8, fused; every butterfly is the same
    // add/sub of the same operands as in the generic loop, so results are bit-identical.
    for (int i = 0; i < n; i += 8) {
      float* b = v + i;
      const float a0 = b[0] + b[1], a1 = b[0] - b[1], a2 = b[2] + b[3], a3 = b[2] - b[3];
      const float a4 = b[4] + b[5], a5 = b[4] - b[5], a6 = b[6] + b[7], a7 = b[6] - b[7];
      const float c0 = a0 + a2, c2 = a0 - a2, c1 = a1 + a3, c3 = a1 - a3;
      const float c4 = a4 + a6, c6 = a4 - a6, c5 = a5 + a7, c7 = a5 - a7;
      b[0] = c0 + c4;
      b[4] = c0 - c4;
      b[1] = c1 + c5;
      b[5] = c1 - c5;
      b[2] = c2 + c6;
      b[6] = c2 - c6;
      b[3] = c3 + c7;
      b[7] = c3 - c7;
    }
    h = 8;
  }
  for (; h < n; h <<= 1) {
    for (int i = 0; i < n; i += 2 * h) {
      float* __restrict lo = v + i;  // the two halves never overlap: tell the vectoriser
      float* __restrict hi = v + i + h;
      for (int t = 0; t < h; ++t) {
        const float a = lo[t], b = hi[t];
        lo[t] = a + b;
        hi[t] = a - b;
      }
    }
  }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  for (int i = 0; i < n; ++i) v[i] *= s;
}

Rotation Rotation::hadamard(int dim, uint64_t seed) {
  checkDim(dim);
  Rotation r;
  r.m_dim = dim;
  r.m_kind = RotationKind::Hadamard;
  r.m_signs.resize(dim);
  for (int i = 0; i < dim; ++i) r.m_signs[i] = randomSign(seed, kStreamHadamardSigns, static_cast<uint64_t>(i));
  for (int bit = 12; bit >= 0; --bit)
    if (dim & (1 << bit)) r.m_blocks.push_back(1 << bit);
  // Dense matrix for reference/tests and the generic paths: column j = transform of e_j.
  const size_t d = static_cast<size_t>(dim);
  r.m_matrix.assign(d * d, 0.0f);
  std::vector<float> e(d);
  for (size_t j = 0; j < d; ++j) {
    std::fill(e.begin(), e.end(), 0.0f);
    e[j] = 1.0f;
    r.apply(e.data(), e.data(), 1);
    for (size_t i = 0; i < d; ++i) r.m_matrix[i * d + j] = e[i];
  }
  return r;
}

Rotation Rotation::make(RotationKind kind, int dim, uint64_t seed) {
  if (kind == RotationKind::Hadamard) return hadamard(dim, seed);
  if (kind == RotationKind::Haar) return haar(dim, seed);
  throw std::invalid_argument("an explicit rotation needs its matrix");
}

std::shared_ptr<const Rotation> Rotation::cached(RotationKind kind, int dim, uint64_t seed) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, uint64_t>, std::shared_ptr<const Rotation>> cache;
  const auto key = std::make_tuple(static_cast<int>(kind), dim, seed);
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto r = std::make_shared<const Rotation>(make(kind, dim, seed));
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() > 256) cache.clear();  // bound memory in long sessions
  return cache.emplace(key, r).first->second;
}

Rotation Rotation::fromMatrix(int dim, std::vector<float> rowMajor) {
  checkDim(dim);
  if (rowMajor.size() != static_cast<size_t>(dim) * static_cast<size_t>(dim))
    throw std::invalid_argument("rotation matrix has " + std::to_string(rowMajor.size()) + " entries, expected d*d");
  Rotation r;
  r.m_dim = dim;
  r.m_kind = RotationKind::Explicit;
  r.m_matrix = std::move(rowMajor);
  return r;
}

void Rotation::apply(const float* x, float* y, size_t n) const {
  if (n == 0) return;
  const size_t d = static_cast<size_t>(m_dim);
  if (m_kind == RotationKind::Hadamard) {
    for (size_t r = 0; r < n; ++r) {
      const float* xi = x + r * d;
      float* yi = y + r * d;
      for (size_t i = 0; i < d; ++i) yi[i] = xi[i] * m_signs[i];
      int off = 0;
      for (int b : m_blocks) {
        fwht(yi + off, b);
        off += b;
      }
    }
    return;
  }
  Eigen::Map<const RowMat> X(x, static_cast<Eigen::Index>(n), m_dim);
  Eigen::Map<RowMat> Y(y, static_cast<Eigen::Index>(n), m_dim);
  Eigen::Map<const RowMat> R(m_matrix.data(), m_dim, m_dim);
  Y.noalias() = X * R.transpose();
}

void Rotation::applyTranspose(const float* y, float* x, size_t n) const {
  if (n == 0) return;
  const size_t d = static_cast<size_t>(m_dim);
  if (m_kind == RotationKind::Hadamard) {
    // (H D)^T = D H (H symmetric, normalised).
    for (size_t r = 0; r < n; ++r) {
      float* xi = x + r * d;
      if (xi != y + r * d) std::memcpy(xi, y + r * d, d * sizeof(float));
      int off = 0;
      for (int b : m_blocks) {
        fwht(xi + off, b);
        off += b;
      }
      for (size_t i = 0; i < d; ++i) xi[i] *= m_signs[i];
    }
    return;
  }
  Eigen::Map<const RowMat> Y(y, static_cast<Eigen::Index>(n), m_dim);
  Eigen::Map<RowMat> X(x, static_cast<Eigen::Index>(n), m_dim);
  Eigen::Map<const RowMat> R(m_matrix.data(), m_dim, m_dim);
  X.noalias() = Y * R;
}

}  // namespace tq
