// SPDX-License-Identifier: GPL-3.0-or-later
#include "main_window.h"

#include "guide_text.h"

#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QCloseEvent>
#include <QComboBox>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QJsonDocument>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSettings>
#include <QSpinBox>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTextBrowser>
#include <QPointer>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>
#include <algorithm>
#include <cstdio>

#include "data/compressed_io.h"

namespace tq::ui {

namespace {

struct LoadOutput : JobOutput {
  std::shared_ptr<const DataContext> ctx;
  Experiment exp;
  QString path;
};

struct ExportSettings {
  QList<FigureFormat> formats{FigureFormat::Png};
  QSize size{1500, 850};
  int dpi = 120;
  bool csv = true;
};

/// The export dialog's last choices: in QSettings when the window uses settings, and in this process.
ExportSettings& processExportSettings() {
  static ExportSettings s;
  return s;
}
ExportSettings lastExportSettings(bool useSettings) {
  if (!useSettings) return processExportSettings();
  QSettings st;
  ExportSettings s;
  const QStringList f = st.value("export/formats", QStringList{"png"}).toStringList();
  s.formats.clear();
  if (f.contains("png")) s.formats << FigureFormat::Png;
  if (f.contains("svg")) s.formats << FigureFormat::Svg;
  if (f.contains("pdf")) s.formats << FigureFormat::Pdf;
  if (s.formats.isEmpty()) s.formats << FigureFormat::Png;
  s.size = QSize(std::clamp(st.value("export/width", 1500).toInt(), 200, 12000), std::clamp(st.value("export/height", 850).toInt(), 150, 12000));
  s.dpi = std::clamp(st.value("export/dpi", 120).toInt(), 48, 1200);
  s.csv = st.value("export/csv", true).toBool();
  return s;
}
void rememberExportSettings(bool useSettings, const ExportSettings& s) {
  processExportSettings() = s;
  if (!useSettings) return;
  QSettings st;
  QStringList f;
  for (auto x : s.formats) f << (x == FigureFormat::Png ? "png" : x == FigureFormat::Svg ? "svg" : "pdf");
  st.setValue("export/formats", f);
  st.setValue("export/width", s.size.width());
  st.setValue("export/height", s.size.height());
  st.setValue("export/dpi", s.dpi);
  st.setValue("export/csv", s.csv);
}

QString humanSeconds(double s) {
  return s < 1 ? QString("%1 ms").arg(s * 1000, 0, 'f', 0) : QString("%1 s").arg(s, 0, 'f', 2);
}

template <typename T>
void setComboData(QComboBox* c, T v) {
  const int i = c->findData(static_cast<int>(v));
  if (i >= 0) c->setCurrentIndex(i);
}

/// The export dialog: formats, size, DPI, CSV, and a file (one view) or a folder (all views).
bool askExport(QWidget* parent, bool all, const QString& defaultName, ExportSettings& s, QString& target) {
  QDialog dlg(parent);
  dlg.setWindowTitle(all ? "Export all views" : "Export view");
  auto* form = new QFormLayout(&dlg);
  auto* png = new QCheckBox("PNG");
  auto* svg = new QCheckBox("SVG");
  auto* pdf = new QCheckBox("PDF");
  png->setChecked(s.formats.contains(FigureFormat::Png));
  svg->setChecked(s.formats.contains(FigureFormat::Svg));
  pdf->setChecked(s.formats.contains(FigureFormat::Pdf));
  auto* fmtRow = new QHBoxLayout;
  fmtRow->addWidget(png);
  fmtRow->addWidget(svg);
  fmtRow->addWidget(pdf);
  form->addRow("Formats", fmtRow);
  auto* w = new QSpinBox;
  auto* h = new QSpinBox;
  auto* dpi = new QSpinBox;
  w->setRange(200, 12000);
  h->setRange(150, 12000);
  dpi->setRange(48, 1200);
  w->setValue(s.size.width());
  h->setValue(s.size.height());
  dpi->setValue(s.dpi);
  w->setSuffix(" px");
  h->setSuffix(" px");
  auto* sizeRow = new QHBoxLayout;
  sizeRow->addWidget(w);
  sizeRow->addWidget(new QLabel("×"));
  sizeRow->addWidget(h);
  form->addRow("Size", sizeRow);
  form->addRow("DPI", dpi);
  auto* csv = new QCheckBox("also write the plotted data as CSV");
  csv->setChecked(s.csv);
  form->addRow("", csv);
  auto* path = new QLineEdit(target.isEmpty() ? QDir::home().filePath(all ? "tqstudio-figures" : defaultName) : target);
  auto* browse = new QPushButton("Browse…");
  auto* pathRow = new QHBoxLayout;
  pathRow->addWidget(path);
  pathRow->addWidget(browse);
  form->addRow(all ? "Folder" : "File (no suffix)", pathRow);
  QObject::connect(browse, &QPushButton::clicked, &dlg, [&] {
    const QString p = all ? QFileDialog::getExistingDirectory(&dlg, "Export folder", path->text())
                          : QFileDialog::getSaveFileName(&dlg, "Export file", path->text());
    if (!p.isEmpty()) path->setText(QFileInfo(p).path() + "/" + (all ? QFileInfo(p).fileName() : QFileInfo(p).completeBaseName()));
  });
  auto* bb = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
  form->addRow(bb);
  QObject::connect(bb, &QDialogButtonBox::accepted, &dlg, &QDialog::accept);
  QObject::connect(bb, &QDialogButtonBox::rejected, &dlg, &QDialog::reject);
  if (dlg.exec() != QDialog::Accepted) return false;
  s.formats.clear();
  if (png->isChecked()) s.formats << FigureFormat::Png;
  if (svg->isChecked()) s.formats << FigureFormat::Svg;
  if (pdf->isChecked()) s.formats << FigureFormat::Pdf;
  s.size = QSize(w->value(), h->value());
  s.dpi = dpi->value();
  s.csv = csv->isChecked();
  target = path->text();
  return true;
}

/// The synthetic generator dialog.
bool askSynthetic(QWidget* parent, tq::SyntheticSpec& spec) {
  QDialog dlg(parent);
  dlg.setWindowTitle("Synthetic data");
  auto* form = new QFormLayout(&dlg);
  auto* kind = new QComboBox;
  const std::pair<const char*, tq::SyntheticKind> kinds[] = {{"Gaussian", tq::SyntheticKind::Gaussian},
                                                             {"uniform on the sphere", tq::SyntheticKind::Sphere},
                                                             {"outlier channels", tq::SyntheticKind::OutlierChannels},
                                                             {"low-rank + noise", tq::SyntheticKind::LowRank},
                                                             {"RoPE-like", tq::SyntheticKind::RopeLike}};
  for (const auto& k : kinds) kind->addItem(k.first, static_cast<int>(k.second));
  setComboData(kind, spec.kind);
  auto spin = [](int lo, int hi, int v) {
    auto* s = new QSpinBox;
    s->setRange(lo, hi);
    s->setValue(v);
    return s;
  };
  auto dspin = [](double lo, double hi, double v) {
    auto* s = new QDoubleSpinBox;
    s->setRange(lo, hi);
    s->setDecimals(2);
    s->setValue(v);
    return s;
  };
  auto* layers = spin(1, 256, spec.layers);
  auto* qh = spin(1, 256, spec.qHeads);
  auto* kvh = spin(1, 256, spec.kvHeads);
  auto* tokens = spin(2, 1 << 20, spec.tokens);
  auto* dim = spin(2, 1024, spec.headDim);
  auto* seed = spin(0, 2147483647, static_cast<int>(spec.seed));
  auto* oc = spin(0, 1024, spec.outlierChannels);
  auto* os = dspin(0, 1000, spec.outlierStrength);
  auto* rank = spin(1, 1024, spec.rank);
  auto* noise = dspin(0, 100, spec.noise);
  auto* needle = new QCheckBox("plant a needle key every query attends to");
  needle->setChecked(spec.needle);
  auto* npos = spin(-1, 1 << 20, spec.needlePosition);
  npos->setSpecialValueText("middle");
  auto* nstr = dspin(0, 100, spec.needleStrength);
  form->addRow("Distribution", kind);
  form->addRow("Layers", layers);
  form->addRow("Query heads", qh);
  form->addRow("KV heads", kvh);
  form->addRow("Tokens", tokens);
  form->addRow("head_dim", dim);
  form->addRow("Seed", seed);
  form->addRow("Outlier channels", oc);
  form->addRow("Outlier strength", os);
  form->addRow("Rank (low-rank)", rank);
  form->addRow("Noise", noise);
  form->addRow("", needle);
  form->addRow("Needle position", npos);
  form->addRow("Needle strength", nstr);
  auto* err = new QLabel;
  err->setStyleSheet("color: #b00");
  form->addRow(err);
  auto* bb = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
  form->addRow(bb);
  tq::SyntheticSpec out = spec;
  QObject::connect(bb, &QDialogButtonBox::accepted, &dlg, [&] {
    out.kind = static_cast<tq::SyntheticKind>(kind->currentData().toInt());
    out.layers = layers->value();
    out.qHeads = qh->value();
    out.kvHeads = kvh->value();
    out.tokens = tokens->value();
    out.headDim = dim->value();
    out.seed = static_cast<uint64_t>(seed->value());
    out.outlierChannels = oc->value();
    out.outlierStrength = static_cast<float>(os->value());
    out.rank = rank->value();
    out.noise = static_cast<float>(noise->value());
    out.needle = needle->isChecked();
    out.needlePosition = npos->value();
    out.needleStrength = static_cast<float>(nstr->value());
    try {
      out.validate();
      dlg.accept();
    } catch (const std::exception& ex) {
      err->setText(QString::fromStdString(ex.what()));
    }
  });
  QObject::connect(bb, &QDialogButtonBox::rejected, &dlg, &QDialog::reject);
  if (dlg.exec() != QDialog::Accepted) return false;
  spec = out;
  return true;
}

}  // namespace

QStringList exportAll(const QList<PlotView*>& views, const QString& dir, const QList<FigureFormat>& formats, QSize size, int dpi, bool csv,
                      QString* error) {
  QStringList written;
  if (!QDir().mkpath(dir)) {
    if (error) *error = "cannot create the folder " + dir;
    return written;
  }
  for (auto* v : views) {
    for (auto f : formats) {
      const QString path = QDir(dir).filePath(v->id() + "." + figureSuffix(f));
      if (!saveFigure(v, path, f, size, dpi, error)) return written;
      written << path;
    }
    if (csv) {
      const QString path = QDir(dir).filePath(v->id() + ".csv");
      if (!saveCsv(v, path, error)) return written;
      written << path;
    }
  }
  return written;
}

// ======================================================================== MainWindow
MainWindow::MainWindow(MainWindowOptions options, QWidget* parent) : QMainWindow(parent), m_opt(std::move(options)) {
  setWindowTitle("TurboQuant Studio");
  setAcceptDrops(true);
  // CPU shares: the GUI thread first, then the detail views' job (what a click waits for), then the
  // lesson, then the sweep (minutes on a large set, on every core); loading keeps the GUI's share
  m_detailRunner = new JobRunner("tq-detail", this, 4);
  m_sweepRunner = new JobRunner("tq-sweep", this, 10);
  m_loadRunner = new JobRunner("tq-load", this);
  m_lessonRunner = new JobRunner("tq-lesson", this, 6);
  m_flushTimer = new QTimer(this);
  m_flushTimer->setSingleShot(true);
  // 0 ms: coalesces what one pass of the event loop changes (several setters, a burst of queued key
  // repeats) without adding latency to a single change; superseded runs are dropped anyway
  m_flushTimer->setInterval(0);
  connect(m_flushTimer, &QTimer::timeout, this, &MainWindow::flush);

  if (m_opt.useSettings) {
    QSettings st;
    const auto doc = QJsonDocument::fromJson(st.value("experiment").toByteArray());
    Experiment e;
    QString err;
    if (doc.isObject() && e.fromJson(doc.object(), &err)) {
      e.dataKind = DataKind::Sample;  // the data always comes from the command line or the sample
      e.dataPath.clear();
      m_exp = e;
    }
  }
  buildUi();
  buildMenus();
  syncControls();

  connect(m_detailRunner, &JobRunner::finished, this, [this](quint64, JobPtr out, double secs) {
    m_lastDetailSeconds = secs;
    if (auto r = std::dynamic_pointer_cast<const DetailResult>(out)) applyDetail(*r);
    updateStatus();
  });
  connect(m_detailRunner, &JobRunner::partial, this, [this](quint64, JobPtr out) {
    if (auto r = std::dynamic_pointer_cast<const DetailResult>(out)) applyDetail(*r);
  });
  connect(m_detailRunner, &JobRunner::failed, this, [this](quint64, const QString& m) {
    reportError("Computation failed", m, false);
    updateStatus();
  });
  connect(m_detailRunner, &JobRunner::cancelled, this, [this] {
    for (auto* v : m_views)
      if (v != m_fidelity && v != m_layers && v != m_memory && v->outdated()) v->setOutdated(true, "cancelled: out of date (F5 recomputes)");
    updateStatus();
  });
  connect(m_sweepRunner, &JobRunner::started, this, [this] {
    m_sweepClock.start();
    m_fidelity->setRunning("sweep running…");
    m_layers->setRunning("sweep running…");
    updateStatus();
  });
  connect(m_sweepRunner, &JobRunner::progress, this, [this](quint64, qulonglong done, qulonglong total) {
    m_progress->setMaximum(static_cast<int>(std::min<qulonglong>(total, 1u << 30)));
    m_progress->setValue(static_cast<int>(std::min<qulonglong>(done, 1u << 30)));
    m_progress->setFormat(QString("%1 / %2 cells").arg(done).arg(total));
    if (!m_sweep || m_sweep->result.cellsDone == 0) {
      m_fidelity->setRunning(QString("sweep running: %1 / %2 grid cells").arg(done).arg(total));
      m_layers->setRunning(QString("sweep running: %1 / %2 grid cells").arg(done).arg(total));
    }
  });
  connect(m_sweepRunner, &JobRunner::partial, this, [this](quint64, JobPtr out) {
    if (auto r = std::dynamic_pointer_cast<const SweepOutput>(out)) applySweep(r);
  });
  connect(m_sweepRunner, &JobRunner::finished, this, [this](quint64, JobPtr out, double secs) {
    m_lastSweepSeconds = secs;
    if (auto r = std::dynamic_pointer_cast<const SweepOutput>(out)) applySweep(r);
    updateStatus();
  });
  connect(m_sweepRunner, &JobRunner::failed, this, [this](quint64, const QString& m) {
    m_fidelity->setRunning("sweep failed: " + m);
    m_layers->setRunning("sweep failed: " + m);
    reportError("Sweep failed", m, false);
    updateStatus();
  });
  connect(m_sweepRunner, &JobRunner::cancelled, this, [this] {
    m_fidelity->setRunning("sweep cancelled — press F5 to run it again");
    m_layers->setRunning("sweep cancelled — press F5 to run it again");
    if (m_fidelity->outdated()) m_fidelity->setOutdated(true, "cancelled: out of date (F5 recomputes)");
    if (m_layers->outdated()) m_layers->setOutdated(true, "cancelled: out of date (F5 recomputes)");
    updateStatus();
    emit workCancelled();
  });
  connect(m_loadRunner, &JobRunner::finished, this, [this](quint64, JobPtr out, double secs) {
    if (qEnvironmentVariableIsSet("TQ_PROFILE")) qInfo("data opened in %.1f ms", secs * 1000);
    if (auto r = std::dynamic_pointer_cast<const LoadOutput>(out)) {
      setData(r->ctx, r->exp);
      if (!r->path.isEmpty()) addRecent(r->path);
    }
    updateStatus();
  });
  connect(m_loadRunner, &JobRunner::failed, this, [this](quint64, const QString& m) {
    reportError("Cannot open the data", m + "\n\nThe current data stays loaded.", true);
    updateStatus();
  });
  connect(m_loadRunner, &JobRunner::cancelled, this, [this] { updateStatus(); });
  connect(m_loadRunner, &JobRunner::progress, this, [this](quint64, qulonglong done, qulonglong total) {
    // the reader's scan of a large file (bytes): shown in the same progress bar, Cancel stops it
    m_progress->setVisible(true);
    m_progress->setMaximum(1000);
    m_progress->setValue(total ? static_cast<int>(1000.0 * static_cast<double>(done) / static_cast<double>(total)) : 0);
    m_progress->setFormat("opening %p %");
  });
  connect(m_attention, &PlotView::regionRequested, this, [this](int r0, int r1, int c0, int c1) {
    m_region.row0 = r0;
    m_region.row1 = r1;
    m_region.col0 = c0;
    m_region.col1 = c1;
    markDirty(PartHeatmap, false, false);
  });
  connect(m_attention, &PlotView::hoverText, this, [this](const QString& s) { statusBar()->showMessage(s, 4000); });
  for (auto* v : m_views)
    connect(v, &PlotView::exportRequested, this, [this, v] {
      m_tabs->setCurrentWidget(v);
      exportCurrentView();
    });
  connect(m_tabs, &QTabWidget::currentChanged, this, [this] {
    if (auto* v = qobject_cast<PlotView*>(m_tabs->currentWidget())) v->replotNow();
    if (lessonActive() && m_lessonDirty) submitLesson();
  });
  connect(m_lessonRunner, &JobRunner::finished, this, [this](quint64, JobPtr out, double) {
    if (auto r = std::dynamic_pointer_cast<const LessonResult>(out)) {
      m_lesson->setLesson(r, captionFor(r->exp));
      clearError();  // a success clears an old error
      updateStatus();
      statusBar()->showMessage(
          QString("lesson computed for L%1 H%2 on %3").arg(r->exp.layer).arg(r->exp.qHead).arg(QString::fromStdString(r->lesson.backend)), 4000);
    }
  });
  connect(m_lessonRunner, &JobRunner::failed, this, [this](quint64, const QString& m) {
    m_lessonDirty = true;  // shown again, it tries again
    m_lesson->setOutdated("the lesson failed: " + m);
    reportError("The lesson could not be computed", m, false);
    updateStatus();
  });
  connect(m_lessonRunner, &JobRunner::cancelled, this, [this] {
    m_lessonDirty = true;
    m_lesson->setOutdated("cancelled: out of date (F5 recomputes)");
    updateStatus();
  });
  if (m_opt.useSettings) {
    QSettings st;
    restoreGeometry(st.value("geometry").toByteArray());
    setPresentation(st.value("presentation", false).toBool());
  }
  rebuildRecentMenu();
  updateStatus();
  if (size().width() < 600) resize(1500, 900);
}

MainWindow::~MainWindow() {
  saveSettings();
  // Nothing a child signals during the teardown (a tab removed, a runner's last report) may reach this
  // half-destroyed window: cut those connections first.
  for (QObject* c : findChildren<QObject*>()) disconnect(c, nullptr, this, nullptr);
  // Stop and join the workers before any member or view goes: a job still running (the detail of the
  // last change, say) then never outlives what it reports to.
  const bool profile = qEnvironmentVariableIsSet("TQ_TRACE_EXIT");  // teardown markers (a crash at exit)
  for (JobRunner** r : {&m_lessonRunner, &m_detailRunner, &m_sweepRunner, &m_loadRunner}) {
    (*r)->cancel();
    delete *r;
    *r = nullptr;
  }
  if (profile) std::fprintf(stderr, "main window: workers joined\n");
}

void MainWindow::buildUi() {
  auto* split = new QSplitter(this);
  auto* scroll = new QScrollArea;
  m_sidePanel = scroll;
  scroll->setWidgetResizable(true);
  scroll->setMinimumWidth(300);
  scroll->setMaximumWidth(380);
  scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  auto* panel = new QWidget;
  auto* col = new QVBoxLayout(panel);
  col->setContentsMargins(6, 6, 6, 6);
  scroll->setWidget(panel);

  auto spin = [this](int lo, int hi, const QString& tip) {
    auto* s = new QSpinBox;
    s->setRange(lo, hi);
    s->setToolTip(tip);
    s->setKeyboardTracking(false);
    connect(s, qOverload<int>(&QSpinBox::valueChanged), this, &MainWindow::onControl);
    return s;
  };
  auto combo = [this](std::initializer_list<std::pair<QString, int>> items, const QString& tip) {
    auto* c = new QComboBox;
    for (const auto& it : items) c->addItem(it.first, it.second);
    c->setToolTip(tip);
    c->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    c->setMinimumContentsLength(6);
    connect(c, qOverload<int>(&QComboBox::currentIndexChanged), this, &MainWindow::onControl);
    return c;
  };

  // DATA
  auto* gData = new QGroupBox("DATA");
  auto* dl = new QVBoxLayout(gData);
  m_dataName = new QLabel("—");
  m_dataName->setWordWrap(true);
  m_dataName->setStyleSheet("font-weight: bold");
  m_dataShape = new QLabel;
  m_dataShape->setWordWrap(true);
  auto* bOpen = new QPushButton("Open…");
  auto* bSample = new QPushButton("Sample");
  auto* bSynth = new QPushButton("Synthetic…");
  for (auto* b : {bOpen, bSample, bSynth}) b->setMinimumWidth(40);
  bOpen->setToolTip("Open a KV dump: safetensors, npz or npy (Ctrl+O, or drop a file on the window)");
  bSynth->setToolTip("Generate synthetic keys and values (Gaussian, sphere, outlier channels…) of any shape, seeded: data with known properties");
  bSample->setToolTip("The embedded samples: Qwen2.5-Coder-1.5B (head_dim 128, the default) or stories260K (head_dim 8, tiny)");
  connect(bOpen, &QPushButton::clicked, this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, "Open KV dump", QString(), "KV dumps (*.safetensors *.npz *.npy);;All files (*)");
    if (!p.isEmpty()) openFile(p);
  });
  {
    auto* menu = new QMenu(bSample);
    for (const tq::SampleInfo& si : tq::samples()) {
      const tq::SampleId id = si.id;
      menu->addAction(QString::fromUtf8(si.label), this, [this, id] { openSampleData(id); });
    }
    bSample->setMenu(menu);
  }
  connect(bSynth, &QPushButton::clicked, this, [this] {
    tq::SyntheticSpec s = m_exp.synth;
    if (askSynthetic(this, s)) openSynthetic(s);
  });
  auto* brow = new QHBoxLayout;
  brow->addWidget(bOpen);
  brow->addWidget(bSample);
  brow->addWidget(bSynth);
  dl->addWidget(m_dataName);
  dl->addWidget(m_dataShape);
  m_keyNote = new QLabel;
  m_keyNote->setWordWrap(true);
  m_keyNote->setStyleSheet("color: #a04000;");
  m_keyNote->setObjectName("keyNote");
  m_keyNote->hide();
  dl->addWidget(m_keyNote);
  dl->addLayout(brow);
  col->addWidget(gData);

  // QUANTIZER
  auto* gQ = new QGroupBox("QUANTIZER");
  auto* fq = new QFormLayout(gQ);
  m_keyBits = spin(1, 8, "Bits per key coordinate (+ / − keys)");
  m_keyBits->setObjectName("keyBits");
  m_valueBits = spin(1, 8, "Bits per value coordinate");
  m_keyMode = combo({{"MSE-only", int(tq::KeyMode::Mse)}, {"MSE+QJL", int(tq::KeyMode::Prod)}, {"QJL-only", int(tq::KeyMode::QjlOnly)}},
                    "MSE+QJL: b−1 MSE bits + a 1-bit QJL sketch of the residual (unbiased inner products)");
  m_proj = combo({{"d/4", int(ProjChoice::Quarter)},
                  {"d/2", int(ProjChoice::Half)},
                  {"d", int(ProjChoice::Full)},
                  {"2d", int(ProjChoice::Double)},
                  {"custom", int(ProjChoice::Custom)}},
                 "QJL projection rows m");
  m_customProj = spin(1, 16384, "custom m");
  auto* projRow = new QHBoxLayout;
  projRow->addWidget(m_proj);
  projRow->addWidget(m_customProj);
  m_rotation = combo({{"Haar", int(tq::RotationKind::Haar)}, {"Hadamard", int(tq::RotationKind::Hadamard)}}, "Random rotation");
  m_law = combo({{"exact (sphere)", int(tq::CodebookLaw::Exact)}, {"Gaussian", int(tq::CodebookLaw::Gaussian)}},
                "Law the Lloyd-Max codebook is solved for");
  m_seed = spin(0, 2147483647, "Seed of rotations and QJL matrices");
  m_centering = combo({{"none", int(tq::KeyCentering::None)},
                       {"causal (first W tokens)", int(tq::KeyCentering::Causal)},
                       {"oracle (whole dump)", int(tq::KeyCentering::Oracle)}},
                      "Subtract the per-head key mean mu before quantizing and add <q, mu> back (softmax is unchanged by the shift). "
                      "Causal: mu of the first W tokens (default 128; --center causal:W), kept exact. Oracle: the whole dump's mean, "
                      "which no real cache has. mu and the window are charged to the key bytes.");
  fq->addRow("Key bits", m_keyBits);
  fq->addRow("Value bits", m_valueBits);
  fq->addRow("Key mode", m_keyMode);
  fq->addRow("proj_dim m", projRow);
  m_qjlMatrix = combo({{"Gaussian", 0}, {"orthogonal rows", 1}},
                      "The QJL projection S: Gaussian (the paper) or its rows orthogonalised and scaled to norm √d, i.e. the √(π/(2d)) "
                      "scale on unit rows at m = d (--qjl-matrix)");
  fq->addRow("Rotation", m_rotation);
  fq->addRow("QJL matrix", m_qjlMatrix);
  fq->addRow("Codebook", m_law);
  fq->addRow("Seed", m_seed);
  fq->addRow("Key centring", m_centering);
  col->addWidget(gQ);

  // COMPARE: baselines on the same heads, and the fidelity view's x axis
  auto* gC = new QGroupBox("COMPARE");
  auto* fc = new QFormLayout(gC);
  m_methods = new QToolButton;
  m_methods->setObjectName("methods");
  m_methods->setPopupMode(QToolButton::InstantPopup);
  m_methods->setToolButtonStyle(Qt::ToolButtonTextOnly);
  m_methods->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);  // the names never widen the side panel
  m_methods->setMinimumWidth(60);
  m_methodsHelp = QString(
      "Baselines evaluated beside TurboQuant on the same heads and charged for every byte they store (--methods): "
      "TurboQuant-MSE with norm correction, TurboQuant-MSE with the d/2 largest channels at b+1 bits (the paper's 2.5 / 3.5 bits), KIVI (groups of "
      "32, the last 128 tokens in fp16), rotated int (H32 blocks, "
      "fp16 scale per block), fp8 e4m3 / e5m2 (per-head scale), fp16. Their values use the same method.");
  m_methods->setToolTip(m_methodsHelp);
  {
    auto* menu = new QMenu(m_methods);
    const std::pair<const char*, tq::Method> items[] = {{"TurboQuant-MSE, norm-corrected", tq::Method::TqMseNormCorrected},
                                                        {"TurboQuant-MSE, d/2 outlier channels at b+1 (b+½ bits)", tq::Method::TqMseOutliers},
                                                        {"the reference's 1+1 (1 MSE bit + d QJL signs)", tq::Method::TqRef11},
                                                        {"KIVI (G 32, R 128)", tq::Method::Kivi},
                                                        {"rotated int (H32, q4_0 rule)", tq::Method::IntRot},
                                                        {"fp8 e4m3", tq::Method::Fp8E4M3},
                                                        {"fp8 e5m2", tq::Method::Fp8E5M2},
                                                        {"fp16", tq::Method::Fp16}};
    for (const auto& [label, m] : items) {
      QAction* a = menu->addAction(label);
      a->setCheckable(true);
      a->setData(static_cast<int>(m));
      connect(a, &QAction::toggled, this, &MainWindow::onControl);
    }
    m_methods->setMenu(menu);
  }
  m_fidelityX = combo({{"key bits", int(FidelityAxis::KeyBits)},
                       {"bytes per token·head (K+V)", int(FidelityAxis::Bytes)},
                       {"ratio vs fp16", int(FidelityAxis::Ratio)}},
                      "The fidelity view's x axis. Bytes: keys + values per (token, kv head) from each method's ledger, the Pareto "
                      "frontier marked; ratio: fp16 bytes over those bytes.");
  m_layerMetric = new QComboBox;  // filled before it is connected (its signal would reach onControl early)
  for (const auto& cm : tq::curveMetrics()) m_layerMetric->addItem(QString::fromUtf8(cm.title), QString(cm.column));
  m_layerMetric->setToolTip("The metric the Layers view maps over every layer and query head");
  m_layerMetric->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_layerMetric->setMinimumContentsLength(6);
  connect(m_layerMetric, qOverload<int>(&QComboBox::currentIndexChanged), this, &MainWindow::onControl);
  m_layerMethod = combo({{"TurboQuant (current)", int(tq::Method::TurboQuant)},
                         {"MSE-only, norm-corrected", int(tq::Method::TqMseNormCorrected)},
                         {"MSE-only, outlier channels", int(tq::Method::TqMseOutliers)},
                         {"reference's 1+1", int(tq::Method::TqRef11)},
                         {"KIVI", int(tq::Method::Kivi)},
                         {"rotated int", int(tq::Method::IntRot)},
                         {"fp8 e4m3", int(tq::Method::Fp8E4M3)},
                         {"fp8 e5m2", int(tq::Method::Fp8E5M2)},
                         {"fp16", int(tq::Method::Fp16)}},
                        "The configuration the Layers view maps: the current TurboQuant one (key mode, bits, m) or a baseline at the current "
                        "key bits (fp8 / fp16 at their own width); a baseline must be among the Baselines");
  // A/B: configuration B beside the current one (A) in the attention view
  m_compare = new QComboBox;
  m_compare->setObjectName("compare");
  const std::pair<const char*, const char*> abItems[] = {{"off", "none"},
                                                         {"TurboQuant, current mode", "tq"},
                                                         {"TurboQuant MSE-only", "tq-mse"},
                                                         {"TurboQuant MSE+QJL", "tq-prod"},
                                                         {"TurboQuant QJL-only", "tq-qjl"},
                                                         {"reference's 1+1", "tq-ref11"},
                                                         {"MSE-only, norm-corrected", "tq-mse-nc"},
                                                         {"MSE-only, outlier channels", "tq-mse-oc"},
                                                         {"KIVI", "kivi"},
                                                         {"rotated int", "int-rot"},
                                                         {"fp8 e4m3", "fp8-e4m3"},
                                                         {"fp8 e5m2", "fp8-e5m2"},
                                                         {"fp16", "fp16"}};
  for (const auto& [label, name] : abItems) m_compare->addItem(label, QString(name));
  m_compare->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_compare->setMinimumContentsLength(6);
  m_compare->setToolTip(
      "A/B in the Attention view: a second configuration B beside the current one (A), shown as exact, A, B and A − B, "
      "each with its key bytes and mean attention cosine (--compare METHOD[:BITS])");
  connect(m_compare, qOverload<int>(&QComboBox::currentIndexChanged), this, &MainWindow::onControl);
  m_compareBits = spin(1, 8, "Key bits of configuration B (fp8 / fp16 and the reference's 1+1 have their own width)");
  auto* abRow = new QHBoxLayout;
  abRow->addWidget(m_compare, 1);
  abRow->addWidget(m_compareBits);
  m_recentWindow = spin(0, 16777216,
                        "The reference's V3 window: the last N tokens' keys and values kept in fp16 for every method, "
                        "charged 2·d bytes each (--recent-window N; 0: none)");
  m_recentWindow->setSpecialValueText("none");
  m_recentWindow->setSingleStep(32);
  fc->addRow("Baselines", m_methods);
  fc->addRow("A/B (B, bits)", abRow);
  fc->addRow("fp16 recent", m_recentWindow);
  fc->addRow("Fidelity x", m_fidelityX);
  fc->addRow("Layer map", m_layerMetric);
  fc->addRow("Map method", m_layerMethod);
  col->addWidget(gC);

  // SELECTION
  auto* gS = new QGroupBox("SELECTION");
  auto* fs = new QFormLayout(gS);
  m_layer = spin(0, 0, "Layer (PgUp / PgDn, ↑ / ↓)");
  m_head = spin(0, 0, "Query head (← / →)");
  m_gqa = new QLabel;
  m_gqa->setWordWrap(true);
  m_querySource = combo({{"dump queries", int(tq::QuerySource::Dump)},
                         {"proxy: last key", int(tq::QuerySource::LastKey)},
                         {"proxy: random", int(tq::QuerySource::Random)}},
                        "Where queries come from; proxies overstate or distort fidelity and are labelled as such");
  m_queryPos = spin(-1, 0, "The token whose key (and query) How it works and the Estimator study, marked in the attention heatmaps (−1: the last)");
  m_queryPos->setSpecialValueText("last");
  m_heatMode = combo({{"softmax weights", 1}, {"logits", 0}}, "What the attention heatmaps show");
  m_sweepCells = spin(0, 100000000,
                      "Fidelity sweep over a seeded random sample of this many (layer, kv head) cells; 0: every cell "
                      "(the curves appear after the first cells either way and converge to the full grid)");
  m_sweepCells->setSpecialValueText("all cells");
  fs->addRow("Layer", m_layer);
  fs->addRow("Head", m_head);
  fs->addRow("", m_gqa);
  fs->addRow("Queries", m_querySource);
  fs->addRow("Token studied", m_queryPos);
  fs->addRow("Heatmap", m_heatMode);
  fs->addRow("Sweep", m_sweepCells);
  col->addWidget(gS);

  // MEMORY
  auto* gM = new QGroupBox("MEMORY VIEW");
  auto* fm = new QFormLayout(gM);
  m_model = new QComboBox;
  m_model->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_model->setMinimumContentsLength(6);
  for (const auto& p : tq::modelPresets()) m_model->addItem(QString::fromStdString(p.name), QString::fromStdString(p.id));
  m_model->setToolTip("The model whose KV cache the Memory view totals (layers × kv heads × head_dim; --model)");
  connect(m_model, qOverload<int>(&QComboBox::currentIndexChanged), this, &MainWindow::onControl);
  m_context = spin(1, 100000000, "Context length for the KV-cache totals");
  m_context->setSingleStep(4096);
  m_context->setGroupSeparatorShown(true);
  fm->addRow("Model", m_model);
  fm->addRow("Context", m_context);
  col->addWidget(gM);

  // RUN ON
  auto* gB = new QGroupBox("RUN ON");
  auto* fb = new QFormLayout(gB);
  m_backend = combo({{"Auto", int(tq::BackendChoice::Auto)}, {"CPU", int(tq::BackendChoice::Cpu)}, {"CUDA", int(tq::BackendChoice::Cuda)}},
                    "Where the engine runs");
  m_backendUsed = new QLabel;
  m_backendUsed->setWordWrap(true);
  fb->addRow("Backend", m_backend);
  fb->addRow("", m_backendUsed);
  col->addWidget(gB);
  col->addStretch(1);

  m_tabs = new QTabWidget;
  m_attention = new AttentionView;
  m_fidelity = new FidelityView;
  m_layers = new LayersView;
  m_memory = new MemoryView;
  m_distortion = new DistortionView;
  m_estimator = new EstimatorView;
  m_how = new HowItWorksView;
  m_views = {m_attention, m_fidelity, m_layers, m_memory, m_distortion, m_estimator, m_how};
  const char* tabNames[] = {"Attention", "Fidelity", "Layers", "Memory", "Distortion", "Estimator", "How it works"};
  for (int i = 0; i < m_views.size(); ++i) m_tabs->addTab(m_views[i], tabNames[i]);
  m_lesson = new LessonView;
  m_tabs->addTab(m_lesson, "Lesson");
  split->addWidget(scroll);
  split->addWidget(m_tabs);
  split->setStretchFactor(1, 1);
  split->setSizes({330, 1200});
  setCentralWidget(split);

  m_progress = new QProgressBar;
  m_progress->setMaximumWidth(260);
  m_progress->setTextVisible(true);
  m_progress->hide();
  m_cancel = new QPushButton("Cancel");
  m_cancel->setToolTip("Stop the running computation (Esc)");
  m_cancel->hide();
  connect(m_cancel, &QPushButton::clicked, this, &MainWindow::cancelWork);
  m_statusLabel = new QLabel;
  m_backendLabel = new QLabel;
  m_elapsedLabel = new QLabel;
  statusBar()->addWidget(m_progress);
  statusBar()->addWidget(m_cancel);
  statusBar()->addWidget(m_statusLabel, 1);
  statusBar()->addPermanentWidget(m_backendLabel);
  statusBar()->addPermanentWidget(m_elapsedLabel);
}

void MainWindow::buildMenus() {
  auto* file = menuBar()->addMenu("&File");
  file->addAction("&Open…", QKeySequence::Open, this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, "Open KV dump", QString(), "KV dumps (*.safetensors *.npz *.npy);;All files (*)");
    if (!p.isEmpty()) openFile(p);
  });
  auto* sampleMenu = file->addMenu("&Sample");
  for (const tq::SampleInfo& si : tq::samples()) {
    const tq::SampleId id = si.id;
    sampleMenu->addAction(QString::fromUtf8(si.label), this, [this, id] { openSampleData(id); })
        ->setToolTip(QString("The embedded %1 (%2)").arg(QString::fromUtf8(si.label), si.fileName));
  }
  file->addAction("S&ynthetic data…", this, [this] {
    tq::SyntheticSpec s = m_exp.synth;
    if (askSynthetic(this, s)) openSynthetic(s);
  });
  m_recentMenu = file->addMenu("Recent files");
  file->addSeparator();
  file->addAction("Open E&xperiment…", QKeySequence("Ctrl+Shift+O"), this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, "Open experiment", QString(), "Experiments (*.json)");
    QString err;
    if (!p.isEmpty() && !loadExperimentFile(p, &err)) reportError("Cannot open the experiment", err, true);
  });
  file->addAction("&Save Experiment…", QKeySequence::Save, this, [this] {
    const QString p = QFileDialog::getSaveFileName(this, "Save experiment", "experiment.json", "Experiments (*.json)");
    QString err;
    if (!p.isEmpty() && !saveExperimentFile(p, &err)) reportError("Cannot save the experiment", err, true);
  });
  file->addSeparator();
  file->addAction("&Export View…", QKeySequence("Ctrl+E"), this, &MainWindow::exportCurrentView);
  file->addAction("Export &All…", QKeySequence("Ctrl+Shift+E"), this, &MainWindow::exportAllViews);
  file->addSeparator();
  file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

  auto* view = menuBar()->addMenu("&View");
  m_presentationAction = view->addAction("&Presentation mode", QKeySequence("F11"), this, [this](bool on) { setPresentation(on); });
  m_presentationAction->setCheckable(true);
  view->addAction("&Reset zoom", QKeySequence("Ctrl+0"), this, [this] {
    if (auto* v = qobject_cast<PlotView*>(m_tabs->currentWidget())) v->resetZoom();
  });
  for (int i = 0; i < m_views.size(); ++i)
    view->addAction(m_tabs->tabText(i), QKeySequence(QString("Ctrl+%1").arg(i + 1)), this, [this, i] { m_tabs->setCurrentIndex(i); });
  view->addAction("&Lesson: TurboQuant step by step", QKeySequence("Ctrl+L"), this, &MainWindow::showLesson)
      ->setToolTip(
          "Eight steps on the loaded data's selected head, each a live figure and sentences with its numbers; Page Down / Page Up (or → / ←) step "
          "through");
  view->addSeparator();
  auto* play = view->addAction("How it works: &play the coordinates", QKeySequence("P"), this, [this](bool on) {
    m_tabs->setCurrentWidget(m_how);
    m_how->setPlaying(on);
  });
  play->setCheckable(true);
  connect(m_how, &HowItWorksView::playingChanged, play, &QAction::setChecked);
  view->addAction("How it works: &next coordinate", QKeySequence("."), this, [this] {
    m_tabs->setCurrentWidget(m_how);
    m_how->setPlaying(false);
    m_how->stepCoordinate();
  });

  auto* ex = menuBar()->addMenu("&Experiment");
  ex->addAction("Key bits +", QKeySequence("+"), this, [this] {
      setKeyBits(m_exp.keyBits + 1);
    })->setShortcuts({QKeySequence("+"), QKeySequence("=")});
  ex->addAction("Key bits −", QKeySequence("-"), this, [this] { setKeyBits(m_exp.keyBits - 1); });
  ex->addAction("Value bits +", QKeySequence("Shift+Up"), this, [this] { setValueBits(m_exp.valueBits + 1); });
  ex->addAction("Value bits −", QKeySequence("Shift+Down"), this, [this] { setValueBits(m_exp.valueBits - 1); });
  ex->addSeparator();
  // (in the Lesson tab Page Down / Page Up and → / ← step through the lesson: a presenter's clicker sends them)
  ex->addAction("Next layer", QKeySequence(Qt::Key_PageDown), this, [this] {
      lessonActive() ? m_lesson->next() : setLayer(m_exp.layer + 1);
    })->setShortcuts({QKeySequence(Qt::Key_PageDown), QKeySequence(Qt::Key_Down)});
  ex->addAction("Previous layer", QKeySequence(Qt::Key_PageUp), this, [this] {
      lessonActive() ? m_lesson->back() : setLayer(m_exp.layer - 1);
    })->setShortcuts({QKeySequence(Qt::Key_PageUp), QKeySequence(Qt::Key_Up)});
  ex->addAction("Next head", QKeySequence(Qt::Key_Right), this, [this] { lessonActive() ? m_lesson->next() : setHead(m_exp.qHead + 1); });
  ex->addAction("Previous head", QKeySequence(Qt::Key_Left), this, [this] { lessonActive() ? m_lesson->back() : setHead(m_exp.qHead - 1); });
  ex->addSeparator();
  ex->addAction("&Recompute", QKeySequence("F5"), this, &MainWindow::recomputeAll);
  ex->addAction("&Cancel", QKeySequence(Qt::Key_Escape), this, &MainWindow::cancelWork);

  auto* help = menuBar()->addMenu("&Help");
  auto* guide = help->addAction("&Guide: the views and how to read them", this, [this] { showGuide(); });
  guide->setShortcut(QKeySequence::HelpContents);
  help->addAction("&Keyboard shortcuts", this, [this] { showGuide("## Keys"); });
  help->addAction("&About", this, [this] {
    QMessageBox::about(this, "TurboQuant Studio",
                       "TurboQuant Studio " TQ_VERSION
                       "\nExplore TurboQuant KV-cache compression: random rotation + Lloyd-Max codebook, "
                       "optional 1-bit QJL residual sketch.\n\nThe method: A. Zandieh, M. Daliri, M. Hadian, V. Mirrokni, \"TurboQuant: "
                       "Online Vector Quantization with Near-optimal Distortion Rate\", ICLR 2026 (arXiv:2504.19874).\n"
                       "Baselines: KIVI (Liu et al., ICML 2024), rotated integers as in llama.cpp's q4_0 / q8_0, fp8 (OCP e4m3 / e5m2).\n\n"
                       "GPL-3.0-or-later. Plots: QCustomPlot.");
  });
}

void MainWindow::showGuide(const QString& section) {
  // docs/GUI.md, embedded at build time; its images live in docs/images and are left out here
  QString md = QString::fromUtf8(kGuideMarkdown);
  QStringList lines = md.split('\n');
  lines.erase(std::remove_if(lines.begin(), lines.end(), [](const QString& l) { return l.trimmed().startsWith("!["); }), lines.end());
  md = lines.join('\n');
  auto* dlg = new QDialog(this);
  dlg->setAttribute(Qt::WA_DeleteOnClose);
  dlg->setObjectName("guide");
  dlg->setWindowTitle("TurboQuant Studio — Guide");
  auto* lay = new QVBoxLayout(dlg);
  auto* text = new QTextBrowser;
  text->setObjectName("guideText");
  text->setOpenExternalLinks(true);
  text->setMarkdown(md);
  lay->addWidget(text);
  auto* bb = new QDialogButtonBox(QDialogButtonBox::Close);
  connect(bb, &QDialogButtonBox::rejected, dlg, &QDialog::close);
  lay->addWidget(bb);
  dlg->resize(std::min(1000, width() - 40), std::min(760, height() - 40));
  if (!section.isEmpty()) {
    const QString anchor = section.mid(section.lastIndexOf('#') + 1).trimmed();
    text->find(anchor);
  }
  dlg->show();
}

PlotView* MainWindow::view(const QString& id) const {
  for (auto* v : m_views)
    if (v->id() == id) return v;
  return nullptr;
}

void MainWindow::syncControls() {
  m_syncing = true;
  m_keyBits->setValue(m_exp.keyBits);
  m_valueBits->setValue(m_exp.valueBits);
  setComboData(m_keyMode, m_exp.keyMode);
  setComboData(m_proj, m_exp.proj);
  m_customProj->setValue(m_exp.customProj);
  m_customProj->setEnabled(m_exp.proj == ProjChoice::Custom && m_exp.keyMode != tq::KeyMode::Mse);
  m_proj->setEnabled(m_exp.keyMode != tq::KeyMode::Mse);
  // QJL-only stores m sign bits and a norm whatever the bit-width: the control has no effect there.
  m_keyBits->setEnabled(m_exp.keyMode != tq::KeyMode::QjlOnly);
  m_keyBits->setToolTip(m_exp.keyMode == tq::KeyMode::QjlOnly ? "QJL-only keys use m sign bits (proj_dim) and a norm; key bits have no effect"
                                                              : "Bits per key coordinate (+ / − keys)");
  setComboData(m_rotation, m_exp.rotation);
  setComboData(m_law, m_exp.law);
  setComboData(m_centering, m_exp.centering);
  m_qjlMatrix->setCurrentIndex(m_exp.orthogonalQjl ? 1 : 0);
  m_qjlMatrix->setEnabled(m_exp.keyMode != tq::KeyMode::Mse);
  {
    QStringList names;
    for (QAction* a : m_methods->menu()->actions()) {
      const bool on = std::find(m_exp.methods.begin(), m_exp.methods.end(), static_cast<tq::Method>(a->data().toInt())) != m_exp.methods.end();
      a->setChecked(on);
      if (on) names << QString::fromStdString(tq::methodName(static_cast<tq::Method>(a->data().toInt())));
    }
    m_methods->setText(names.isEmpty() ? "none" : names.size() <= 2 ? names.join(", ") : QString("%1 selected").arg(names.size()));
    m_methods->setToolTip((names.isEmpty() ? QString("No baseline. ") : "Selected: " + names.join(", ") + ". ") + m_methodsHelp);
  }
  setComboData(m_fidelityX, m_exp.fidelityX);
  m_layerMetric->setCurrentIndex(std::max(0, m_layerMetric->findData(m_exp.layerMetric)));
  setComboData(m_layerMethod, m_exp.layerMethod);
  m_compare->setCurrentIndex(std::max(0, m_compare->findData(m_exp.compareMethod)));
  m_compareBits->setValue(m_exp.compareBits);
  m_compareBits->setEnabled(m_exp.comparing() && m_exp.compareMethod != "tq-ref11" && m_exp.compareMethod != "tq-qjl" &&
                            m_exp.compareMethod != "fp16" && !m_exp.compareMethod.startsWith("fp8") &&
                            !(m_exp.compareMethod == "tq" && m_exp.keyMode == tq::KeyMode::QjlOnly));
  m_recentWindow->setValue(m_exp.recentWindow);
  m_seed->setValue(static_cast<int>(std::min<quint64>(m_exp.seed, 2147483647)));
  setComboData(m_backend, m_exp.backend);
  m_layer->setValue(m_exp.layer);
  m_head->setValue(m_exp.qHead);
  setComboData(m_querySource, m_exp.querySource);
  m_queryPos->setValue(m_exp.queryPos);
  m_heatMode->setCurrentIndex(m_exp.softmaxWeights ? 0 : 1);
  m_sweepCells->setValue(m_exp.sweepCells);
  const int mi = m_model->findData(m_exp.modelPreset);
  if (mi >= 0) m_model->setCurrentIndex(mi);
  m_context->setValue(static_cast<int>(std::min<qint64>(m_exp.context, 100000000)));
  if (m_data) {
    const auto& sh = m_data->shape;
    m_gqa->setText(QString("→ kv head %1 (%2 q heads per kv head)").arg(sh.kvHeadOf(m_exp.qHead)).arg(sh.kvHeads > 0 ? sh.qHeads / sh.kvHeads : 1));
    m_proj->setItemText(0, QString("d/4 = %1").arg(std::max(1, sh.headDim / 4)));
    m_proj->setItemText(1, QString("d/2 = %1").arg(std::max(1, sh.headDim / 2)));
    m_proj->setItemText(2, QString("d = %1").arg(sh.headDim));
    m_proj->setItemText(3, QString("2d = %1").arg(2 * sh.headDim));
  }
  m_syncing = false;
}

void MainWindow::onControl() {
  if (m_syncing) return;
  Experiment n = m_exp;
  n.keyBits = m_keyBits->value();
  n.valueBits = m_valueBits->value();
  n.keyMode = static_cast<tq::KeyMode>(m_keyMode->currentData().toInt());
  n.proj = static_cast<ProjChoice>(m_proj->currentData().toInt());
  n.customProj = m_customProj->value();
  n.rotation = static_cast<tq::RotationKind>(m_rotation->currentData().toInt());
  n.law = static_cast<tq::CodebookLaw>(m_law->currentData().toInt());
  n.centering = static_cast<tq::KeyCentering>(m_centering->currentData().toInt());
  n.orthogonalQjl = m_qjlMatrix->currentData().toInt() == 1;
  n.methods.clear();
  for (QAction* a : m_methods->menu()->actions())
    if (a->isChecked()) n.methods.push_back(static_cast<tq::Method>(a->data().toInt()));
  n.fidelityX = static_cast<FidelityAxis>(m_fidelityX->currentData().toInt());
  n.layerMetric = m_layerMetric->currentData().toString();
  n.layerMethod = static_cast<tq::Method>(m_layerMethod->currentData().toInt());
  n.compareMethod = m_compare->currentData().toString();
  n.compareBits = m_compareBits->value();
  n.recentWindow = m_recentWindow->value();
  n.seed = static_cast<quint64>(m_seed->value());
  n.backend = static_cast<tq::BackendChoice>(m_backend->currentData().toInt());
  n.layer = m_layer->value();
  n.qHead = m_head->value();
  n.querySource = static_cast<tq::QuerySource>(m_querySource->currentData().toInt());
  n.queryPos = m_queryPos->value();
  n.softmaxWeights = m_heatMode->currentData().toInt() == 1;
  n.sweepCells = m_sweepCells->value();
  n.modelPreset = m_model->currentData().toString();
  n.context = m_context->value();
  applyExperiment(n);
}

void MainWindow::applyExperiment(const Experiment& n) {
  const Experiment o = m_exp;
  const bool dataChanged = n.dataKind != o.dataKind || (n.dataKind == DataKind::File && n.dataPath != o.dataPath) ||
                           (n.dataKind == DataKind::Sample && n.sample != o.sample) ||
                           (n.dataKind == DataKind::Synthetic && n.synth.describe() != o.synth.describe()) || !m_data;
  if (dataChanged) {
    // Open in the background; the current data and experiment stay until it succeeds.
    auto opener = m_opt.opener;
    m_loadRunner->submit([opener, n](const tq::ProgressFn& progress) -> JobPtr {
      auto out = std::make_shared<LoadOutput>();
      out->ctx = makeContext(openData(n, opener, progress));
      out->exp = n;
      if (n.dataKind == DataKind::File) out->path = n.dataPath;
      return out;
    });
    m_statusLabel->setText("opening…");
    return;
  }
  const int d = m_data ? m_data->shape.headDim : 0;
  int parts = 0;
  bool sweep = false, memory = false;
  const int kHEH = PartHeatmap | PartEstimator | PartHow;
  if (n.keyBits != o.keyBits) parts |= kHEH, memory = true;
  if (n.valueBits != o.valueBits) parts |= 16, sweep = true, memory = true;
  if (n.keyMode != o.keyMode || n.projDimFor(d) != o.projDimFor(d)) {
    parts |= kHEH;
    memory = true;
    if (m_sweep) {
      const auto& pd = m_sweep->result.config.projDims;
      if (std::find(pd.begin(), pd.end(), n.projDimFor(d)) == pd.end()) sweep = true;
    }
  }
  if (n.proj != o.proj || n.customProj != o.customProj) memory = true;
  if (n.rotation != o.rotation || n.law != o.law || n.seed != o.seed || n.backend != o.backend || n.centering != o.centering ||
      n.orthogonalQjl != o.orthogonalQjl || n.centerWindow != o.centerWindow)
    parts |= PartAll, sweep = true;
  if (n.methods != o.methods || n.methodOptions.group != o.methodOptions.group || n.methodOptions.window != o.methodOptions.window ||
      n.methodOptions.outlierChannels != o.methodOptions.outlierChannels || n.protectLayers != o.protectLayers || n.protectBits != o.protectBits)
    sweep = true;
  // B's method options and protected widths reach the heatmap too
  if (n.comparing() && (n.methodOptions.group != o.methodOptions.group || n.methodOptions.window != o.methodOptions.window ||
                        n.methodOptions.outlierChannels != o.methodOptions.outlierChannels))
    parts |= PartHeatmap;
  if (n.protectLayers != o.protectLayers || n.protectBits != o.protectBits) parts |= PartAll;
  if (n.compareMethod != o.compareMethod || n.compareBits != o.compareBits) parts |= PartHeatmap;
  if (n.recentWindow != o.recentWindow) parts |= PartHeatmap | PartEstimator, sweep = true, memory = true;
  // a re-render of the fidelity / layers view (flush), no computation
  if (n.fidelityX != o.fidelityX || n.layerMetric != o.layerMetric || n.layerMethod != o.layerMethod) memory = true;
  if (n.layer != o.layer || n.qHead != o.qHead) parts |= PartAll;
  if (n.queryPos != o.queryPos) parts |= PartHow;
  if (n.querySource != o.querySource) parts |= kHEH, sweep = true;
  if (n.sweepQueries != o.sweepQueries) parts |= PartEstimator, sweep = true;
  if (n.sweepCells != o.sweepCells) sweep = true;
  if (n.softmaxWeights != o.softmaxWeights) parts |= PartHeatmap;
  if (n.modelPreset != o.modelPreset || n.context != o.context) memory = true;
  QElapsedTimer prof;
  prof.start();
  m_exp = n;
  syncControls();
  markDirty(parts, sweep, memory);
  if (qEnvironmentVariableIsSet("TQ_PROFILE")) qInfo("experiment applied: controls synced in %.1f ms", prof.nsecsElapsed() / 1e6);
}

bool MainWindow::lessonActive() const {
  return m_tabs && m_tabs->currentWidget() == m_lesson;
}

QString MainWindow::captionFor(const Experiment& e) const {
  if (!m_data) return {};
  return e.caption(QString::fromStdString(m_data->model), m_data->shape.seq, m_data->shape.headDim,
                   QString::fromStdString(tq::querySourceLabel(e.querySource)), m_backendName);
}

void MainWindow::showLesson() {
  m_tabs->setCurrentWidget(m_lesson);
  if (m_lessonDirty) submitLesson();
}

void MainWindow::submitLesson() {
  if (!m_data) return;
  m_lessonDirty = false;
  m_lesson->setOutdated("computing the lesson for this head…");
  auto data = m_data;
  const Experiment e = m_exp;
  m_lessonRunner->submit([data, e](const tq::ProgressFn& p) -> JobPtr { return computeLessonResult(*data, e, p); });
  updateStatus();
}

bool MainWindow::computeLessonNow(QString* error) {
  if (!m_data) {
    if (error) *error = "no data";
    return false;
  }
  try {
    auto r = computeLessonResult(*m_data, m_exp);
    m_lesson->setLesson(r, captionFor(r->exp));
    m_lessonDirty = false;
  } catch (const std::exception& ex) {
    if (error) *error = QString::fromStdString(ex.what());
    return false;
  }
  return true;
}

void MainWindow::markDirty(int parts, bool sweep, bool memory) {
  if (parts || sweep) m_lessonDirty = true;  // the lesson follows the data and the selection
  m_dirtyParts |= parts;
  m_dirtySweep = m_dirtySweep || sweep;
  m_dirtyMemory = m_dirtyMemory || memory;
  if (m_dirtyParts || m_dirtySweep || m_dirtyMemory) m_flushTimer->start();
}

void MainWindow::flush() {
  if (!m_data) return;
  static const bool profile = qEnvironmentVariableIsSet("TQ_PROFILE");
  QElapsedTimer prof;
  prof.start();
  auto mark = [&](const char* what) {
    if (profile) qInfo("flush %s: %.1f ms", what, prof.nsecsElapsed() / 1e6);
  };
  if (m_lessonDirty && lessonActive()) submitLesson();
  if (m_dirtyParts) submitDetail(m_dirtyParts);
  if (m_dirtySweep) submitSweep();
  mark("submitted");
  m_dirtyParts = 0;
  m_dirtySweep = false;
  // Highlights and the memory model need no computation: update them at once.
  if (m_sweep) m_fidelity->setData(m_sweep, m_exp), m_layers->setData(m_sweep, m_exp);
  mark("fidelity + layers");
  if (m_haveDetail && !m_detail.distortion.bits.empty()) m_distortion->setData(m_detail.distortion, m_exp.keyBits);
  if (m_dirtyMemory) refreshMemory();
  m_dirtyMemory = false;
  refreshCaptions();
  updateStatus();
  mark("done");
}

void MainWindow::submitDetail(int parts) {
  // A job still running is superseded: take over its parts so nothing it would have drawn is lost.
  DetailRequest req;
  req.exp = m_exp;
  req.parts = parts & PartAll;
  req.region = m_region;
  auto data = m_data;
  m_detailClock.start();
  const int running = m_detailRunner->busy() ? property("inflightParts").toInt() : 0;
  req.parts |= running & PartAll;
  setProperty("inflightParts", req.parts);
  const std::pair<int, PlotView*> byPart[] = {
      {PartHeatmap, m_attention}, {PartEstimator, m_estimator}, {PartHow, m_how}, {PartDistortion, m_distortion}};
  for (const auto& [part, view] : byPart)
    if (req.parts & part) view->setOutdated(true);
  m_detailRunner->submit(JobRunner::ProgressiveJob([data, req](const tq::ProgressFn& p, const JobRunner::PartialFn& part) -> JobPtr {
    return computeDetail(*data, req, p, [&part](std::shared_ptr<const DetailResult> r) { part(r); });
  }));
}

void MainWindow::submitSweep() {
  auto data = m_data;
  const Experiment e = m_exp;
  m_progress->setValue(0);
  m_sweep.reset();
  m_fidelity->setOutdated(true, "recomputing the sweep…");
  m_layers->setOutdated(true, "recomputing the sweep…");
  m_sweepRunner->submit(JobRunner::ProgressiveJob([data, e](const tq::ProgressFn& p, const JobRunner::PartialFn& part) -> JobPtr {
    return computeSweep(*data, e, p, true, [&part](std::shared_ptr<const SweepOutput> o) { part(o); });
  }));
}

void MainWindow::applyDetail(const DetailResult& r) {
  QElapsedTimer prof;
  prof.start();
  const double sinceSubmit = m_detailClock.isValid() ? m_detailClock.nsecsElapsed() / 1e6 : 0.0;
  static const bool profile = qEnvironmentVariableIsSet("TQ_PROFILE");
  auto mark = [&](const char* what) {
    if (profile) qInfo("apply %s: %.1f ms", what, prof.nsecsElapsed() / 1e6);
  };
  if (profile) qInfo("detail compute %.1f ms (parts %d)", r.seconds * 1000, r.parts);
  m_haveDetail = true;
  m_backendName = QString::fromStdString(r.backend);
  m_device = QString::fromStdString(r.device);
  // Auto that found no CUDA is what was asked for: the reason goes to the tooltip, not a warning
  m_backendNote = r.exp.backend == tq::BackendChoice::Auto ? QString() : QString::fromStdString(r.backendNote);
  m_backendLabel->setToolTip(QString::fromStdString(r.backendNote));
  const bool bytesChanged =
      m_detail.keyBytesPerVector != r.keyBytesPerVector || m_detail.valueBytesPerVector != r.valueBytesPerVector ||
      !(m_detail.exp.keyBits == r.exp.keyBits && m_detail.exp.keyMode == r.exp.keyMode && m_detail.exp.valueBits == r.exp.valueBits);
  m_detail.exp = r.exp;
  m_detail.kvHead = r.kvHead;
  m_detail.headDim = r.headDim;
  m_detail.keyBytesPerVector = r.keyBytesPerVector;
  m_detail.valueBytesPerVector = r.valueBytesPerVector;
  m_detail.keyMeanShare = r.keyMeanShare;
  // Say why TurboQuant fails where the keys are mostly bias (the number is core's, for this head).
  if (r.keyMeanShare > 0.5 && r.exp.centering != tq::KeyCentering::None) {
    m_keyNote->setText(QString("L%1 kv head %2: %3 % of the keys' energy is their mean (a bias); the keys are centred (%4), so the "
                               "quantizer sees only what varies between tokens. Keys cost %5 B/vector with the mean and window.")
                           .arg(r.exp.layer)
                           .arg(r.kvHead)
                           .arg(100.0 * r.keyMeanShare, 0, 'f', 2)
                           .arg(QString::fromStdString(tq::keyCenteringLabel(r.exp.centering, r.exp.centerWindow)))
                           .arg(r.keyBytesCentred, 0, 'f', 2));
    m_keyNote->show();
  } else if (r.keyMeanShare > 0.5) {
    m_keyNote->setText(QString("L%1 kv head %2: %3 % of the keys' energy is their mean (a bias). TurboQuant spends its bits on it; "
                               "centring the keys (Key centring: causal) recovers most of it (docs/RESULTS.md).")
                           .arg(r.exp.layer)
                           .arg(r.kvHead)
                           .arg(100.0 * r.keyMeanShare, 0, 'f', 2));
    m_keyNote->show();
  } else {
    m_keyNote->hide();
  }
  const QString ql = QString::fromStdString(r.queryLabel);
  if (r.parts & PartHeatmap) {
    m_detail.heat = r.heat;
    m_attention->setData(r.heat, m_data, r.exp.layer, r.exp.qHead, r.kvHead, ql);
    m_attention->setMarkedToken(r.exp.queryPos < 0 ? m_data->shape.seq - 1 : r.exp.queryPos);
    mark("attention");
  }
  if (r.parts & PartEstimator) {
    m_detail.estimator = r.estimator;
    m_estimator->setData(r.estimator, r.exp.keyMode, r.exp.keyBits);
    mark("estimator");
  }
  if (r.parts & PartHow) {
    m_detail.how = r.how;
    m_how->setData(r.how, r.exp.keyBits);
    mark("how");
  }
  if (r.parts & PartDistortion) {
    m_detail.distortion = r.distortion;
    if (!m_detail.distortion.bits.empty()) m_distortion->setData(m_detail.distortion, m_exp.keyBits);
    mark("distortion");
  }
  const std::pair<int, PlotView*> byPart[] = {
      {PartHeatmap, m_attention}, {PartEstimator, m_estimator}, {PartHow, m_how}, {PartDistortion, m_distortion}};
  // Each partial result touches only its own view: the GUI thread's work per delivery stays one view's
  // (several deliveries can arrive back to back).
  PlotView* visible = qobject_cast<PlotView*>(m_tabs->currentWidget());
  bool visibleChanged = false;
  for (const auto& [part, view] : byPart)
    if (r.parts & part) {
      view->setOutdated(false);
      visibleChanged = visibleChanged || view == visible;
    }
  clearError();
  if (bytesChanged || !m_haveMemory) {
    refreshMemory();
    m_haveMemory = true;
    visibleChanged = visibleChanged || visible == m_memory;
    mark("memory");
  }
  refreshCaptions();
  const double applyMs = prof.nsecsElapsed() / 1e6;
  updateStatus();
  // The visible view is drawn in a later pass of the event loop: handing a result over and drawing it are
  // two GUI-thread steps of up to ~30 ms each on the 2-core machine (the first delivery after opening a
  // data set), and events in between (input, timers, the progress bar) are not held up by both. A 1 ms
  // timer, not 0: Qt 6 turns a 0 ms single shot into a posted event, which runs before the timers and
  // input already due (the benchmark's heartbeat saw both steps as one stall of ~50 ms).
  // TQ_DRAW_POSTED=1: the 0 ms single shot, for comparisons. detailApplied follows the drawing.
  const bool heat = r.parts & PartHeatmap;
  QPointer<PlotView> target = visible && visibleChanged ? visible : nullptr;
  const quint64 drawn = target ? target->replotCount() : 0;
  const bool cached = r.keysFromCache > 0 && r.keysCompressed == 0;
  static const int drawAfterMs = qEnvironmentVariableIsSet("TQ_DRAW_POSTED") ? 0 : 1;
  QTimer::singleShot(drawAfterMs, Qt::PreciseTimer, this, [this, target, drawn, heat, applyMs, sinceSubmit, cached, secs = r.seconds] {
    // (a replot the view queued itself may have drawn it first)
    if (target && target == qobject_cast<PlotView*>(m_tabs->currentWidget()) && target->replotCount() == drawn) target->replotNow();
    if (qEnvironmentVariableIsSet("TQ_PROFILE")) qInfo("apply: visible view drawn");
    if (heat) m_heatTiming = {secs * 1000, applyMs, target == m_attention ? m_attention->lastReplotMs() : 0.0, sinceSubmit, cached};
    emit detailApplied();
  });
}

void MainWindow::applySweep(std::shared_ptr<const SweepOutput> out) {
  QElapsedTimer prof;
  prof.start();
  m_sweep = std::move(out);
  const SweepOutput& s = *m_sweep;
  m_fidelity->setOutdated(false);
  m_layers->setOutdated(false);
  if (!s.result.partial()) clearError();
  m_fidelity->setData(m_sweep, m_exp);
  m_layers->setData(m_sweep, m_exp);
  if (m_tabs->currentWidget() == m_fidelity) m_fidelity->replotNow();
  if (m_tabs->currentWidget() == m_layers) m_layers->replotNow();
  updateStatus();
  static const bool profile = qEnvironmentVariableIsSet("TQ_PROFILE");
  if (profile) qInfo("apply sweep (%zu of %zu cells): %.1f ms", s.result.cellsDone, s.result.cellsTotal, prof.nsecsElapsed() / 1e6);
  emit sweepApplied();
}

void MainWindow::refreshMemory() {
  if (!m_data) return;
  const bool match = m_detail.exp.keyBits == m_exp.keyBits && m_detail.exp.keyMode == m_exp.keyMode && m_detail.exp.valueBits == m_exp.valueBits &&
                     m_detail.exp.projDimFor(m_data->shape.headDim) == m_exp.projDimFor(m_data->shape.headDim);
  m_memory->setData(m_exp, m_data->shape.headDim, match ? m_detail.keyBytesPerVector : 0, match ? m_detail.valueBytesPerVector : 0);
}

QString MainWindow::backendText() const {
  if (m_backendName.isEmpty()) return "backend: —";
  if (!m_backendNote.isEmpty()) return QString("%1 (%2)").arg(m_backendName, m_backendNote);
  return QString("backend: %1 · %2").arg(m_backendName, m_device);
}

QString MainWindow::captionText() const {
  if (!m_data) return {};
  return m_exp.caption(QString::fromStdString(m_data->model), m_data->shape.seq, m_data->shape.headDim,
                       QString::fromStdString(tq::querySourceLabel(m_exp.querySource)), m_backendName.isEmpty() ? QString() : m_backendName);
}

void MainWindow::refreshCaptions() {
  const QString c = captionText();
  for (auto* v : m_views) v->setCaption(c);
}

void MainWindow::setData(std::shared_ptr<const DataContext> d, const Experiment& e) {
  m_data = std::move(d);
  m_exp = e;
  m_region = HeatRegion{};
  m_sweep.reset();
  for (auto* v : m_views)
    if (v != m_memory) v->setOutdated(true, "computing the new data set…");
  adaptToData();
  syncControls();
  setWindowTitle(QString("TurboQuant Studio — %1").arg(QString::fromStdString(m_data->name)));
  m_dataName->setText(QString::fromStdString(m_data->name));
  m_dataShape->setText(describeShape(*m_data->source));
  m_dataName->setToolTip(e.dataKind == DataKind::File ? e.dataPath : QString());
  m_fidelity->setRunning("sweep queued…");
  m_layers->setRunning("sweep queued…");
  markDirty(PartAll, true, true);
  emit dataLoaded();
}

void MainWindow::adaptToData() {
  if (!m_data) return;
  const auto& sh = m_data->shape;
  m_syncing = true;
  m_layer->setRange(0, std::max(0, sh.layers - 1));
  m_head->setRange(0, std::max(0, sh.qHeads - 1));
  m_queryPos->setRange(-1, std::max(0, sh.seq - 1));
  m_syncing = false;
  m_exp.layer = std::clamp(m_exp.layer, 0, std::max(0, sh.layers - 1));
  m_exp.qHead = std::clamp(m_exp.qHead, 0, std::max(0, sh.qHeads - 1));
  if (m_exp.queryPos >= sh.seq) m_exp.queryPos = -1;
  // A source without queries: the dump option is disabled and a labelled proxy is used instead.
  const int di = m_querySource->findData(int(tq::QuerySource::Dump));
  m_querySource->setItemData(di, sh.hasQueries ? QVariant() : QVariant(0), Qt::UserRole - 1);
  if (!sh.hasQueries && m_exp.querySource == tq::QuerySource::Dump) {
    m_exp.querySource = tq::QuerySource::LastKey;
    statusBar()->showMessage("This data has no queries: using a proxy (the last key), labelled as such.", 8000);
  }
  if (m_exp.projDimFor(sh.headDim) > 16384) m_exp.proj = ProjChoice::Full;
}

void MainWindow::clearError() {
  if (m_lastError.isEmpty()) return;
  m_lastError.clear();
  updateStatus();
}

void MainWindow::reportError(const QString& where, const QString& message, bool dialog) {
  m_lastError = where + ": " + message;
  m_statusLabel->setText("<span style='color:#b00000'>" + m_lastError.toHtmlEscaped().section('\n', 0, 0) + "</span>");
  emit errorOccurred(m_lastError);
  if (dialog && m_opt.dialogs) {
    auto* box = new QMessageBox(QMessageBox::Critical, where, message, QMessageBox::Ok, this);
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->open();
  }
}

bool MainWindow::busy() const {
  return m_detailRunner->busy() || m_sweepRunner->busy() || m_loadRunner->busy() || m_lessonRunner->busy() || m_flushTimer->isActive();
}

QString MainWindow::statusText() const {
  return m_statusLabel->text();
}

void MainWindow::updateStatus() {
  const bool sweeping = m_sweepRunner->busy();
  const bool any = sweeping || m_detailRunner->busy() || m_loadRunner->busy() || m_lessonRunner->busy();
  m_progress->setVisible(sweeping || m_loadRunner->busy());
  m_cancel->setVisible(any);
  if (!sweeping) m_progress->setValue(0);
  QString s;
  if (m_loadRunner->busy())
    s = "opening…";
  else if (m_detailRunner->busy())
    s = "computing…";
  else if (m_lessonRunner->busy())
    s = "computing the lesson…";
  else if (sweeping)
    s = "sweep running — the views stay live";
  else
    s = "ready";
  if (!m_lastError.isEmpty() && !any) s = "<span style='color:#b00000'>" + m_lastError.toHtmlEscaped().section('\n', 0, 0) + "</span>";
  m_statusLabel->setText(s);
  const QString be = backendText();
  m_backendLabel->setText(m_backendNote.isEmpty() ? be : "<b style='color:#b05000'>" + be.toHtmlEscaped() + "</b>");
  m_backendUsed->setText(m_backendName.isEmpty() ? QString()
                                                 : (m_backendNote.isEmpty() ? QString("running on %1 · %2").arg(m_backendName, m_device)
                                                                            : QString("running on CPU — %1").arg(m_backendNote)));
  m_elapsedLabel->setText(QString("detail %1 · sweep %2")
                              .arg(humanSeconds(m_lastDetailSeconds), m_sweepRunner->busy() ? QString("running") : humanSeconds(m_lastSweepSeconds)));
}

void MainWindow::cancelWork() {
  m_sweepRunner->cancel();
  m_detailRunner->cancel();
  m_loadRunner->cancel();
  m_lessonRunner->cancel();
  m_flushTimer->stop();
  m_dirtyParts = 0;
  m_dirtySweep = false;
  updateStatus();
}

void MainWindow::recomputeAll() {
  m_lastError.clear();
  markDirty(PartAll, true, true);
}

void MainWindow::setKeyBits(int b) {
  if (qEnvironmentVariableIsSet("TQ_PROFILE")) qInfo("set key bits %d", b);
  Experiment e = m_exp;
  e.keyBits = std::clamp(b, 1, 8);
  applyExperiment(e);
}
void MainWindow::setValueBits(int b) {
  Experiment e = m_exp;
  e.valueBits = std::clamp(b, 1, 8);
  applyExperiment(e);
}
void MainWindow::setKeyMode(tq::KeyMode m) {
  Experiment e = m_exp;
  e.keyMode = m;
  applyExperiment(e);
}
void MainWindow::setLayer(int l) {
  if (!m_data) return;
  Experiment e = m_exp;
  e.layer = std::clamp(l, 0, m_data->shape.layers - 1);
  applyExperiment(e);
}
void MainWindow::setHead(int h) {
  if (!m_data) return;
  Experiment e = m_exp;
  e.qHead = std::clamp(h, 0, m_data->shape.qHeads - 1);
  applyExperiment(e);
}
void MainWindow::setSeed(quint64 s) {
  Experiment e = m_exp;
  e.seed = s;
  applyExperiment(e);
}
void MainWindow::setQuerySource(tq::QuerySource q) {
  Experiment e = m_exp;
  e.querySource = q;
  applyExperiment(e);
}
void MainWindow::setBackendChoice(tq::BackendChoice c) {
  Experiment e = m_exp;
  e.backend = c;
  applyExperiment(e);
}

void MainWindow::setPresentation(bool on) {
  for (auto* v : m_views) v->setPresentation(on);
  if (m_lesson) m_lesson->setPresentation(on);
  QFont f = QApplication::font();
  if (on) f.setPointSizeF(f.pointSizeF() * 1.3);
  centralWidget()->setFont(f);
  // the figures get the whole screen: the side panel goes (the keys still work: + / −, arrows, F11 back)
  if (m_sidePanel) m_sidePanel->setVisible(!on);
  if (m_opt.fullScreen) setWindowState(on ? (windowState() | Qt::WindowFullScreen) : (windowState() & ~Qt::WindowFullScreen));
  if (on && m_opt.dialogs) statusBar()->showMessage("presentation mode: F11 returns; + / − key bits, arrows layer and head", 6000);
  if (m_presentationAction) m_presentationAction->setChecked(on);
  setProperty("presentation", on);
}

bool MainWindow::openNow(const Experiment& e, QString* error, bool syncSweep) {
  try {
    auto ctx = makeContext(openData(e, m_opt.opener));
    setData(ctx, e);
    computeNow(syncSweep);
  } catch (const std::exception& ex) {
    if (error) *error = QString::fromStdString(ex.what());
    return false;
  }
  if (!m_lastError.isEmpty()) {
    if (error) *error = m_lastError;
    return false;
  }
  return true;
}

void MainWindow::computeNow(bool syncSweep) {
  m_flushTimer->stop();
  m_dirtyParts = 0;
  m_dirtySweep = false;
  m_dirtyMemory = false;
  if (!m_data) return;
  try {
    DetailRequest req;
    req.exp = m_exp;
    req.parts = PartAll;
    req.region = m_region;
    auto d = computeDetail(*m_data, req);
    m_lastDetailSeconds = d->seconds;
    applyDetail(*d);
    if (syncSweep) {
      auto s = computeSweep(*m_data, m_exp, {});
      m_lastSweepSeconds = s->result.seconds;
      applySweep(s);
    } else {
      submitSweep();
    }
  } catch (const std::exception& ex) {
    reportError("Computation failed", QString::fromStdString(ex.what()), false);
  }
  refreshMemory();
  refreshCaptions();
  for (auto* v : m_views) v->replotNow();
  updateStatus();
}

void MainWindow::openFile(const QString& path) {
  Experiment e = m_exp;
  e.dataKind = DataKind::File;
  e.dataPath = QFileInfo(path).absoluteFilePath();
  if (path.endsWith(".json", Qt::CaseInsensitive)) {
    QString err;
    if (!loadExperimentFile(path, &err)) reportError("Cannot open the experiment", err, true);
    return;
  }
  if (tq::isCompressedCacheFile(path.toStdString())) {
    // A saved compressed cache: loaded and verified (codebooks, fingerprints, buffer sizes) and shown; the
    // explorer's views study uncompressed dumps, so the current data set stays.
    try {
      const tq::LoadedCompressedCache ld = tq::loadCompressed(path.toStdString());
      const QString text = QString::fromStdString(tq::summarizeCompressed(ld.cache).describe());
      m_lastError.clear();
      statusBar()->showMessage(QFileInfo(path).fileName() + ": " + text.section('\n', 0, 0), 15000);
      if (m_opt.dialogs) QMessageBox::information(this, "Compressed cache", QFileInfo(path).fileName() + "\n\n" + text);
    } catch (const std::exception& ex) {
      reportError("Cannot open the compressed cache", QString::fromStdString(ex.what()), true);
    }
    return;
  }
  m_lastError.clear();
  if (m_data && m_exp.dataKind == DataKind::File && m_exp.dataPath == e.dataPath) m_exp.dataPath.clear();  // force a reload
  applyExperiment(e);
}

void MainWindow::openSampleData(tq::SampleId id) {
  Experiment e = m_exp;
  e.dataKind = DataKind::Sample;
  e.sample = id;
  applyExperiment(e);
}

void MainWindow::openSynthetic(const tq::SyntheticSpec& spec) {
  Experiment e = m_exp;
  e.dataKind = DataKind::Synthetic;
  e.synth = spec;
  if (!spec.withQueries && e.querySource == tq::QuerySource::Dump) e.querySource = tq::QuerySource::LastKey;
  applyExperiment(e);
}

bool MainWindow::loadExperimentFile(const QString& path, QString* error) {
  Experiment e = m_exp;
  if (!tq::ui::loadExperimentFile(path, e, error)) return false;
  applyExperiment(e);
  return true;
}

bool MainWindow::saveExperimentFile(const QString& path, QString* error) const {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
    if (error) *error = path + ": " + f.errorString();
    return false;
  }
  f.write(QJsonDocument(m_exp.toJson()).toJson(QJsonDocument::Indented));
  return true;
}

void MainWindow::exportCurrentView() {
  auto* v = qobject_cast<PlotView*>(m_tabs->currentWidget());
  if (!v) return;
  ExportSettings s = lastExportSettings(m_opt.useSettings);
  QString target;
  if (!askExport(this, false, v->id(), s, target)) return;
  rememberExportSettings(m_opt.useSettings, s);
  QString err;
  QStringList written;
  for (auto f : s.formats) {
    const QString p = target + "." + figureSuffix(f);
    if (!saveFigure(v, p, f, s.size, s.dpi, &err)) return reportError("Export failed", err, true);
    written << p;
  }
  if (s.csv) {
    if (!saveCsv(v, target + ".csv", &err)) return reportError("Export failed", err, true);
    written << target + ".csv";
  }
  statusBar()->showMessage("wrote " + written.join(", "), 8000);
}

void MainWindow::exportAllViews() {
  ExportSettings s = lastExportSettings(m_opt.useSettings);
  QString target;
  if (!askExport(this, true, {}, s, target)) return;
  rememberExportSettings(m_opt.useSettings, s);
  QString err;
  const auto written = exportAll(m_views, target, s.formats, s.size, s.dpi, s.csv, &err);
  if (!err.isEmpty()) return reportError("Export failed", err, true);
  statusBar()->showMessage(QString("wrote %1 files to %2").arg(written.size()).arg(target), 8000);
}

void MainWindow::addRecent(const QString& path) {
  if (!m_opt.useSettings) return;
  QSettings st;
  QStringList r = st.value("recentFiles").toStringList();
  r.removeAll(path);
  r.prepend(path);
  while (r.size() > 8) r.removeLast();
  st.setValue("recentFiles", r);
  rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu() {
  m_recentMenu->clear();
  const QStringList r = m_opt.useSettings ? QSettings().value("recentFiles").toStringList() : QStringList();
  for (const QString& p : r) m_recentMenu->addAction(QFileInfo(p).fileName(), this, [this, p] { openFile(p); })->setToolTip(p);
  m_recentMenu->setEnabled(!r.isEmpty());
}

void MainWindow::saveSettings() const {
  if (!m_opt.useSettings) return;
  QSettings st;
  st.setValue("experiment", QJsonDocument(m_exp.toJson()).toJson(QJsonDocument::Compact));
  st.setValue("geometry", saveGeometry());
  st.setValue("presentation", property("presentation").toBool());
}

void MainWindow::closeEvent(QCloseEvent* ev) {
  cancelWork();
  saveSettings();
  QMainWindow::closeEvent(ev);
}

void MainWindow::dragEnterEvent(QDragEnterEvent* ev) {
  if (ev->mimeData()->hasUrls() && !ev->mimeData()->urls().isEmpty() && ev->mimeData()->urls().first().isLocalFile()) ev->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* ev) {
  const auto urls = ev->mimeData()->urls();
  if (!urls.isEmpty() && urls.first().isLocalFile()) openFile(urls.first().toLocalFile());
}

}  // namespace tq::ui
