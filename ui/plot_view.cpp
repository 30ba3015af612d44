// SPDX-License-Identifier: GPL-3.0-or-later
// PlotView: the base of every view (plot, title, caption, presentation style, out-of-date banner).
#include "plot_view.h"

#include <cstdlib>

#include <QContextMenuEvent>
#include <QElapsedTimer>
#include <QGraphicsOpacityEffect>
#include <QLabel>
#include <QMenu>
#include <QTimer>
#include <QVBoxLayout>
#include <algorithm>

#include "plot_common.h"

namespace tq::ui {

// =============================================================== PlotView
PlotView::PlotView(const QString& id, const QString& title, QWidget* parent) : QWidget(parent), m_id(id), m_title(title) {
  setObjectName(id);
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  m_plot = new QCustomPlot(this);
  m_plot->setObjectName(id + "Plot");
  lay->addWidget(m_plot);
  m_plot->plotLayout()->clear();
  m_plot->setAutoAddPlottableToLegend(false);
  m_plot->setNoAntialiasingOnDrag(true);
  m_plot->setPlottingHint(QCP::phCacheLabels, true);
  m_titleEl = textElement(m_plot, title, 12.5, true);
  m_plot->plotLayout()->addElement(0, 0, m_titleEl);
  m_plot->setMinimumSize(360, 260);
  m_banner = new QLabel(this);
  m_banner->setObjectName(id + "Outdated");
  m_banner->setAlignment(Qt::AlignCenter);
  m_banner->setStyleSheet(
      "QLabel { background: rgba(255,255,255,225); color: #333; border: 1px solid #999; border-radius: 4px; padding: 6px 14px; font-weight: bold; }");
  m_banner->hide();
  m_outdatedTimer = new QTimer(this);
  m_outdatedTimer->setSingleShot(true);
  m_outdatedTimer->setInterval(150);
  connect(m_outdatedTimer, &QTimer::timeout, this, [this] { showOutdated(m_outdated); });
}

void PlotView::setOutdated(bool on, const QString& why) {
  m_outdated = on;
  m_outdatedWhy = on ? why : QString();
  m_banner->setText(why);
  if (!on) {
    m_outdatedTimer->stop();
    showOutdated(false);
    if (m_deferred) requestReplot();  // what changed meanwhile (a replotNow() in the same pass makes this a no-op)
  } else if (m_banner->isVisible()) {
    showOutdated(true);  // already greyed: only the text changes
  } else {
    m_outdatedTimer->start();
  }
}

void PlotView::showOutdated(bool on) {
  if (on) {
    if (!m_fade) {
      m_fade = new QGraphicsOpacityEffect(m_plot);
      m_fade->setOpacity(0.3);
      m_plot->setGraphicsEffect(m_fade);  // owned by m_plot from here on
    }
    m_fade->setEnabled(true);
    if (m_deferred) replotNow();  // greyed, with what changed meanwhile
    m_banner->adjustSize();
    m_banner->move((width() - m_banner->width()) / 2, std::max(0, height() / 3 - m_banner->height() / 2));
    m_banner->show();
    m_banner->raise();
  } else {
    if (m_fade) m_fade->setEnabled(false);
    m_banner->hide();
  }
}

void PlotView::finishLayout() {
  m_captionEl = textElement(m_plot, m_caption.isEmpty() ? QString(" ") : m_caption, 8.5, false, QColor(70, 70, 70));
  m_plot->plotLayout()->addElement(m_plot->plotLayout()->rowCount(), 0, m_captionEl);
  applyStyle();
}

void PlotView::setCaption(const QString& caption) {
  if (caption == m_caption && m_captionEl) return;  // unchanged: no replot
  m_caption = caption;
  if (m_captionEl) {
    // a long caption (a long model name) goes on two lines, split at the " · " nearest its middle, so
    // that it is not cut at both ends of a 1366-pixel window or a figure
    QString shown = caption;
    if (caption.size() > 140) {
      int best = -1;
      for (int i = caption.indexOf(" · "); i >= 0; i = caption.indexOf(" · ", i + 1))
        if (best < 0 || std::abs(i - caption.size() / 2) < std::abs(best - caption.size() / 2)) best = i;
      if (best > 0) shown = caption.left(best) + "\n" + caption.mid(best + 3);
    }
    m_captionEl->setText(shown);
  }
  requestReplot();
}

void PlotView::setPresentation(bool on) {
  m_presentation = on;
  applyStyle();
  requestReplot();
}

void PlotView::applyStyle() {
  const double s = m_presentation ? 1.45 : 1.0;
  for (auto* r : m_plot->axisRects()) {
    for (auto* ax : r->axes()) {
      ax->setTickLabelFont(baseFont(8.5 * s));
      ax->setLabelFont(baseFont(9.5 * s));
      QPen bp = ax->basePen();
      bp.setWidthF(s);
      ax->setBasePen(bp);
    }
    for (auto* el : r->insetLayout()->elements(false))
      if (auto* lg = qobject_cast<QCPLegend*>(el)) lg->setFont(baseFont(lg->property("basePt").toDouble() * s));
  }
  for (auto* el : m_plot->plotLayout()->elements(true)) {
    if (auto* t = qobject_cast<QCPTextElement*>(el)) {
      const double pt = t->property("basePt").toDouble();
      if (pt > 0) {
        QFont f = t->font();
        f.setPointSizeF(pt * s);
        t->setFont(f);
      }
    } else if (auto* lg = qobject_cast<QCPLegend*>(el)) {
      lg->setFont(baseFont(lg->property("basePt").toDouble() * s));
    } else if (auto* cs = qobject_cast<QCPColorScale*>(el)) {
      cs->axis()->setTickLabelFont(baseFont(8.5 * s));
      cs->axis()->setLabelFont(baseFont(9.5 * s));
    }
  }
  for (int i = 0; i < m_plot->plottableCount(); ++i) {
    auto* pl = m_plot->plottable(i);
    const double bw = pl->property("baseWidth").toDouble();
    if (bw > 0) {
      QPen p = pl->pen();
      p.setWidthF(bw * (m_presentation ? 1.8 : 1.0));
      pl->setPen(p);
    }
  }
}

void PlotView::replotNow() {
  ++m_replots;
  m_stale = false;
  m_replotQueued = false;
  m_deferred = false;
  static const bool profile = qEnvironmentVariableIsSet("TQ_PROFILE");
  QElapsedTimer t;
  t.start();
  m_plot->replot(QCustomPlot::rpImmediateRefresh);
  m_lastReplotMs = t.nsecsElapsed() / 1e6;
  if (profile) qInfo("replot %s: %.1f ms (layers drawn in %.1f ms)", qPrintable(objectName()), m_lastReplotMs, m_plot->replotTime());
}

void PlotView::requestReplot() {
  // Hidden tabs are replotted when shown: a change then costs only the visible view's rendering.
  if (isVisible() && m_outdated && !m_banner->isVisible()) {
    // Waiting for its new result (within the 150 ms before the banner greys it): drawing now would show the
    // previous result under the new caption; it is drawn when the result arrives or the banner appears.
    m_deferred = true;
  } else if (isVisible()) {
    // Queued (several changes in one pass of the event loop draw once), and skipped when replotNow() ran
    // meanwhile: QCustomPlot's own queued replot would draw again after it (a visible view was drawn twice
    // per detail delivery, ~9 ms on the 2-core machine)
    m_stale = false;
    static const bool qcpQueued = qEnvironmentVariableIsSet("TQ_QCP_QUEUED_REPLOT");  // the former path, for comparisons
    if (qcpQueued) {
      m_plot->replot(QCustomPlot::rpQueuedReplot);
    } else if (!m_replotQueued) {
      m_replotQueued = true;
      QTimer::singleShot(0, this, [this] {
        if (!m_replotQueued) return;
        m_replotQueued = false;
        if (m_outdated && !m_banner->isVisible())
          m_deferred = true;  // marked out of date since the request
        else
          replotNow();
      });
    }
  } else {
    m_stale = true;
  }
}

void PlotView::showEvent(QShowEvent* ev) {
  QWidget::showEvent(ev);
  if (m_stale) replotNow();
}

void PlotView::resetZoom() {
  for (auto* r : m_plot->axisRects())
    for (auto* ax : r->axes(QCPAxis::atBottom | QCPAxis::atLeft)) ax->rescale(true);
  requestReplot();
}

void PlotView::contextMenuEvent(QContextMenuEvent* ev) {
  QMenu menu(this);
  menu.addAction("Export this view…", this, [this] { emit exportRequested(); });
  menu.addAction("Reset zoom", this, [this] { resetZoom(); });
  menu.exec(ev->globalPos());
}

}  // namespace tq::ui
