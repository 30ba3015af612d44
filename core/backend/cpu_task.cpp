// SPDX-License-Identifier: GPL-3.0-or-later
/// The CPU evaluation of one sweep task (a layer x kv head with all its key variants and value widths).
///
/// The per-call path (compress, LUT-score every query, weighted sum per query) scored every key against
/// every query through look-up tables and unpacked every value code once per query and key variant: on
/// a 4096-token, d = 128 head with 128 queries and the GUI's 56 key variants that is ~15 s of CPU per
/// (layer, kv head). Here the estimator is evaluated in dense form instead, with the same codes:
///   <q, k_hat> = <q, x_mse> + sqrt(pi/2)/m * ||r||_16 * <S q, z>
/// where x_mse = n16 R^T c[idx] is the MSE reconstruction (the one the key MSE needs anyway) and z the
/// stored signs; both terms are matrix products (Eigen GEMM). Values are reconstructed once per task and
/// the outputs are one product W V_hat per (key variant, value width). The numbers are those of the
/// per-call path up to float summation order (tests/core/tst_sweep.cpp compares them).
#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <vector>

#include <Eigen/Dense>

#include "attention/attention.h"
#include "backend/backend.h"
#include "metrics/metrics.h"
#include "quant/bitpack.h"
#include "util/half.h"

namespace tq {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// n16 * c[idx]: the MSE reconstruction of every vector in rotated space (seq x d).
void reconstructRotated(const Quantizer& q, const CompressedVectors& cv, std::vector<float>& rot) {
  const size_t d = static_cast<size_t>(q.dim()), n = cv.count;
  if (q.mseBits() == 0) {
    rot.assign(n * d, 0.0f);
    return;
  }
  rot.resize(n * d);
  std::vector<uint8_t> idx(d);
  const float* cen = q.codebookPtr()->centroidsF.data();
  const size_t cb = cv.codeBytes();
  for (size_t i = 0; i < n; ++i) {
    unpackCodes(cv.codes.data() + i * cb, d, q.mseBits(), idx.data());
    const float n16 = halfToFloat(cv.norms[i]);
    float* r = rot.data() + i * d;
    for (size_t j = 0; j < d; ++j) r[j] = n16 * cen[idx[j]];
  }
}

/// The MSE reconstruction x_mse = R^T n16 c[idx] of every vector.
void reconstruct(const Quantizer& q, const CompressedVectors& cv, std::vector<float>& rot, std::vector<float>& out) {
  const size_t d = static_cast<size_t>(q.dim()), n = cv.count;
  out.assign(n * d, 0.0f);
  if (q.mseBits() == 0) return;
  reconstructRotated(q, cv, rot);
  q.rotation().applyTranspose(rot.data(), out.data(), n);
}

/// Vectors [begin, begin + n) of cv as a CompressedVectors of their own (a copy of their bytes).
CompressedVectors slice(const CompressedVectors& cv, size_t begin, size_t n) {
  CompressedVectors p;
  p.dim = cv.dim;
  p.mseBits = cv.mseBits;
  p.projDim = cv.projDim;
  p.count = n;
  const size_t cb = cv.codeBytes(), sb = cv.signBytes();
  if (!cv.codes.empty()) p.codes.assign(cv.codes.begin() + static_cast<long>(begin * cb), cv.codes.begin() + static_cast<long>((begin + n) * cb));
  if (!cv.signs.empty()) p.signs.assign(cv.signs.begin() + static_cast<long>(begin * sb), cv.signs.begin() + static_cast<long>((begin + n) * sb));
  if (!cv.norms.empty()) p.norms.assign(cv.norms.begin() + static_cast<long>(begin), cv.norms.begin() + static_cast<long>(begin + n));
  if (!cv.residualNorms.empty())
    p.residualNorms.assign(cv.residualNorms.begin() + static_cast<long>(begin), cv.residualNorms.begin() + static_cast<long>(begin + n));
  return p;
}

/// est (nq x count) += sqrt(pi/2)/m ||r||_16 <S q, z>: the QJL term, the per-key factor folded into the sign rows.
void addQjlTerm(const Quantizer& q, const CompressedVectors& kc, const Eigen::Map<const RowMat>& Q, float* est, std::vector<float>& z, std::vector<float>& sq) {
  if (q.projDim() <= 0) return;
  const size_t m = static_cast<size_t>(q.projDim()), seq = kc.count, nq = static_cast<size_t>(Q.rows()), d = static_cast<size_t>(q.dim());
  const float scale = static_cast<float>(std::sqrt(M_PI / 2.0) / static_cast<double>(m));
  z.resize(seq * m);
  const size_t sb = kc.signBytes();
  // +-1 for the 8 signs of each byte value: a row is 8 floats at a time (vectorised), c * +-1 = +-c
  static const std::array<std::array<float, 8>, 256> kSigns = [] {
    std::array<std::array<float, 8>, 256> t{};
    for (size_t b = 0; b < 256; ++b)
      for (size_t k = 0; k < 8; ++k) t[b][k] = ((b >> k) & 1u) ? 1.0f : -1.0f;
    return t;
  }();
  for (size_t t = 0; t < seq; ++t) {
    const float c = halfToFloat(kc.residualNorms[t]) * scale;
    const uint8_t* bits = kc.signs.data() + t * sb;
    float* __restrict row = z.data() + t * m;
    size_t j = 0;
    for (; j + 8 <= m; j += 8) {
      const float* __restrict l = kSigns[bits[j >> 3]].data();
      for (size_t k = 0; k < 8; ++k) row[j + k] = c * l[k];
    }
    for (; j < m; ++j) row[j] = ((bits[j >> 3] >> (j & 7)) & 1u) ? c : -c;
  }
  sq.resize(nq * m);
  Eigen::Map<RowMat> SQ(sq.data(), static_cast<long>(nq), static_cast<long>(m));
  SQ.noalias() = Q * Eigen::Map<const RowMat>(q.qjlMatrix().data(), static_cast<long>(m), static_cast<long>(d)).transpose();
  Eigen::Map<RowMat>(est, static_cast<long>(nq), static_cast<long>(seq)).noalias() +=
      SQ * Eigen::Map<const RowMat>(z.data(), static_cast<long>(seq), static_cast<long>(m)).transpose();
}

}  // namespace

void denseScores(const Quantizer& q, const CompressedVectors& kc, const float* queries, size_t nq, float* out) {
  const size_t seq = kc.count, d = static_cast<size_t>(q.dim());
  if (nq == 0 || seq == 0) return;
  std::vector<float> rot, khat, z, sq;
  Eigen::Map<RowMat> E(out, static_cast<long>(nq), static_cast<long>(seq));
  Eigen::Map<const RowMat> Q(queries, static_cast<long>(nq), static_cast<long>(d));
  if (q.mseBits() > 0) {
    reconstruct(q, kc, rot, khat);
    E.noalias() = Q * Eigen::Map<const RowMat>(khat.data(), static_cast<long>(seq), static_cast<long>(d)).transpose();
  } else {
    E.setZero();
  }
  addQjlTerm(q, kc, Q, out, z, sq);
}

bool cancelRequested(const SweepTaskInput& in) { return (in.cancel && in.cancel->load(std::memory_order_relaxed)) || (in.stop && in.stop()); }

void cpuEvaluateTask(const SweepTaskInput& in, SweepTaskOutput& out) {
  const size_t seq = in.seq, nq = in.nq, d = static_cast<size_t>(in.d), dv = static_cast<size_t>(in.dv);
  if (seq == 0 || nq == 0 || d == 0) throw std::invalid_argument("empty sweep task");
  const size_t nvqq = in.values ? in.valueQuantizers.size() : 0, nvc = in.values ? in.valueCodecs.size() : 0, nvq = nvqq + nvc;
  const size_t nvOut = std::max<size_t>(1, nvq), nkq = in.keyQuantizers.size(), nk = nkq + in.keyCodecs.size();
  if ((!in.keyFamily.empty() || !in.valueFamily.empty()) && (in.keyFamily.size() != nk || (in.values && in.valueFamily.size() != nvq)))
    throw std::invalid_argument("sweep task: the key / value families do not match the variants");
  auto paired = [&](size_t k, size_t v) { return in.keyFamily.empty() || in.valueFamily.empty() || in.keyFamily[k] == in.valueFamily[v]; };
  out = SweepTaskOutput{};
  out.keyMetrics.assign(nk * nq * SweepTaskOutput::kKeyMetrics, 0.0);
  out.outputError.assign(nk * nvOut * nq, 0.0);
  // Keys are processed in blocks of kBlock tokens, with a cancellation check after each: a variant on a
  // long sequence takes seconds, a block a few milliseconds.
  constexpr size_t kBlock = 16384;
  auto stop = [&] { return cancelRequested(in); };

  // exact logits, softmax and outputs (the definitions of core/attention and core/metrics)
  std::vector<float> exact(nq * seq), exactOut(in.values ? nq * dv : 0);
  exactScores(in.queries, nq, in.keys, seq, d, exact.data());
  // exact softmax and its log once per query (every key variant is measured against them)
  std::vector<double> exactP(nq * seq), exactLogP(nq * seq), p(seq);
  for (size_t i = 0; i < nq; ++i) {
    if (stop()) return;
    const size_t n = static_cast<size_t>(in.limits[i]) + 1;
    logSoftmax(exact.data() + i * seq, n, in.scale, exactP.data() + i * seq, exactLogP.data() + i * seq);
    if (in.values) weightedValues(exactP.data() + i * seq, n, in.values, dv, exactOut.data() + i * dv);
  }
  Eigen::Map<const RowMat> Q(in.queries, static_cast<long>(nq), static_cast<long>(d));
  auto blocks = [&](const std::function<void(size_t b, size_t n)>& fn) {
    for (size_t b = 0; b < seq; b += kBlock) {
      if (stop()) return false;
      fn(b, std::min(kBlock, seq - b));
    }
    return !stop();
  };
  // compressed in blocks (Quantizer::compress appends): the same bytes as one call
  auto compress = [&](const Quantizer& q, const float* x, size_t dim, CompressedVectors& cv) {
    return blocks([&](size_t b, size_t n) { q.compress(x + b * dim, n, cv); });
  };
  std::vector<float> scratch, recBlock;
  auto mseOf = [&](const Quantizer& q, const CompressedVectors& cv, const float* x, size_t dim, const std::function<void(size_t, size_t)>& each) {
    double sum = 0;
    size_t used = 0;
    const bool ok = blocks([&](size_t b, size_t n) {
      CompressedVectors part = slice(cv, b, n);
      reconstruct(q, part, scratch, recBlock);
      vectorMseAccumulate(x + b * dim, recBlock.data(), n, dim, sum, used);
      if (each) each(b, n);
    });
    return ok ? (used ? sum / static_cast<double>(used) : 0.0) : -1.0;
  };

  // values: compressed and reconstructed once per width
  std::vector<std::vector<float>> vhat(nvq);
  for (size_t vi = 0; vi < nvqq; ++vi) {
    const Quantizer& vq = *in.valueQuantizers[vi];
    CompressedVectors vc;
    if (!compress(vq, in.values, dv, vc)) return;
    vhat[vi].resize(seq * dv);
    const double mse = mseOf(vq, vc, in.values, dv, [&](size_t b, size_t n) { std::copy_n(recBlock.begin(), n * dv, vhat[vi].begin() + static_cast<long>(b * dv)); });
    if (mse < 0) return;
    out.valueMse.push_back(mse);
  }
  // the recent fp16 window: the last recent values are used as stored (the dump's values)
  const size_t recent = std::min(in.recentExact, seq);
  auto keepRecentValues = [&](std::vector<float>& vh) {
    if (recent) std::copy(in.values + (seq - recent) * dv, in.values + seq * dv, vh.begin() + static_cast<long>((seq - recent) * dv));
  };
  for (size_t vi = 0; vi < nvqq; ++vi) keepRecentValues(vhat[vi]);
  // value codecs: encoded once, decoded from their buffers
  for (size_t ci = 0; ci < nvc; ++ci) {
    if (stop()) return;
    const VectorCodec& vc = *in.valueCodecs[ci];
    const size_t nc = seq - recent;  // the codec encodes the tokens before the recent window
    auto& vh = vhat[nvqq + ci];
    vh.resize(seq * dv);
    double bytes = 0, sum = 0;
    size_t used = 0;
    if (nc > 0) {
      const EncodedMatrix enc = vc.encode(in.values, nc, dv);
      vc.decode(enc, vh.data());
      bytes = static_cast<double>(enc.bytes()) / static_cast<double>(nc);
      vectorMseAccumulate(in.values, vh.data(), nc, dv, sum, used);
    }
    keepRecentValues(vh);
    out.valueMse.push_back(used ? sum / static_cast<double>(used) : 0.0);
    out.valueCodecBytes.push_back(bytes);
  }

  std::vector<float> est(nq * seq), w(nq * seq), eo(nq * dv), z, sq;
  const float* kx = in.compressKeys ? in.compressKeys : in.keys;  // what the key quantizers see
  Eigen::VectorXf qmu;
  if (in.keyOffset) qmu = Q * Eigen::Map<const Eigen::VectorXf>(in.keyOffset, static_cast<long>(d));
  // The MSE stage of MSE-only b and of MSE+QJL b+1 (any m) is the same rotation and codebook: when the
  // codes and norms are byte-identical, its reconstruction error and <q, x_mse> are reused (while the
  // cached products stay below ~256 MB).
  struct MseStage {
    const Quantizer* q;
    int bits;
    std::vector<uint8_t> codes;
    std::vector<uint16_t> norms;
    double keyMse;
    std::vector<float> est;  // <q, x_mse>, nq x seq
  };
  std::vector<MseStage> stages;
  const size_t maxStages = std::max<size_t>(1, (size_t{256} << 20) / std::max<size_t>(1, nq * seq * sizeof(float)));
  // The keys rotated once per rotation (a cell's quantizers share their layer's): compressRotated gives
  // compress()'s bytes without rotating again, and the MSE stage is scored and measured in rotated space,
  // <q, x_mse> = <R q, n16 c[idx]> and ||x - x_mse|| = ||R x - n16 c[idx]|| (R orthogonal), with no R^T.
  struct RotatedKeys {
    RotatedVectors unit;         // R x / ||x||, for compressRotated
    std::vector<float> keys;     // R x (seq x d)
    std::vector<float> queries;  // R q (nq x d)
  };
  std::vector<std::unique_ptr<RotatedKeys>> rotated;
  auto rotatedFor = [&](const Quantizer& q) -> const RotatedKeys& {
    for (const auto& r : rotated)
      if (r->unit.rotatedBy(q)) return *r;
    auto r = std::make_unique<RotatedKeys>();
    r->unit = q.rotate(kx, seq);
    r->keys.resize(seq * d);
    q.rotation().apply(kx, r->keys.data(), seq);
    r->queries.resize(nq * d);
    q.rotation().apply(in.queries, r->queries.data(), nq);
    rotated.push_back(std::move(r));
    return *rotated.back();
  };
  // TurboQuant keys: est = <q, x_mse> (+ the QJL term); false when cancelled
  auto evaluateQuantizerKeys = [&](size_t k) -> bool {
    const Quantizer& q = *in.keyQuantizers[k];
    const RotatedKeys& rk = rotatedFor(q);
    CompressedVectors kc;
    if (!blocks([&](size_t b, size_t n) { q.compressRotated(rk.unit, b, n, kc); })) return false;
    const MseStage* stage = nullptr;
    for (const auto& st : stages)
      if (st.bits == q.mseBits() && st.q->codebookPtr() == q.codebookPtr() && st.q->rotation().kind() == q.rotation().kind() &&
          st.q->rotation().matrix() == q.rotation().matrix() && st.q->rotation().hadamardSigns() == q.rotation().hadamardSigns() &&
          st.codes == kc.codes && st.norms == kc.norms)
        stage = &st;
    Eigen::Map<RowMat> E(est.data(), static_cast<long>(nq), static_cast<long>(seq));
    double keyMse = 1.0;
    if (stage) {
      keyMse = stage->keyMse;
      std::copy(stage->est.begin(), stage->est.end(), est.begin());
    } else if (q.mseBits() > 0) {
      double sum = 0;
      size_t used = 0;
      const Eigen::Map<const RowMat> RQ(rk.queries.data(), static_cast<long>(nq), static_cast<long>(d));
      if (!blocks([&](size_t b, size_t n) {
            reconstructRotated(q, slice(kc, b, n), recBlock);
            vectorMseAccumulate(rk.keys.data() + b * d, recBlock.data(), n, d, sum, used);
            E.middleCols(static_cast<long>(b), static_cast<long>(n)).noalias() =
                RQ * Eigen::Map<const RowMat>(recBlock.data(), static_cast<long>(n), static_cast<long>(d)).transpose();
          }))
        return false;
      keyMse = used ? sum / static_cast<double>(used) : 0.0;
    } else {
      E.setZero();
    }
    if (!stage && stages.size() < maxStages) stages.push_back(MseStage{&q, q.mseBits(), kc.codes, kc.norms, keyMse, est});
    out.keyMse.push_back(keyMse);
    return !(q.projDim() > 0 && !blocks([&](size_t b, size_t n) {
      CompressedVectors part = slice(kc, b, n);
      std::vector<float> blockEst(nq * n, 0.0f);
      addQjlTerm(q, part, Q, blockEst.data(), z, sq);
      E.middleCols(static_cast<long>(b), static_cast<long>(n)) += Eigen::Map<const RowMat>(blockEst.data(), static_cast<long>(nq), static_cast<long>(n));
    }));
  };
  // the metrics of est for key variant k, and its output error with every paired value variant
  auto finishVariant = [&](size_t k) -> bool {
    Eigen::Map<RowMat> E(est.data(), static_cast<long>(nq), static_cast<long>(seq));
    const size_t window = std::min(in.exactKeys, seq);
    if (window)
      E.leftCols(static_cast<long>(window)) =
          Eigen::Map<const RowMat>(exact.data(), static_cast<long>(nq), static_cast<long>(seq)).leftCols(static_cast<long>(window));
    const size_t rw = std::min(recent, seq - window);
    if (rw)
      E.rightCols(static_cast<long>(rw)) = Eigen::Map<const RowMat>(exact.data(), static_cast<long>(nq), static_cast<long>(seq)).rightCols(static_cast<long>(rw));
    std::fill(w.begin(), w.end(), 0.0f);
    for (size_t i = 0; i < nq; ++i) {
      if (stop()) return false;
      const size_t n = static_cast<size_t>(in.limits[i]) + 1;
      const AttentionMetrics mt =
          attentionMetrics(exact.data() + i * seq, exactP.data() + i * seq, exactLogP.data() + i * seq, est.data() + i * seq, n, in.scale, p.data());
      double* o = out.keyMetrics.data() + (k * nq + i) * SweepTaskOutput::kKeyMetrics;
      const double v[SweepTaskOutput::kKeyMetrics] = {mt.logitCosine, mt.attentionCosine, mt.kl, mt.top1, mt.top5, mt.bias, mt.variance, mt.slope, mt.correlation};
      std::copy(v, v + SweepTaskOutput::kKeyMetrics, o);
      if (nvq == 0) continue;
      for (size_t t = 0; t < n; ++t) w[i * seq + t] = static_cast<float>(p[t]);
    }
    for (size_t vi = 0; vi < nvq; ++vi) {
      if (!paired(k, vi)) continue;
      if (stop()) return false;
      Eigen::Map<RowMat>(eo.data(), static_cast<long>(nq), static_cast<long>(dv)).noalias() =
          Eigen::Map<const RowMat>(w.data(), static_cast<long>(nq), static_cast<long>(seq)) *
          Eigen::Map<const RowMat>(vhat[vi].data(), static_cast<long>(seq), static_cast<long>(dv));
      for (size_t i = 0; i < nq; ++i) out.outputError[(k * nvOut + vi) * nq + i] = outputError(exactOut.data() + i * dv, eo.data() + i * dv, dv);
    }
    return true;
  };
  std::vector<float> khat;
  for (size_t k = 0; k < nk; ++k) {
    if (stop()) return;
    Eigen::Map<RowMat> E(est.data(), static_cast<long>(nq), static_cast<long>(seq));
    if (k >= nkq) {
      // a reconstruction codec: <q, k_hat> from its decoded buffers
      // (tokens of an exact window are not encoded: the codec sees the rest, as a cache would store it)
      const VectorCodec& kcodec = *in.keyCodecs[k - nkq];
      const size_t w0 = std::min(in.exactKeys, seq), nc = seq - w0 - std::min(recent, seq - w0);
      khat.assign(kx, kx + seq * d);
      double bytes = 0;
      if (nc > 0) {
        const EncodedMatrix enc = kcodec.encode(kx + w0 * d, nc, d);
        kcodec.decode(enc, khat.data() + w0 * d);
        bytes = static_cast<double>(enc.bytes()) / static_cast<double>(nc);
      }
      double sum = 0;
      size_t used = 0;
      vectorMseAccumulate(kx + w0 * d, khat.data() + w0 * d, nc, d, sum, used);
      out.keyMse.push_back(used ? sum / static_cast<double>(used) : 0.0);
      out.keyCodecBytes.push_back(bytes);
      if (!blocks([&](size_t b, size_t n) {
            E.middleCols(static_cast<long>(b), static_cast<long>(n)).noalias() =
                Q * Eigen::Map<const RowMat>(khat.data() + b * d, static_cast<long>(n), static_cast<long>(d)).transpose();
          }))
        return;
    } else if (!evaluateQuantizerKeys(k)) {
      return;
    }
    if (in.keyOffset) E.colwise() += qmu;  // <q, k_hat + mu> = <q, k_hat> + <q, mu>
    if (!finishVariant(k)) return;
  }
}

}  // namespace tq
