// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Compression methods besides TurboQuant's estimator, on the same footing: each one encodes the
/// vectors of one (layer, kv head) into real buffers (EncodedMatrix), decodes them back, and is charged
/// for every byte those buffers hold. The sweep scores their reconstructions exactly as it scores
/// TurboQuant-MSE (<q, k_hat>), so every method meets the same metrics on the same heads.
///
///   tq-mse-nc  TurboQuant-MSE with norm correction: the reconstruction rescaled to the stored norm
///   tq-ref11   the reference's "1-bit" keys: 1 MSE bit + m = d QJL sign bits (TurboQuant's quantizer with
///              referenceOneBit; its values are TurboQuant-MSE's, like tq-prod's)
///   tq-mse-oc  TurboQuant-MSE with outlier channels (the paper's fractional budgets): the K channels of
///              largest mean |x| over the head's first 128 tokens at b+1 bits, the others at b bits, two
///              independent quantizers (own rotation, own fp16 norm); the K channel indices (uint16) charged
///              once per head. K = d/2 at b = 2 is the paper's 2.5 bits.
///   kivi       KIVI: keys per channel, values per token, asymmetric b-bit integers in groups of G with an
///              fp16 scale and zero-point per group; the last R tokens (and a group that is not full) in fp16
///   int-rot    rotated uniform integers: each block of 32 coordinates rotated by H_32 / sqrt(32), then
///              symmetric b-bit integers with an fp16 scale per block (llama.cpp's q4_0 / q8_0 rule)
///   fp8-e4m3, fp8-e5m2  fp8 with one fp32 scale per (layer, head): amax / the format's largest value
///   fp16       IEEE half
/// docs/METHODS.md gives the formulas of the ledgers; tests/core/tst_methods.cpp checks them against the
/// buffers and against the numpy implementations of tools/methods_reference.py.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace tq {

enum class Method { TurboQuant, TqMseNormCorrected, TqMseOutliers, Kivi, IntRot, Fp8E4M3, Fp8E5M2, Fp16, TqRef11 };

/// The names of --methods: tq-mse, tq-prod, tq-qjl (TurboQuant with that key mode), tq-ref11, tq-mse-nc,
/// tq-mse-oc, kivi, int-rot, fp8-e4m3, fp8-e5m2, fp16.
struct MethodSpec {
  Method method = Method::TurboQuant;
  KeyMode mode = KeyMode::Mse;  ///< TurboQuant only
};
/// Throws std::invalid_argument naming the text and the accepted names.
MethodSpec parseMethod(const std::string& s);
/// A comma-separated list of those names: TurboQuant's modes go to `modes`, the others to `methods`, each
/// once, in the order given. Throws std::invalid_argument naming a bad entry (or an empty list).
void parseMethodList(const std::string& list, std::vector<KeyMode>& modes, std::vector<Method>& methods);
/// "kivi,int-rot" (the names joined by commas; empty for none).
std::string methodListLabel(const std::vector<Method>& methods);
/// "tq-mse", "kivi", ... (TurboQuant: by key mode).
std::string methodName(Method m, KeyMode mode = KeyMode::Mse);
/// The method whose values a method's rows pair with: TurboQuant for tq-ref11 (its keys are TurboQuant's
/// quantizer), the method itself otherwise.
Method valueFamily(Method m);
/// Whether the method takes the grid's bit-widths (fp8 and fp16 have fixed widths: 8 and 16).
bool methodHasBits(Method m);
/// The largest grid width a method takes (tq-mse-oc: 7, its outliers get one more; others 8).
int methodMaxBits(Method m);
/// The fixed width of fp8 / fp16 (8, 16) and tq-ref11 (1, its nominal b); 0 for the others.
int methodFixedBits(Method m);

struct MethodOptions {
  int group = 32;   ///< KIVI group size G (tokens for keys, channels for values)
  int window = 128; ///< KIVI fp16 residual window R (the most recent tokens)
  int outlierChannels = 0;  ///< tq-mse-oc: K channels at b+1 bits (0: d/2)
  void validate() const;  ///< throws std::invalid_argument
};

/// The options a method's rows depend on, e.g. "G=32 R=128" for KIVI; empty for the others.
std::string methodOptionsLabel(Method m, const MethodOptions& opt);

/// The ledger formula (docs/METHODS.md): total bytes a codec of method m stores for n vectors of d at
/// `bits` (keys, or values when forValues). VectorCodec::formulaBytes is this; the tests check it against
/// the buffers. Throws std::invalid_argument for a width or shape the method does not take.
double methodBytes(Method m, int bits, bool forValues, size_t n, size_t d, const MethodOptions& opt);

/// What a codec stores for n vectors of d: every buffer it would keep in a cache.
struct EncodedMatrix {
  size_t rows = 0, dim = 0;
  std::vector<uint8_t> codes;     ///< packed integer / fp8 codes
  std::vector<uint16_t> halves;   ///< fp16 values: scales, zero-points, norms, fp16 tokens
  std::vector<float> floats;      ///< fp32 values (fp8's per-head scale)
  size_t bytes() const { return codes.size() + 2 * halves.size() + 4 * floats.size(); }
};

class VectorCodec {
 public:
  virtual ~VectorCodec() = default;
  virtual Method method() const = 0;
  virtual int bits() const = 0;             ///< per coordinate of a quantized vector (fp8: 8, fp16: 16)
  virtual bool forValues() const = 0;       ///< KIVI quantizes keys and values along different axes
  /// e.g. "G=32 R=128" (empty when the method has no options).
  virtual std::string options() const { return {}; }
  /// x: n x d row-major fp32. Throws std::invalid_argument when the method cannot take d.
  virtual EncodedMatrix encode(const float* x, size_t n, size_t d) const = 0;
  /// The reconstruction (rows x dim) of what encode stored, from the buffers alone.
  virtual void decode(const EncodedMatrix& e, float* out) const = 0;
  /// Total bytes for n vectors of d by the method's formula (docs/METHODS.md); equals encode().bytes().
  virtual double formulaBytes(size_t n, size_t d) const = 0;
};

/// A codec for the keys (forValues false) or the values of a head. TqMseNormCorrected needs the
/// TurboQuant quantizer (MSE mode) it corrects; TqMseOutliers takes its rotation kind, law and seed from
/// it; the others ignore it. Throws std::invalid_argument for a
/// width the method does not take (fp8 / fp16 ignore bits).
std::shared_ptr<const VectorCodec> makeCodec(Method m, int bits, bool forValues, const MethodOptions& opt,
                                             std::shared_ptr<const Quantizer> tq = nullptr);

// fp8 conversions (round to nearest even, saturating at the largest finite value; NaN stays NaN).
uint8_t floatToFp8E4M3(float f);
float fp8E4M3ToFloat(uint8_t c);
uint8_t floatToFp8E5M2(float f);
float fp8E5M2ToFloat(uint8_t c);
constexpr float kFp8E4M3Max = 448.0f;
constexpr float kFp8E5M2Max = 57344.0f;

/// tq-mse-oc: the K channels of largest mean |x| over the first min(n, 128) rows (ties: lower index
/// first), ascending.
std::vector<int> outlierChannels(const float* x, size_t n, size_t d, size_t K);
constexpr size_t kOutlierCalibrationTokens = 128;

/// The rotation of int-rot: in place, every block of `block` coordinates of x (n rows of d) multiplied
/// by the Sylvester Hadamard matrix H_block / sqrt(block), butterflies in ascending stride (its own inverse).
void blockHadamard(float* x, size_t n, size_t d, size_t block);
/// int-rot's block: 32, or the largest power of two dividing d when that is smaller.
size_t intRotBlock(size_t d);

}  // namespace tq
