// SPDX-License-Identifier: GPL-3.0-or-later
/// The lesson (core/explore/lesson): every step renders with data on the embedded sample and on synthetic
/// sets, its sentences carry the data's numbers, and the verdicts follow the data.
#include <QtTest/QtTest>

#include <cmath>
#include <regex>

#include "backend/backend.h"
#include "data/samples.h"
#include "explore/lesson.h"
#include "synth/synthetic.h"

using namespace tq;

namespace {
void checkLesson(const Lesson& L) {
  QCOMPARE(L.steps.size(), lessonStepIds().size());
  for (size_t i = 0; i < L.steps.size(); ++i) {
    const LessonStep& s = L.steps[i];
    QCOMPARE(s.id, lessonStepIds()[i]);
    QVERIFY2(s.sentences.size() >= 2 && s.sentences.size() <= 4, s.id.c_str());
    int withNumbers = 0;
    for (const auto& t : s.sentences) {
      QVERIFY2(t.find("nan") == std::string::npos && t.find("inf") == std::string::npos, t.c_str());
      if (std::regex_search(t, std::regex("[0-9]"))) ++withNumbers;
      if (qEnvironmentVariableIsSet("TQ_LESSON_PRINT")) qInfo("%s: %s", s.id.c_str(), t.c_str());
    }
    QVERIFY2(withNumbers >= 1, s.id.c_str());
    QVERIFY2(!s.panels.empty() && s.panels.size() <= 2, s.id.c_str());
    for (const LessonPanel& p : s.panels) {
      QVERIFY(!p.series.empty());
      size_t finite = 0;
      for (const LessonSeries& se : p.series) {
        if (se.kind != LessonSeries::VLine) QCOMPARE(se.x.size(), se.y.size());
        for (double v : se.kind == LessonSeries::VLine ? se.x : se.y) finite += std::isfinite(v) ? 1 : 0;
      }
      QVERIFY2(finite > 0, (s.id + ": " + p.title).c_str());
    }
  }
}
}  // namespace

class TestLesson : public QObject {
  Q_OBJECT
 private slots:
  void everyStepOnTheSample() {
    std::shared_ptr<const KvSource> src = openSample(SampleId::Default);
    auto be = makeCpuBackend();
    DetailConfig c;
    c.keyBits = 3;
    const Lesson L = computeLesson(src, {}, "sample", c, *be);
    checkLesson(L);
    QCOMPARE(L.headDim, 128);
    // the sample's layer 0 keys are almost all bias: the lesson says so where it matters
    const auto& rot = L.steps[2].sentences;
    QVERIFY(std::any_of(rot.begin(), rot.end(), [](const std::string& t) { return t.find("share one direction") != std::string::npos; }));
    const auto& out = L.steps[1].sentences;
    QVERIFY(std::any_of(out.begin(), out.end(), [](const std::string& t) { return t.find("% of these keys' energy is their mean") != std::string::npos; }));
    // a layer without the bias reads differently
    c.layer = 2;
    const Lesson L2 = computeLesson(src, {}, "sample", c, *be);
    checkLesson(L2);
    QVERIFY(L2.steps[2].sentences != rot);
  }

  void everyStepOnSyntheticSets() {
    for (SyntheticKind k : {SyntheticKind::OutlierChannels, SyntheticKind::Gaussian}) {
      SyntheticSpec sp;
      sp.kind = k;
      sp.layers = 2;
      sp.qHeads = 4;
      sp.kvHeads = 2;
      sp.tokens = 256;
      sp.headDim = 64;
      std::shared_ptr<const KvSource> src = std::make_shared<SyntheticKv>(sp);
      auto be = makeCpuBackend();
      DetailConfig c;
      c.keyBits = 2;
      c.queries = QuerySource::Random;
      const Lesson L = computeLesson(src, {}, "synthetic", c, *be);
      checkLesson(L);
      // random Gaussian keys have no outlier channel; the outlier generator's do
      const std::string& first = L.steps[1].sentences[0];
      QVERIFY2((k == SyntheticKind::Gaussian) == (first.find("no strong outlier") != std::string::npos), first.c_str());
      // a query head beyond the kv heads with proxy queries (GQA 4 q / 2 kv): every step on kv head 1
      c.qHead = 3;
      const Lesson G = computeLesson(src, {}, "synthetic", c, *be);
      checkLesson(G);
      QCOMPARE(G.kvHead, 1);
      QVERIFY(G.steps[7].panels[0].title.find("kv head 1") != std::string::npos);
    }
  }

  void drawsOverSeedsAreTheSequentialOnes() {
    // estimatesOverSeeds runs on all cores; its values are the seed-ordered sequential ones
    DetailConfig e;
    e.keyBits = 3;
    e.projDim = 32;
    const int d = 32;
    std::vector<float> x(d), q(d);
    for (int j = 0; j < d; ++j) x[j] = std::sin(0.3f * j) + 0.1f, q[j] = std::cos(0.2f * j);
    for (KeyMode m : {KeyMode::Mse, KeyMode::Prod}) {
      const auto par = estimatesOverSeeds(e, m, 3, d, x.data(), q.data(), 5, 17);
      QCOMPARE(par.size(), size_t(17));
      for (int i = 0; i < 17; ++i) {
        QuantConfig c = e.keyConfig(m, 3, d);
        c.seed += 7919ull * static_cast<uint64_t>(5 + i);
        Quantizer tqz(c);
        float est = 0;
        tqz.scores(tqz.prepare(q.data()), tqz.compress(x.data(), 1), 0, 1, &est);
        QCOMPARE(par[static_cast<size_t>(i)], static_cast<double>(est));
      }
    }
  }

  void cancels() {
    std::shared_ptr<const KvSource> src = openSample(SampleId::Tiny);
    auto be = makeCpuBackend();
    QVERIFY_THROWS_EXCEPTION(std::runtime_error, computeLesson(src, {}, "tiny", DetailConfig{}, *be, [](size_t, size_t) { return false; }));
  }
};

QTEST_APPLESS_MAIN(TestLesson)
#include "tst_lesson.moc"
