// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Lloyd-Max scalar codebooks for one coordinate of a uniformly random unit vector in R^d.
#include <memory>
#include <string>
#include <vector>

namespace tq {

/// Which law the coordinate follows: the exact sphere marginal f_d(t) ~ (1 - t^2)^((d-3)/2) on [-1, 1],
/// or its large-d Gaussian limit N(0, 1/d) (what the PyTorch reference uses).
enum class CodebookLaw { Exact, Gaussian };

const char* lawName(CodebookLaw law);
/// Parses "exact"/"beta" or "gaussian"; throws std::invalid_argument otherwise.
CodebookLaw parseLaw(const std::string& s);

struct Codebook {
  int dim = 0;
  int bits = 0;
  CodebookLaw law = CodebookLaw::Exact;
  std::vector<double> centroids;          ///< 2^bits values, ascending
  std::vector<double> boundaries;         ///< 2^bits - 1 midpoints, ascending
  std::vector<double> cellProbabilities;  ///< P(coordinate in cell i)
  double distortionPerCoordinate = 0;     ///< E[(t - c(t))^2]
  double distortionUnitVector = 0;        ///< d * distortionPerCoordinate = E||u - u_hat||^2
  double entropyBits = 0;                 ///< entropy of the cell index
  int newtonIterations = 0;               ///< how many Newton steps the solver took
  double fixedPointResidual = 0;          ///< max |c_i - E[t | cell i]| at the solution
  std::vector<float> centroidsF;          ///< float copies used by the quantizer hot loops
  std::vector<float> boundariesF;
};

/// Solves the Lloyd-Max fixed point to convergence (Lloyd warm start, then Newton on the tridiagonal
/// system). dim in [2, 4096], bits in [1, 8]; throws std::invalid_argument otherwise.
Codebook solveCodebook(int dim, int bits, CodebookLaw law);

/// Cached, thread-safe access: computed once per (dim, bits, law).
std::shared_ptr<const Codebook> codebook(int dim, int bits, CodebookLaw law);

/// Builds a codebook from explicit centroids (e.g. another implementation's); boundaries are midpoints.
Codebook codebookFromCentroids(int dim, const std::vector<double>& centroids, CodebookLaw law);

/// Regularized incomplete beta I_x(a, b).
double incompleteBeta(double a, double b, double x);

/// Theory for a unit vector: distortion D_b = E||u - u_hat||^2 of the exact-law codebook, and the
/// paper's bounds: upper (sqrt(3) pi / 2) 4^-b, lower 4^-b.
double paperUpperBound(int bits);
double paperLowerBound(int bits);

}  // namespace tq
