// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The six views of the explorer. Each view is one QCustomPlot (multi-panel through its layout) with a
/// title and the caption line, so exporting a view is exporting its plot. Only plot_views.cpp includes
/// qcustomplot.h (each translation unit that does costs ~10 s to compile).
#include <QSize>
#include <QString>
#include <QWidget>
#include <memory>
#include <vector>

#include "compute.h"

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

class AttentionView : public PlotView {
  Q_OBJECT
 public:
  explicit AttentionView(QWidget* parent = nullptr);
  void setData(const Heatmap& h, std::shared_ptr<const DataContext> ctx, int layer, int qHead, int kvHead, const QString& queryLabel);
  QString csv() const override;
  int dataPoints() const override;
  const Heatmap& heatmap() const { return m_heat; }
  /// The hover line for a point in the given panel's plot coordinates (0 exact, 1 TurboQuant, 2 difference).
  QString describe(double keyCoord, double queryCoord) const;
  /// Zooms all three panels to a token range (linked), as a mouse wheel would.
  void zoomTo(double col0, double col1, double row0, double row1);
  void resetZoom() override;
  void clearTransient() override;

 private:
  void onRangeChanged();
  void onMouseMove(QMouseEvent* ev);
  QCPAxisRect* m_rect[3] = {nullptr, nullptr, nullptr};
  QCPColorMap* m_map[3] = {nullptr, nullptr, nullptr};
  QCPTextElement* m_hoverEl = nullptr;
  QCPTextElement* m_panelTitle[3] = {nullptr, nullptr, nullptr};
  Heatmap m_heat;
  std::shared_ptr<const DataContext> m_data;
  bool m_syncing = false;
  int m_seq = 0;
  QTimer* m_lodTimer = nullptr;
};

class FidelityView : public PlotView {
  Q_OBJECT
 public:
  explicit FidelityView(QWidget* parent = nullptr);
  /// Renders s->curves; the CSV (csv()) is written from s->result when asked for (the CLI's table).
  void setData(std::shared_ptr<const SweepOutput> s, const Experiment& current);
  void setRunning(const QString& text);  ///< shown while the sweep runs
  QString csv() const override;
  int dataPoints() const override;

 private:
  std::vector<QCPAxisRect*> m_rects;
  std::shared_ptr<const SweepOutput> m_sweep;
  int m_points = 0;
  QCPLegend* m_legend = nullptr;
  QCPTextElement* m_status = nullptr;
};

class MemoryView : public PlotView {
  Q_OBJECT
 public:
  explicit MemoryView(QWidget* parent = nullptr);
  /// headDim of the loaded data; measured bytes per vector (0 = unknown) from the engine's buffers.
  void setData(const Experiment& e, int headDim, size_t measuredKeyBytes, size_t measuredValueBytes);
  QString csv() const override;
  int dataPoints() const override;

 private:
  QCPAxisRect* m_rect[2] = {nullptr, nullptr};
  QCPTextElement* m_sub[2] = {nullptr, nullptr};
  QCPLegend* m_legend = nullptr;
  QString m_csv;
  int m_points = 0;
};

class DistortionView : public PlotView {
  Q_OBJECT
 public:
  explicit DistortionView(QWidget* parent = nullptr);
  void setData(const Distortion& d, int currentBits);
  QString csv() const override;
  int dataPoints() const override;

 private:
  QCPAxisRect* m_rect = nullptr;
  QCPLegend* m_legend = nullptr;
  QString m_csv;
  int m_points = 0;
};

class EstimatorView : public PlotView {
  Q_OBJECT
 public:
  explicit EstimatorView(QWidget* parent = nullptr);
  void setData(const std::vector<EstimatorSeries>& s, tq::KeyMode current, int bits);
  QString csv() const override;
  int dataPoints() const override;

 private:
  QCPAxisRect* m_rect[2] = {nullptr, nullptr};
  QCPTextElement* m_sub[2] = {nullptr, nullptr};
  QCPLegend* m_legend = nullptr;
  std::vector<EstimatorSeries> m_series;  // CSV is built on demand (it can be large)
  int m_points = 0;
};

class HowItWorksView : public PlotView {
  Q_OBJECT
 public:
  explicit HowItWorksView(QWidget* parent = nullptr);
  void setData(const HowItWorks& h, int keyBits);
  QString csv() const override;
  int dataPoints() const override;

 private:
  QCPAxisRect* m_rect[6] = {};
  QCPTextElement* m_sub[6] = {};
  QCPLegend* m_legend[6] = {};
  QString m_csv;
  int m_points = 0;
};

// ------------------------------------------------------------------ export
enum class FigureFormat { Png, Svg, Pdf };
/// "png" / "svg" / "pdf" (case-insensitive); false otherwise.
bool parseFigureFormat(const QString& s, FigureFormat* f);
QString figureSuffix(FigureFormat f);

/// Renders a view to a file: PNG of exactly size pixels (dpi stored in the file), SVG with a size x px
/// canvas, PDF with a page of size / dpi inches. No dialogs; returns false with a message on failure.
bool saveFigure(PlotView* view, const QString& path, FigureFormat format, QSize size, int dpi, QString* error);
/// Writes view->csv() to path.
bool saveCsv(PlotView* view, const QString& path, QString* error);

}  // namespace tq::ui
