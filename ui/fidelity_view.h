// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// FidelityView: fidelity versus key bits (the sweep).
#include <memory>
#include <vector>

#include "compute.h"
#include "plot_view.h"

namespace tq::ui {

class FidelityView : public PlotView {
  Q_OBJECT
 public:
  explicit FidelityView(QWidget* parent = nullptr);
  /// Renders s->curves; the CSV (csv()) is written from s->result when asked for (the CLI's table).
  void setData(std::shared_ptr<const SweepOutput> s, const Experiment& current);
  void setRunning(const QString& text);  ///< shown while the sweep runs
  QString csv() const override;
  int dataPoints() const override;
  /// Points on the Pareto frontier of the first panel (0 on the key-bits axis).
  int frontierPoints() const { return m_frontier; }
  /// The hover text of the point nearest (x, y) in data coordinates of panel `panel` (tests).
  QString hoverTextNear(int panel, double x, double y) const;

 private:
  std::vector<QCPAxisRect*> m_rects;
  std::shared_ptr<const SweepOutput> m_sweep;
  int m_points = 0;
  int m_frontier = 0;
  struct HoverPoint {
    QCPAxisRect* rect;
    double x, y;
    QString text;
  };
  std::vector<HoverPoint> m_hover;
  QCPLegend* m_legend = nullptr;
  QCPTextElement* m_status = nullptr;
};

}  // namespace tq::ui
