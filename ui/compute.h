// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The numbers behind the views, computed on worker threads from an immutable data snapshot and an
/// Experiment. Qt-free apart from the Experiment (which carries QStrings); no widgets.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "data/kv_source.h"
#include "experiment.h"
#include "explore/curves.h"
#include "sweep/sweep.h"

namespace tq::ui {

/// Base of everything a worker job returns.
struct JobOutput {
  virtual ~JobOutput() = default;
};

/// An immutable snapshot of the loaded data, shared by the GUI and the workers.
struct DataContext {
  std::shared_ptr<const tq::KvSource> source;
  tq::KvShape shape;
  std::string name, model;
  std::vector<std::string> tokens;
  float scale = 1;
  std::string tokenText(int t) const;  ///< token string or "#t"
};
std::shared_ptr<const DataContext> makeContext(std::shared_ptr<const tq::KvSource> src);

/// Token range of the attention heatmap to compute (half-open; -1 = to the end).
struct HeatRegion {
  int row0 = 0, row1 = -1, col0 = 0, col1 = -1;
  int maxBins = 512;  ///< level of detail: at most this many bins per axis
};

/// Attention heatmap at some level of detail. Row bin i shows query token rowToken[i] (one
/// representative query per bin); column bin j pools keys [col0 + j*colStride, ... + colStride):
/// max for softmax weights, mean for logits. Masked (causal) cells are NaN.
struct Heatmap {
  int rows = 0, cols = 0;
  int row0 = 0, row1 = 0, col0 = 0, col1 = 0;
  int rowStride = 1, colStride = 1;
  bool softmax = true;
  std::vector<int> rowToken;
  std::vector<float> exact, approx, diff;  ///< rows x cols, row-major
  float at(const std::vector<float>& v, int r, int c) const { return v[static_cast<size_t>(r) * cols + c]; }
};

/// Estimated vs exact raw inner products of one head, for each key mode at the current bits.
struct EstimatorSeries {
  std::string label;
  tq::KeyMode mode = tq::KeyMode::Mse;
  std::vector<float> exact, estimate;  ///< all (query, key) pairs (causal)
  tq::AttentionMetrics stats;          ///< bias, variance, slope, correlation
};

/// One real key vector stepped through the algorithm.
struct HowItWorks {
  int token = 0, kvHead = 0, dim = 0, mseBits = 0, projDim = 0;
  tq::KeyMode mode = tq::KeyMode::Prod;
  std::string tokenText;
  std::vector<float> x, xMse, residual;  ///< original, MSE reconstruction, residual (d)
  std::vector<float> rotated;            ///< R x / ||x|| (d)
  std::vector<float> codeValue;          ///< centroid chosen for each rotated coordinate (d)
  std::vector<int> codeIndex;
  std::vector<float> signs;              ///< QJL signs of S r (m), empty without a QJL stage
  std::vector<double> centroids, boundaries;
  float norm = 0, residualNorm = 0;
  std::vector<double> histX, histDensity;  ///< rotated coordinates of every key of this head (density)
  std::vector<double> densityX, densityY;  ///< sphere marginal f_d(t)
  double truth = 0, estimateMse = 0, estimateProd = 0;  ///< <q, x> and its estimates (current seed)
  std::vector<double> trialsMse, trialsProd;  ///< estimates over independent seeds
};

/// Vector distortion ||x - x_hat||^2 / ||x||^2 against bits 1..8.
struct Distortion {
  int dim = 0;
  std::vector<int> bits;
  std::vector<double> theory, upper, lower, measuredData, measuredSphere;
  size_t dataVectors = 0, headVectors = 0;  ///< keys measured (bounded: at most kDistortionKeys, evenly spaced) / keys of the head
};

/// Bounded detail work at any size: keys measured in the distortion view, vectors on the sphere.
constexpr size_t kDistortionKeys = 2048, kDistortionSphere = 1024;

enum DetailPart : int { PartHeatmap = 1, PartEstimator = 2, PartHow = 4, PartDistortion = 8, PartAll = 15 };

struct DetailRequest {
  Experiment exp;
  int parts = PartAll;
  HeatRegion region;
};

struct DetailResult : JobOutput {
  Experiment exp;
  int parts = 0;
  int kvHead = 0, headDim = 0, queryToken = 0;
  std::string queryLabel, backend, device, backendNote;
  size_t keyBytesPerVector = 0, valueBytesPerVector = 0;  ///< measured from the compressed buffers
  Heatmap heat;
  std::vector<EstimatorSeries> estimator;
  HowItWorks how;
  Distortion distortion;
  double seconds = 0;
};

/// Computes the requested parts for the selected layer / head / query. Throws on bad input.
/// partial: each of the heatmap, estimator and how-it-works parts as soon as it is ready (the final
/// result then carries only the remaining parts).
std::shared_ptr<DetailResult> computeDetail(const DataContext& data, const DetailRequest& req, const tq::ProgressFn& progress = {},
                                            const std::function<void(std::shared_ptr<const DetailResult>)>& partial = {});

/// The fidelity grid: key bits 1..8 x {MSE, MSE+QJL, QJL} x m in {d/2, d, 2d, current}; value bits = current.
tq::SweepConfig sweepConfigFor(const Experiment& e, const tq::KvShape& shape);

struct SweepOutput : JobOutput {
  Experiment exp;
  tq::SweepResult result;
  std::vector<tq::CurvePoint> curves;  ///< fidelityCurves(result), computed on the worker
  std::string backendNote;
};
/// background: run at a lower CPU priority (Linux nice) so interactive jobs preempt it.
/// partial: progressive results (every cell so far) from the sweep's worker threads.
std::shared_ptr<SweepOutput> computeSweep(const DataContext& data, const Experiment& e, const tq::ProgressFn& progress, bool background = false,
                                          const std::function<void(std::shared_ptr<const SweepOutput>)>& partial = {});

/// Resolves queryPos (-1 = last token) against the sequence length.
int resolveQueryPos(const Experiment& e, int seq);

}  // namespace tq::ui
