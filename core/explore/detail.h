// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The detail views' numbers for one (layer, query head) of a KvSource: the attention heatmap at a level of
/// detail, the inner-product estimator's pairs, one key stepped through the algorithm ("how it works") and
/// the distortion against the paper's bounds. Qt-free; the GUI renders these records.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/centering.h"
#include "data/kv_source.h"
#include "data/queries.h"
#include "metrics/metrics.h"
#include "quant/quantizer.h"
#include "sweep/sweep.h"

namespace tq {

/// What the detail views show: the selection and the quantizer, resolved against the data's head size.
struct DetailConfig {
  int layer = 0, qHead = 0;
  KeyMode keyMode = KeyMode::Prod;
  int keyBits = 3, valueBits = 4;
  int projDim = 0;  ///< m of the QJL stage (Prod / QJL-only keys), resolved against the head dim
  RotationKind rotation = RotationKind::Haar;
  CodebookLaw law = CodebookLaw::Exact;
  uint64_t seed = 42;
  QuerySource queries = QuerySource::Dump;
  int queryPos = -1;  ///< token studied in "how it works" (-1 or out of range: the last)
  bool softmaxWeights = true;
  int sweepQueries = 32;  ///< the estimator uses the sweep's query positions (evaluationPositions)
  size_t estimatorPairs = 200000;  ///< at most this many (query, key) pairs per mode in the estimator (every k-th)
  KeyCentering centering = KeyCentering::None;  ///< as SweepConfig: the views quantize K - mu (backend/centering.h)
  int centerWindow = 128;
  bool orthogonalQjl = false;  ///< QuantConfig::orthogonalQjl
  MethodOptions methodOptions;  ///< the compared method's options (KIVI's G and R, outlier channels)
  int recentWindow = 0;         ///< SweepConfig::recentWindow: the last tokens' keys score exactly
  int protectLayers = 0, protectBits = 8;  ///< SweepConfig's protected layers (this layer's widths)
  /// A/B: a second key configuration B on the heatmap (exact, A = the current one, B, A - B). Any method
  /// of the sweep (KeyVariant: TurboQuant's modes, tq-ref11, the baselines) at its width.
  bool compare = false;
  KeyVariant compareKey;
  /// The key quantizer of this selection for a mode and bit-width (the layer's seed).
  QuantConfig keyConfig(KeyMode mode, int bits, int d) const;
};
/// "MSE-only", "MSE+QJL", "QJL-only".
const char* keyModeLabelText(KeyMode m);
/// "tq-prod 3 bits m=128", "kivi 3 bits G=32 R=128", "fp8-e4m3" (the heatmap's panel names).
std::string keyVariantLabel(const KeyVariant& v, const MethodOptions& opt);

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
  std::vector<float> exact, approx, diff;  ///< rows x cols, row-major (diff = approx - exact)
  /// A/B (DetailConfig::compare): B's map and A - B (pooled like diff); empty otherwise.
  std::vector<float> compare, diffAB;
  std::string labelA, labelB;  ///< e.g. "tq-prod 3 bits m=128", "kivi 3 bits G=32 R=128"
  double keyBytesA = 0, keyBytesB = 0;  ///< each one's key ledger per (token, kv head), windows and mu included
  /// Mean over the map's query rows of cos(exact weights, estimated weights) on every visible key (softmax
  /// maps; NaN for logit maps): A's and B's.
  double cosineA = 0, cosineB = 0;
  float at(const std::vector<float>& v, int r, int c) const { return v[static_cast<size_t>(r) * cols + c]; }
};

/// Estimated vs exact raw inner products of one head, for each key mode at the current bits.
struct EstimatorSeries {
  std::string label;
  KeyMode mode = KeyMode::Mse;
  std::vector<float> exact, estimate;  ///< the causal (query, key) pairs: all, or every stride-th (DetailConfig::estimatorPairs)
  AttentionMetrics stats;          ///< bias, variance, slope, correlation (of the pairs held)
  size_t pairsTotal = 0;           ///< causal pairs of the query positions (exact.size() when stride is 1)
  size_t stride = 1;               ///< every stride-th pair in (query, key) order is held
};

/// One real key vector stepped through the algorithm.
struct HowItWorks {
  int token = 0, kvHead = 0, dim = 0, mseBits = 0, projDim = 0;
  KeyMode mode = KeyMode::Prod;
  std::string tokenText;
  bool centred = false;                  ///< x is the centred key k - mu (key centering on)
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
  /// What trialsProd / estimateProd are: the current key mode (MSE+QJL or QJL-only), or MSE+QJL when the
  /// current mode is MSE-only.
  KeyMode compareMode = KeyMode::Prod;
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

struct DetailData {
  int parts = 0;
  int kvHead = 0, headDim = 0, queryToken = 0;
  std::string queryLabel, backend, device;
  size_t keyBytesPerVector = 0, valueBytesPerVector = 0;  ///< measured from the compressed buffers
  double keyBytesCentred = 0;  ///< the key ledger with centering's mu and window (= keyBytesPerVector without)
  double keyMeanShare = 0;  ///< meanEnergyShare of the selected kv head's keys (how much of them is bias)
  Heatmap heat;
  std::vector<EstimatorSeries> estimator;
  HowItWorks how;
  Distortion distortion;
  double seconds = 0;
  /// Key compressions of this job so far: served by the cache of compressed keys, and computed.
  int keysFromCache = 0, keysCompressed = 0;
};

/// Computes the requested parts (DetailPart bits). `partial` receives each of the heatmap, estimator and
/// how-it-works parts as soon as it is ready (the returned record then carries only the remaining parts).
/// Throws std::invalid_argument on bad input, std::runtime_error("cancelled") when progress returns false.
DetailData computeDetailData(const std::shared_ptr<const KvSource>& src, const std::vector<std::string>& tokens, const DetailConfig& cfg, int parts,
                             const HeatRegion& region, Backend& be, const ProgressFn& progress = {},
                             const std::function<void(const DetailData&)>& partial = {});

/// <q, x> estimated by the key quantizer of `e` (mode, bits) under independent draws of its rotation and
/// QJL matrix: seeds layerSeed + 7919 s for s = first .. first + count - 1 (how it works and the lesson
/// use the same draws). Runs on all cores; the result is in seed order whatever the thread count.
std::vector<double> estimatesOverSeeds(const DetailConfig& e, KeyMode mode, int bits, int d, const float* x, const float* q, int first, int count);

/// Estimated scores for the views: on the CPU the dense form of the sweep (denseScores, rows split over
/// the cores), on a device its own scoring.
void viewScores(Backend& be, const Quantizer& q, const CompressedVectors& kc, const float* queries, size_t nq, float* out);

}  // namespace tq
