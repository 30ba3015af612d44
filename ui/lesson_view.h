// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// LessonView: the guided lesson (core/explore/lesson) step by step, Back / Next, each step's figure and
/// sentences as core computed them for the loaded data. The same drawing makes the hand-out
/// (`tqstudio-cli export-lesson`: one PDF page per step, PNG / SVG per step).
#include <QList>
#include <QSize>
#include <QString>
#include <QStringList>
#include <QWidget>
#include <memory>

#include "compute.h"
#include "figure_export.h"

class QCustomPlot;
class QCPPainter;
class QLabel;
class QPushButton;

namespace tq::ui {

/// Draws one step's panels into plot (which it clears first). fontScale 1 = normal, > 1 presentation.
void renderLessonStep(QCustomPlot* plot, const tq::LessonStep& step, double fontScale = 1.0);
/// Paints a whole page (title, figure, sentences, caption) of `logical` size (96-dpi pixels) with painter.
void paintLessonPage(QCPPainter& painter, QSize logical, const tq::Lesson& lesson, size_t step, const QString& caption, QCustomPlot* scratch);
/// The hand-out: lesson.pdf (one page per step) and lesson-NN-<id>.png / .svg for the formats asked for,
/// in dir. Refuses to overwrite an existing file unless `force`. Returns the paths written; on failure
/// false with *error naming the file.
bool saveLesson(const tq::Lesson& lesson, const QString& caption, const QString& dir, const QList<FigureFormat>& formats, QSize size, int dpi,
                bool force, QStringList* written, QString* error);

class LessonView : public QWidget {
  Q_OBJECT
 public:
  explicit LessonView(QWidget* parent = nullptr);
  /// Shows a computed lesson (keeps the current step when the data changed under it).
  void setLesson(std::shared_ptr<const LessonResult> r, const QString& caption);
  /// Greys the view with a reason while a lesson for new data or settings is computed.
  void setOutdated(const QString& why);
  bool outdated() const { return m_outdated; }
  bool hasLesson() const { return m_result != nullptr; }
  const tq::Lesson* lesson() const { return m_result ? &m_result->lesson : nullptr; }
  const Experiment* experiment() const { return m_result ? &m_result->exp : nullptr; }
  int step() const { return m_step; }
  int stepCount() const;
  void setStep(int i);
  void next() { setStep(m_step + 1); }
  void back() { setStep(m_step - 1); }
  void setPresentation(bool on);
  QCustomPlot* plot() const { return m_plot; }
  QString text() const;  ///< the current step's title and sentences as shown
  QString caption() const { return m_captionText; }

 signals:
  void stepChanged(int step);

 private:
  void show_();
  std::shared_ptr<const LessonResult> m_result;
  int m_step = 0;
  bool m_outdated = false, m_presentation = false;
  QString m_captionText;
  QLabel* m_title = nullptr;
  QLabel* m_text = nullptr;
  QLabel* m_caption = nullptr;
  QLabel* m_pos = nullptr;
  QLabel* m_status = nullptr;
  QPushButton* m_back = nullptr;
  QPushButton* m_next = nullptr;
  QCustomPlot* m_plot = nullptr;
};

}  // namespace tq::ui
