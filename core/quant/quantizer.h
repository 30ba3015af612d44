// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// TurboQuant quantizers: Stage 1 (MSE: rotation + Lloyd-Max codebook) and Stage 2 (MSE with b-1 bits
/// plus a 1-bit QJL sketch of the residual, unbiased inner products). Vectors of any norm; norms and
/// residual norms stored as fp16; codes and signs densely bit-packed.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codebook/codebook.h"
#include "rotation/rotation.h"

namespace tq {

/// How keys are quantized. Values always use Mse.
enum class KeyMode {
  Mse,      ///< Stage 1 with all b bits
  Prod,     ///< Stage 2: b-1 MSE bits + m QJL sign bits (b = 1: pure QJL, as in the paper)
  QjlOnly,  ///< no MSE stage at all: m QJL sign bits of the whole vector
};
const char* keyModeName(KeyMode m);
/// "mse", "prod" (or "mse+qjl"), "qjl"; throws std::invalid_argument otherwise.
KeyMode parseKeyMode(const std::string& s);

/// Head dimensions the quantizer supports (the readers refuse dumps outside them).
constexpr int kMinHeadDimension = 2;
constexpr int kMaxHeadDimension = 4096;
/// The largest norm a stored fp16 norm can hold; a vector above it cannot be compressed.
constexpr float kMaxStorableNorm = 65504.0f;

/// Throws std::invalid_argument naming `what` when a row of x (n rows of d) has a norm that fp16 storage
/// cannot hold (above 65504, or not finite).
void requireStorableNorms(const float* x, size_t n, size_t d, const std::string& what);

/// What the user chooses.
struct QuantConfig {
  int dim = 128;
  int bits = 3;  ///< total budget per coordinate (Prod: b-1 MSE bits + QJL)
  KeyMode mode = KeyMode::Mse;
  int projDim = 0;  ///< QJL rows m (Prod/QjlOnly); 0 means m = dim
  RotationKind rotation = RotationKind::Haar;
  CodebookLaw law = CodebookLaw::Exact;
  uint64_t seed = 42;
  bool referenceOneBit = false;  ///< Prod with b = 1: the reference's 1 MSE bit + QJL instead of pure QJL
  /// QJL with an orthogonalised S: the Gaussian rows made orthonormal (in blocks of d rows) and scaled to
  /// norm sqrt(d), so the estimator keeps its sqrt(pi/2)/m scale (= sqrt(pi/(2d)) on unit rows at m = d).
  bool orthogonalQjl = false;

  int mseBits() const;        ///< bits of the MSE stage (0 = none)
  int qjlRows() const;        ///< m, 0 when there is no QJL stage
  std::string label() const;  ///< e.g. "K3 prod m=128 haar exact seed 42"
};

/// Packed storage for a set of vectors quantized by one Quantizer. bytes() is exactly what is held.
struct CompressedVectors {
  int dim = 0, mseBits = 0, projDim = 0;
  size_t count = 0;
  std::vector<uint8_t> codes;           ///< count * codeBytes()
  std::vector<uint8_t> signs;           ///< count * signBytes()
  std::vector<uint16_t> norms;          ///< fp16 ||x||
  std::vector<uint16_t> residualNorms;  ///< fp16 ||r|| (QJL stage only)

  size_t codeBytes() const { return (static_cast<size_t>(dim) * static_cast<size_t>(mseBits) + 7) / 8; }
  size_t signBytes() const { return (static_cast<size_t>(projDim) + 7) / 8; }
  /// Bytes per vector from the storage formula (ALGORITHM.md section 4).
  size_t bytesPerVector() const { return codeBytes() + (projDim > 0 ? signBytes() + 2 : 0) + 2; }
  /// Bytes actually held by the buffers.
  size_t bytes() const { return codes.size() + signs.size() + 2 * norms.size() + 2 * residualNorms.size(); }
  void clear();
  void reserve(size_t n);
};

/// A query prepared for scoring against compressed keys: rotated query, S q and look-up tables.
struct PreparedQuery {
  std::vector<float> rotated;    ///< R q
  std::vector<float> projected;  ///< S q (QJL)
  std::vector<float> codeLut;    ///< [chunk][pattern] partial dot products <Rq, c[idx]>
  std::vector<float> signLut;    ///< [byte][256] partial <Sq, z>
  float qjlScale = 0;            ///< sqrt(pi/2) / m
};

/// Vectors normalised and rotated once (y = R x / ||x||), so that several quantizers with the same
/// rotation compress them without rotating again (Quantizer::rotate / compressRotated: the same bytes as
/// compress).
struct RotatedVectors {
  int dim = 0;
  size_t count = 0;
  std::vector<float> rotated;  ///< count x dim, R x / ||x|| (zeros where the norm is 0 or not finite)
  std::vector<float> norms;    ///< ||x|| in fp32
  RotationKind kind = RotationKind::Haar;
  std::vector<float> matrix, signs;  ///< the rotation's matrix and Hadamard signs (checked by compressRotated)
  /// Whether q rotates with the same rotation as the one these vectors were rotated by.
  bool rotatedBy(const class Quantizer& q) const;
};

class Quantizer {
 public:
  explicit Quantizer(const QuantConfig& cfg);
  /// Built from explicit tensors (cross-checks): rotation d x d row-major (y = R x), ascending
  /// centroids of the MSE stage (empty: no MSE stage), QJL matrix m x d row-major (empty: none).
  Quantizer(int dim, Rotation rotation, const std::vector<double>& centroids, std::vector<float> qjlMatrix, int projDim);

  int dim() const { return m_dim; }
  int mseBits() const { return m_mseBits; }
  int projDim() const { return m_projDim; }
  const Rotation& rotation() const { return m_rotation; }
  const Codebook* codebookPtr() const { return m_codebook.get(); }
  const std::vector<float>& qjlMatrix() const { return m_S; }
  /// S R^T (m x d row-major): projects a residual given in rotated space (used by the CUDA backend).
  const std::vector<float>& projectedRotation() const { return m_SRt; }
  const QuantConfig& config() const { return m_cfg; }
  /// A 64-bit hash of everything the quantizer computes with (sizes, rotation, codebook, QJL matrices),
  /// computed once at construction: the CUDA backend keys its device plans on it (hashing ~300 KB per
  /// look-up cost ~0.2 ms, 57 look-ups a sweep cell).
  uint64_t contentHash() const { return m_hash; }
  /// Hash of what the MSE stage computes with (dimension, MSE bits, rotation, codebook): quantizers with the
  /// same one store the same codes (TurboQuant-prod at b bits and MSE at b - 1). 0 without an MSE stage.
  uint64_t mseStageHash() const { return m_mseHash; }
  /// Hash of the QJL matrix S and its size (0 without a QJL stage): equal ones project queries alike.
  uint64_t qjlMatrixHash() const { return m_qjlHash; }
  /// Hash of the rotation (kind, matrix, Hadamard signs): equal ones rotate alike.
  uint64_t rotationHash() const { return m_rotHash; }

  /// Appends n row vectors (row-major n x d, fp32) to out. Multi-threaded for large n.
  void compress(const float* x, size_t n, CompressedVectors& out) const;
  CompressedVectors compress(const float* x, size_t n) const;
  /// The normalised, rotated vectors compress() quantizes (the same numbers, in the same blocks).
  RotatedVectors rotate(const float* x, size_t n) const;
  /// Appends rv's vectors [begin, begin + n) to out: byte for byte what compress() of the original
  /// vectors appends. Throws std::invalid_argument when rv was rotated by another rotation.
  void compressRotated(const RotatedVectors& rv, size_t begin, size_t n, CompressedVectors& out) const;

  /// MSE reconstruction x_mse = n16 R^T c[idx] for vectors [begin, begin+n) (QjlOnly: zeros).
  void decompress(const CompressedVectors& cv, size_t begin, size_t n, float* out) const;
  /// Unpacked per-vector data for inspection (indices, +-1 signs, norms as floats).
  void unpack(const CompressedVectors& cv, size_t i, uint8_t* indices, float* signs, float* norm, float* residualNorm) const;

  PreparedQuery prepare(const float* query) const;
  /// Estimated <q, x_i> for keys [begin, begin+n) without decompressing.
  void scores(const PreparedQuery& q, const CompressedVectors& cv, size_t begin, size_t n, float* out) const;
  /// Convenience: nq queries (row-major) against all keys; out is nq x count.
  void scoresMany(const float* queries, size_t nq, const CompressedVectors& cv, float* out) const;

  /// sum_i w_i x_hat_i for values [0, count) given weights (accumulated in rotated space, one R^T).
  void weightedSum(const CompressedVectors& cv, const float* weights, float* out) const;

 private:
  void buildDerived();
  void compressChunk(const float* x, size_t n, CompressedVectors& out, size_t offset) const;
  /// Normalises n vectors into unit (n x d) and rotates them into rot; norm[i] = ||x_i||.
  void rotateChunk(const float* x, size_t n, float* unit, float* rot, float* norm) const;
  /// Quantizes n rotated unit vectors with norms norm into out at offset (codes, norms, QJL stage).
  void quantizeChunk(const float* rot, const float* norm, size_t n, CompressedVectors& out, size_t offset) const;
  /// Grows out by n vectors (checking that out was made by this quantizer); returns the old count.
  size_t appendSlots(CompressedVectors& out, size_t n) const;

  QuantConfig m_cfg;
  int m_dim = 0, m_mseBits = 0, m_projDim = 0;
  Rotation m_rotation;
  std::shared_ptr<const Codebook> m_codebook;
  std::vector<float> m_S;    // m x d row-major
  std::vector<float> m_SRt;  // S R^T, m x d: projects a rotated residual
  int m_group = 1;           // coordinates per LUT chunk
  uint64_t m_hash = 0;       // contentHash()
  uint64_t m_mseHash = 0;    // mseStageHash()
  uint64_t m_qjlHash = 0;    // qjlMatrixHash()
  uint64_t m_rotHash = 0;    // rotationHash()
};

/// S (m x d row-major) in place: each block of d rows orthonormalised (Gram-Schmidt), then scaled to norm
/// sqrt(d). Throws std::runtime_error on a degenerate row.
void orthogonaliseRows(std::vector<float>& S, size_t m, size_t d);

/// Sum of squares in a fixed, platform-independent order: 8 interleaved lanes (element j goes to lane
/// j mod 8, in ascending j), combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). Vectorises on the CPU
/// and is reproduced exactly by the CUDA kernels (no FMA contraction).
float laneSumSquares(const float* x, size_t n);

/// Shared thread count for the CPU engine (default: hardware concurrency).
int cpuThreads();
void setCpuThreads(int n);

}  // namespace tq
