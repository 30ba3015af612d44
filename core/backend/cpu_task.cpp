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
#include <cmath>
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

/// n16 * c[idx] in rotated space (seq x d), then R^T: the MSE reconstruction of every vector.
void reconstruct(const Quantizer& q, const CompressedVectors& cv, std::vector<float>& rot, std::vector<float>& out) {
  const size_t d = static_cast<size_t>(q.dim()), n = cv.count;
  out.assign(n * d, 0.0f);
  if (q.mseBits() == 0) return;
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
  q.rotation().applyTranspose(rot.data(), out.data(), n);
}

}  // namespace

bool cancelRequested(const SweepTaskInput& in) { return in.cancel && in.cancel->load(std::memory_order_relaxed); }

void cpuEvaluateTask(const SweepTaskInput& in, SweepTaskOutput& out) {
  const size_t seq = in.seq, nq = in.nq, d = static_cast<size_t>(in.d), dv = static_cast<size_t>(in.dv);
  if (seq == 0 || nq == 0 || d == 0) throw std::invalid_argument("empty sweep task");
  const size_t nvq = in.values ? in.valueQuantizers.size() : 0, nvOut = std::max<size_t>(1, nvq), nk = in.keyQuantizers.size();
  out = SweepTaskOutput{};
  out.keyMetrics.assign(nk * nq * SweepTaskOutput::kKeyMetrics, 0.0);
  out.outputError.assign(nk * nvOut * nq, 0.0);

  // exact logits, softmax and outputs (the definitions of core/attention and core/metrics)
  std::vector<float> exact(nq * seq), exactOut(in.values ? nq * dv : 0);
  exactScores(in.queries, nq, in.keys, seq, d, exact.data());
  // exact softmax and its log once per query (every key variant is measured against them)
  std::vector<double> exactP(nq * seq), exactLogP(nq * seq), p(seq);
  for (size_t i = 0; i < nq; ++i) {
    const size_t n = static_cast<size_t>(in.limits[i]) + 1;
    logSoftmax(exact.data() + i * seq, n, in.scale, exactP.data() + i * seq, exactLogP.data() + i * seq);
    if (in.values) weightedValues(exactP.data() + i * seq, n, in.values, dv, exactOut.data() + i * dv);
  }
  Eigen::Map<const RowMat> Q(in.queries, static_cast<long>(nq), static_cast<long>(d));

  // values: compressed and reconstructed once per width
  std::vector<float> scratch;
  std::vector<std::vector<float>> vhat(nvq);
  for (size_t vi = 0; vi < nvq; ++vi) {
    const Quantizer& vq = *in.valueQuantizers[vi];
    CompressedVectors vc;
    vq.compress(in.values, seq, vc);
    reconstruct(vq, vc, scratch, vhat[vi]);
    out.valueMse.push_back(vectorMse(in.values, vhat[vi].data(), seq, dv));
  }

  std::vector<float> khat, est(nq * seq), w(nq * seq), eo(nq * dv), z, sq;
  struct MseStage {
    const Quantizer* q;
    int bits;
    std::vector<uint8_t> codes;
    std::vector<uint16_t> norms;
    double keyMse;
    std::vector<float> est;  // <q, x_mse>, nq x seq
  };
  std::vector<MseStage> stages;
  for (size_t k = 0; k < nk; ++k) {
    if (cancelRequested(in)) return;
    const Quantizer& q = *in.keyQuantizers[k];
    CompressedVectors kc;
    q.compress(in.keys, seq, kc);
    // The MSE stage of MSE-only b and of MSE+QJL b+1 (any m) is the same rotation and codebook: when the
    // codes and norms are byte-identical, its reconstruction error and <q, x_mse> are reused.
    MseStage* stage = nullptr;
    for (auto& st : stages)
      if (st.bits == q.mseBits() && st.q->codebookPtr() == q.codebookPtr() && st.q->rotation().kind() == q.rotation().kind() &&
          st.q->rotation().matrix() == q.rotation().matrix() && st.q->rotation().hadamardSigns() == q.rotation().hadamardSigns() &&
          st.codes == kc.codes && st.norms == kc.norms)
        stage = &st;
    if (!stage) {
      stages.push_back(MseStage{&q, q.mseBits(), kc.codes, kc.norms, 1.0, std::vector<float>(nq * seq, 0.0f)});
      stage = &stages.back();
      if (q.mseBits() > 0) {
        reconstruct(q, kc, scratch, khat);
        stage->keyMse = vectorMse(in.keys, khat.data(), seq, d);
        Eigen::Map<RowMat>(stage->est.data(), static_cast<long>(nq), static_cast<long>(seq)).noalias() =
            Q * Eigen::Map<const RowMat>(khat.data(), static_cast<long>(seq), static_cast<long>(d)).transpose();
      }
    }
    out.keyMse.push_back(stage->keyMse);
    Eigen::Map<RowMat> E(est.data(), static_cast<long>(nq), static_cast<long>(seq));
    std::copy(stage->est.begin(), stage->est.end(), est.begin());
    if (q.projDim() > 0) {
      // QJL term: sqrt(pi/2)/m ||r||_16 <S q, z>, the per-key factor folded into the sign rows
      const size_t m = static_cast<size_t>(q.projDim());
      const float scale = static_cast<float>(std::sqrt(M_PI / 2.0) / static_cast<double>(m));
      z.resize(seq * m);
      const size_t sb = kc.signBytes();
      for (size_t t = 0; t < seq; ++t) {
        const float c = halfToFloat(kc.residualNorms[t]) * scale;
        const uint8_t* bits = kc.signs.data() + t * sb;
        float* row = z.data() + t * m;
        for (size_t j = 0; j < m; ++j) row[j] = ((bits[j >> 3] >> (j & 7)) & 1u) ? c : -c;
      }
      sq.resize(nq * m);
      Eigen::Map<RowMat> SQ(sq.data(), static_cast<long>(nq), static_cast<long>(m));
      SQ.noalias() = Q * Eigen::Map<const RowMat>(q.qjlMatrix().data(), static_cast<long>(m), static_cast<long>(d)).transpose();
      E.noalias() += SQ * Eigen::Map<const RowMat>(z.data(), static_cast<long>(seq), static_cast<long>(m)).transpose();
    }
    std::fill(w.begin(), w.end(), 0.0f);
    for (size_t i = 0; i < nq; ++i) {
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
      Eigen::Map<RowMat>(eo.data(), static_cast<long>(nq), static_cast<long>(dv)).noalias() =
          Eigen::Map<const RowMat>(w.data(), static_cast<long>(nq), static_cast<long>(seq)) *
          Eigen::Map<const RowMat>(vhat[vi].data(), static_cast<long>(seq), static_cast<long>(dv));
      for (size_t i = 0; i < nq; ++i) {
        out.outputError[(k * nvOut + vi) * nq + i] = outputError(exactOut.data() + i * dv, eo.data() + i * dv, dv);
      }
    }
  }
}

}  // namespace tq
