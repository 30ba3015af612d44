// SPDX-License-Identifier: GPL-3.0-or-later
// CSV / JSON exports of a real sweep over the lily sample.
#include <QtTest/QtTest>

#include <nlohmann/json.hpp>
#include <sstream>

#include "backend/backend.h"
#include "explore/export.h"
#include "data/kv_dump.h"

using namespace tq;

namespace {

std::vector<std::string> splitLines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);) out.push_back(l);
  return out;
}
std::vector<std::string> splitCsv(const std::string& l) {
  std::vector<std::string> out(1);
  for (char c : l) {
    if (c == ',') out.emplace_back();
    else out.back() += c;
  }
  return out;
}

}  // namespace

class TstExport : public QObject {
  Q_OBJECT
  SweepResult m_result;

 private slots:
  void initTestCase() {
    const auto dump = KvDump::open(TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors");
    SweepConfig c;
    c.keyBits = {2, 3};
    c.valueBits = {3};
    c.modes = {KeyMode::Mse, KeyMode::Prod};
    c.layers = {0, 3};
    c.qHeads = {0, 5};
    c.maxQueries = 4;
    auto backend = makeCpuBackend();
    m_result = runSweep(*dump, c, *backend);
    QCOMPARE(m_result.rows.size(), size_t{2 * 2 * 2 * 2});
  }

  void csvRows() {
    std::ostringstream os;
    writeCsv(m_result, os);
    const auto lines = splitLines(os.str());
    QCOMPARE(lines.size(), m_result.rows.size() + 1);
    const auto header = splitCsv(lines[0]);
    QCOMPARE(header[0], std::string("method"));
    const auto col = [&](const char* n) { return static_cast<size_t>(std::find(header.begin(), header.end(), n) - header.begin()); };
    QVERIFY(col("kl") < header.size() && col("value_bytes_per_vector") < header.size());
    for (size_t i = 0; i < m_result.rows.size(); ++i) {
      const SweepRow& r = m_result.rows[i];
      const auto f = splitCsv(lines[i + 1]);
      QCOMPARE(f.size(), header.size());
      QCOMPARE(f[col("key_mode")], std::string(keyModeName(r.key.mode)));
      QCOMPARE(f[col("method")], r.key.methodName());
      QCOMPARE(std::stoi(f[col("key_bits")]), r.key.bits);
      QCOMPARE(std::stoi(f[col("layer")]), r.layer);
      QCOMPARE(std::stoi(f[col("q_head")]), r.qHead);
      QCOMPARE(std::stoi(f[col("kv_head")]), r.kvHead);
      QCOMPARE(std::stoul(f[col("key_bytes_per_vector")]), static_cast<unsigned long>(r.keyBytesPerVector));
      const double kl = std::stod(f[col("kl")]);
      QVERIFY(std::fabs(kl - r.m.kl) <= 1e-8 * std::max(1.0, std::fabs(r.m.kl)));
      QVERIFY(std::fabs(std::stod(f[col("attention_cosine")]) - r.m.attentionCosine) <= 1e-8);
    }
  }

  void summaryCsv() {
    std::ostringstream os;
    writeSummaryCsv(m_result, os);
    const auto lines = splitLines(os.str());
    QCOMPARE(lines.size(), m_result.summary().size() + 1);
    const size_t cols = splitCsv(lines[0]).size();
    for (size_t i = 1; i < lines.size(); ++i) QCOMPARE(splitCsv(lines[i]).size(), cols);
  }

  void json() {
    std::ostringstream os;
    writeJson(m_result, os);
    const nlohmann::json j = nlohmann::json::parse(os.str());
    QCOMPARE(j["rows"].size(), m_result.rows.size());
    QCOMPARE(j["summary"].size(), m_result.summary().size());
    QCOMPARE(j["config"]["key_bits"].get<std::vector<int>>(), (std::vector<int>{2, 3}));
    QCOMPARE(j["model"].get<std::string>(), std::string("stories260K"));
    QCOMPARE(j["tokens"].get<size_t>(), size_t{512});
    const auto& r0 = j["rows"][0];
    QCOMPARE(r0["layer"].get<int>(), m_result.rows[0].layer);
    QCOMPARE(r0["key"]["mode"].get<std::string>(), std::string(keyModeName(m_result.rows[0].key.mode)));
    QCOMPARE(r0["metrics"]["kl"].get<double>(), m_result.rows[0].m.kl);
  }

  void nonFiniteAndFiles() {
    SweepResult r = m_result;
    r.rows.resize(1);
    r.rows[0].m.kl = std::numeric_limits<double>::quiet_NaN();
    r.rows[0].m.bias = std::numeric_limits<double>::infinity();
    std::ostringstream csv, js;
    writeCsv(r, csv);
    writeJson(r, js);
    QVERIFY(csv.str().find(",nan,") != std::string::npos);
    QVERIFY(csv.str().find(",inf,") != std::string::npos);
    const nlohmann::json j = nlohmann::json::parse(js.str());
    QVERIFY(j["rows"][0]["metrics"]["kl"].is_null());
    QTemporaryDir dir;
    const std::string p = dir.filePath("t.csv").toStdString();
    writeCsv(r, p);
    QFile f(QString::fromStdString(p));
    QVERIFY(f.open(QIODevice::ReadOnly));
    QCOMPARE(f.readAll().toStdString(), csv.str());
    QVERIFY_THROWS_EXCEPTION(DataError, writeJson(r, "/nonexistent/dir/t.json"));
  }
};

QTEST_APPLESS_MAIN(TstExport)
#include "tst_export.moc"
