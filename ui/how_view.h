// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// HowItWorksView: one real key through TurboQuant.
#include "compute.h"
#include "plot_view.h"

namespace tq::ui {

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

}  // namespace tq::ui
