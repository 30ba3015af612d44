// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// EstimatorView: inner-product estimator bias and variance.
#include <vector>

#include "compute.h"
#include "plot_view.h"

namespace tq::ui {

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

}  // namespace tq::ui
