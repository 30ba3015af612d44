// SPDX-License-Identifier: GPL-3.0-or-later
// The main window on the embedded sample (offscreen): every view has data, runs finish, cancel stops,
// broken files keep the old data, exports have the requested size and format, the CLI exporter works.
#include <QFile>
#include <QTabBar>
#include <QAbstractButton>
#include <QComboBox>
#include <QAbstractSpinBox>
#include <QImage>
#include <QImageReader>
#include <QRegularExpression>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QtTest/QtTest>
#include <QTabWidget>
#include <qcustomplot.h>
#include <QLabel>
#include <QScrollArea>
#include <QSpinBox>
#include <QTextBrowser>
#include <fstream>
#include <QStatusBar>
#include <QSettings>
#include <QStandardPaths>
#include <sstream>

#include "cli.h"
#include "data/safetensors.h"
#include "plot_views.h"

#include "compute.h"
#include "headless.h"
#include "main_window.h"
#include "sources.h"

using namespace tq::ui;

namespace {
MainWindowOptions quiet() {
  MainWindowOptions o;
  o.useSettings = false;
  o.dialogs = false;
  return o;
}
Experiment sample() {
  Experiment e;
  e.dataKind = DataKind::Sample;
  return e;
}
Experiment bigSynthetic() {
  Experiment e;
  e.dataKind = DataKind::Synthetic;
  e.synth.kind = tq::SyntheticKind::OutlierChannels;
  e.synth.layers = 6;
  e.synth.qHeads = 8;
  e.synth.kvHeads = 4;
  e.synth.tokens = 4096;
  e.synth.headDim = 64;
  return e;
}
}  // namespace

class TestWindow : public QObject {
  Q_OBJECT
 private slots:
  void opensOnTheSampleWithDataInEveryView() {
    MainWindow w(quiet());
    QString err;
    QVERIFY2(w.openNow(sample(), &err), qPrintable(err));
    QVERIFY(w.data());
    // The default sample is the real head_dim-128 slice of Qwen2.5-Coder-1.5B (layers 0, 9, 15, 27).
    QCOMPARE(w.data()->shape.layers, 4);
    QCOMPARE(w.data()->shape.qHeads, 12);
    QCOMPARE(w.data()->shape.kvHeads, 2);
    QCOMPARE(w.data()->shape.headDim, 128);
    QCOMPARE(w.data()->shape.seq, 512);
    QVERIFY(w.data()->shape.hasQueries);
    QVERIFY2(w.captionText().contains("Qwen2.5-Coder-1.5B"), qPrintable(w.captionText()));
    // Layer 0's keys are almost all bias (docs/RESULTS.md): the window says so, with core's number.
    auto* note = w.findChild<QLabel*>("keyNote");
    QVERIFY(note);
    QVERIFY2(!note->isHidden() && note->text().contains("L0 kv head 0: 99.97 %") && note->text().contains("bias"), qPrintable(note->text()));
    QCOMPARE(w.views().size(), 7);
    for (auto* v : w.views()) QVERIFY2(v->dataPoints() > 0, qPrintable(v->id() + " is empty"));
    // the layer map: every (layer, q head) of the sample for the current configuration; layer 0 (the
    // biased keys) is the worst, and the CSV holds core's numbers
    auto* lv = qobject_cast<LayersView*>(w.view("layers"));
    QVERIFY(lv);
    QCOMPARE(lv->dataPoints(), 4 * 12);
    QCOMPARE(lv->worstLayer(), 0);
    QVERIFY(lv->csv().startsWith("layer,q_head,method,key_bits,value_bits,attention_cosine\n"));
    // the token studied (How it works, Estimator) is marked on the heatmaps: the last one by default
    QCOMPARE(w.attentionView()->markedToken(), 511);
    // How it works walks through the coordinates of the key studied: each step names its cell and centroid
    auto* how = qobject_cast<HowItWorksView*>(w.view("how"));
    QVERIFY(how);
    how->stepCoordinate();
    how->stepCoordinate();
    QCOMPARE(how->currentCoordinate(), 1);
    QVERIFY2(how->stepText().startsWith("coordinate 1: y = ") && how->stepText().contains("centroid"), qPrintable(how->stepText()));
    how->setPlaying(true);
    QTRY_VERIFY_WITH_TIMEOUT(how->currentCoordinate() >= 2, 3000);
    how->setPlaying(false);
    QVERIFY(!how->playing());
    // Help > Guide: the user guide from docs/GUI.md, every view described
    w.showGuide();
    auto* guide = w.findChild<QTextBrowser*>("guideText");
    QVERIFY(guide);
    for (const char* v : {"Attention", "Fidelity", "Layers", "Memory", "Distortion", "Estimator", "How it works", "Ctrl+O"})
      QVERIFY2(guide->toPlainText().contains(v), v);
    // causal heatmap of the full sample: 512 x 512 cells, of which 512*513/2 are unmasked
    QCOMPARE(w.attentionView()->heatmap().rows, 512);
    QCOMPARE(w.attentionView()->dataPoints(), 512 * 513 / 2);
    QVERIFY(w.captionText().contains("K3/V4"));
    QVERIFY(w.captionText().contains("seed 42"));
    QVERIFY(w.backendText().contains("CPU"));
    // hover text names the tokens
    const QString hover = w.attentionView()->describe(14, 20);
    QVERIFY2(hover.contains("q 20") && hover.contains("k 14") && hover.contains("' SQL'"), qPrintable(hover));
    QVERIFY(w.attentionView()->describe(30, 20).contains("masked"));
  }

  void openShowsAndVerifiesACompressedCache() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    QTemporaryDir dir;
    const std::string c = dir.filePath("cache.safetensors").toStdString();
    std::ostringstream out, cerr;
    QCOMPARE(tq::runCli({"compress", "sample:tiny", "--out", c, "--key-bits", "3", "--value-bits", "2"}, out, cerr), 0);
    QSignalSpy errors(&w, &MainWindow::errorOccurred);
    w.openFile(QString::fromStdString(c));
    QVERIFY2(w.statusBar()->currentMessage().contains("tq-compressed/1 cache: 5 layers, 4 kv heads, 512 tokens"), qPrintable(w.statusBar()->currentMessage()));
    QCOMPARE(errors.count(), 0);
    QCOMPARE(w.data()->shape.headDim, 128);  // the explored data set stays
    // A tampered cache is refused, naming the file.
    std::ifstream in(c, std::ios::binary);
    std::vector<char> b((std::istreambuf_iterator<char>(in)), {});
    const tq::SafetensorsFile sf(c);
    const tq::TensorInfo* cb = sf.find("layers.0.k.codebook");
    QVERIFY(cb);
    uint64_t headerLen = 0;
    for (int i = 0; i < 8; ++i) headerLen |= static_cast<uint64_t>(static_cast<uint8_t>(b[static_cast<size_t>(i)])) << (8 * i);
    b[8 + headerLen + cb->begin + 3] ^= 0x10;  // one codebook value changed
    const std::string t = dir.filePath("cut.safetensors").toStdString();
    std::ofstream(t, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size()));
    w.openFile(QString::fromStdString(t));
    QCOMPARE(errors.count(), 1);
    QVERIFY2(errors.at(0).at(0).toString().contains("cut.safetensors"), qPrintable(errors.at(0).at(0).toString()));
  }

  void keyBitsAreOffWhereTheyHaveNoEffect() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    auto* bits = w.findChild<QSpinBox*>("keyBits");
    QVERIFY(bits);
    QVERIFY(bits->isEnabled());
    w.setKeyMode(tq::KeyMode::QjlOnly);  // m sign bits and a norm, whatever the bit-width
    QVERIFY(!bits->isEnabled());
    QVERIFY(bits->toolTip().contains("no effect"));
    w.setKeyMode(tq::KeyMode::Mse);
    QVERIFY(bits->isEnabled());
  }

  void noTextOutsideItsPlot_data() {
    QTest::addColumn<QSize>("size");
    QTest::addColumn<bool>("presentation");
    QTest::newRow("1366x768") << QSize(1366, 768) << false;
    QTest::newRow("1920x1080") << QSize(1920, 1080) << false;
    QTest::newRow("1366x768 presentation") << QSize(1366, 768) << true;
    QTest::newRow("1920x1080 presentation") << QSize(1920, 1080) << true;
  }
  void noTextOutsideItsPlot() {
    // every title, subtitle, status and caption line fits the width of its figure, and every legend lies
    // inside it (the layout's bounding boxes; the pictures themselves were looked at too)
    QFETCH(QSize, size);
    QFETCH(bool, presentation);
    MainWindowOptions o = quiet();
    o.fullScreen = false;  // (offscreen, a full screen is 800 x 600: the window keeps the size under test)
    MainWindow w(o);
    Experiment e = sample();
    e.methods = {tq::Method::Kivi, tq::Method::IntRot, tq::Method::Fp8E4M3, tq::Method::Fp16, tq::Method::TqMseOutliers};
    if (presentation) e.fidelityX = FidelityAxis::Bytes;  // (its status line is the longest)
    e.compareMethod = "kivi";  // A/B: the attention view's four panels and their two-line names
    QString err;
    QVERIFY2(w.openNow(e, &err), qPrintable(err));
    w.resize(size);
    w.show();
    if (presentation) w.setPresentation(true);
    auto* tabs = w.findChild<QTabWidget*>();
    for (auto* v : w.views()) {
      tabs->setCurrentWidget(v);
      QApplication::processEvents();
      v->replotNow();
      QCustomPlot* p = v->plot();
      const QRect area = p->rect();
      std::vector<std::pair<QRect, QString>> drawn;  // where each text element's lines are drawn (centred)
      for (QCPLayoutElement* el : p->plotLayout()->elements(true)) {
        if (auto* t = qobject_cast<QCPTextElement*>(el)) {
          if (!t->realVisibility() || t->text().trimmed().isEmpty()) continue;
          const QFontMetrics fm(t->font());
          int wide = 0;
          for (const QString& line : t->text().split('\n')) {
            QVERIFY2(fm.horizontalAdvance(line) <= area.width(),
                     qPrintable(QString("%1: '%2' is %3 px wide in a %4 px figure").arg(v->id(), line).arg(fm.horizontalAdvance(line)).arg(area.width())));
            wide = std::max(wide, fm.horizontalAdvance(line));
          }
          const QRect r = t->outerRect();
          drawn.push_back({QRect(r.center().x() - wide / 2, r.top(), wide, r.height()), t->text()});
        }
        if (auto* l = qobject_cast<QCPLegend*>(el))
          if (l->itemCount() > 0) QVERIFY2(area.contains(l->outerRect()), qPrintable(v->id() + ": a legend outside the figure"));
      }
      // no two texts run into each other (e.g. the names of side-by-side panels)
      for (size_t i = 0; i < drawn.size(); ++i)
        for (size_t j = i + 1; j < drawn.size(); ++j)
          QVERIFY2(!drawn[i].first.adjusted(1, 1, -1, -1).intersects(drawn[j].first.adjusted(1, 1, -1, -1)),
                   qPrintable(QString("%1: '%2' runs into '%3'").arg(v->id(), drawn[i].second, drawn[j].second)));
    }
  }

  void everyControlHasATooltip() {
    // every control a user can operate says what it does (the side panel, the views' buttons, the lesson's)
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    QStringList missing;
    for (QWidget* c : w.findChildren<QWidget*>()) {
      const bool control = qobject_cast<QAbstractSpinBox*>(c) || qobject_cast<QComboBox*>(c) || qobject_cast<QAbstractButton*>(c);
      if (!control || qobject_cast<QTabBar*>(c->parentWidget()) || c->inherits("QScrollBar") || !c->parentWidget()) continue;
      if (c->objectName().startsWith("qt_")) continue;  // Qt's own (scroll-area corners, tab-bar scrollers)
      if (c->toolTip().trimmed().isEmpty()) {
        QString label = c->objectName();
        if (auto* b = qobject_cast<QAbstractButton*>(c)) label += " '" + b->text() + "'";
        missing << QString("%1%2").arg(c->metaObject()->className(), label.isEmpty() ? QString() : " " + label);
      }
    }
    QVERIFY2(missing.isEmpty(), qPrintable("controls without a tooltip: " + missing.join(", ")));
  }

  void presentationIsFullScreenWithoutTheSidePanel() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    w.resize(1366, 768);
    w.show();
    auto* panel = w.findChild<QScrollArea*>();
    QVERIFY(panel && panel->isVisible());
    w.setPresentation(true);
    QVERIFY(w.windowState() & Qt::WindowFullScreen);
    QVERIFY(!panel->isVisible());
    for (auto* v : w.views()) QVERIFY(v->presentation());
    w.setPresentation(false);
    QVERIFY(!(w.windowState() & Qt::WindowFullScreen));
    QVERIFY(panel->isVisible());
  }

  void theTinySampleStaysAChoice() {
    MainWindow w(quiet());
    QString err;
    Experiment e = sample();
    e.sample = tq::SampleId::Tiny;
    QVERIFY2(w.openNow(e, &err), qPrintable(err));
    QCOMPARE(w.data()->shape.layers, 5);
    QCOMPARE(w.data()->shape.qHeads, 8);
    QCOMPARE(w.data()->shape.kvHeads, 4);
    QCOMPARE(w.data()->shape.headDim, 8);
    QVERIFY(w.captionText().contains("stories260K"));
    QVERIFY(w.attentionView()->describe(14, 20).contains("Lily"));
    // The choice is part of the experiment and survives its JSON round trip.
    Experiment back;
    QVERIFY(back.fromJson(w.experiment().toJson(), &err));
    QVERIFY(back.sample == tq::SampleId::Tiny);
  }

  void abComparisonInTheAttentionView() {
    // A/B: the current configuration and a chosen one side by side (exact, A, B, A - B), from core's heatmap;
    // the choice and the recent window survive the experiment's JSON and the command line
    MainWindow w(quiet());
    QString err;
    Experiment e = sample();
    QVERIFY(e.applyFlag("compare", "int-rot:4", &err));
    QVERIFY(e.applyFlag("recent-window", "32", &err));
    QVERIFY(!e.applyFlag("compare", "zip:3", &err) && err.contains("zip"));
    QVERIFY(!e.applyFlag("compare", "kivi:9", &err) && err.contains("1..8"));
    QVERIFY2(w.openNow(e, &err), qPrintable(err));
    QTRY_VERIFY_WITH_TIMEOUT(!w.busy(), 30000);
    AttentionView* a = w.attentionView();
    QVERIFY(a->comparing());
    QCOMPARE(QString::fromStdString(a->heatmap().labelB), QString("int-rot 4 bits H32 blocks"));
    QVERIFY(a->csv().startsWith("row_bin,query_token,query_text,key_begin,key_end,exact,a,b,a_minus_b,a_minus_exact\n"));
    QVERIFY(a->describe(100, 200).contains("A−B"));
    QVERIFY(w.captionText().contains("last 32 tokens fp16"));
    Experiment back;
    QVERIFY(back.fromJson(w.experiment().toJson(), &err));
    QCOMPARE(back.compareLabel(), QString("int-rot:4"));
    QCOMPARE(back.recentWindow, 32);
    // switching B off returns to three panels
    Experiment off = w.experiment();
    off.compareMethod = "none";
    w.applyExperiment(off);
    QTRY_VERIFY_WITH_TIMEOUT(!a->comparing(), 20000);
    QVERIFY(a->csv().startsWith("row_bin,query_token,query_text,key_begin,key_end,exact,turboquant,difference\n"));
  }

  void aBitsChangeRecomputesInTheWorker() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    const float before = w.attentionView()->heatmap().approx[1000];
    QSignalSpy detail(&w, &MainWindow::detailApplied);
    QSignalSpy sweep(&w, &MainWindow::sweepApplied);
    w.setKeyBits(6);
    QVERIFY(detail.wait(10000));
    QCOMPARE(w.experiment().keyBits, 6);
    QVERIFY(w.attentionView()->heatmap().approx[1000] != before);
    QVERIFY(w.captionText().contains("K6/V4"));
    QCOMPARE(sweep.count(), 0);  // bits do not change the fidelity grid
    w.setSeed(7);                // the seed does
    QVERIFY(sweep.wait(60000));
    QVERIFY(w.view("fidelity")->csv().contains("attention_cosine"));
  }

  void cancelStopsTheSweepPromptly() {
    MainWindow w(quiet());
    QString err;
    QVERIFY2(w.openNow(bigSynthetic(), &err, false), qPrintable(err));
    QSignalSpy started(w.sweepRunner(), &JobRunner::started);
    QSignalSpy cancelled(w.sweepRunner(), &JobRunner::cancelled);
    QSignalSpy applied(&w, &MainWindow::sweepApplied);
    QVERIFY(started.count() > 0 || started.wait(10000));
    QTest::qWait(100);
    QVERIFY2(w.sweepRunner()->busy(), "the sweep finished before it could be cancelled");
    QElapsedTimer t;
    t.start();
    w.cancelWork();
    QVERIFY(cancelled.wait(10000));
    // the benchmark measures the latency (--bench-interaction: cancel_to_stopped_ms); this bound only
    // catches a cancel that waits for a whole cell or sweep
    QVERIFY2(t.elapsed() < 2000, qPrintable(QString("cancel took %1 ms").arg(t.elapsed())));
    // partial results may have arrived; a complete one must not
    QVERIFY(!w.sweepOutput() || w.sweepOutput()->result.partial());
    QVERIFY(!w.sweepOutput() || !w.view("fidelity")->outdated());
  }

  void fidelityCsvIsTheCliEvaluateCsv_data() {
    QTest::addColumn<int>("centering");
    QTest::addColumn<bool>("baselines");
    QTest::newRow("keys as they are") << int(tq::KeyCentering::None) << false;
    QTest::newRow("causal centring") << int(tq::KeyCentering::Causal) << false;
    QTest::newRow("baselines") << int(tq::KeyCentering::None) << true;
  }
  void fidelityCsvIsTheCliEvaluateCsv() {
    // the same configuration and query source through the view and through `tqstudio-cli evaluate --csv`
    QFETCH(int, centering);
    QFETCH(bool, baselines);
    MainWindow w(quiet());
    Experiment e;
    e.dataKind = DataKind::File;
    e.dataPath = TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors";
    e.centering = static_cast<tq::KeyCentering>(centering);
    if (baselines) e.methods = {tq::Method::Kivi, tq::Method::IntRot, tq::Method::Fp16};
    e.centerWindow = 64;
    QString err;
    QVERIFY2(w.openNow(e, &err), qPrintable(err));
    const QString gui = w.view("fidelity")->csv();
    const tq::SweepConfig c = sweepConfigFor(w.experiment(), w.data()->shape);
    auto join = [](const std::vector<int>& v) {
      std::string s;
      for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
      return s;
    };
    std::string modes;
    for (auto m : c.modes) modes += (modes.empty() ? "" : ",") + (baselines ? tq::methodName(tq::Method::TurboQuant, m) : std::string(tq::keyModeName(m)));
    if (baselines) modes += "," + tq::methodListLabel(c.methods);
    const std::vector<std::string> args = {"evaluate", e.dataPath.toStdString(), "--key-bits", join(c.keyBits), "--value-bits", join(c.valueBits),
                                           baselines ? "--methods" : "--mode", modes, "--proj-dim", join(c.projDims), "--queries", tq::querySourceName(c.queries),
                                           "--max-queries", std::to_string(c.maxQueries), "--rotation", tq::rotationName(c.rotation), "--law",
                                           tq::lawName(c.law), "--seed", std::to_string(c.seed), "--backend", "cpu",
                                           "--center", tq::keyCenteringLabel(c.centering, c.centerWindow), "--csv"};
    std::ostringstream out, cerr;
    QCOMPARE(tq::runCli(args, out, cerr), 0);
    const QString cli = QString::fromStdString(out.str());
    QVERIFY(gui.startsWith("method,key_mode,key_bits,proj_dim,value_bits,layer,q_head"));
    QVERIFY(gui.contains(centering ? ",causal:64,,none,0\n" : ",none,,none,0\n"));
    if (centering) QVERIFY2(w.captionText().contains("keys centred (causal:64)"), qPrintable(w.captionText()));
    QCOMPARE(gui.count('\n'), cli.count('\n'));
    QCOMPARE(gui, cli);
    if (baselines) {
      QVERIFY(gui.contains("\nkivi,mse,2,0,") && gui.contains("\nfp16,mse,16,0,"));
      // on the bytes axis: every method on one plot, the frontier marked, hover names the configuration
      Experiment b = w.experiment();
      b.fidelityX = FidelityAxis::Bytes;
      w.applyExperiment(b);  // a re-render only (the flush timer)
      auto* fv = qobject_cast<FidelityView*>(w.view("fidelity"));
      QVERIFY(fv);
      QTRY_VERIFY_WITH_TIMEOUT(fv->frontierPoints() >= 2, 5000);
      QVERIFY(!w.busy());
      const auto& pts = w.sweepOutput()->curves;
      const auto it = std::find_if(pts.begin(), pts.end(), [](const tq::CurvePoint& p) { return p.key.method == tq::Method::Kivi && p.key.bits == 2; });
      QVERIFY(it != pts.end());
      const QString hover = fv->hoverTextNear(0, tq::pointBytes(*it), it->mean[0]);
      // the baselines and the axis are part of the experiment (JSON round trip; bad names refused)
      Experiment back;
      QString why;
      QVERIFY(back.fromJson(w.experiment().toJson(), &why));
      QVERIFY(back.methods == e.methods && back.fidelityX == FidelityAxis::Bytes);
      QJsonObject bad = w.experiment().toJson();
      bad["methods"] = "kivi,zip";
      QVERIFY(!back.fromJson(bad, &why) && why.contains("zip"));
      QVERIFY2(hover.startsWith("KIVI · K2/V") && hover.contains(QString::number(tq::pointBytes(*it), 'f', 1)), qPrintable(hover));
    }
  }

  void outOfDateViewsAreMarkedAndNotExported() {
    MainWindow w(quiet());
    QString err;
    QVERIFY2(w.openNow(sample(), &err), qPrintable(err));
    QTemporaryDir dir;
    for (auto* v : w.views()) QVERIFY2(!v->outdated(), qPrintable(v->id()));
    QVERIFY2(saveFigure(w.view("fidelity"), dir.filePath("a.png"), FigureFormat::Png, QSize(900, 500), 96, &err), qPrintable(err));
    QSignalSpy sweep(&w, &MainWindow::sweepApplied);
    w.setSeed(9);  // a new grid: the curves shown belong to seed 42
    QTRY_VERIFY_WITH_TIMEOUT(w.sweepRunner()->busy() || sweep.count() > 0, 5000);
    if (sweep.count() == 0) {
      QVERIFY(w.view("fidelity")->outdated());
      QVERIFY(!saveFigure(w.view("fidelity"), dir.filePath("b.png"), FigureFormat::Png, QSize(900, 500), 96, &err));
      QVERIFY2(err.contains("out of date"), qPrintable(err));
      QVERIFY(!QFile::exists(dir.filePath("b.png")));
      QStringList written = exportAll(w.views(), dir.filePath("all"), {FigureFormat::Png}, QSize(900, 500), 96, false, &err);
      QVERIFY(!written.join(",").contains("fidelity"));
    }
    QTRY_VERIFY_WITH_TIMEOUT(!w.sweepRunner()->busy() && w.sweepOutput() && !w.sweepOutput()->result.partial(), 60000);
    QVERIFY(!w.view("fidelity")->outdated());
    QCOMPARE(w.sweepOutput()->result.config.seed, uint64_t(9));
    QVERIFY2(saveFigure(w.view("fidelity"), dir.filePath("c.png"), FigureFormat::Png, QSize(900, 500), 96, &err), qPrintable(err));
    // new data: every view that depends on it is out of date until its own results arrive
    QSignalSpy loaded(&w, &MainWindow::dataLoaded);
    w.applyExperiment(bigSynthetic());
    QVERIFY(loaded.wait(20000));
    for (auto* v : w.views())
      if (v->id() != "memory") QVERIFY2(v->outdated(), qPrintable(v->id() + " shows the old data as current"));
    QTRY_VERIFY_WITH_TIMEOUT(!w.attentionView()->outdated(), 30000);
    QCOMPARE(w.attentionView()->heatmap().row1, 4096);
    w.cancelWork();
  }

  void controlsSurviveARestart() {
    QStandardPaths::setTestModeEnabled(true);
    QSettings().clear();
    MainWindowOptions o = quiet();
    o.useSettings = true;
    {
      MainWindow w(o);
      QString err;
      QVERIFY2(w.openNow(sample(), &err), qPrintable(err));
      w.setKeyBits(5);
      w.setValueBits(2);
      w.setKeyMode(tq::KeyMode::Mse);
      w.setSeed(77);
      w.setLayer(3);
      w.setQuerySource(tq::QuerySource::Random);
      QTest::qWait(50);
    }  // closing saves
    MainWindow w2(o);
    Experiment e;
    QString err;
    QVERIFY2(startupExperiment(w2.experiment(), {}, &e, &err), qPrintable(err));
    QCOMPARE(e.keyBits, 5);
    QCOMPARE(e.valueBits, 2);
    QCOMPARE(e.keyMode, tq::KeyMode::Mse);
    QCOMPARE(e.seed, quint64(77));
    QCOMPARE(e.layer, 3);
    QCOMPARE(e.querySource, tq::QuerySource::Random);
    // a flag on the command line wins; the others keep their restored values
    QVERIFY2(startupExperiment(w2.experiment(), {"--key-bits", "2"}, &e, &err), qPrintable(err));
    QCOMPARE(e.keyBits, 2);
    QCOMPARE(e.seed, quint64(77));
    QSettings().clear();
  }

  void staleDetailResultsAreDropped() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    QSignalSpy dropped(w.detailRunner(), &JobRunner::dropped);
    QSignalSpy applied(&w, &MainWindow::detailApplied);
    // several changes faster than the worker: only the last configuration may be shown
    for (int b = 1; b <= 8; ++b) {
      w.setKeyBits(b);
      QTest::qWait(30);
    }
    QTRY_VERIFY_WITH_TIMEOUT(!w.busy(), 20000);
    QVERIFY(applied.count() >= 1);
    QCOMPARE(w.experiment().keyBits, 8);
    QVERIFY(w.captionText().contains("K8/"));
    QVERIFY(w.view("how")->csv().size() > 0);
  }

  void aBrokenFileKeepsTheCurrentData() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    const auto before = w.data();
    QTemporaryDir dir;
    const QString bad = dir.filePath("broken.safetensors");
    QFile f(bad);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", 24);
    f.close();
    QSignalSpy errors(&w, &MainWindow::errorOccurred);
    w.openFile(bad);
    QVERIFY(errors.wait(10000));
    QVERIFY2(errors.first().at(0).toString().contains("broken.safetensors"), qPrintable(errors.first().at(0).toString()));
    QCOMPARE(w.data(), before);
    QCOMPARE(w.experiment().dataKind, DataKind::Sample);
    for (auto* v : w.views()) QVERIFY(v->dataPoints() > 0);
  }

  void exportWritesTheRequestedSizeAndFormat_data() {
    QTest::addColumn<QString>("format");
    QTest::addColumn<int>("dpi");
    QTest::newRow("png96") << "png" << 96;
    QTest::newRow("png192") << "png" << 192;
    QTest::newRow("svg") << "svg" << 96;
    QTest::newRow("pdf") << "pdf" << 96;
    QTest::newRow("pdf300") << "pdf" << 300;
  }
  void exportWritesTheRequestedSizeAndFormat() {
    QFETCH(QString, format);
    QFETCH(int, dpi);
    static MainWindow* w = nullptr;
    if (!w) {
      w = new MainWindow(quiet());
      QString err;
      QVERIFY(w->openNow(sample(), &err));
    }
    QTemporaryDir dir;
    FigureFormat f;
    QVERIFY(parseFigureFormat(format, &f));
    const QSize size(800, 500);
    for (auto* v : w->views()) {
      const QString path = dir.filePath(v->id() + "." + format);
      QString err;
      QVERIFY2(saveFigure(v, path, f, size, dpi, &err), qPrintable(err));
      QFile file(path);
      QVERIFY(file.open(QIODevice::ReadOnly));
      const QByteArray bytes = file.readAll();
      QVERIFY2(bytes.size() > 1000, qPrintable(path));
      if (format == "png") {
        QVERIFY(bytes.startsWith("\x89PNG"));
        const QImage img(path);
        QCOMPARE(img.size(), size);
        QVERIFY(std::abs(img.dotsPerMeterX() - dpi / 0.0254) < 2);
      } else if (format == "svg") {
        QVERIFY(bytes.contains("<svg"));
        QVERIFY(bytes.contains("width=\"") && bytes.contains("viewBox=\"0 0 800 500\""));
      } else {
        QVERIFY(bytes.startsWith("%PDF"));
        const QRegularExpression mb("/MediaBox \\[0 0 ([0-9.]+) ([0-9.]+)\\]");
        const auto m = mb.match(QString::fromLatin1(bytes));
        QVERIFY2(m.hasMatch(), "no MediaBox");
        QVERIFY(std::abs(m.captured(1).toDouble() - 800 * 72.0 / dpi) < 1.5);
        QVERIFY(std::abs(m.captured(2).toDouble() - 500 * 72.0 / dpi) < 1.5);
      }
      const QString csv = dir.filePath(v->id() + ".csv");
      QVERIFY(saveCsv(v, csv, &err));
      QVERIFY(QFileInfo(csv).size() > 50);
    }
  }

  void lessonStepsRenderWithData_data() {
    QTest::addColumn<bool>("synthetic");
    QTest::newRow("sample") << false;
    QTest::newRow("synthetic") << true;
  }
  void lessonStepsRenderWithData() {
    // View > Lesson: eight steps, each a figure with data and sentences with numbers; it follows the selection
    QFETCH(bool, synthetic);
    MainWindow w(quiet());
    QString err;
    Experiment e = sample();
    if (synthetic) {
      e.dataKind = DataKind::Synthetic;
      e.synth.layers = 2;
      e.synth.kvHeads = 2;
      e.synth.qHeads = 4;
      e.synth.tokens = 300;
      e.synth.headDim = 64;
    }
    QVERIFY2(w.openNow(e, &err), qPrintable(err));
    w.resize(1366, 768);
    w.show();
    w.showLesson();
    LessonView* l = w.lessonView();
    QTRY_VERIFY_WITH_TIMEOUT(l->hasLesson() && !l->outdated(), 60000);
    QCOMPARE(l->stepCount(), 8);
    QStringList texts;
    for (int i = 0; i < 8; ++i) {
      l->setStep(i);
      QCOMPARE(l->step(), i);
      QVERIFY(l->plot()->plottableCount() > 0);
      double points = 0;
      for (int k = 0; k < l->plot()->plottableCount(); ++k) {
        auto* pl = l->plot()->plottable(k);
        if (auto* g = qobject_cast<QCPGraph*>(pl)) points += g->dataCount();
        if (auto* b = qobject_cast<QCPBars*>(pl)) points += b->dataCount();
        if (auto* c = qobject_cast<QCPCurve*>(pl)) points += c->dataCount();
      }
      QVERIFY2(points > 0, qPrintable(l->text()));
      QVERIFY2(l->text().contains(QRegularExpression("[0-9]")), qPrintable(l->text()));
      texts << l->text();
    }
    // Page Down / Page Up step through the lesson while it is shown (a presenter's clicker)
    l->setStep(3);
    QTest::keyClick(&w, Qt::Key_PageDown);
    QCOMPARE(l->step(), 4);
    QTest::keyClick(&w, Qt::Key_PageUp);
    QCOMPARE(l->step(), 3);
    QCOMPARE(w.experiment().layer, 0);  // the layer did not move
    // another layer: the lesson is recomputed, greyed meanwhile, and says something else
    w.setLayer(1);
    QTRY_VERIFY_WITH_TIMEOUT(l->hasLesson() && !l->outdated() && l->experiment()->layer == 1 && !w.busy(), 60000);
    l->setStep(1);
    QVERIFY(l->text() != texts[1]);
    w.setPresentation(true);
    QVERIFY(l->plot()->plottableCount() > 0);
    // a cancelled lesson says so and is computed again when it is shown again
    w.setLayer(0);
    QTRY_VERIFY_WITH_TIMEOUT(w.lessonView()->outdated() || !w.busy(), 20000);
    w.cancelWork();
    QTRY_VERIFY_WITH_TIMEOUT(!w.busy(), 20000);
    if (l->outdated()) {
      l->next();
      QVERIFY(l->outdated());  // stepping through an out-of-date lesson keeps it marked
      w.showLesson();
    }
    QTRY_VERIFY_WITH_TIMEOUT(l->hasLesson() && !l->outdated() && l->experiment()->layer == 0 && !w.busy(), 60000);
  }

  void cliExportLesson() {
    // the hand-out: one PDF page per step, a PNG / SVG per step at the size asked for; nothing overwritten
    QTemporaryDir dir;
    std::ostringstream out, err;
    const std::vector<std::string> args = {"sample", "--out", dir.path().toStdString(), "--format", "pdf,png,svg", "--size", "960x540", "--dpi", "96"};
    QCOMPARE(runExportLesson(args, out, err), 0);
    QFile pdf(dir.filePath("lesson.pdf"));
    QVERIFY(pdf.open(QIODevice::ReadOnly));
    const QByteArray bytes = pdf.readAll();
    QCOMPARE(int(bytes.count("/Type /Page") - bytes.count("/Type /Pages")), 8);  // one page object per step
    const QStringList pngs = QDir(dir.path()).entryList({"lesson-*.png"}, QDir::Files, QDir::Name);
    QCOMPARE(pngs.size(), 8);
    QVERIFY(pngs.first().startsWith("lesson-01-kv-cache"));
    for (const QString& f : pngs) {
      const QImage img(dir.filePath(f));
      QCOMPARE(img.size(), QSize(960, 540));
      // not a blank page: the figure and the text leave many non-white pixels
      int ink = 0;
      for (int y = 0; y < img.height(); y += 4)
        for (int x = 0; x < img.width(); x += 4) ink += img.pixelColor(x, y).lightness() < 200 ? 1 : 0;
      QVERIFY2(ink > 400, qPrintable(f));
    }
    QCOMPARE(QDir(dir.path()).entryList({"lesson-*.svg"}, QDir::Files).size(), 8);
    QVERIFY(QString::fromStdString(out.str()).contains("lesson: 8 steps"));
    // a second run does not overwrite the hand-out without --force
    std::ostringstream out2, err2;
    QCOMPARE(runExportLesson(args, out2, err2), 1);
    QVERIFY2(QString::fromStdString(err2.str()).contains("exists"), err2.str().c_str());
    std::vector<std::string> forced = args;
    forced.push_back("--force");
    std::ostringstream out3, err3;
    QCOMPARE(runExportLesson(forced, out3, err3), 0);
    std::ostringstream out4, err4;
    QCOMPARE(runExportLesson({"sample"}, out4, err4), 2);  // --out missing
  }

  void cliExportFigures() {
    QTemporaryDir dir;
    std::ostringstream out, err;
    const int rc = runExportFigures({"sample", "--out", dir.path().toStdString(), "--format", "png,svg", "--size", "640x400", "--key-bits", "4", "--mode", "mse"}, out,
                                    err);
    QVERIFY2(rc == 0, err.str().c_str());
    for (const char* id : {"attention", "fidelity", "memory", "distortion", "estimator", "how"}) {
      const QImage img(dir.filePath(QString(id) + ".png"));
      QCOMPARE(img.size(), QSize(640, 400));
      QVERIFY(QFileInfo(dir.filePath(QString(id) + ".svg")).size() > 1000);
      QVERIFY(QFileInfo(dir.filePath(QString(id) + ".csv")).size() > 50);
    }
    QVERIFY(QString::fromStdString(out.str()).contains("K4/V4 · MSE-only"));
    std::ostringstream out2, err2;
    QCOMPARE(runExportFigures({"sample"}, out2, err2), 2);  // --out missing
    std::ostringstream out3, err3;
    QCOMPARE(runExportFigures({dir.filePath("nope.safetensors").toStdString(), "--out", dir.path().toStdString()}, out3, err3), 2);
    QVERIFY(QString::fromStdString(err3.str()).contains("nope.safetensors"));
  }

  void experimentRoundTrip() {
    MainWindow w(quiet());
    QString err;
    QVERIFY(w.openNow(sample(), &err));
    w.setKeyBits(5);
    w.setKeyMode(tq::KeyMode::Mse);
    w.setLayer(2);
    QTRY_VERIFY_WITH_TIMEOUT(!w.busy(), 20000);
    QTemporaryDir dir;
    const QString path = dir.filePath("exp.json");
    QVERIFY(w.saveExperimentFile(path, &err));
    MainWindow w2(quiet());
    QVERIFY(w2.openNow(sample(), &err));
    QVERIFY(w2.loadExperimentFile(path, &err));
    QTRY_VERIFY_WITH_TIMEOUT(!w2.busy(), 20000);
    QCOMPARE(w2.experiment().toJson(), w.experiment().toJson());
    QCOMPARE(w2.captionText(), w.captionText());
  }

  void levelOfDetailOnLongSequences() {
    Experiment e = bigSynthetic();
    e.synth.layers = 1;
    e.synth.tokens = 8192;
    auto ctx = makeContext(openData(e, defaultOpener()));
    DetailRequest req;
    req.exp = e;
    req.parts = PartHeatmap;
    QElapsedTimer t;
    t.start();
    auto full = computeDetail(*ctx, req);
    QVERIFY(full->heat.rows <= 512 && full->heat.cols <= 512);
    QCOMPARE(full->heat.rowStride, 16);
    req.region = HeatRegion{1000, 1256, 900, 1156, 512};
    auto zoom = computeDetail(*ctx, req);
    QCOMPARE(zoom->heat.rowStride, 1);
    QCOMPARE(zoom->heat.rows, 256);
    QCOMPARE(zoom->heat.rowToken.front(), 1000);
    qInfo("8192-token heatmap: full + zoomed region in %lld ms", static_cast<long long>(t.elapsed()));
  }
};

QTEST_MAIN(TestWindow)
#include "tst_window.moc"
