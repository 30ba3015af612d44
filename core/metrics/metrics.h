// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Fidelity metrics (ALGORITHM.md section 5), theory curves and the memory model.
#include <cstddef>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace tq {

/// Metrics of one query (or the mean over several).
struct AttentionMetrics {
  double logitCosine = 0;     ///< cos(s, s_hat) of raw logits (flattered by the keys' common component)
  double attentionCosine = 0; ///< cos(softmax(s), softmax(s_hat))
  double kl = 0;              ///< KL(softmax(s) || softmax(s_hat)), nats
  double top1 = 0;            ///< 1 if argmax agrees
  double top5 = 0;            ///< 1 if the exact argmax is within the estimated top 5
  double outputError = 0;     ///< ||p V - p_hat V_hat|| / ||p V||  (0 when values were not evaluated)
  double bias = 0;            ///< mean(s_hat - s) of raw inner products
  double variance = 0;        ///< var(s_hat - s)
  double slope = 0;           ///< regression slope of s_hat on s (1 = no shrink)
  double correlation = 0;     ///< Pearson correlation of s and s_hat
  size_t count = 0;           ///< queries averaged
  void accumulate(const AttentionMetrics& m);  ///< running sum (call finish() after)
  void finish();                               ///< divides sums by count
};

double cosine(const double* a, const double* b, size_t n);
/// exp(x), within a few ulp of libm's, 0 below -708 (where libm's result is subnormal): the softmaxes'
/// exponential, branch-free so that their loops vectorise.
double expShifted(double x);
/// softmax(scale * s) over n entries (numerically stable), written to p.
void softmax(const float* s, size_t n, double scale, double* p);

/// Metrics for one query: exact and estimated raw inner products over n keys, logit scale, and
/// optionally the exact output pV and the estimated output (dimension dv; pass nullptr to skip).
AttentionMetrics attentionMetrics(const float* exact, const float* estimated, size_t n, double scale,
                                  const float* exactOut = nullptr, const float* estimatedOut = nullptr, size_t dv = 0);

/// softmax(scale * s) and its logarithm (log p = scale s - logsumexp, no per-entry log).
void logSoftmax(const float* s, size_t n, double scale, double* p, double* logp);
/// The same metrics with the exact softmax precomputed (logSoftmax of `exact`): what a sweep evaluating
/// many estimates against one exact row uses. estP (n, may be nullptr) receives softmax(scale * estimated).
AttentionMetrics attentionMetrics(const float* exact, const double* exactP, const double* exactLogP, const float* estimated, size_t n, double scale,
                                  double* estP);
/// ||o - o_hat|| / ||o|| (||o - o_hat|| when o = 0).
double outputError(const float* exactOut, const float* estimatedOut, size_t dv);

/// The share of the rows' energy that their mean carries: ||mean_t x_t||^2 / mean_t ||x_t||^2, in [0, 1]
/// (0 for no rows or all-zero rows). Near 1 for keys that are almost all bias (Qwen2's layer 0: 1.00),
/// where a quantizer of the whole vector spends its bits on the bias.
double meanEnergyShare(const float* x, size_t n, size_t d);
/// Inner-product error statistics only (bias, variance, slope, correlation) over pairs.
void innerProductStats(const double* exact, const double* estimated, size_t n, AttentionMetrics& m);

/// ||x - x_hat||^2 / ||x||^2 averaged over n vectors of dimension d (zero vectors skipped).
double vectorMse(const float* x, const float* xhat, size_t n, size_t d);
/// The sums behind vectorMse (sum of per-vector ratios, vectors used), for blockwise evaluation.
void vectorMseAccumulate(const float* x, const float* xhat, size_t n, size_t d, double& sum, size_t& used);

// ---------------------------------------------------------------- theory
/// The density f_d(t) of one coordinate of a uniformly random unit vector in d dimensions (the sphere's
/// marginal, what the exact-law codebook is solved for); 0 outside (-1, 1).
double sphereMarginalDensity(int d, double t);
/// Expected ||u - u_hat||^2 for a unit vector (exact-law codebook).
double theoryDistortion(int dim, int bits, CodebookLaw law = CodebookLaw::Exact);
/// Predicted error variance of <q, x_hat> per ||q||^2 ||x||^2: MSE-only D_b / d; Prod (pi/2) D_{b-1} / m.
double theoryInnerProductVariance(int dim, int bits, KeyMode mode, int projDim);

// ---------------------------------------------------------------- memory model
struct ModelPreset {
  std::string id;      ///< e.g. "qwen2.5-3b"
  std::string name;    ///< e.g. "Qwen2.5-3B"
  int layers = 0, qHeads = 0, kvHeads = 0, headDim = 0;
  std::string note;
};
const std::vector<ModelPreset>& modelPresets();
/// Finds a preset by id (case-insensitive); throws std::invalid_argument listing the ids otherwise.
const ModelPreset& findPreset(const std::string& id);

struct MemoryConfig {
  int layers = 1, kvHeads = 1, headDim = 128;
  long long tokens = 1;
  int keyBits = 3, valueBits = 3;
  KeyMode keyMode = KeyMode::Prod;
  int projDim = 0;  ///< 0 = head_dim
  /// Key centering's ledger (core/backend/centering): the first exactKeys tokens in fp16, and mu (2 d bytes
  /// per layer and kv head) when keyMean.
  long long exactKeys = 0;
  bool keyMean = false;
  /// The recent fp16 window (SweepConfig::recentWindow): the last recentTokens keys and values in fp16.
  long long recentTokens = 0;
};

/// Keys per (token, kv head) with a window of `window` fp16 tokens and (mean) an fp16 mu per head, over
/// seq tokens: ((seq - w) compressed + w 2d + 2d) / seq. The one formula of centering's ledger.
double windowedKeyBytes(double compressedBytes, double seq, double d, double window, bool mean);

struct MemoryReport {
  size_t keyBytesPerVector = 0, valueBytesPerVector = 0;  ///< one (token, kv head), the codes' formula
  double keyBytesCharged = 0;        ///< keyBytesPerVector with centering's window, mean and the recent window amortised
  double valueBytesCharged = 0;      ///< valueBytesPerVector with the recent window amortised
  double bytesPerToken = 0;          ///< all layers and kv heads, keys + values
  double totalBytes = 0;             ///< at the configured tokens
  double fp16Bytes = 0, fp8Bytes = 0;
  double ratioVsFp16 = 0, ratioVsFp8 = 0;
  double keyBitsPerCoordinate = 0, valueBitsPerCoordinate = 0;  ///< effective, including norms
};
/// Bytes from the storage formula; equal to CompressedVectors::bytes() (tested).
MemoryReport memoryModel(const MemoryConfig& c);
size_t keyBytesPerVector(int headDim, int bits, KeyMode mode, int projDim);
size_t valueBytesPerVector(int headDim, int bits);

}  // namespace tq
