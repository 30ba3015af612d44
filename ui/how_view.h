// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// HowItWorksView: one real key through TurboQuant.
#include <vector>

#include "compute.h"
#include "plot_view.h"

class QCPAbstractItem;
class QTimer;

namespace tq::ui {

class HowItWorksView : public PlotView {
  Q_OBJECT
 public:
  explicit HowItWorksView(QWidget* parent = nullptr);
  void setData(const HowItWorks& h, int keyBits);
  QString csv() const override;
  int dataPoints() const override;
  /// The walk through the key's coordinates: each step marks coordinate j in every panel and says where
  /// y_j falls (its cell, its centroid). Play advances every 400 ms and wraps; step advances one.
  void setPlaying(bool on);
  bool playing() const;
  void stepCoordinate();
  int currentCoordinate() const { return m_step; }
  QString stepText() const { return m_stepText; }

 signals:
  void playingChanged(bool on);

 private:
  void showStep();
  HowItWorks m_h;
  int m_step = -1;
  QTimer* m_timer = nullptr;
  std::vector<QCPAbstractItem*> m_stepItems;
  QString m_stepText;
  QCPAxisRect* m_rect[6] = {};
  QCPTextElement* m_sub[6] = {};
  QCPLegend* m_legend[6] = {};
  QString m_csv;
  int m_points = 0;
};

}  // namespace tq::ui
