// SPDX-License-Identifier: GPL-3.0-or-later
// LessonView and the lesson hand-out: core's lesson records drawn as figures with their sentences.
#include "lesson_view.h"

#include <QDir>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QPdfWriter>
#include <QPushButton>
#include <QSvgGenerator>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>

#include "plot_common.h"
#include "util/memory_budget.h"

namespace tq::ui {

namespace {

QColor lessonColor(tq::LessonColor c) {
  switch (c) {
    case tq::LessonColor::Ink: return kBlack;
    case tq::LessonColor::Mse: return modeColor(tq::KeyMode::Mse);
    case tq::LessonColor::Prod: return modeColor(tq::KeyMode::Prod);
    case tq::LessonColor::Qjl: return modeColor(tq::KeyMode::QjlOnly);
    case tq::LessonColor::Accent: return kVermillion;
    case tq::LessonColor::Grey: return kGrey;
    case tq::LessonColor::Kivi: return QColor(148, 52, 160);
    case tq::LessonColor::IntRot: return QColor(120, 110, 0);
    case tq::LessonColor::Fp8: return kPink;
  }
  return kBlack;
}

QString q(const std::string& s) { return QString::fromStdString(s); }

}  // namespace

void renderLessonStep(QCustomPlot* plot, const tq::LessonStep& step, double fs) {
  clearPanels(plot);
  plot->plotLayout()->clear();
  plot->setAutoAddPlottableToLegend(false);
  auto* grid = new QCPLayoutGrid;
  plot->plotLayout()->addElement(0, 0, grid);
  for (size_t pi = 0; pi < step.panels.size(); ++pi) {
    const tq::LessonPanel& P = step.panels[pi];
    QCPTextElement* title = nullptr;
    QCPAxisRect* r = addPanel(plot, grid, 0, static_cast<int>(pi), q(P.title), &title);
    title->setFont(baseFont(9.5 * fs, true));
    auto* x = r->axis(QCPAxis::atBottom);
    auto* y = r->axis(QCPAxis::atLeft);
    for (auto* ax : {x, y}) {
      ax->setLabelFont(baseFont(9 * fs));
      ax->setTickLabelFont(baseFont(8 * fs));
    }
    x->setLabel(q(P.xLabel));
    y->setLabel(q(P.yLabel));
    if (P.logY) setLogY(r);
    // the data's ranges, for the axes and for vertical lines
    double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
    bool bars = false;
    for (const auto& s : P.series) {
      for (double v : s.x)
        if (std::isfinite(v)) xlo = std::min(xlo, v), xhi = std::max(xhi, v);
      for (double v : s.y)
        if (std::isfinite(v) && (!P.logY || v > 0)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
      bars = bars || s.kind == tq::LessonSeries::Bars;
    }
    if (!std::isfinite(ylo)) ylo = 0, yhi = 1;
    if (bars && !P.logY) ylo = std::min(0.0, ylo);
    QCPLegend* legend = nullptr;
    bool vlineNamed = false;
    for (const auto& s : P.series) {
      const QColor c = lessonColor(s.color);
      QCPAbstractPlottable* pl = nullptr;
      if (s.kind == tq::LessonSeries::Bars) {
        auto* b = new QCPBars(x, y);
        b->setData(vec(s.x), vec(s.y), true);
        b->setWidth(P.xTicks.empty() && s.x.size() > 1 ? (s.x[1] - s.x[0]) * 0.85 : 0.6);
        b->setPen(Qt::NoPen);
        b->setBrush(withAlpha(c, 200));
        pl = b;
      } else if (s.kind == tq::LessonSeries::VLine) {
        for (size_t i = 0; i < s.x.size(); ++i) {
          auto* curve = new QCPCurve(x, y);
          curve->setData({s.x[i], s.x[i]}, {P.logY ? ylo / 2 : ylo - (yhi - ylo), P.logY ? yhi * 2 : yhi + (yhi - ylo)});
          curve->setPen(pen(c, 1.5 * fs, s.color == tq::LessonColor::Grey ? Qt::DotLine : Qt::SolidLine));
          if (i == 0 && !s.name.empty() && !vlineNamed) pl = curve;
        }
        vlineNamed = vlineNamed || pl;
      } else {
        QCPScatterStyle ss;
        QCPGraph::LineStyle ls = QCPGraph::lsLine;
        Qt::PenStyle ps = Qt::SolidLine;
        if (s.kind == tq::LessonSeries::Points) ss = QCPScatterStyle(QCPScatterStyle::ssDisc, c, c, 6 * fs), ls = QCPGraph::lsNone;
        if (s.kind == tq::LessonSeries::Steps) ls = QCPGraph::lsStepCenter;
        if (s.kind == tq::LessonSeries::Dashed) ps = Qt::DashLine;
        if (s.kind == tq::LessonSeries::Line) ss = QCPScatterStyle(QCPScatterStyle::ssCircle, c, Qt::white, 4 * fs);
        if (s.kind == tq::LessonSeries::Line && s.x.size() > 40) ss = QCPScatterStyle();
        pl = addGraph(plot, r, vec(s.x), vec(s.y), pen(c, 1.8 * fs, ps), ss, ls);
      }
      if (pl && !s.name.empty()) {
        pl->setName(q(s.name));
        if (!legend) {
          legend = insetLegend(r, Qt::AlignTop | Qt::AlignRight);
          legend->setFont(baseFont(8 * fs));
        }
        pl->addToLegend(legend);
      }
    }
    if (!P.xTicks.empty()) {
      // categorical bars carry their values
      for (const auto& se : P.series)
        if (se.kind == tq::LessonSeries::Bars)
          for (size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) {
            auto* t = new QCPItemText(plot);
            t->setClipAxisRect(r);
            t->position->setAxes(x, y);
            t->position->setCoords(se.x[i], se.y[i]);
            t->setPositionAlignment(Qt::AlignHCenter | Qt::AlignBottom);
            t->setFont(baseFont(8.5 * fs, true));
            t->setText(QString::number(se.y[i], 'g', 3) + (P.yLabel.empty() ? QString() : " " + q(P.yLabel)));
          }
      QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
      for (size_t i = 0; i < P.xTicks.size(); ++i) t->addTick(static_cast<double>(i + 1), q(P.xTicks[i]));
      x->setTicker(t);
      x->setRange(0.4, P.xTicks.size() + 0.6);
    } else if (P.xLabel == "bits" || P.xLabel == "key bits") {
      bitsTicker(x);
    } else if (std::isfinite(xlo)) {
      const double pad = xhi > xlo ? 0.04 * (xhi - xlo) : 0.5;
      x->setRange(xlo - pad, xhi + pad);
    }
    if (P.logY)
      y->setRange(ylo / 1.6, yhi * 1.6);
    else
      fitY(r, ylo, yhi, legend || !P.xTicks.empty() ? 0.12 : 0.06);
    if (legend && !P.logY) {  // room above the data for the legend
      const auto yr = y->range();
      y->setRange(yr.lower, yr.upper + 0.25 * (yr.upper - yr.lower));
    }
  }
}

void paintLessonPage(QCPPainter& painter, QSize size, const tq::Lesson& L, size_t step, const QString& caption, QCustomPlot* scratch) {
  const tq::LessonStep& s = L.steps.at(step);
  const int W = size.width(), H = size.height(), m = std::max(12, W / 50);
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  const double unit = W / 1280.0;  // fonts scale with the page
  QFont title = baseFont(18 * unit, true), body = baseFont(11.5 * unit), small = baseFont(8.5 * unit);
  painter.setPen(Qt::black);
  painter.setFont(title);
  const QFontMetrics tm(title);
  const QRect titleRect(m, m, W - 2 * m, tm.height());
  painter.drawText(titleRect, Qt::AlignLeft | Qt::AlignVCenter, q(s.title));
  painter.setFont(small);
  painter.drawText(titleRect, Qt::AlignRight | Qt::AlignVCenter, QString("step %1 of %2").arg(step + 1).arg(L.steps.size()));
  // sentences below the figure, the caption at the bottom
  QString text;
  for (const auto& t : s.sentences) text += (text.isEmpty() ? "" : "\n") + q(t);
  const QFontMetrics bm(body), sm(small);
  const QRect capRect(m, H - m - 2 * sm.height(), W - 2 * m, 2 * sm.height());
  const QRect probe = bm.boundingRect(QRect(0, 0, W - 2 * m, H), Qt::TextWordWrap, text);
  const int textH = std::min(probe.height() + bm.height() / 2, H / 3);
  const QRect textRect(m, capRect.top() - textH - m / 2, W - 2 * m, textH);
  const QRect fig(m, titleRect.bottom() + m / 2, W - 2 * m, std::max(80, textRect.top() - titleRect.bottom() - m));
  renderLessonStep(scratch, s, std::max(1.0, unit));
  painter.save();
  painter.translate(fig.topLeft());
  scratch->toPainter(&painter, fig.width(), fig.height());
  painter.restore();
  painter.setPen(Qt::black);
  painter.setFont(body);
  painter.drawText(textRect, Qt::TextWordWrap | Qt::AlignLeft | Qt::AlignTop, text);
  painter.setFont(small);
  painter.setPen(QColor(90, 90, 90));
  painter.drawText(capRect, Qt::TextWordWrap | Qt::AlignHCenter | Qt::AlignBottom, caption);
}

bool saveLesson(const tq::Lesson& L, const QString& caption, const QString& dir, const QList<FigureFormat>& formats, QSize size, int dpi, bool force,
                QStringList* written, QString* error) {
  auto fail = [&](const QString& msg) {
    if (error) *error = msg;
    return false;
  };
  if (L.steps.empty()) return fail("the lesson has no steps");
  if (size.width() < 320 || size.height() < 200 || size.width() > 16384 || size.height() > 16384)
    return fail(QString("page size %1x%2 is outside 320x200..16384x16384 pixels").arg(size.width()).arg(size.height()));
  if (dpi < 24 || dpi > 1200) return fail(QString("DPI %1 is outside 24..1200").arg(dpi));
  try {
    tq::checkMemory(4.0 * size.width() * size.height(), QString("a %1x%2 page").arg(size.width()).arg(size.height()).toStdString());
  } catch (const tq::BudgetError& e) {
    return fail(QString::fromStdString(e.what()));
  }
  if (!QDir().mkpath(dir)) return fail("cannot create the folder " + dir);
  // the files this hand-out writes; none is overwritten without --force
  QStringList paths;
  const bool pdf = formats.contains(FigureFormat::Pdf);
  if (pdf) paths << QDir(dir).filePath("lesson.pdf");
  auto stepPath = [&](size_t i, const QString& suffix) { return QDir(dir).filePath(QString("lesson-%1-%2.%3").arg(i + 1, 2, 10, QChar('0')).arg(q(L.steps[i].id), suffix)); };
  for (size_t i = 0; i < L.steps.size(); ++i)
    for (auto f : formats)
      if (f != FigureFormat::Pdf) paths << stepPath(i, figureSuffix(f));
  if (!force)
    for (const QString& p : paths)
      if (QFileInfo::exists(p)) return fail(p + " exists: not overwritten (--force replaces it)");
  QCustomPlot scratch;
  scratch.resize(1280, 720);
  if (pdf) {
    const QString path = paths.first();
    QPdfWriter w(path);
    w.setResolution(96);
    w.setPageSize(QPageSize(QSizeF(size.width() * 72.0 / dpi, size.height() * 72.0 / dpi), QPageSize::Point, QString(), QPageSize::ExactMatch));
    w.setPageMargins(QMarginsF(0, 0, 0, 0));
    w.setTitle("TurboQuant, step by step: " + q(L.model));
    w.setCreator("TurboQuant Studio");
    QCPPainter painter;
    if (!painter.begin(&w)) return fail("cannot write " + path);
    painter.setMode(QCPPainter::pmVectorized);
    painter.setMode(QCPPainter::pmNoCaching);
    for (size_t i = 0; i < L.steps.size(); ++i) {
      if (i > 0 && !w.newPage()) return fail("cannot add page " + QString::number(i + 1) + " to " + path);
      paintLessonPage(painter, QSize(w.width(), w.height()), L, i, caption, &scratch);
    }
    painter.end();
    if (QFileInfo(path).size() <= 0) return fail("nothing was written to " + path);
    if (written) *written << path;
  }
  for (size_t i = 0; i < L.steps.size(); ++i)
    for (auto f : formats) {
      if (f == FigureFormat::Pdf) continue;
      const QString path = stepPath(i, figureSuffix(f));
      auto draw = [&](QCPPainter& painter, QSize logical) { paintLessonPage(painter, logical, L, i, caption, &scratch); };
      QString why;
      const bool ok = f == FigureFormat::Png ? writePng(path, size, dpi, draw, &why) : writeSvg(path, size, dpi, q(L.steps[i].title), caption, draw, &why);
      if (!ok) return fail(why);
      if (QFileInfo(path).size() <= 0) return fail("nothing was written to " + path);
      if (written) *written << path;
    }
  return true;
}

// =============================================================== LessonView
LessonView::LessonView(QWidget* parent) : QWidget(parent) {
  setObjectName("lesson");
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(8, 6, 8, 6);
  m_title = new QLabel("Lesson");
  m_title->setObjectName("lessonTitle");
  m_title->setWordWrap(true);
  m_plot = new QCustomPlot(this);
  m_plot->setObjectName("lessonPlot");
  m_plot->setMinimumSize(360, 220);
  m_plot->plotLayout()->clear();
  m_text = new QLabel;
  m_text->setObjectName("lessonText");
  m_text->setWordWrap(true);
  m_text->setAlignment(Qt::AlignLeft | Qt::AlignTop);
  m_text->setTextInteractionFlags(Qt::TextSelectableByMouse);
  m_text->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Maximum);
  m_status = new QLabel;
  m_status->setObjectName("lessonStatus");
  m_status->setStyleSheet("color: #555;");
  m_caption = new QLabel;
  m_caption->setObjectName("lessonCaption");
  m_caption->setWordWrap(true);
  m_caption->setAlignment(Qt::AlignHCenter);
  m_caption->setStyleSheet("color: #555;");
  m_back = new QPushButton("◀ Back");
  m_next = new QPushButton("Next ▶");
  m_back->setToolTip("The previous step (Page Up, ↑ or ← while the Lesson is shown)");
  m_next->setToolTip("The next step (Page Down, ↓ or → while the Lesson is shown)");
  m_pos = new QLabel;
  m_pos->setAlignment(Qt::AlignCenter);
  connect(m_back, &QPushButton::clicked, this, &LessonView::back);
  connect(m_next, &QPushButton::clicked, this, &LessonView::next);
  auto* nav = new QHBoxLayout;
  nav->addWidget(m_back);
  nav->addStretch(1);
  nav->addWidget(m_pos);
  nav->addWidget(m_status);
  nav->addStretch(1);
  nav->addWidget(m_next);
  lay->addWidget(m_title);
  lay->addWidget(m_plot, 1);
  lay->addWidget(m_text);
  lay->addLayout(nav);
  lay->addWidget(m_caption);
  setPresentation(false);
  show_();
}

int LessonView::stepCount() const { return m_result ? static_cast<int>(m_result->lesson.steps.size()) : 0; }

void LessonView::setLesson(std::shared_ptr<const LessonResult> r, const QString& caption) {
  m_result = std::move(r);
  m_captionText = caption;
  m_outdated = false;
  m_step = std::clamp(m_step, 0, std::max(0, stepCount() - 1));
  show_();
}

void LessonView::setOutdated(const QString& why) {
  m_outdated = true;
  m_status->setText(" · " + why);
  show_();
}

void LessonView::setStep(int i) {
  if (!m_result) return;
  const int n = stepCount();
  if (n == 0) return;
  const int j = std::clamp(i, 0, n - 1);
  if (j == m_step) return;
  m_step = j;
  show_();
  emit stepChanged(m_step);
}

void LessonView::setPresentation(bool on) {
  m_presentation = on;
  QFont t = font();
  t.setPointSizeF(on ? 20 : 14);
  t.setBold(true);
  m_title->setFont(t);
  QFont b = font();
  b.setPointSizeF(on ? 15 : 10.5);
  m_text->setFont(b);
  show_();
}

QString LessonView::text() const { return m_title->text() + "\n" + m_text->text(); }

void LessonView::show_() {
  // an out-of-date lesson stays marked as such while the user steps through it
  m_plot->setEnabled(!m_outdated);
  m_text->setEnabled(!m_outdated);
  if (!m_outdated) m_status->clear();
  if (!m_result || m_result->lesson.steps.empty()) {
    m_title->setText("Lesson");
    m_text->setText("The lesson is computed for the loaded data's selected head…");
    m_pos->clear();
    m_back->setEnabled(false);
    m_next->setEnabled(false);
    renderLessonStep(m_plot, tq::LessonStep{});
    m_plot->replot();
    return;
  }
  const tq::Lesson& L = m_result->lesson;
  const tq::LessonStep& s = L.steps[static_cast<size_t>(m_step)];
  m_title->setText(q(s.title));
  QString t;
  for (const auto& line : s.sentences) t += (t.isEmpty() ? "" : "\n") + q(line);
  m_text->setText(t);
  m_pos->setText(QString("step %1 of %2").arg(m_step + 1).arg(L.steps.size()));
  m_back->setEnabled(m_step > 0);
  m_next->setEnabled(m_step + 1 < static_cast<int>(L.steps.size()));
  m_caption->setText(m_captionText);
  renderLessonStep(m_plot, s, m_presentation ? 1.45 : 1.0);
  m_plot->replot();
}

}  // namespace tq::ui
