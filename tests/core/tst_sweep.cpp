// SPDX-License-Identifier: GPL-3.0-or-later
#include <QtTest/QtTest>

#include <atomic>
#include <cmath>

#include "backend/backend.h"
#include "metrics/metrics.h"
#include "sweep/sweep.h"
#include "synth/synthetic.h"

using namespace tq;

namespace {
SyntheticSpec smallSpec() {
  SyntheticSpec s;
  s.kind = SyntheticKind::OutlierChannels;
  s.layers = 2;
  s.qHeads = 4;
  s.kvHeads = 2;
  s.tokens = 256;
  s.headDim = 32;
  s.seed = 3;
  return s;
}
}  // namespace

class TstSweep : public QObject {
  Q_OBJECT
 private slots:
  void syntheticQueryRowsEqualSelectedRows() {
    SyntheticSpec spec = smallSpec();
    for (SyntheticKind k : {SyntheticKind::OutlierChannels, SyntheticKind::LowRank, SyntheticKind::RopeLike}) {
      spec.kind = k;
      spec.needle = k == SyntheticKind::RopeLike;
      SyntheticKv src(spec);
      const std::vector<int> rows = {255, 0, 64, 64};
      const auto all = src.queries(1, 3);
      const auto some = src.queryRows(1, 3, rows);
      QCOMPARE(some.size(), rows.size() * 32);
      for (size_t i = 0; i < rows.size(); ++i)
        for (size_t j = 0; j < 32; ++j) QCOMPARE(some[i * 32 + j], all[static_cast<size_t>(rows[i]) * 32 + j]);
    }
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, SyntheticKv(smallSpec()).queryRows(0, 0, {256}));
  }

  void metricsOfIdenticalScores() {
    std::vector<float> s = {1, 2, 3, -1, 0.5f};
    const auto m = attentionMetrics(s.data(), s.data(), s.size(), 1.0);
    QCOMPARE(m.attentionCosine, 1.0);
    QVERIFY(std::fabs(m.logitCosine - 1.0) < 1e-12);
    QCOMPARE(m.kl, 0.0);
    QCOMPARE(m.top1, 1.0);
    QCOMPARE(m.top5, 1.0);
    QVERIFY(std::fabs(m.slope - 1.0) < 1e-12);
  }
  void metricsKnownValues() {
    // two keys: exact logits (0, ln 3) -> p = (1/4, 3/4); estimate (0, 0) -> (1/2, 1/2)
    std::vector<float> e = {0.0f, static_cast<float>(std::log(3.0))}, h = {0.0f, 0.0f};
    const auto m = attentionMetrics(e.data(), h.data(), 2, 1.0);
    const double kl = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
    QVERIFY(std::fabs(m.kl - kl) < 1e-6);
    QCOMPARE(m.top1, 0.0);  // argmax of (0,0) is 0, exact argmax is 1
    QCOMPARE(m.top5, 1.0);
  }
  void memoryPresets() {
    MemoryConfig c;
    const auto& p = findPreset("qwen2.5-3b");
    QCOMPARE(p.layers, 36);
    QCOMPARE(p.kvHeads, 2);
    c.layers = p.layers;
    c.kvHeads = p.kvHeads;
    c.headDim = p.headDim;
    c.tokens = 8192;
    c.keyBits = 3;
    c.valueBits = 3;
    c.keyMode = KeyMode::Prod;
    const auto r = memoryModel(c);
    QCOMPARE(r.keyBytesPerVector, size_t(52));
    QCOMPARE(r.valueBytesPerVector, size_t(50));
    QVERIFY(std::fabs(r.ratioVsFp16 - 512.0 / 102.0) < 1e-9);
    QCOMPARE(findPreset("Llama-3.1-8B").kvHeads, 8);
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, findPreset("gpt-9"));
  }
  void gridShapeAndBytes() {
    SyntheticKv src(smallSpec());
    SweepConfig c;
    c.keyBits = {2, 4};
    c.valueBits = {2, 3};
    c.modes = {KeyMode::Mse, KeyMode::Prod};
    c.projDims = {16, 32};
    c.maxQueries = 8;
    auto be = makeCpuBackend();
    std::atomic<int> calls{0};
    const SweepResult r = runSweep(src, c, *be, [&](size_t, size_t) {
      ++calls;
      return true;
    });
    // variants: mse {2,4} + prod {2,4} x {16,32} = 6; x value bits 2 x layers 2 x q heads 4
    QCOMPARE(r.rows.size(), size_t(6 * 2 * 2 * 4));
    QVERIFY(calls.load() > 0);
    QVERIFY(!r.cancelled);
    QCOMPARE(r.backend, std::string("CPU"));
    for (const auto& row : r.rows) {
      QCOMPARE(row.keyBytesPerVector, keyBytesPerVector(32, row.key.bits, row.key.mode, row.key.projDim));
      QCOMPARE(row.valueBytesPerVector, valueBytesPerVector(32, row.valueBits));
      QCOMPARE(row.kvHead, row.qHead / 2);  // GQA 4q/2kv
      QVERIFY(row.m.attentionCosine > 0 && row.m.attentionCosine <= 1.0 + 1e-9);
      QVERIFY(row.m.kl >= 0);
    }
    QCOMPARE(r.summary().size(), size_t(12));
  }
  void moreBitsIsBetter() {
    SyntheticKv src(smallSpec());
    SweepConfig c;
    c.keyBits = {1, 2, 3, 4, 8};
    c.valueBits = {4};
    c.modes = {KeyMode::Mse};
    auto be = makeCpuBackend();
    const auto sum = runSweep(src, c, *be).summary();
    QCOMPARE(sum.size(), size_t(5));
    for (size_t i = 1; i < sum.size(); ++i) QVERIFY(sum[i].mean.attentionCosine > sum[i - 1].mean.attentionCosine);
    QVERIFY(sum.back().mean.attentionCosine > 0.999);
    QVERIFY(sum.back().mean.top1 > 0.9);
  }
  void cancelStops() {
    SyntheticSpec s = smallSpec();
    s.layers = 6;
    SyntheticKv src(s);
    SweepConfig c;
    c.keyBits = {1, 2, 3, 4};
    auto be = makeCpuBackend();
    size_t seen = 0;
    const SweepResult r = runSweep(src, c, *be, [&](size_t done, size_t) {
      seen = done;
      return done < 2;
    });
    QVERIFY(r.cancelled);
    QVERIFY(seen < 6 * 2 * 4);
  }
  void proxyQueriesAreLabelledAndDumpQueriesRequired() {
    SyntheticSpec s = smallSpec();
    s.withQueries = false;
    SyntheticKv src(s);
    SweepConfig c;
    auto be = makeCpuBackend();
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, runSweep(src, c, *be));
    c.queries = QuerySource::LastKey;
    const auto r = runSweep(src, c, *be);
    QCOMPARE(r.queryLabel, std::string("proxy: last key"));
    QCOMPARE(r.rows.size(), size_t(2 * 2));  // one proxy per kv head
    c.queries = QuerySource::Random;
    QCOMPARE(runSweep(src, c, *be).queryLabel, std::string("proxy: random queries"));
  }
  void badConfigsRejected() {
    SyntheticKv src(smallSpec());
    auto be = makeCpuBackend();
    SweepConfig c;
    c.keyBits = {9};
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, runSweep(src, c, *be));
    c = SweepConfig();
    c.layers = {7};
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, runSweep(src, c, *be));
    SyntheticSpec s = smallSpec();
    s.qHeads = 3;
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, SyntheticKv{s});
  }
  void syntheticIsDeterministic() {
    SyntheticKv a(smallSpec()), b(smallSpec());
    QVERIFY(a.keys(1, 1) == b.keys(1, 1));
    QVERIFY(a.queries(0, 3) == b.queries(0, 3));
    QVERIFY(a.keys(0, 0) != a.keys(1, 0));
    for (auto kind : {SyntheticKind::Gaussian, SyntheticKind::Sphere, SyntheticKind::LowRank, SyntheticKind::RopeLike}) {
      SyntheticSpec s = smallSpec();
      s.kind = kind;
      s.needle = true;
      SyntheticKv src(s);
      const auto k = src.keys(0, 0);
      QCOMPARE(k.size(), size_t(256 * 32));
      for (float v : k) QVERIFY(std::isfinite(v));
    }
  }
};

QTEST_APPLESS_MAIN(TstSweep)
#include "tst_sweep.moc"
