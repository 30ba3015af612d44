// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// MemoryView: KV-cache memory.
#include <cstddef>

#include "compute.h"
#include "plot_view.h"

namespace tq::ui {

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

}  // namespace tq::ui
