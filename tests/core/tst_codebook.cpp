// SPDX-License-Identifier: GPL-3.0-or-later
#include <QtTest/QtTest>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "codebook/codebook.h"

using namespace tq;

class TstCodebook : public QObject {
  Q_OBJECT
 private slots:
  void matchesReference_data() {
    QTest::addColumn<QString>("law");
    QTest::newRow("exact") << "beta";
    QTest::newRow("gaussian") << "gaussian";
  }
  // Every (d, b) in the reference file: centroids, boundaries, probabilities, distortion, entropy to 1e-6.
  void matchesReference() {
    QFETCH(QString, law);
    std::ifstream f(TQ_TEST_DATA_DIR "/codebooks.json");
    QVERIFY(f.good());
    const auto j = nlohmann::json::parse(f);
    int checked = 0;
    for (const auto& [ds, byBits] : j[law.toStdString()].items()) {
      for (const auto& [bs, e] : byBits.items()) {
        const int d = std::stoi(ds), b = std::stoi(bs);
        const Codebook cb = solveCodebook(d, b, parseLaw(law.toStdString()));
        const auto c = e["centroids"].get<std::vector<double>>();
        const auto t = e["boundaries"].get<std::vector<double>>();
        const auto p = e["cell_probabilities"].get<std::vector<double>>();
        QCOMPARE(cb.centroids.size(), c.size());
        for (size_t i = 0; i < c.size(); ++i)
          QVERIFY2(std::fabs(cb.centroids[i] - c[i]) < 1e-6, qPrintable(QString("d=%1 b=%2 c[%3]").arg(d).arg(b).arg(i)));
        for (size_t i = 0; i < t.size(); ++i) QVERIFY(std::fabs(cb.boundaries[i] - t[i]) < 1e-6);
        for (size_t i = 0; i < p.size(); ++i) QVERIFY(std::fabs(cb.cellProbabilities[i] - p[i]) < 1e-6);
        QVERIFY(std::fabs(cb.distortionUnitVector - e["distortion_unit_vector"].get<double>()) < 1e-6);
        QVERIFY(std::fabs(cb.entropyBits - e["entropy_bits"].get<double>()) < 1e-6);
        ++checked;
      }
    }
    QCOMPARE(checked, 80);
  }

  // Properties for sizes not in the file: symmetric, ascending, converged, between the paper's bounds.
  void propertiesAnyDimension_data() {
    QTest::addColumn<int>("d");
    for (int d : {2, 3, 7, 50, 100, 300, 700, 1024}) QTest::newRow(qPrintable(QString::number(d))) << d;
  }
  void propertiesAnyDimension() {
    QFETCH(int, d);
    for (int b = 1; b <= 8; ++b) {
      const Codebook cb = solveCodebook(d, b, CodebookLaw::Exact);
      QCOMPARE(static_cast<int>(cb.centroids.size()), 1 << b);
      for (size_t i = 1; i < cb.centroids.size(); ++i) QVERIFY(cb.centroids[i] > cb.centroids[i - 1]);
      for (size_t i = 0; i < cb.centroids.size(); ++i) QVERIFY(std::fabs(cb.centroids[i] + cb.centroids[cb.centroids.size() - 1 - i]) < 1e-12);
      QVERIFY2(cb.fixedPointResidual < 1e-10, qPrintable(QString("d=%1 b=%2 residual %3").arg(d).arg(b).arg(cb.fixedPointResidual)));
      // Newton stops at the residual's rounding floor instead of running into its 100-iteration cap
      // (which cost ~0.6 s at 8 bits and changed no centroid); d = 2 (the arcsine law, unbounded density
      // at the ends) still improves slowly at 4-7 bits and may use them all
      if (d >= 3) QVERIFY2(cb.newtonIterations < 100, qPrintable(QString("d=%1 b=%2 Newton iterations %3").arg(d).arg(b).arg(cb.newtonIterations)));
      double psum = 0;
      for (double p : cb.cellProbabilities) psum += p;
      QVERIFY(std::fabs(psum - 1.0) < 1e-9);
      if (d >= 16) {
        QVERIFY(cb.distortionUnitVector < paperUpperBound(b));
        QVERIFY(cb.distortionUnitVector > paperLowerBound(b) * 0.5);
      }
    }
  }

  // ALGORITHM.md: D_b for d = 128, exact law.
  void distortionD128() {
    const double expected[] = {0.3609, 0.1160, 0.03397, 0.009315, 0.002451, 0.000630, 0.000160, 0.0000402};
    for (int b = 1; b <= 8; ++b) {
      const double got = codebook(128, b, CodebookLaw::Exact)->distortionUnitVector;
      QVERIFY2(std::fabs(got - expected[b - 1]) / expected[b - 1] < 5e-3, qPrintable(QString("b=%1 got %2").arg(b).arg(got)));
    }
  }

  void cacheReturnsSameObject() {
    auto a = codebook(64, 3, CodebookLaw::Exact);
    auto b = codebook(64, 3, CodebookLaw::Exact);
    QCOMPARE(a.get(), b.get());
  }

  void rejectsBadArguments() {
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, solveCodebook(1, 3, CodebookLaw::Exact));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, solveCodebook(64, 0, CodebookLaw::Exact));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, solveCodebook(64, 9, CodebookLaw::Exact));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, parseLaw("laplace"));
  }
};

QTEST_APPLESS_MAIN(TstCodebook)
#include "tst_codebook.moc"
