// SPDX-License-Identifier: GPL-3.0-or-later
#include "worker.h"

#include "compute.h"

#include <algorithm>
#include <QMetaObject>
#include <QtGlobal>
#include <QPointer>
#include <chrono>
#include <exception>
#ifdef __linux__
#include <cerrno>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tq::ui {

namespace {
/// Raises the calling thread's nice value by `nice` (Linux: per thread, inherited by the threads it
/// starts). Returns the increase applied, 0 when unchanged.
int lowerThisThread(int nice) {
  if (qEnvironmentVariableIsSet("TQ_WORKER_NICE")) nice = nice > 0 ? qEnvironmentVariableIntValue("TQ_WORKER_NICE") : 0;
  if (nice <= 0) return 0;
#ifdef __linux__
  // relative to the thread's current value: raising it needs no privilege, whatever the process runs at
  const auto tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);
  if (errno == 0 && setpriority(PRIO_PROCESS, tid, std::min(19, now + nice)) == 0) return std::min(19, now + nice) - now;
#endif
  return 0;
}
}  // namespace

JobRunner::JobRunner(const QString& name, QObject* parent, int nice)
    : QObject(parent),
      m_latest(std::make_shared<std::atomic<quint64>>(0)),
      m_cancelledUpTo(std::make_shared<std::atomic<quint64>>(0)) {
  m_thread.setObjectName(name);
  m_exec = new QObject;
  m_exec->moveToThread(&m_thread);
  connect(&m_thread, &QThread::finished, m_exec, &QObject::deleteLater);
  // on the worker thread, before its first job
  connect(&m_thread, &QThread::started, m_exec, [this, nice] { m_niceApplied = lowerThisThread(nice); }, Qt::DirectConnection);
  // on the worker thread, before wait() returns: its backends go while the process is fully alive
  connect(&m_thread, &QThread::finished, m_exec, [] { releaseThreadBackends(); }, Qt::DirectConnection);
  m_thread.start();
}

JobRunner::~JobRunner() {
  m_cancelledUpTo->store(~quint64(0));
  m_thread.quit();
  m_thread.wait();
}

quint64 JobRunner::submit(Job job) {
  return submit(ProgressiveJob([job = std::move(job)](const tq::ProgressFn& p, const PartialFn&) { return job(p); }));
}

quint64 JobRunner::submit(ProgressiveJob job) {
  const quint64 gen = m_latest->fetch_add(1) + 1;
  ++m_pending;
  QMetaObject::invokeMethod(m_exec, [this, gen, job = std::move(job)] { run(gen, job); }, Qt::QueuedConnection);
  return gen;
}

void JobRunner::cancel() { m_cancelledUpTo->store(m_latest->load()); }

void JobRunner::run(quint64 gen, const ProgressiveJob& job) {
  // Runs on the worker thread. `this` outlives the thread (the destructor joins it).
  auto latest = m_latest;
  auto cancelledUpTo = m_cancelledUpTo;
  auto live = [=] { return gen == latest->load() && gen > cancelledUpTo->load(); };
  auto post = [this](auto fn) { QMetaObject::invokeMethod(this, std::move(fn), Qt::QueuedConnection); };
  if (!live()) {
    // Cancelled before it started: the newest run says so (its owner marks its view out of date and
    // recomputes when asked); a run superseded by a newer one is only dropped.
    post([this, gen] {
      --m_pending;  // busy until the outcome is reported: a caller that waits for !busy() has seen it
      if (gen == m_latest->load() && gen <= m_cancelledUpTo->load())
        emit cancelled(gen);
      else
        emit dropped(gen);
    });
    return;
  }
  post([this, gen] { emit started(gen); });
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  const tq::ProgressFn reporter = [&, gen](size_t done, size_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last > std::chrono::milliseconds(40) || done == total) {
      last = now;
      post([this, gen, done, total] { emit progress(gen, done, total); });
    }
    return live();
  };
  const PartialFn partialFn = [this, gen, live, post](JobPtr p) {
    if (!live() || !p) return;
    post([this, gen, p] {
      if (gen == m_latest->load() && gen > m_cancelledUpTo->load()) emit partial(gen, p);
    });
  };
  const auto t0 = std::chrono::steady_clock::now();
  JobPtr out;
  QString error;
  try {
    out = job(reporter, partialFn);
  } catch (const std::exception& ex) {
    error = QString::fromStdString(ex.what());
  } catch (...) {
    error = "unknown error";
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const bool wasCancelled = gen <= cancelledUpTo->load();
  post([this, gen, out, error, secs, wasCancelled] {
    --m_pending;
    if (wasCancelled || gen <= m_cancelledUpTo->load()) {
      emit cancelled(gen);
    } else if (gen != m_latest->load()) {
      emit dropped(gen);
    } else if (!error.isEmpty() || !out) {
      emit failed(gen, error.isEmpty() ? QString("the job returned nothing") : error);
    } else {
      emit finished(gen, out, secs);
    }
  });
}

}  // namespace tq::ui
