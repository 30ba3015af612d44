// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// DistortionView: distortion versus bits.
#include "compute.h"
#include "plot_view.h"

namespace tq::ui {

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

}  // namespace tq::ui
