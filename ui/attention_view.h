// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// AttentionView: exact vs TurboQuant attention heatmaps and their difference; with A/B (Experiment::compare)
/// exact, A, B and A − B.
#include <memory>
#include <vector>

#include "compute.h"
#include "plot_view.h"

class QCPItemStraightLine;
class QCPLayoutGrid;
class QCPColorScale;
class QCPLayoutElement;

namespace tq::ui {
class HeatColorMap;
}

namespace tq::ui {

class AttentionView : public PlotView {
  Q_OBJECT
 public:
  explicit AttentionView(QWidget* parent = nullptr);
  ~AttentionView() override;
  void setData(const Heatmap& h, std::shared_ptr<const DataContext> ctx, int layer, int qHead, int kvHead, const QString& queryLabel);
  /// The token studied (How it works, Estimator): a dashed row (its query) and column (its key) on every map.
  void setMarkedToken(int token);
  int markedToken() const { return m_marked; }
  QString csv() const override;
  int dataPoints() const override;
  const Heatmap& heatmap() const { return m_heat; }
  /// The hover line for a point in plot coordinates (every panel shares them).
  QString describe(double keyCoord, double queryCoord) const;
  /// Whether the map shows A/B (four panels).
  bool comparing() const { return m_ab; }
  /// Zooms all panels to a token range (linked), as a mouse wheel would.
  void zoomTo(double col0, double col1, double row0, double row1);
  void resetZoom() override;
  void clearTransient() override;

 private:
  void onRangeChanged();
  void onMouseMove(QMouseEvent* ev);
  /// Three panels (exact, approx, approx − exact) or four (exact, A, B, A − B).
  void arrangePanels(bool ab);
  // panels: 0 exact, 1 A (TurboQuant), 2 B, 3 difference
  static constexpr int kPanels = 4;
  QCPLayoutGrid* m_grid = nullptr;
  QCPAxisRect* m_rect[kPanels] = {};
  HeatColorMap* m_map[kPanels] = {};
  QCPColorScale* m_scaleA = nullptr;
  QCPColorScale* m_scaleD = nullptr;
  QCPTextElement* m_scaleTitle[2] = {};
  QCPTextElement* m_hoverEl = nullptr;
  QCPTextElement* m_panelTitle[kPanels] = {};
  bool m_ab = true;  // arranged in the constructor for three
  Heatmap m_heat;
  std::shared_ptr<const DataContext> m_data;
  bool m_syncing = false;
  int m_seq = 0;
  int m_marked = -1;
  std::vector<QCPItemStraightLine*> m_markLines;
  QTimer* m_lodTimer = nullptr;
};

}  // namespace tq::ui
