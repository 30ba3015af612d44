// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Random orthogonal rotations y = R x: Haar (dense, QR of a Gaussian matrix) or randomized Hadamard
/// (y = H D x / sqrt(n) per power-of-two block, D random signs).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tq {

/// The largest dimension a Haar (dense, Gram-Schmidt) rotation is built for; Hadamard has no such limit.
constexpr int kMaxHaarDimension = 1024;

enum class RotationKind { Haar, Hadamard, Explicit };

const char* rotationName(RotationKind k);
/// Parses "haar" or "hadamard"; throws std::invalid_argument otherwise.
RotationKind parseRotation(const std::string& s);

class Rotation {
 public:
  /// Haar-random: Gram-Schmidt QR (twice, in double) of a d x d standard-normal matrix drawn from
  /// (seed, kStreamHaar); Q has R's diagonal positive, i.e. it is sign-fixed and unique.
  static Rotation haar(int dim, uint64_t seed);
  /// Randomized Hadamard; for d not a power of two, block-diagonal over the binary expansion of d
  /// (80 = 64 + 16). Signs from (seed, kStreamHadamardSigns).
  static Rotation hadamard(int dim, uint64_t seed);
  static Rotation make(RotationKind kind, int dim, uint64_t seed);
  /// Like make(), memoised per (kind, dim, seed) for the process (Haar costs O(d^3) to build).
  static std::shared_ptr<const Rotation> cached(RotationKind kind, int dim, uint64_t seed);
  /// From an explicit row-major d x d orthogonal matrix (e.g. another implementation's).
  static Rotation fromMatrix(int dim, std::vector<float> rowMajor);

  int dim() const { return m_dim; }
  RotationKind kind() const { return m_kind; }
  /// Row-major d x d matrix R (y = R x); built for every kind (Hadamard lazily equal to H D / sqrt(n)).
  const std::vector<float>& matrix() const { return m_matrix; }
  const std::vector<float>& hadamardSigns() const { return m_signs; }
  const std::vector<int>& hadamardBlocks() const { return m_blocks; }

  /// Y[i] = R X[i] for n row vectors (row-major n x d). In-place allowed for Hadamard only.
  void apply(const float* x, float* y, size_t n) const;
  /// X[i] = R^T Y[i].
  void applyTranspose(const float* y, float* x, size_t n) const;

 private:
  int m_dim = 0;
  RotationKind m_kind = RotationKind::Haar;
  std::vector<float> m_matrix;  // row-major
  std::vector<float> m_signs;   // Hadamard
  std::vector<int> m_blocks;    // Hadamard block sizes
};

/// In-place normalised fast Walsh-Hadamard transform of a power-of-two length block.
void fwht(float* v, int n);

}  // namespace tq
