// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// LayersView: one configuration's metric on every layer x query head of the sweep (which layers break),
/// with the per-layer mean beside it.
#include <memory>

#include "compute.h"
#include "plot_view.h"

class QCPColorScale;

namespace tq::ui {

class LayersView : public PlotView {
  Q_OBJECT
 public:
  explicit LayersView(QWidget* parent = nullptr);
  /// Renders core's layerHeadMap of the experiment's layer variant (Experiment::layerVariant).
  void setData(std::shared_ptr<const SweepOutput> s, const Experiment& current);
  void setRunning(const QString& text);
  QString csv() const override;
  int dataPoints() const override;
  /// The layer whose mean is lowest (-1 when nothing is measured), for tests and the status line.
  int worstLayer() const { return m_worstLayer; }

 private:
  QCPAxisRect* m_map = nullptr;
  QCPAxisRect* m_bars = nullptr;
  QCPColorScale* m_scale = nullptr;
  QCPTextElement* m_status = nullptr;
  QCPTextElement* m_mapTitle = nullptr;
  QString m_csv;
  int m_points = 0, m_worstLayer = -1;
};

}  // namespace tq::ui
