// SPDX-License-Identifier: GPL-3.0-or-later
// JobRunner: results arrive, superseded runs are dropped, cancel stops promptly, errors are reported.
#include <QSignalSpy>
#include <QtTest/QtTest>
#include <atomic>
#include <chrono>
#include <thread>

#include "worker.h"
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

using namespace tq::ui;

namespace {
struct IntOut : JobOutput {
  explicit IntOut(int v) : value(v) {}
  int value;
};
/// A job that works for up to `ms`, asking the runner whether to continue every millisecond.
JobRunner::Job slowJob(int value, int ms, std::atomic<int>* steps = nullptr) {
  return [=](const tq::ProgressFn& progress) -> JobPtr {
    for (int i = 0; i < ms; ++i) {
      if (!progress(static_cast<size_t>(i), static_cast<size_t>(ms))) return std::make_shared<IntOut>(-1);
      if (steps) ++*steps;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::make_shared<IntOut>(value);
  };
}
}  // namespace

class TestWorker : public QObject {
  Q_OBJECT
 private slots:
  void finishes() {
    JobRunner r("t");
    QSignalSpy done(&r, &JobRunner::finished);
    const quint64 g = r.submit(slowJob(7, 5));
    QVERIFY(done.wait(5000));
    QCOMPARE(done.first().at(0).toULongLong(), g);
    auto out = done.first().at(1).value<JobPtr>();
    QCOMPARE(std::dynamic_pointer_cast<const IntOut>(out)->value, 7);
    QVERIFY(!r.busy());
  }
  void workerThreadsYieldToTheGuiThread() {
#ifndef __linux__
    QSKIP("thread nice values are Linux's");
#else
    if (qEnvironmentVariableIsSet("TQ_WORKER_NICE")) QSKIP("TQ_WORKER_NICE is set");
    auto niceOfThisThread = [] { return getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid))); };
    const int gui = niceOfThisThread();
    if (gui > 14) QSKIP("the test runs at nice > 14");
    std::atomic<int> worker{-100}, child{-100};
    JobRunner r("t", nullptr, 5);
    QSignalSpy done(&r, &JobRunner::finished);
    r.submit([&](const tq::ProgressFn&) -> JobPtr {
      worker = niceOfThisThread();
      std::thread t([&] { child = niceOfThisThread(); });  // as parallelRanges starts its threads
      t.join();
      return std::make_shared<IntOut>(0);
    });
    QVERIFY(done.wait(5000));
    QCOMPARE(r.niceApplied(), 5);
    QCOMPARE(worker.load(), gui + 5);
    QCOMPARE(child.load(), gui + 5);
    QCOMPARE(niceOfThisThread(), gui);  // the GUI thread keeps its share
    JobRunner plain("u");
    QSignalSpy done2(&plain, &JobRunner::finished);
    plain.submit([&](const tq::ProgressFn&) -> JobPtr {
      worker = niceOfThisThread();
      return std::make_shared<IntOut>(0);
    });
    QVERIFY(done2.wait(5000));
    QCOMPARE(plain.niceApplied(), 0);
    QCOMPARE(worker.load(), gui);
#endif
  }
  void staleResultIsDropped() {
    JobRunner r("t");
    QSignalSpy done(&r, &JobRunner::finished);
    QSignalSpy dropped(&r, &JobRunner::dropped);
    const quint64 a = r.submit(slowJob(1, 400));
    QTest::qWait(30);  // a is running
    const quint64 b = r.submit(slowJob(2, 5));
    QVERIFY(done.wait(5000));
    QTRY_VERIFY_WITH_TIMEOUT(dropped.count() >= 1, 5000);
    QCOMPARE(done.count(), 1);
    QCOMPARE(done.first().at(0).toULongLong(), b);
    QCOMPARE(std::dynamic_pointer_cast<const IntOut>(done.first().at(1).value<JobPtr>())->value, 2);
    QCOMPARE(dropped.first().at(0).toULongLong(), a);
  }
  void staleResultOfJobIgnoringProgressIsDropped() {
    JobRunner r("t");
    QSignalSpy done(&r, &JobRunner::finished);
    QSignalSpy dropped(&r, &JobRunner::dropped);
    r.submit([](const tq::ProgressFn&) -> JobPtr {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      return std::make_shared<IntOut>(1);
    });
    QTest::qWait(20);
    const quint64 b = r.submit(slowJob(2, 1));
    QVERIFY(done.wait(5000));
    QCOMPARE(done.count(), 1);
    QCOMPARE(done.first().at(0).toULongLong(), b);
    QCOMPARE(dropped.count(), 1);
  }
  void cancelStopsPromptly() {
    JobRunner r("t");
    std::atomic<int> steps{0};
    QSignalSpy cancelled(&r, &JobRunner::cancelled);
    QSignalSpy done(&r, &JobRunner::finished);
    r.submit(slowJob(1, 20000, &steps));
    QTRY_VERIFY_WITH_TIMEOUT(steps.load() > 5, 5000);
    QElapsedTimer t;
    t.start();
    r.cancel();
    QVERIFY(cancelled.wait(5000));
    QVERIFY2(t.elapsed() < 500, qPrintable(QString("cancel took %1 ms").arg(t.elapsed())));
    QVERIFY(steps.load() < 20000);
    QCOMPARE(done.count(), 0);
  }
  void cancelBeforeStartIsReported() {
    // a job still queued behind another when Cancel comes never runs, and says it was cancelled
    // (a view waiting for it would otherwise stay "computing…" for ever)
    JobRunner r("t");
    QSignalSpy cancelled(&r, &JobRunner::cancelled);
    QSignalSpy done(&r, &JobRunner::finished);
    std::atomic<int> ran{0};
    r.submit([](const tq::ProgressFn&) -> JobPtr {  // ignores progress: keeps the thread busy
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      return std::make_shared<IntOut>(1);
    });
    QTest::qWait(20);
    const quint64 b = r.submit([&ran](const tq::ProgressFn&) -> JobPtr {
      ++ran;
      return std::make_shared<IntOut>(2);
    });
    r.cancel();
    QTRY_VERIFY_WITH_TIMEOUT(!r.busy(), 5000);
    QTRY_VERIFY_WITH_TIMEOUT(!cancelled.isEmpty() && cancelled.last().at(0).toULongLong() == b, 5000);
    QCOMPARE(ran.load(), 0);
    QCOMPARE(done.count(), 0);
  }
  void errorsAreReported() {
    JobRunner r("t");
    QSignalSpy failed(&r, &JobRunner::failed);
    r.submit([](const tq::ProgressFn&) -> JobPtr { throw std::runtime_error("boom: bad input"); });
    QVERIFY(failed.wait(5000));
    QVERIFY(failed.first().at(1).toString().contains("boom: bad input"));
  }
};

QTEST_MAIN(TestWorker)
#include "tst_worker.moc"
