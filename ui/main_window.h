// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The explorer's main window: the experiment on the left, its six views on the right, the worker
/// status at the bottom. Every control takes effect immediately; only what a change affects is recomputed
/// (on worker threads), superseded results are dropped, and the GUI thread never waits on a computation.
#include <QElapsedTimer>
#include <QList>
#include <QMainWindow>
#include <QString>
#include <memory>

#include "compute.h"
#include "experiment.h"
#include "lesson_view.h"
#include "plot_views.h"
#include "sources.h"
#include "worker.h"

class QSpinBox;
class QComboBox;
class QToolButton;
class QLabel;
class QProgressBar;
class QPushButton;
class QTabWidget;
class QTimer;
class QMenu;
class QAction;

namespace tq::ui {

struct MainWindowOptions {
  SourceOpener opener = defaultOpener();
  bool useSettings = true;  ///< read and write QSettings (tests and headless runs: off)
  bool dialogs = true;      ///< show error dialogs (non-modal); errors are always emitted too
  bool fullScreen = true;   ///< presentation mode takes the whole screen (screenshots and exports keep their size)
};

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(MainWindowOptions options = {}, QWidget* parent = nullptr);
  ~MainWindow() override;

  /// Opens the experiment's data and computes everything synchronously (start-up, headless export,
  /// screenshots): when it returns true, every view shows data. On failure the message is in *error.
  /// With syncSweep false the fidelity sweep is started in the background instead.
  bool openNow(const Experiment& e, QString* error, bool syncSweep = true);
  /// Runs the computations synchronously on the calling thread (headless).
  void computeNow(bool syncSweep = true);

  /// Opens a file in the background; on failure an error is reported and the current data stays.
  void openFile(const QString& path);
  void openSampleData(tq::SampleId id);
  void openSynthetic(const tq::SyntheticSpec& spec);
  /// Applies an experiment (controls, data); recomputes what changed.
  void applyExperiment(const Experiment& e);
  /// Help > Guide (F1): docs/GUI.md in a window; `section` (e.g. "## Keys") is scrolled to.
  void showGuide(const QString& section = {});
  bool loadExperimentFile(const QString& path, QString* error);
  bool saveExperimentFile(const QString& path, QString* error) const;

  const Experiment& experiment() const { return m_exp; }
  std::shared_ptr<const DataContext> data() const { return m_data; }
  /// The fidelity sweep shown (partial while it runs; null before the first cell).
  std::shared_ptr<const SweepOutput> sweepOutput() const { return m_sweep; }
  QList<PlotView*> views() const { return m_views; }
  PlotView* view(const QString& id) const;
  AttentionView* attentionView() const { return m_attention; }
  /// Where the last heatmap delivery's time went (the interaction benchmark's breakdown), in ms.
  struct HeatTiming {
    double compute = 0;  // the detail job until the heatmap was ready (worker thread)
    double apply = 0;    // handing it to the view and the captions (GUI thread)
    double replot = 0;   // rendering the attention view, when it was the visible one (GUI thread)
    double submitted = 0;  // from the job's submission until its heatmap reached the GUI thread (compute + waiting)
    bool keysFromCache = false;  // the heatmap's compressed keys came from the cache of compressed keys
  };
  HeatTiming lastHeatTiming() const { return m_heatTiming; }
  LessonView* lessonView() const { return m_lesson; }
  /// View > Lesson: the Lesson tab, computed for the current data and selection when out of date.
  void showLesson();
  /// Computes the lesson on the calling thread (headless: --lesson screenshots); false with a message.
  bool computeLessonNow(QString* error);
  JobRunner* sweepRunner() const { return m_sweepRunner; }
  JobRunner* detailRunner() const { return m_detailRunner; }
  QString statusText() const;
  QString backendText() const;
  bool busy() const;
  /// Caption for the current configuration.
  QString captionText() const;

  // programmatic control (keyboard shortcuts, tests, benchmark)
  void setKeyBits(int b);
  void setValueBits(int b);
  void setKeyMode(tq::KeyMode m);
  void setLayer(int l);
  void setHead(int h);
  void setSeed(quint64 s);
  void setQuerySource(tq::QuerySource q);
  void setBackendChoice(tq::BackendChoice c);
  void setPresentation(bool on);
  void cancelWork();
  /// Re-runs everything (F5).
  void recomputeAll();

  /// Export dialogs / headless export.
  void exportCurrentView();
  void exportAllViews();

 signals:
  /// New data is loaded (and the first detail for it computed).
  void dataLoaded();
  /// Views got new results from a detail job (the visible view is replotted).
  void detailApplied();
  void sweepApplied();
  void errorOccurred(const QString& message);
  void workCancelled();

 protected:
  void closeEvent(QCloseEvent* ev) override;
  void dragEnterEvent(QDragEnterEvent* ev) override;
  void dropEvent(QDropEvent* ev) override;

 private:
  void buildUi();
  void buildMenus();
  void syncControls();  ///< experiment -> controls (signals blocked)
  void onControl();     ///< controls -> experiment, dirty flags
  void markDirty(int parts, bool sweep, bool memory);
  void flush();  ///< submits what is dirty
  void submitDetail(int parts);
  void submitSweep();
  void applyDetail(const DetailResult& r);
  void applySweep(std::shared_ptr<const SweepOutput> s);
  void refreshMemory();
  void refreshCaptions();
  void setData(std::shared_ptr<const DataContext> d, const Experiment& e);
  void adaptToData();  ///< ranges of the selection controls, query source fallback
  void reportError(const QString& where, const QString& message, bool dialog);
  void clearError();  ///< a success clears an older error from the status bar
  void addRecent(const QString& path);
  void rebuildRecentMenu();
  void updateStatus();
  void saveSettings() const;

  MainWindowOptions m_opt;
  Experiment m_exp;
  std::shared_ptr<const DataContext> m_data;
  HeatRegion m_region;
  DetailResult m_detail;  ///< merged latest parts
  std::shared_ptr<const SweepOutput> m_sweep;
  bool m_haveDetail = false;
  bool m_haveMemory = false;

  JobRunner* m_detailRunner = nullptr;
  JobRunner* m_sweepRunner = nullptr;
  JobRunner* m_loadRunner = nullptr;
  JobRunner* m_lessonRunner = nullptr;
  LessonView* m_lesson = nullptr;
  bool m_lessonDirty = true;  ///< the lesson shown is not of the current data / selection
  void submitLesson();
  bool lessonActive() const;
  QString captionFor(const Experiment& e) const;
  QTimer* m_flushTimer = nullptr;
  int m_dirtyParts = 0;
  bool m_dirtySweep = false, m_dirtyMemory = false;
  QElapsedTimer m_sweepClock, m_detailClock;
  HeatTiming m_heatTiming;
  double m_lastDetailSeconds = 0, m_lastSweepSeconds = 0;
  QString m_backendNote, m_backendName, m_device;
  QString m_lastError;

  // controls
  QLabel* m_dataName = nullptr;
  QLabel* m_keyNote = nullptr;
  QLabel* m_dataShape = nullptr;
  QSpinBox* m_keyBits = nullptr;
  QSpinBox* m_valueBits = nullptr;
  QComboBox* m_keyMode = nullptr;
  QComboBox* m_proj = nullptr;
  QSpinBox* m_customProj = nullptr;
  QComboBox* m_rotation = nullptr;
  QComboBox* m_centering = nullptr;
  QComboBox* m_qjlMatrix = nullptr;
  QToolButton* m_methods = nullptr;  ///< baselines beside TurboQuant (a menu of checkable actions)
  QComboBox* m_fidelityX = nullptr;
  QComboBox* m_layerMetric = nullptr;
  QComboBox* m_layerMethod = nullptr;
  QComboBox* m_compare = nullptr;  ///< A/B: configuration B of the attention view (a method name, "tq" or "none")
  QSpinBox* m_compareBits = nullptr;
  QSpinBox* m_recentWindow = nullptr;
  QString m_methodsHelp;
  QComboBox* m_law = nullptr;
  QSpinBox* m_seed = nullptr;
  QComboBox* m_backend = nullptr;
  QLabel* m_backendUsed = nullptr;
  QSpinBox* m_layer = nullptr;
  QSpinBox* m_head = nullptr;
  QLabel* m_gqa = nullptr;
  QComboBox* m_querySource = nullptr;
  QSpinBox* m_queryPos = nullptr;
  QComboBox* m_heatMode = nullptr;
  QSpinBox* m_sweepCells = nullptr;
  QComboBox* m_model = nullptr;
  QSpinBox* m_context = nullptr;
  QTabWidget* m_tabs = nullptr;
  QList<PlotView*> m_views;
  AttentionView* m_attention = nullptr;
  FidelityView* m_fidelity = nullptr;
  LayersView* m_layers = nullptr;
  MemoryView* m_memory = nullptr;
  DistortionView* m_distortion = nullptr;
  EstimatorView* m_estimator = nullptr;
  HowItWorksView* m_how = nullptr;
  // status bar
  QProgressBar* m_progress = nullptr;
  QPushButton* m_cancel = nullptr;
  QLabel* m_statusLabel = nullptr;
  QLabel* m_backendLabel = nullptr;
  QLabel* m_elapsedLabel = nullptr;
  QMenu* m_recentMenu = nullptr;
  QAction* m_presentationAction = nullptr;
  QWidget* m_sidePanel = nullptr;
  bool m_syncing = false;
};

/// Writes every view of the window (PNG/SVG/PDF at size and dpi, plus CSV) into dir; returns the paths.
QStringList exportAll(const QList<PlotView*>& views, const QString& dir, const QList<FigureFormat>& formats, QSize size, int dpi, bool csv,
                      QString* error);

}  // namespace tq::ui
