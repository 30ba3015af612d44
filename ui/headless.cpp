// SPDX-License-Identifier: GPL-3.0-or-later
#include "headless.h"

#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QEventLoop>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QMessageBox>
#include <QPixmap>
#include <QTabWidget>
#include <QTimer>
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <ostream>

#include "main_window.h"

namespace tq::ui {

namespace {

bool haveDisplay() {
  return !qEnvironmentVariableIsEmpty("DISPLAY") || !qEnvironmentVariableIsEmpty("WAYLAND_DISPLAY") ||
         !qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM");
}

struct Options {
  QString file;        ///< data file ("" / "sample": the embedded sample; "synthetic")
  QString experiment;  ///< experiment JSON
  QString out;         ///< export folder
  QString screenshot;
  QString tab;                 ///< view shown in the screenshot
  int screenshotAfterMs = -1;  ///< >= 0: the sweep runs in the background, the shot is taken after this many ms
  bool bench = false, presentation = false, csv = true, help = false, version = false;
  bool lesson = false, force = false;  ///< --lesson: open on the Lesson tab; --force: export-lesson may overwrite
  int lessonStep = 1;                  ///< --lesson-step N: the step a --lesson screenshot shows
  QList<FigureFormat> formats{FigureFormat::Png, FigureFormat::Svg, FigureFormat::Pdf};
  QSize size{1500, 850};
  QSize window{1500, 900};
  int dpi = 120;
  Experiment exp;
};

QSize parseSize(const QString& s, bool* ok) {
  const auto parts = s.split('x');
  *ok = parts.size() == 2;
  if (!*ok) return {};
  bool a = false, b = false;
  QSize r(parts[0].toInt(&a), parts[1].toInt(&b));
  *ok = a && b && r.width() >= 16 && r.height() >= 16;
  return r;
}

/// Parses options shared by tqstudio and export-figures. Unknown --flags go to Experiment::applyFlag.
bool parseOptions(const QStringList& args, Options& o, QString* error) {
  for (int i = 0; i < args.size(); ++i) {
    const QString a = args[i];
    auto value = [&](QString* v) {
      const int eq = a.indexOf('=');
      if (eq > 0) {
        *v = a.mid(eq + 1);
        return true;
      }
      if (i + 1 >= args.size()) {
        *error = a + " needs a value";
        return false;
      }
      *v = args[++i];
      return true;
    };
    const QString key = a.startsWith("--") ? a.mid(2).section('=', 0, 0) : QString();
    QString v;
    if (a == "-h" || a == "--help")
      o.help = true;
    else if (a == "--version")
      o.version = true;
    else if (key == "bench-interaction")
      o.bench = true;
    else if (key == "presentation")
      o.presentation = true;
    else if (key == "no-csv")
      o.csv = false;
    else if (key == "lesson")
      o.lesson = true;
    else if (key == "force")
      o.force = true;
    else if (key == "lesson-step") {
      if (!value(&v)) return false;
      bool ok = false;
      o.lessonStep = v.toInt(&ok);
      if (!ok || o.lessonStep < 1 || o.lessonStep > static_cast<int>(tq::lessonStepIds().size())) {
        *error = QString("--lesson-step expects 1..%1").arg(tq::lessonStepIds().size());
        return false;
      }
    } else if (key == "screenshot") {
      if (!value(&o.screenshot)) return false;
    } else if (key == "screenshot-after-ms") {
      if (!value(&v)) return false;
      bool ok = false;
      o.screenshotAfterMs = v.toInt(&ok);
      if (!ok || o.screenshotAfterMs < 0 || o.screenshotAfterMs > 3600000) {
        *error = "--screenshot-after-ms expects 0..3600000";
        return false;
      }
    } else if (key == "tab") {
      if (!value(&o.tab)) return false;
    } else if (key == "out") {
      if (!value(&o.out)) return false;
    } else if (key == "experiment") {
      if (!value(&o.experiment)) return false;
    } else if (key == "format") {
      if (!value(&v)) return false;
      o.formats.clear();
      for (const QString& f : v.split(',', Qt::SkipEmptyParts)) {
        FigureFormat ff;
        if (!parseFigureFormat(f, &ff)) {
          *error = "unknown format '" + f + "' (png, svg, pdf)";
          return false;
        }
        o.formats << ff;
      }
      if (o.formats.isEmpty()) {
        *error = "--format needs at least one of png, svg, pdf";
        return false;
      }
    } else if (key == "size" || key == "window-size") {
      if (!value(&v)) return false;
      bool ok = false;
      const QSize s = parseSize(v, &ok);
      if (!ok) {
        *error = "--" + key + " expects WxH, e.g. 1500x850";
        return false;
      }
      // Bounded: a window beyond 8K or a figure beyond 16384 px per side is refused with the limit (a
      // 100000-px window made QPainter crash; a 20000x20000 figure needs 1.6 GB per image).
      const QSize lo = key == "size" ? QSize(16, 16) : QSize(320, 240), hi = key == "size" ? QSize(16384, 16384) : QSize(7680, 4320);
      if (s.width() < lo.width() || s.height() < lo.height() || s.width() > hi.width() || s.height() > hi.height()) {
        *error = QString("--%1 %2 is outside %3x%4 .. %5x%6").arg(key, v).arg(lo.width()).arg(lo.height()).arg(hi.width()).arg(hi.height());
        return false;
      }
      (key == "size" ? o.size : o.window) = s;
    } else if (key == "width" || key == "height" || key == "dpi") {
      if (!value(&v)) return false;
      bool ok = false;
      const int n = v.toInt(&ok);
      const int lo = key == "dpi" ? 24 : 16, hi = key == "dpi" ? 1200 : 16384;
      if (!ok || n < lo || n > hi) {
        *error = QString("--%1 expects a whole number in %2..%3, got '%4'").arg(key).arg(lo).arg(hi).arg(v);
        return false;
      }
      if (key == "width")
        o.size.setWidth(n);
      else if (key == "height")
        o.size.setHeight(n);
      else
        o.dpi = n;
    } else if (!key.isEmpty()) {
      if (!value(&v)) return false;
      if (!o.exp.applyFlag(key, v, error)) return false;
    } else if (a.startsWith('-')) {
      *error = "unknown option " + a;
      return false;
    } else if (o.file.isEmpty()) {
      o.file = a;
    } else {
      *error = "unexpected argument " + a;
      return false;
    }
  }
  return true;
}

/// Applies FILE / --experiment to o.exp (flags given on the command line win over the experiment file).
bool resolveData(Options& o, const QStringList& args, QString* error) {
  if (!o.experiment.isEmpty()) {
    Experiment e;
    if (!loadExperimentFile(o.experiment, e, error)) return false;
    // re-apply the command-line flags on top of the file
    Options again;
    again.exp = e;
    if (!parseOptions(args, again, error)) return false;
    o.exp = again.exp;
  }
  tq::SampleId sid = tq::SampleId::Default;
  if (o.file.isEmpty() || tq::parseSampleArgument(o.file.toStdString(), &sid)) {
    if (o.experiment.isEmpty() || !o.file.isEmpty()) {
      o.exp.dataKind = DataKind::Sample;
      o.exp.sample = sid;
    }
  } else if (o.file == "synthetic") {
    o.exp.dataKind = DataKind::Synthetic;
    o.exp.querySource = o.exp.querySource == tq::QuerySource::Dump ? tq::QuerySource::Dump : o.exp.querySource;
  } else if (o.file.endsWith(".json", Qt::CaseInsensitive)) {
    o.experiment = o.file;
    o.file.clear();
    return resolveData(o, args, error);
  } else {
    o.exp.dataKind = DataKind::File;
    o.exp.dataPath = QFileInfo(o.file).absoluteFilePath();
  }
  return true;
}

std::unique_ptr<QApplication> ensureApp(bool forceOffscreen) {
  if (QApplication::instance()) return nullptr;
  if (forceOffscreen && qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  static int argc = 1;
  static char name[] = "tqstudio";
  static char* argv[] = {name, nullptr};
  auto app = std::make_unique<QApplication>(argc, argv);
  QApplication::setOrganizationName("TurboQuantStudio");
  QApplication::setApplicationName("tqstudio");
  return app;
}

/// Releases the calling thread's backends when it goes out of scope (compute.h releaseThreadBackends).
struct BackendsReleased {
  ~BackendsReleased() { releaseThreadBackends(); }
};

int exportFigures(const Options& o, std::ostream& out, std::ostream& err) {
  MainWindowOptions mo;
  mo.useSettings = false;
  mo.dialogs = false;
  mo.fullScreen = false;
  MainWindow w(mo);
  w.resize(o.window);
  if (o.presentation) w.setPresentation(true);
  QString e;
  if (!w.openNow(o.exp, &e)) {
    err << "tqstudio: " << e.toStdString() << "\n";
    return 2;
  }
  const QString dir = o.out.isEmpty() ? QString("tqstudio-figures") : o.out;
  const auto written = exportAll(w.views(), dir, o.formats, o.size, o.dpi, o.csv, &e);
  for (const auto& p : written) out << "wrote " << p.toStdString() << "\n";
  if (!e.isEmpty()) {
    err << "tqstudio: " << e.toStdString() << "\n";
    return 1;
  }
  out << "caption: " << w.captionText().toStdString() << "\n";
  return 0;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

QJsonObject stats(const std::vector<double>& v) {
  QJsonObject o;
  o["n"] = static_cast<int>(v.size());
  o["median"] = percentile(v, 0.5);
  o["p95"] = percentile(v, 0.95);
  o["max"] = v.empty() ? 0 : *std::max_element(v.begin(), v.end());
  return o;
}

/// TQ_PROFILE_EVENTS=MS: every event the GUI thread takes MS ms or longer to handle is logged (type,
/// receiver class and name; nested deliveries too): where a GUI-thread stall goes.
class ProfilingApplication : public QApplication {
 public:
  using QApplication::QApplication;
  bool notify(QObject* receiver, QEvent* ev) override {
    static const double threshold = qEnvironmentVariableIsSet("TQ_PROFILE_EVENTS") ? qEnvironmentVariable("TQ_PROFILE_EVENTS").toDouble() : -1;
    if (threshold < 0) return QApplication::notify(receiver, ev);
    QElapsedTimer t;
    t.start();
    const int type = ev->type();  // ev may be deleted by the time we log
    const QString cls = receiver->metaObject()->className(), name = receiver->objectName();
    const bool r = QApplication::notify(receiver, ev);
    const double ms = t.nsecsElapsed() / 1e6;
    if (ms >= threshold || (type == QEvent::LayoutRequest && qEnvironmentVariableIsSet("TQ_PROFILE_LAYOUT")))
      qInfo("event %d to %s '%s': %.1f ms", type, qPrintable(cls), qPrintable(name), ms);
    return r;
  }
};

/// Sleeps in the event loop (2 ms ticks) until pred() holds; false after ms.
bool waitUntil(const std::function<bool()>& pred, qint64 ms) {
  QElapsedTimer t;
  t.start();
  while (!pred()) {
    if (t.elapsed() > ms) return false;
    QEventLoop loop;
    QTimer::singleShot(2, &loop, &QEventLoop::quit);
    loop.exec();
  }
  return true;
}

/// The interaction benchmark (issue 9): open -> every view current, first and complete fidelity curves,
/// bits changes (visible view and all six) while the sweep runs and after it, the GUI thread's longest
/// stall, and Cancel -> stopped. Everything through the real path (debounce, workers, apply, replot).
int benchInteraction(Options& o, std::ostream& out, std::ostream& err) {
  MainWindowOptions mo;
  mo.useSettings = false;
  mo.dialogs = false;
  MainWindow w(mo);
  w.resize(o.window);
  w.show();
  QApplication::processEvents();
  // a 5 ms heartbeat on the GUI thread: its longest lateness is the longest stall
  double maxLag = 0, maxLagAtMs = 0;
  int stallsOver50 = 0;
  const char* phase = "open";  // where the benchmark is: the longest stall is reported with it
  const char* maxLagPhase = phase;
  QElapsedTimer beat, runClock;
  QTimer hb;
  hb.setInterval(5);
  QObject::connect(&hb, &QTimer::timeout, [&] {
    const double lag = beat.nsecsElapsed() / 1e6 - 5.0;
    if (lag > 50.0) ++stallsOver50;
    if (lag > maxLag) maxLag = lag, maxLagAtMs = runClock.nsecsElapsed() / 1e6, maxLagPhase = phase;
    beat.restart();
  });
  int details = 0, sweeps = 0;
  QObject::connect(&w, &MainWindow::detailApplied, [&] { ++details; });
  QObject::connect(&w, &MainWindow::sweepApplied, [&] { ++sweeps; });
  QString lastError;
  QObject::connect(&w, &MainWindow::errorOccurred, [&](const QString& m) { lastError = m; });
  const qint64 limitMs =
      static_cast<qint64>(qEnvironmentVariableIntValue("TQ_BENCH_TIMEOUT_S") > 0 ? qEnvironmentVariableIntValue("TQ_BENCH_TIMEOUT_S") : 900) * 1000;
  auto fail = [&](const std::string& what) {
    err << "tqstudio: --bench-interaction: " << what << (lastError.isEmpty() ? "" : ": " + lastError.toStdString()) << "\n";
    return 1;
  };
  auto allCurrent = [&] {
    for (auto* v : w.views())
      if (v->outdated() || v->dataPoints() == 0) return false;
    return w.data() != nullptr;
  };
  auto sweepDone = [&] { return w.sweepOutput() && !w.sweepOutput()->result.partial() && !w.sweepRunner()->busy(); };

  QElapsedTimer clock;
  clock.start();
  runClock.start();
  beat.start();
  hb.start();
  w.applyExperiment(o.exp);
  double firstCurvesMs = -1, openMs = -1;
  size_t cellsAtFirst = 0, cellsTotal = 0;
  if (!waitUntil(
          [&] {
            if (firstCurvesMs < 0 && w.sweepOutput() && !w.sweepOutput()->result.rows.empty()) {
              firstCurvesMs = clock.nsecsElapsed() / 1e6;
              cellsAtFirst = std::max(w.sweepOutput()->result.cellsDone, w.sweepOutput()->result.firstPassCells);
              cellsTotal = w.sweepOutput()->result.cellsTotal;
            }
            if (openMs < 0 && allCurrent()) openMs = clock.nsecsElapsed() / 1e6;
            return openMs >= 0;
          },
          limitMs))
    return fail("the views did not all show the new data");

  // bits changes while the sweep runs: the attention view is visible
  std::vector<double> parts[4];
  std::vector<double> visCached, visFresh;  // bits changes after the sweep whose keys came from the cache / were compressed  // heatmap compute, apply, replot, submission to delivery of the changes after the sweep
  auto bitsChanges = [&](int n, std::vector<double>& visible, std::vector<double>& all, const std::function<bool()>& stop) {
    for (int i = 0; i < n && !(stop && stop()); ++i) {
      const int b = 1 + (w.experiment().keyBits % 8);  // 1..8, always a change
      const int before = details;
      QElapsedTimer t;
      t.start();
      w.setKeyBits(b);
      if (!waitUntil([&] { return details > before && !w.attentionView()->outdated(); }, 30000)) return false;
      visible.push_back(t.nsecsElapsed() / 1e6);
      const auto ht = w.lastHeatTiming();
      (ht.keysFromCache ? visCached : visFresh).push_back(visible.back());
      parts[0].push_back(ht.compute), parts[1].push_back(ht.apply), parts[2].push_back(ht.replot), parts[3].push_back(ht.submitted);
      for (auto* v : w.views()) v->replotNow();
      all.push_back(t.nsecsElapsed() / 1e6);
      // the forced replot of the five hidden views is the benchmark's, not the app's (which replots a
      // view when it is shown): it does not count as a stall
      beat.restart();
    }
    return true;
  };
  std::vector<double> visBusy, allBusy;
  phase = "bits changes while the sweep runs";
  if (!sweepDone() && !bitsChanges(12, visBusy, allBusy, sweepDone)) return fail("no update within 30 s while the sweep runs");
  phase = "the sweep running";
  if (!waitUntil(sweepDone, limitMs)) return fail("the sweep did not complete");
  phase = "bits changes after the sweep";
  const double sweepMs = clock.nsecsElapsed() / 1e6;
  const auto done = w.sweepOutput()->result;
  if (firstCurvesMs < 0) {
    firstCurvesMs = sweepMs;
    cellsAtFirst = cellsTotal = done.cellsTotal;
  }
  std::vector<double> vis, all;
  for (auto& p : parts) p.clear();
  visCached.clear(), visFresh.clear();
  if (!bitsChanges(24, vis, all, {})) return fail("no update within 30 s");

  // Cancel: a new sweep (value bits change), cancelled after one second, or after a third of the first
  // sweep's time when that was shorter (a sweep of ~1 s had ended before its Cancel: nothing was measured)
  double cancelMs = -1;
  phase = "a new sweep and its Cancel";
  const qint64 cancelAfter = std::max<qint64>(50, std::min<qint64>(1000, static_cast<qint64>(done.seconds * 1000 / 3)));
  w.setValueBits(1 + (w.experiment().valueBits % 8));
  waitUntil([&] { return w.sweepRunner()->busy(); }, 5000);
  waitUntil([] { return false; }, cancelAfter);
  if (w.sweepRunner()->busy()) {
    QElapsedTimer t;
    t.start();
    w.cancelWork();
    if (waitUntil([&] { return !w.sweepRunner()->busy(); }, 60000)) cancelMs = t.nsecsElapsed() / 1e6;
  }
  // A second full sweep (a value-bits change) on the same data: what a change that needs a new sweep costs
  // once the first has run (a device keeps the cells' inputs and exact references resident). Skipped when
  // the first sweep took 20 s or more (the CPU on a large set: minutes more for the same figure).
  double resweepMs = -1;
  if (done.seconds < 20) {
    phase = "a second sweep";
    QElapsedTimer t;
    t.start();
    w.setValueBits(1 + (w.experiment().valueBits % 8));
    waitUntil([&] { return w.sweepRunner()->busy(); }, 5000);
    if (waitUntil(sweepDone, limitMs)) resweepMs = t.nsecsElapsed() / 1e6;
  }
  hb.stop();

  QJsonObject j;
  j["benchmark"] = "interaction (issue 9)";
  j["data"] = QString::fromStdString(w.data()->name) + QString(" (%1 layers x %2 q / %3 kv heads x %4 tokens x d=%5)")
                                                           .arg(w.data()->shape.layers)
                                                           .arg(w.data()->shape.qHeads)
                                                           .arg(w.data()->shape.kvHeads)
                                                           .arg(w.data()->shape.seq)
                                                           .arg(w.data()->shape.headDim);
  j["backend"] = w.backendText();
  j["sweep_backend"] = QString::fromStdString(done.backend + " · " + done.device);
  j["window"] = QString("%1x%2").arg(o.window.width()).arg(o.window.height());
  j["open_to_all_views_ms"] = openMs;
  j["first_fidelity_curves_ms"] = firstCurvesMs;
  j["cells_at_first_curves"] = static_cast<qint64>(cellsAtFirst);  // cells with the current series (first pass)
  j["cells_total"] = static_cast<qint64>(cellsTotal);
  j["sweep_complete_ms"] = sweepMs;
  j["sweep_rows"] = static_cast<qint64>(done.rows.size());
  j["sweep_seconds_in_engine"] = done.seconds;
  j["visible_view_updated_ms"] = stats(vis);
  j["all_six_views_replotted_ms"] = stats(all);
  QJsonObject why;
  why["heatmap_compute_ms"] = stats(parts[0]);
  why["apply_ms"] = stats(parts[1]);
  why["replot_ms"] = stats(parts[2]);
  why["submitted_to_delivered_ms"] = stats(parts[3]);
  why["note"] =
      "after the sweep: the detail job until its heatmap was ready (worker), handing it to the view (GUI thread), rendering the attention view (GUI "
      "thread); submitted_to_delivered: from the job's submission until its heatmap reached the GUI thread (the compute plus any wait for the "
      "previous job and for the GUI thread)";
  j["visible_view_breakdown"] = why;
  // the 24 changes cycle through 1..8 bits three times: the second and third visits find the compressed keys
  // kept by the detail views' cache (core/explore/detail.cpp); the first ones compress
  QJsonObject byCache;
  byCache["keys_compressed"] = stats(visFresh);
  byCache["keys_from_cache"] = stats(visCached);
  j["visible_view_updated_by_key_cache_ms"] = byCache;
  QJsonObject busy;
  busy["visible_view_updated_ms"] = stats(visBusy);
  busy["all_six_views_replotted_ms"] = stats(allBusy);
  j["while_sweep_runs"] = busy;
  j["gui_thread_max_stall_ms"] = maxLag;
  j["gui_thread_stall_note"] = "5 ms heartbeat over the whole run, except the benchmark's own forced replots of the hidden views";
  j["gui_thread_max_stall_at_ms"] = maxLagAtMs;
  j["gui_thread_max_stall_during"] = maxLagPhase;
  j["gui_thread_stalls_over_50ms"] = stallsOver50;
  j["cancel_to_stopped_ms"] = cancelMs;
  j["cancel_after_ms"] = static_cast<qint64>(cancelAfter);
  j["second_sweep_complete_ms"] = resweepMs;  // -1: not measured (the first sweep took 20 s or more)
  QJsonObject nice;  // the worker threads' nice values (TQ_WORKER_NICE=0: unchanged)
  nice["detail"] = w.detailRunner()->niceApplied();
  nice["sweep"] = w.sweepRunner()->niceApplied();
  j["worker_nice"] = nice;
  out << QJsonDocument(j).toJson(QJsonDocument::Indented).toStdString() << std::flush;
  if (qEnvironmentVariableIsSet("TQ_TRACE_EXIT")) std::fprintf(stderr, "bench: result written; closing the window\n");
  return 0;
}

const char* kGuiUsage =
    "Usage: tqstudio [FILE|EXPERIMENT.json] [options] [configuration flags]\n"
    "  Opens FILE (safetensors / npz / npy KV dump) or the embedded real sample, with a first experiment\n"
    "  already computed. Without a display it exports the figures of the sample to ./tqstudio-figures.\n"
    "Options:\n"
    "  --screenshot OUT.png [--tab attention|fidelity|layers|memory|distortion|estimator|how|lesson] [--window-size WxH]\n"
    "                       [--screenshot-after-ms N]  (N >= 0: the sweep runs in the background; the shot after N ms)\n"
    "                       render the main window after the first experiment and exit\n"
    "  --lesson [--lesson-step N]  open on the Lesson (View > Lesson): TurboQuant in eight steps on this data\n"
    "  --bench-interaction  measure bits change -> plots updated, print JSON\n"
    "  --out DIR --format png,svg,pdf --size WxH --dpi N --no-csv   (headless export)\n"
    "  --experiment EXP.json   --presentation\n"
    "Configuration flags:\n";

}  // namespace

std::string exportFiguresUsage() {
  return std::string(
             "Usage: tqstudio-cli export-figures FILE --out DIR [--format png,svg,pdf] [--size WxH] [--dpi N] [--no-csv]\n"
             "       [--experiment EXP.json] [configuration flags]\n"
             "  FILE: a KV dump, 'sample' (the embedded Qwen2.5-Coder-1.5B slice, head_dim 128), 'sample:tiny' (stories260K,\n"
             "  head_dim 8) or 'synthetic'. Writes one file per view and format,\n"
             "  plus the plotted data as CSV (attention, fidelity, memory, distortion, estimator, how).\n") +
         Experiment::flagHelp().toStdString();
}

int runExportFigures(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const BackendsReleased released;  // this thread's backends go before the process exits
  QStringList qa;
  for (const auto& a : args) qa << QString::fromStdString(a);
  Options o;
  QString e;
  if (!parseOptions(qa, o, &e)) {
    err << "export-figures: " << e.toStdString() << " (tqstudio-cli export-figures --help lists the options)\n";
    return 2;
  }
  if (o.help) {
    out << exportFiguresUsage();
    return 0;
  }
  if (o.file.isEmpty() && o.experiment.isEmpty()) {
    err << "export-figures: FILE is required ('sample' for the embedded sample; --help lists the options)\n";
    return 2;
  }
  if (o.out.isEmpty()) {
    err << "export-figures: --out DIR is required (--help lists the options)\n";
    return 2;
  }
  if (!resolveData(o, qa, &e)) {
    err << "export-figures: " << e.toStdString() << "\n";
    return 2;
  }
  auto app = ensureApp(true);
  return exportFigures(o, out, err);
}

std::string exportLessonUsage() {
  return std::string(
             "Usage: tqstudio-cli export-lesson FILE|sample --out DIR [--format pdf,png,svg] [--size WxH] [--dpi N] [--force]\n"
             "       [--experiment EXP.json] [configuration flags: --layer L --head H --key-bits B --queries ...]\n"
             "  The lesson (TurboQuant in eight steps, each a figure and sentences computed on the selected head) as a\n"
             "  hand-out: lesson.pdf with one page per step, and lesson-NN-<step>.png / .svg per step. Default formats:\n"
             "  pdf,png; default page 1600x900 at 120 dpi. Existing files are not overwritten without --force.\n") +
         Experiment::flagHelp().toStdString();
}

int runExportLesson(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const BackendsReleased released;  // this thread's backends go before the process exits
  QStringList qa;
  for (const auto& a : args) qa << QString::fromStdString(a);
  Options o;
  o.formats = {FigureFormat::Pdf, FigureFormat::Png};
  o.size = QSize(1600, 900);
  QString e;
  if (!parseOptions(qa, o, &e)) {
    err << "export-lesson: " << e.toStdString() << " (tqstudio-cli export-lesson --help lists the options)\n";
    return 2;
  }
  if (o.help) {
    out << exportLessonUsage();
    return 0;
  }
  if (o.file.isEmpty() && o.experiment.isEmpty()) {
    err << "export-lesson: FILE is required ('sample' for the embedded sample; --help lists the options)\n";
    return 2;
  }
  if (o.out.isEmpty()) {
    err << "export-lesson: --out DIR is required (--help lists the options)\n";
    return 2;
  }
  if (!resolveData(o, qa, &e)) {
    err << "export-lesson: " << e.toStdString() << "\n";
    return 2;
  }
  auto app = ensureApp(true);
  std::shared_ptr<const DataContext> ctx;
  std::shared_ptr<LessonResult> r;
  try {
    ctx = makeContext(openData(o.exp, defaultOpener()));
    Experiment x = o.exp;
    x.layer = std::clamp(x.layer, 0, std::max(0, ctx->shape.layers - 1));
    x.qHead = std::clamp(x.qHead, 0, std::max(0, ctx->shape.qHeads - 1));
    if (!ctx->shape.hasQueries && x.querySource == tq::QuerySource::Dump) x.querySource = tq::QuerySource::LastKey;
    r = computeLessonResult(*ctx, x);
  } catch (const std::exception& ex) {
    err << "export-lesson: " << ex.what() << "\n";
    return 2;
  }
  const QString caption = r->exp.caption(QString::fromStdString(ctx->model), ctx->shape.seq, ctx->shape.headDim,
                                         QString::fromStdString(tq::querySourceLabel(r->exp.querySource)), QString::fromStdString(r->lesson.backend));
  QStringList written;
  if (!saveLesson(r->lesson, caption, o.out, o.formats, o.size, o.dpi, o.force, &written, &e)) {
    for (const auto& p : written) out << "wrote " << p.toStdString() << "\n";
    err << "export-lesson: " << e.toStdString() << "\n";
    return 1;
  }
  for (const auto& p : written) out << "wrote " << p.toStdString() << "\n";
  out << "lesson: " << r->lesson.steps.size() << " steps on L" << r->exp.layer << " H" << r->exp.qHead << " · " << caption.toStdString() << "\n";
  return 0;
}

bool startupExperiment(const Experiment& restored, const QStringList& args, Experiment* out, QString* error) {
  Options o;
  o.exp = restored;
  if (!parseOptions(args, o, error) || !resolveData(o, args, error)) return false;
  *out = o.exp;
  return true;
}

int runGui(int argc, char** argv) {
  const BackendsReleased released;  // this thread's backends go before the process exits
  QStringList qa;
  for (int i = 1; i < argc; ++i) qa << QString::fromLocal8Bit(argv[i]);
  Options o;
  QString e;
  if (!parseOptions(qa, o, &e)) {
    std::cerr << "tqstudio: " << e.toStdString() << " (tqstudio --help lists the options)\n";
    return 2;
  }
  if (o.help) {
    std::cout << kGuiUsage << Experiment::flagHelp().toStdString();
    return 0;
  }
  if (o.version) {
    std::cout << "tqstudio " TQ_VERSION "\n";
    return 0;
  }
  if (!resolveData(o, qa, &e)) {
    std::cerr << "tqstudio: " << e.toStdString() << "\n";
    return 2;
  }
  const bool headless = !haveDisplay();
  if (headless || !o.screenshot.isEmpty() || o.bench)
    qputenv("QT_QPA_PLATFORM", qgetenv("QT_QPA_PLATFORM").isEmpty() ? "offscreen" : qgetenv("QT_QPA_PLATFORM"));
  ProfilingApplication app(argc, argv);
  QApplication::setOrganizationName("TurboQuantStudio");
  QApplication::setApplicationName("tqstudio");
  if (headless && o.screenshot.isEmpty() && !o.bench) {
    std::cout << "tqstudio: no display (DISPLAY/WAYLAND_DISPLAY/QT_QPA_PLATFORM unset): exporting the figures headless instead\n";
    const int rc = exportFigures(o, std::cout, std::cerr);
    if (rc == 0) std::cout << "open the PNG/SVG/PDF files above, or run tqstudio on a desktop for the interactive explorer\n";
    return rc;
  }
  if (o.bench) {
    const int rc = benchInteraction(o, std::cout, std::cerr);
    if (qEnvironmentVariableIsSet("TQ_TRACE_EXIT")) std::fprintf(stderr, "bench: window closed\n");
    return rc;
  }
  if (!o.screenshot.isEmpty()) {
    MainWindowOptions mo;
    mo.useSettings = false;
    mo.dialogs = false;
    mo.fullScreen = false;  // the picture has the size asked for
    MainWindow w(mo);
    w.resize(o.window);
    if (o.presentation) w.setPresentation(true);
    // --screenshot-after-ms N: the views as a user sees them N ms into the sweep (partial curves)
    if (!w.openNow(o.exp, &e, o.screenshotAfterMs < 0)) {
      std::cerr << "tqstudio: " << e.toStdString() << "\n";
      return 2;
    }
    if (o.lesson || o.tab == "lesson") {
      if (!w.computeLessonNow(&e)) {
        std::cerr << "tqstudio: the lesson: " << e.toStdString() << "\n";
        return 2;
      }
      w.findChild<QTabWidget*>()->setCurrentWidget(w.lessonView());
      w.lessonView()->setStep(o.lessonStep - 1);
    } else if (!o.tab.isEmpty()) {
      auto* v = w.view(o.tab);
      if (!v) {
        std::cerr << "tqstudio: unknown view '" << o.tab.toStdString() << "'\n";
        return 2;
      }
      w.findChild<QTabWidget*>()->setCurrentWidget(v);
    }
    w.show();
    if (o.screenshotAfterMs >= 0) waitUntil([] { return false; }, o.screenshotAfterMs);
    for (int i = 0; i < 5; ++i) QApplication::processEvents();
    for (auto* v : w.views()) v->replotNow();
    QApplication::processEvents();
    const QPixmap pm = w.grab();
    if (!pm.save(o.screenshot)) {
      std::cerr << "tqstudio: cannot write " << o.screenshot.toStdString() << "\n";
      return 1;
    }
    std::cout << "wrote " << o.screenshot.toStdString() << " (" << pm.width() << "x" << pm.height() << ")\n";
    return 0;
  }
  MainWindow w;
  w.resize(std::max(w.width(), 1200), std::max(w.height(), 760));
  if (o.presentation) w.setPresentation(true);
  // the controls of the last session (restored by the window), with this command line on top
  if (!startupExperiment(w.experiment(), qa, &o.exp, &e)) {
    std::cerr << "tqstudio: " << e.toStdString() << "\n";
    return 2;
  }
  if (!w.openNow(o.exp, &e, false)) {
    // The file could not be opened: say so, and start on the sample rather than an empty window.
    const QString msg = e;
    Experiment s = o.exp;
    s.dataKind = DataKind::Sample;
    QString e2;
    w.openNow(s, &e2, false);
    w.show();
    QMessageBox::critical(&w, "Cannot open the data", msg + "\n\nShowing the embedded sample instead.");
  } else {
    w.show();
  }
  if (o.lesson) w.showLesson();
  return app.exec();
}

}  // namespace tq::ui
