// SPDX-License-Identifier: GPL-3.0-or-later
// Golden cross-check against the PyTorch reference's outputs (seed_golden, split per head dimension).
#include <QtTest/QtTest>

#include "data/safetensors.h"
#include "validation/crosscheck.h"

using namespace tq;

class TstGolden : public QObject {
  Q_OBJECT
 private slots:
  void reference_data() {
    QTest::addColumn<QString>("file");
    QTest::addColumn<int>("groups");
    QTest::newRow("d64") << "seed_golden_d64.safetensors" << 20;
    QTest::newRow("d128") << "seed_golden_d128.safetensors" << 20;
  }
  void reference() {
    QFETCH(QString, file);
    QFETCH(int, groups);
    const CrossCheckReport rep = crossCheckReference(std::string(TQ_TEST_DATA_DIR "/") + file.toStdString());
    QCOMPARE(static_cast<int>(rep.groups.size()), groups);
    for (const auto& g : rep.groups)
      for (const auto& it : g.items) {
        QVERIFY2(it.compared > 0, qPrintable(QString::fromStdString(g.name + " " + it.what)));
        QVERIFY2(it.pass(), qPrintable(QString("%1 %2: %3 mismatches, max error %4").arg(QString::fromStdString(g.name), QString::fromStdString(it.what)).arg(it.mismatches).arg(it.maxError)));
      }
    QVERIFY(rep.pass());
  }
  void missingFileIsAClearError() {
    try {
      crossCheckReference("/nonexistent/golden.safetensors");
      QFAIL("no exception");
    } catch (const DataError& e) {
      QVERIFY(QString(e.what()).contains("/nonexistent/golden.safetensors"));
    }
  }
  void fileWithoutGroupsIsRefused() {
    try {
      crossCheckReference(TQ_TEST_DATA_DIR "/../../resources/stories260K_lily_512.safetensors");
    } catch (const DataError& e) {
      QVERIFY(QString(e.what()).contains("stories260K_lily_512.safetensors"));
      return;
    }
    QFAIL("no exception");
  }
};

QTEST_APPLESS_MAIN(TstGolden)
#include "tst_golden.moc"
