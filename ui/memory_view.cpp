// SPDX-License-Identifier: GPL-3.0-or-later
// MemoryView: KV-cache memory model and measured bytes per vector.
#include "memory_view.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "plot_common.h"
#include "backend/centering.h"
#include "metrics/metrics.h"
#include "methods/methods.h"

namespace tq::ui {

// =============================================================== MemoryView
MemoryView::MemoryView(QWidget* parent) : PlotView("memory", "Memory", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  m_rect[0] = addPanel(m_plot, grid, 0, 0, "bytes per token per kv head", &m_sub[0]);
  m_rect[1] = addPanel(m_plot, grid, 0, 1, "KV cache at context", &m_sub[1]);
  m_rect[0]->axis(QCPAxis::atBottom)->setLabel("bits");
  m_rect[0]->axis(QCPAxis::atLeft)->setLabel("bytes / vector");
  bitsTicker(m_rect[0]->axis(QCPAxis::atBottom));
  m_rect[1]->axis(QCPAxis::atLeft)->setLabel("GiB (log)");
  setLogY(m_rect[1]);
  m_rect[1]->axis(QCPAxis::atLeft)->setNumberFormat("gb");
  // the legend below the panels (inside, it covered the fp16 line and the curves)
  m_legend = new QCPLegend;
  m_plot->plotLayout()->addElement(2, 0, m_legend);
  m_legend->setLayer("legend");
  m_legend->setFillOrder(QCPLegend::foColumnsFirst);
  m_legend->setWrap(4);
  m_legend->setBorderPen(Qt::NoPen);
  m_legend->setFont(baseFont(8.5));
  m_legend->setProperty("basePt", 8.5);
  grid->setColumnStretchFactors({1, 1.3});
  finishLayout();
  m_plot->plotLayout()->setRowStretchFactor(2, 0.001);
}

void MemoryView::setData(const Experiment& e, int d, size_t measuredK, size_t measuredV) {
  clearPanels(m_plot);
  m_legend->clearItems();
  m_points = 0;
  m_csv = "section,series,bits_or_model,bytes,gib,ratio_vs_fp16,ratio_vs_fp8\n";
  auto* r = m_rect[0];
  const int m = e.projDimFor(d);
  QVector<double> bits = iota(8, 1);
  struct S {
    QString name;
    QColor c;
    std::function<double(int)> f;
    Qt::PenStyle st;
  };
  const std::vector<S> ss = {
      {"keys MSE-only", modeColor(tq::KeyMode::Mse), [&](int b) { return double(tq::keyBytesPerVector(d, b, tq::KeyMode::Mse, 0)); }, Qt::SolidLine},
      {QString("keys MSE+QJL m=%1").arg(m), modeColor(tq::KeyMode::Prod), [&](int b) { return double(tq::keyBytesPerVector(d, b, tq::KeyMode::Prod, m)); }, Qt::SolidLine},
      {QString("keys QJL-only m=%1").arg(m), modeColor(tq::KeyMode::QjlOnly), [&](int b) { return double(tq::keyBytesPerVector(d, b, tq::KeyMode::QjlOnly, m)); }, Qt::DashLine},
      {"values (MSE)", kGreen, [&](int b) { return double(tq::valueBytesPerVector(d, b)); }, Qt::DotLine},
  };
  double ymax = 2.0 * d;
  for (const auto& s : ss) {
    QVector<double> y;
    for (int b = 1; b <= 8; ++b) {
      y << s.f(b);
      m_csv += QString("per_vector,%1,%2,%3,,,\n").arg(s.name).arg(b).arg(y.back());
      ++m_points;
    }
    ymax = std::max(ymax, *std::max_element(y.begin(), y.end()));
    addGraph(m_plot, r, bits, y, pen(s.c, 1.8, s.st), QCPScatterStyle(QCPScatterStyle::ssCircle, s.c, s.c, 4))->setName(s.name);
  }
  // the chosen baselines' key ledgers (core/methods: methodBytes) at this context, and centering's
  const size_t T = static_cast<size_t>(std::max<qint64>(1, e.context));
  std::vector<S> extra;
  for (tq::Method mth : e.methods) {
    if (!tq::methodHasBits(mth) || mth == tq::Method::TqMseNormCorrected) continue;  // fp8/fp16: the lines; -nc: MSE's bytes
    const QString name = mth == tq::Method::Kivi ? QString("keys KIVI G%1 R%2").arg(e.methodOptions.group).arg(e.methodOptions.window)
                         : mth == tq::Method::IntRot ? QString("keys rotated int")
                                                     : QString("keys MSE, d/2 outliers b+1");
    const QColor c = mth == tq::Method::Kivi ? QColor(148, 52, 160) : mth == tq::Method::IntRot ? QColor(120, 110, 0) : QColor(0, 120, 120);
    extra.push_back({name, c, [=](int b) { return b > tq::methodMaxBits(mth) ? NAN : tq::methodBytes(mth, b, false, T, d, e.methodOptions) / double(T); },
                     Qt::DashDotLine});
  }
  if (e.centering != tq::KeyCentering::None || e.recentWindow > 0) {
    QStringList what;
    if (e.centering != tq::KeyCentering::None) what << "centred";
    if (e.recentWindow > 0) what << QString("last %1 fp16").arg(e.recentWindow);
    const size_t recent = static_cast<size_t>(e.recentWindow);
    extra.push_back({QString("keys %1 %2").arg(keyModeLabel(e.keyMode), what.join(", ")),
                     kBlack,
                     [=](int b) { return tq::centredKeyBytes(double(tq::keyBytesPerVector(d, b, e.keyMode, e.projDim(d))), T, d, e.centering, e.centerWindow, recent); },
                     Qt::DotLine});
  }
  for (const auto& s : extra) {
    QVector<double> y;
    for (int b = 1; b <= 8; ++b) {
      y << s.f(b);
      if (std::isfinite(y.back())) m_csv += QString("per_vector,%1,%2,%3,,,\n").arg(s.name).arg(b).arg(y.back());
      ++m_points;
    }
    for (double v : y)
      if (std::isfinite(v)) ymax = std::max(ymax, v);
    addGraph(m_plot, r, bits, y, pen(s.c, 1.5, s.st), QCPScatterStyle(QCPScatterStyle::ssSquare, s.c, Qt::white, 4))->setName(s.name);
  }
  auto* f16 = addGraph(m_plot, r, {0.5, 8.5}, {2.0 * d, 2.0 * d}, pen(kGrey, 1.4, Qt::DashDotLine));
  f16->setName(QString("fp16 (%1 B)").arg(2 * d));
  auto* f8 = addGraph(m_plot, r, {0.5, 8.5}, {1.0 * d, 1.0 * d}, pen(kGrey, 1.4, Qt::DotLine));
  f8->setName(QString("fp8 (%1 B)").arg(d));
  for (int i = 0; i < m_plot->graphCount(); ++i) m_plot->graph(i)->addToLegend(m_legend);
  // current configuration, and what the engine's buffers actually held
  const double curK = double(tq::keyBytesPerVector(d, e.keyBits, e.keyMode, e.projDim(d)));
  const double curV = double(tq::valueBytesPerVector(d, e.valueBits));
  addGraph(m_plot, r, {double(e.keyBits)}, {curK}, QPen(Qt::black, 2), QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2), Qt::NoBrush, 14), QCPGraph::lsNone);
  addGraph(m_plot, r, {double(e.valueBits)}, {curV}, QPen(Qt::black, 2), QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2), Qt::NoBrush, 14), QCPGraph::lsNone);
  if (measuredK > 0) {
    auto* mk = addGraph(m_plot, r, {double(e.keyBits)}, {double(measuredK)}, QPen(kVermillion, 2), QCPScatterStyle(QCPScatterStyle::ssCross, QPen(kVermillion, 2), Qt::NoBrush, 10),
                        QCPGraph::lsNone);
    mk->setName("measured in the engine's buffers");
    mk->addToLegend(m_legend);
    if (measuredV > 0)
      addGraph(m_plot, r, {double(e.valueBits)}, {double(measuredV)}, QPen(kVermillion, 2), QCPScatterStyle(QCPScatterStyle::ssCross, QPen(kVermillion, 2), Qt::NoBrush, 10),
               QCPGraph::lsNone);
  }
  r->axis(QCPAxis::atLeft)->setRange(0, ymax * 1.08);
  const QString ledgerAt = extra.empty() ? QString() : QString("\nsquare markers: ledgers at %1 tokens").arg(T);
  m_sub[0]->setText(QString("bytes per token per kv head (d=%1)\nK%2 %3: %4 B (buffers: %5 B) · V%6: %7 B (buffers: %8 B)%9")
                        .arg(d)
                        .arg(e.keyBits)
                        .arg(keyModeLabel(e.keyMode))
                        .arg(curK)
                        .arg(measuredK)
                        .arg(e.valueBits)
                        .arg(curV)
                        .arg(measuredV)
                        .arg(ledgerAt));

  // KV cache totals per model preset
  auto* r2 = m_rect[1];
  auto* group = new QCPBarsGroup(m_plot);
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  QVector<double> keys, vf16, vf8, vtq;
  const auto& presets = tq::modelPresets();
  double gmin = 1e300, gmax = 0;
  QString chosen;
  for (size_t i = 0; i < presets.size(); ++i) {
    const auto& p = presets[i];
    tq::MemoryConfig mc;
    mc.layers = p.layers;
    mc.kvHeads = p.kvHeads;
    mc.headDim = p.headDim;
    mc.tokens = e.context;
    mc.keyBits = e.keyBits;
    mc.valueBits = e.valueBits;
    mc.keyMode = e.keyMode;
    mc.projDim = e.projDim(p.headDim);
    mc.keyMean = e.centering != tq::KeyCentering::None;
    mc.exactKeys = e.centering == tq::KeyCentering::Causal ? e.centerWindow : 0;
    mc.recentTokens = e.recentWindow;
    const auto rep = tq::memoryModel(mc);
    const double gib = 1024.0 * 1024.0 * 1024.0;
    keys << double(i + 1);
    vf16 << rep.fp16Bytes / gib;
    vf8 << rep.fp8Bytes / gib;
    vtq << rep.totalBytes / gib;
    gmin = std::min(gmin, rep.totalBytes / gib);
    gmax = std::max(gmax, rep.fp16Bytes / gib);
    const bool isChosen = QString::fromStdString(p.id).compare(e.modelPreset, Qt::CaseInsensitive) == 0;
    QString label = QString::fromStdString(p.name);
    const int dash = label.lastIndexOf('-');
    if (dash > 0) label = label.left(dash) + "\n" + label.mid(dash + 1);
    label.replace(' ', '\n');  // "SmolLM2 135M": two short lines, not one long one
    if (!label.contains('\n') && label.size() > 8) {  // "stories260K" -> "stories\n260K"
      const int digit = static_cast<int>(std::find_if(label.begin(), label.end(), [](QChar c) { return c.isDigit(); }) - label.begin());
      if (digit > 0 && digit < label.size()) label = label.left(digit) + "\n" + label.mid(digit);
    }
    ticker->addTick(double(i + 1), label + (isChosen ? "\n◆ chosen" : ""));
    m_csv += QString("kv_cache,%1,%2,%3,%4,%5,%6\n").arg("turboquant").arg(QString::fromStdString(p.id)).arg(rep.totalBytes, 0, 'f', 0).arg(rep.totalBytes / gib, 0, 'g', 6)
                 .arg(rep.ratioVsFp16, 0, 'g', 4).arg(rep.ratioVsFp8, 0, 'g', 4);
    m_csv += QString("kv_cache,fp16,%1,%2,%3,1,\n").arg(QString::fromStdString(p.id)).arg(rep.fp16Bytes, 0, 'f', 0).arg(rep.fp16Bytes / gib, 0, 'g', 6);
    m_csv += QString("kv_cache,fp8,%1,%2,%3,,1\n").arg(QString::fromStdString(p.id)).arg(rep.fp8Bytes, 0, 'f', 0).arg(rep.fp8Bytes / gib, 0, 'g', 6);
    m_points += 3;
    if (isChosen)
      chosen = QString("%1: %2 GiB fp16 → %3 GiB (×%4 vs fp16, ×%5 vs fp8)")
                   .arg(QString::fromStdString(p.name))
                   .arg(rep.fp16Bytes / gib, 0, 'g', 3)
                   .arg(rep.totalBytes / gib, 0, 'g', 3)
                   .arg(rep.ratioVsFp16, 0, 'f', 1)
                   .arg(rep.ratioVsFp8, 0, 'f', 1);
    auto* t = new QCPItemText(m_plot);
    t->setClipAxisRect(r2);
    t->setClipToAxisRect(false);
    t->position->setAxes(r2->axis(QCPAxis::atBottom), r2->axis(QCPAxis::atLeft));
    t->position->setCoords(double(i + 1) + 0.27, rep.totalBytes / gib);
    t->setPositionAlignment(Qt::AlignHCenter | Qt::AlignBottom);
    t->setFont(baseFont(7.5, true));
    t->setColor(kBlue);
    t->setText(QString("×%1").arg(rep.ratioVsFp16, 0, 'f', 1));
  }
  const QColor cols[3] = {QColor(150, 150, 150), QColor(200, 200, 200), kBlue};
  const char* names[3] = {"fp16", "fp8", "TurboQuant (current)"};
  const QVector<double>* vals[3] = {&vf16, &vf8, &vtq};
  for (int k = 0; k < 3; ++k) {
    auto* b = new QCPBars(r2->axis(QCPAxis::atBottom), r2->axis(QCPAxis::atLeft));
    b->setData(keys, *vals[k]);
    b->setWidth(0.26);
    b->setBarsGroup(group);
    b->setBrush(cols[k]);
    b->setPen(QPen(cols[k].darker(130)));
    b->setName(names[k]);
    b->setBaseValue(gmin / 3);  // = the axis floor: bars never reach outside the rect (SVG has no clip there)
    b->addToLegend(m_legend);
  }
  r2->axis(QCPAxis::atBottom)->setTicker(ticker);
  r2->axis(QCPAxis::atBottom)->setRange(0.4, presets.size() + 0.75);
  r2->axis(QCPAxis::atBottom)->setTickLabelRotation(0);
  r2->axis(QCPAxis::atLeft)->setRange(gmin / 3, gmax * 4);
  m_sub[1]->setText(QString("KV cache at %L1 tokens, all layers, K%2/V%3 %4\n%5")
                        .arg(e.context)
                        .arg(e.keyBits)
                        .arg(e.valueBits)
                        .arg(keyModeLabel(e.keyMode))
                        .arg(chosen.isEmpty() ? QString("model presets") : chosen));
  applyStyle();
  requestReplot();
}

QString MemoryView::csv() const { return m_csv; }
int MemoryView::dataPoints() const { return m_points; }

}  // namespace tq::ui
