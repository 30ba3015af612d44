// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// PlotView, the base of the six views: one QCustomPlot (multi-panel through its layout) with a title and
/// the caption line, so exporting a view is exporting its plot. The view sources include qcustomplot.h
/// through the private plot_common.h; tq_ui precompiles it (target_precompile_headers), so the header
/// costs its ~10 s of parsing once per build, not once per view.
#include <QString>
#include <QWidget>

class QCustomPlot;
class QCPTextElement;
class QCPColorMap;
class QCPAxisRect;
class QCPLegend;
class QTimer;
class QLabel;
class QGraphicsOpacityEffect;

namespace tq::ui {

class PlotView : public QWidget {
  Q_OBJECT
 public:
  PlotView(const QString& id, const QString& title, QWidget* parent = nullptr);
  QString id() const { return m_id; }
  QString title() const { return m_title; }
  QCustomPlot* plot() const { return m_plot; }
  /// The configuration line under every figure.
  void setCaption(const QString& caption);
  QString caption() const { return m_caption; }
  /// Larger fonts and lines (projectors).
  void setPresentation(bool on);
  bool presentation() const { return m_presentation; }
  /// The plotted data as CSV (header line + rows).
  virtual QString csv() const = 0;
  /// Number of data points currently plotted (0 = empty view).
  virtual int dataPoints() const = 0;
  /// Synchronous replot (for tests, the benchmark and exports).
  void replotNow();
  double lastReplotMs() const { return m_lastReplotMs; }
  quint64 replotCount() const { return m_replots; }  ///< replotNow() calls so far
  /// Rescales every panel to its data.
  virtual void resetZoom();
  /// Out of date: the plotted data belong to an older data set or configuration. The view is then greyed
  /// with `why` over it (after a short delay, so quick recomputations do not flicker) and is never exported.
  void setOutdated(bool on, const QString& why = QStringLiteral("recomputing…"));
  bool outdated() const { return m_outdated; }
  QString outdatedReason() const { return m_outdatedWhy; }
  /// Drops transient state (hover read-outs) before an export.
  virtual void clearTransient() {}

 signals:
  /// Attention view: the visible token region needs a finer level of detail.
  void regionRequested(int row0, int row1, int col0, int col1);
  /// A line describing the data under the mouse (also shown in the view).
  void hoverText(const QString& text);
  /// Right-click > Export.
  void exportRequested();

 protected:
  /// Builds the panels into the (cleared) plot layout, below the title row.
  QCPTextElement* titleElement() const { return m_titleEl; }
  void finishLayout();  ///< appends the caption row
  void applyStyle();
  void contextMenuEvent(QContextMenuEvent* ev) override;
  void showEvent(QShowEvent* ev) override;
  void requestReplot();  ///< now if visible, else when shown
  bool m_stale = false;
  bool m_replotQueued = false;  // a requestReplot() waiting for the event loop (replotNow() makes it a no-op)
  bool m_deferred = false;
  quint64 m_replots = 0;      // a replot held back while the view waits for its new result
  double m_lastReplotMs = 0;  // the last replotNow, for the interaction benchmark
  bool m_outdated = false;
  QString m_outdatedWhy;
  QLabel* m_banner = nullptr;
  QGraphicsOpacityEffect* m_fade = nullptr;
  QTimer* m_outdatedTimer = nullptr;
  void showOutdated(bool on);

  QCustomPlot* m_plot = nullptr;
  QCPTextElement* m_titleEl = nullptr;
  QCPTextElement* m_captionEl = nullptr;
  QString m_id, m_title, m_caption;
  bool m_presentation = false;
};

}  // namespace tq::ui
