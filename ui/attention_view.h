// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// AttentionView: exact vs TurboQuant attention heatmaps and their difference.
#include <memory>
#include <vector>

#include "compute.h"
#include "plot_view.h"

class QCPItemStraightLine;

namespace tq::ui {

class AttentionView : public PlotView {
  Q_OBJECT
 public:
  explicit AttentionView(QWidget* parent = nullptr);
  void setData(const Heatmap& h, std::shared_ptr<const DataContext> ctx, int layer, int qHead, int kvHead, const QString& queryLabel);
  /// The token studied (How it works, Estimator): a dashed row (its query) and column (its key) on every map.
  void setMarkedToken(int token);
  int markedToken() const { return m_marked; }
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
  int m_marked = -1;
  std::vector<QCPItemStraightLine*> m_markLines;
  QTimer* m_lodTimer = nullptr;
};

}  // namespace tq::ui
