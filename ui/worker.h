// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// A worker QThread that runs one job at a time. Every submit() gets a generation number; a newer submit
/// supersedes older ones (the running job is asked to stop through its progress callback, queued ones are
/// skipped) and results of superseded runs are dropped, never shown.
#include <QElapsedTimer>
#include <QObject>
#include <QString>
#include <QThread>
#include <atomic>
#include <functional>
#include <memory>

#include "compute.h"

namespace tq::ui {

using JobPtr = std::shared_ptr<const JobOutput>;

class JobRunner : public QObject {
  Q_OBJECT
 public:
  /// The job runs on the worker thread; it must call progress() now and then and stop (return or throw)
  /// when it returns false.
  using Job = std::function<JobPtr(const tq::ProgressFn& progress)>;
  /// A job that also delivers partial results (from any thread): each arrives as partial() on the GUI
  /// thread unless the job has been superseded or cancelled meanwhile.
  using PartialFn = std::function<void(JobPtr partial)>;
  using ProgressiveJob = std::function<JobPtr(const tq::ProgressFn& progress, const PartialFn& partial)>;

  /// `nice` > 0 lowers the worker thread's CPU share below the GUI thread's (Linux: its nice value is
  /// raised by `nice`, and the threads it starts inherit it; elsewhere ignored): a job on every core then no longer
  /// delays the GUI thread's drawing. The environment variable TQ_WORKER_NICE=0 turns it off.
  explicit JobRunner(const QString& name, QObject* parent = nullptr, int nice = 0);
  ~JobRunner() override;

  /// Queues a job; supersedes every earlier one. Returns its generation.
  quint64 submit(Job job);
  quint64 submit(ProgressiveJob job);
  /// Stops the current job (and drops queued ones); emits cancelled() when it has stopped.
  void cancel();
  bool busy() const { return m_pending.load() > 0; }
  quint64 latest() const { return m_latest->load(); }

 signals:
  void started(quint64 gen);
  void progress(quint64 gen, qulonglong done, qulonglong total);
  void partial(quint64 gen, tq::ui::JobPtr out);
  void finished(quint64 gen, tq::ui::JobPtr out, double seconds);
  void failed(quint64 gen, const QString& message);
  void cancelled(quint64 gen);
  /// A result arrived for a superseded generation and was discarded.
  void dropped(quint64 gen);

 private:
  void run(quint64 gen, const ProgressiveJob& job);

  QThread m_thread;
  QObject* m_exec = nullptr;
  std::shared_ptr<std::atomic<quint64>> m_latest;
  std::shared_ptr<std::atomic<quint64>> m_cancelledUpTo;
  std::atomic<int> m_pending{0};
  std::atomic<int> m_niceApplied{-1};  ///< by how much the worker thread's nice value was raised

 public:
  /// By how much the worker thread's nice value was raised (0: unchanged; -1 until the thread has started).
  int niceApplied() const { return m_niceApplied.load(); }
};

}  // namespace tq::ui

Q_DECLARE_METATYPE(tq::ui::JobPtr)
