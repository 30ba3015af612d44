// SPDX-License-Identifier: GPL-3.0-or-later
// The CLI's contract: exit codes, JSON documents, messages for bad input.
#include <QtTest/QtTest>

#include <nlohmann/json.hpp>
#include <map>
#include <sstream>

#include "cli.h"

namespace {
struct Run {
  int code;
  std::string out, err;
};
Run run(std::vector<std::string> args) {
  std::ostringstream o, e;
  const int c = tq::runCli(args, o, e);
  return {c, o.str(), e.str()};
}
}  // namespace

class TstCli : public QObject {
  Q_OBJECT
 private slots:
  void badUsageExits2_data() {
    QTest::addColumn<QStringList>("args");
    QTest::addColumn<QString>("message");
    QTest::newRow("none") << QStringList{} << "usage";
    QTest::newRow("unknown command") << QStringList{"frobnicate"} << "unknown command";
    QTest::newRow("bits out of range") << QStringList{"validate", "--bits", "9"} << "--bits";
    QTest::newRow("bits not a number") << QStringList{"validate", "--bits", "three"} << "--bits";
    QTest::newRow("dim too small") << QStringList{"validate", "--dim", "1"} << "--dim";
    QTest::newRow("unknown option") << QStringList{"memory", "--model", "qwen2.5-3b", "--colour", "red"} << "unknown option --colour";
    QTest::newRow("missing value") << QStringList{"memory", "--model"} << "needs a value";
    QTest::newRow("unknown preset") << QStringList{"memory", "--model", "gpt-9"} << "unknown model preset";
    QTest::newRow("memory without model") << QStringList{"memory", "--layers", "2"} << "--model";
    QTest::newRow("bad mode") << QStringList{"memory", "--model", "qwen2.5-3b", "--mode", "both"} << "unknown key mode";
    QTest::newRow("bad rotation") << QStringList{"bench", "--rotation", "dct"} << "unknown rotation";
    QTest::newRow("bad backend") << QStringList{"bench", "--backend", "tpu", "--vectors", "10"} << "--backend";
    QTest::newRow("crosscheck without file") << QStringList{"crosscheck"} << "--reference";
    QTest::newRow("crosscheck missing file") << QStringList{"crosscheck", "--reference", "/nonexistent/x.safetensors"} << "/nonexistent/x.safetensors";
    QTest::newRow("unknown method") << QStringList{"evaluate", "sample", "--methods", "tq-mse,zstd"} << "unknown method 'zstd'";
    QTest::newRow("methods and mode") << QStringList{"evaluate", "sample", "--methods", "kivi", "--mode", "mse"} << "choose one of --methods and --mode";
    QTest::newRow("kivi group 0") << QStringList{"evaluate", "sample", "--methods", "kivi", "--group", "0"} << "--group";
    QTest::newRow("norm correction without tq-mse") << QStringList{"evaluate", "sample", "--methods", "kivi", "--norm-correction"} << "--norm-correction";
    QTest::newRow("allocate without budget") << QStringList{"allocate", "sample"} << "--budget-bits";
    QTest::newRow("allocate budget too high") << QStringList{"allocate", "sample", "--budget-bits", "9"} << "--budget-bits";
    QTest::newRow("allocate on output error") << QStringList{"allocate", "sample:tiny", "--budget-bits", "2", "--metric", "output_error"} << "--metric";
    QTest::newRow("allocate fp16") << QStringList{"allocate", "sample:tiny", "--budget-bits", "2", "--method", "fp16"} << "fixed width";
    QTest::newRow("crosscheck wrong file") << QStringList{"crosscheck", "--reference", TQ_TEST_DATA_DIR "/codebooks.json"} << "codebooks.json";
  }
  void badUsageExits2() {
    QFETCH(QStringList, args);
    QFETCH(QString, message);
    std::vector<std::string> a;
    for (const auto& s : args) a.push_back(s.toStdString());
    const Run r = run(a);
    QCOMPARE(r.code, 2);
    QVERIFY2(QString::fromStdString(r.err).contains(message), r.err.c_str());
    QVERIFY(r.out.empty());
  }
  void infoSampleReportsTheEmbeddedSample() {
    const Run r = run({"info", "sample", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["embedded_sample"].get<std::string>(), std::string("default"));
    QVERIFY(j["model"].get<std::string>().find("Qwen2.5-Coder-1.5B-Instruct") != std::string::npos);
    QCOMPARE(j["head_dim"].get<int>(), 128);
    QCOMPARE(j["layers"].get<int>(), 4);
    QCOMPARE(j["q_heads"].get<int>(), 12);
    QCOMPARE(j["kv_heads"].get<int>(), 2);
    QCOMPARE(j["seq_len"].get<int>(), 512);
    QCOMPARE(j["metadata"]["source_layers"].get<std::string>(), std::string("0,9,15,27"));
    const Run tiny = run({"info", "sample:tiny", "--json"});
    QCOMPARE(tiny.code, 0);
    QCOMPARE(nlohmann::json::parse(tiny.out)["head_dim"].get<int>(), 8);
    // Every command that takes a FILE takes the sample.
    QCOMPARE(run({"evaluate", "sample", "--key-bits", "3", "--layers", "1", "--json"}).code, 0);
    QCOMPARE(run({"evaluate", "sample:tiny", "--key-bits", "3", "--csv"}).code, 0);
    QCOMPARE(run({"info", "sample:huge"}).code, 2);
  }
  void memoryJson() {
    const Run r = run({"memory", "--model", "qwen2.5-3b", "--tokens", "8192", "--key-bits", "3", "--value-bits", "3", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["key_bytes_per_vector"].get<int>(), 52);
    QCOMPARE(j["value_bytes_per_vector"].get<int>(), 50);
    QVERIFY(std::fabs(j["ratio_vs_fp16"].get<double>() - 512.0 / 102.0) < 1e-9);
    QCOMPARE(j["total_bytes"].get<double>(), 102.0 * 36 * 2 * 8192);
  }
  void validateJson() {
    const Run r = run({"validate", "--dim", "64", "--bits", "2,3", "--vectors", "20000", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["mse"].size(), size_t(2));
    for (const auto& m : j["mse"]) {
      QVERIFY(m["measured"].get<double>() > m["lower_bound"].get<double>());
      QVERIFY(m["measured"].get<double>() < m["upper_bound"].get<double>());
      QVERIFY(m.contains("theory"));
    }
    QCOMPARE(j["inner_products"].size(), size_t(4));
    QCOMPARE(j["kv_cache"][0]["bytes_held"].get<double>(), j["kv_cache"][0]["bytes_formula"].get<double>());
    QVERIFY(j["ok"].get<bool>());
  }
  void crosscheckGolden() {
    const Run r = run({"crosscheck", "--reference", TQ_TEST_DATA_DIR "/seed_golden_d64.safetensors", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["groups"].size(), size_t(20));
    QVERIFY(j["ok"].get<bool>());
  }
  void crosscheckDetectsDisagreement() {
    // A copy of the golden file with one reference index changed must fail with exit 1.
    QFile in(TQ_TEST_DATA_DIR "/seed_golden_d64.safetensors");
    QVERIFY(in.open(QIODevice::ReadOnly));
    QByteArray bytes = in.readAll();
    const quint64 n = qFromLittleEndian<quint64>(bytes.constData());
    const auto hdr = nlohmann::json::parse(bytes.mid(8, static_cast<int>(n)).toStdString());
    const auto off = hdr["d64.b3.mse.indices"]["data_offsets"][0].get<qint64>();
    char& c = bytes[static_cast<int>(8 + n + off + 5)];
    c = static_cast<char>((c + 3) % 8);
    QTemporaryDir dir;
    const QString path = dir.filePath("bad.safetensors");
    QFile out(path);
    QVERIFY(out.open(QIODevice::WriteOnly));
    out.write(bytes);
    out.close();
    const Run r = run({"crosscheck", "--reference", path.toStdString(), "--json"});
    QCOMPARE(r.code, 1);
    QVERIFY(!nlohmann::json::parse(r.out)["ok"].get<bool>());
  }
  void infoOnTheSample() {
    const Run r = run({"info", TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["layers"].get<int>(), 5);
    QCOMPARE(j["q_heads"].get<int>(), 8);
    QCOMPARE(j["kv_heads"].get<int>(), 4);
    QCOMPARE(j["seq_len"].get<int>(), 512);
    QCOMPARE(j["head_dim"].get<int>(), 8);
    QCOMPARE(j["dtype"].get<std::string>(), std::string("F16"));
    QVERIFY(j["has_queries"].get<bool>());
    QCOMPARE(j["nonfinite_count"].get<int>(), 0);
  }
  void evaluateJson() {
    const Run r = run({"evaluate", TQ_TEST_DATA_DIR "/stories260K_sun_384.npz", "--key-bits", "2,4,8", "--value-bits", "4", "--proj-dim", "4,8",
                       "--mode", "mse,prod", "--layers", "0,4", "--heads", "0-3", "--backend", "cpu", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["summary"].size(), size_t(3 + 3 * 2));
    QCOMPARE(j["per_head"].size(), size_t(9 * 2 * 4));
    QCOMPARE(j["backend"].get<std::string>(), std::string("CPU"));
    QCOMPARE(j["queries"].get<std::string>(), std::string("dump queries"));
    double prev = -1;
    for (const auto& e : j["summary"]) {
      for (const char* k : {"key_bits", "value_bits", "proj_dim", "mode", "attention_cosine", "top1", "top5", "kl", "logit_cosine", "output_error"})
        QVERIFY2(e.contains(k), k);
      if (e["mode"] == "mse") {  // more bits, better attention
        QVERIFY(e["attention_cosine"].get<double>() > prev);
        prev = e["attention_cosine"].get<double>();
      }
    }
    for (const auto& e : j["per_head"]) QVERIFY(e.contains("layer") && e.contains("head"));
    const Run csv = run({"evaluate", TQ_TEST_DATA_DIR "/stories260K_tom_256_f32.safetensors", "--key-bits", "3", "--mode", "prod", "--queries", "last-key", "--csv"});
    QCOMPARE(csv.code, 0);
    QVERIFY(QString::fromStdString(csv.out).count('\n') == 1 + 5 * 4);  // header + one row per (layer, kv head)
  }
  void evaluateMethodsChargesEveryByte() {
    const Run r = run({"evaluate", TQ_TEST_DATA_DIR "/smollm2_135m_slice.safetensors", "--methods", "tq-mse,kivi,int-rot,fp8-e4m3,fp16",
                       "--key-bits", "2,4", "--value-bits", "4", "--window", "64", "--backend", "cpu", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["summary"].size(), size_t(2 + 2 + 2 + 1 + 1));
    std::map<std::string, double> keyBytes;
    for (const auto& e : j["summary"]) {
      for (const char* k : {"method", "method_options", "key_bytes_per_vector", "value_bytes_per_vector", "key_bits_per_coordinate"}) QVERIFY2(e.contains(k), k);
      QCOMPARE(e["key_bits_per_coordinate"].get<double>(), 8.0 * e["key_bytes_per_vector"].get<double>() / 64);
      keyBytes[e["method"].get<std::string>() + std::to_string(e["key_bits"].get<int>())] = e["key_bytes_per_vector"].get<double>();
    }
    QCOMPARE(keyBytes["tq-mse2"], 18.0);   // 16 B codes + fp16 norm
    QCOMPARE(keyBytes["int-rot4"], 36.0);  // 32 B codes + 2 fp16 scales (blocks of 32)
    QCOMPARE(keyBytes["fp162"], 0.0);      // (fp16 is at 16 bits only)
    QCOMPARE(keyBytes["fp1616"], 128.0);
    for (const auto& e : j["per_head"]) QVERIFY(e.contains("method") && e.contains("key_bytes_per_vector"));
  }
  void evaluateRecentWindow() {
    // --recent-window N: the last N tokens in fp16 for every method; all of the dump's tokens: exact attention
    const Run r = run({"evaluate", "sample", "--methods", "tq-mse,kivi", "--key-bits", "2", "--value-bits", "2", "--layers", "1",
                       "--recent-window", "512", "--backend", "cpu", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["recent_window"].get<int>(), 512);
    QCOMPARE(j["summary"].size(), size_t(2));
    for (const auto& e : j["summary"]) {
      QVERIFY(e["attention_cosine"].get<double>() > 1 - 1e-6);
      QCOMPARE(e["key_bytes_per_vector"].get<double>(), 256.0);
    }
    const Run part = run({"evaluate", "sample", "--methods", "tq-mse", "--key-bits", "2", "--layers", "1", "--recent-window", "128", "--json"});
    QCOMPARE(part.code, 0);
    const auto jp = nlohmann::json::parse(part.out);
    QCOMPARE(jp["summary"][0]["key_bytes_per_vector"].get<double>(), (384 * 34.0 + 128 * 256.0) / 512);  // 32 B codes + norm
    const Run bad = run({"evaluate", "sample", "--recent-window", "-3"});
    QCOMPARE(bad.code, 2);
    QVERIFY(QString::fromStdString(bad.err).contains("--recent-window"));
  }
  void allocateJson() {
    const Run r = run({"allocate", TQ_TEST_DATA_DIR "/smollm2_135m_slice.safetensors", "--budget-bits", "3", "--backend", "cpu", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["plan"].size(), size_t(3));  // per layer
    double avg = 0;
    for (const auto& u : j["plan"]) avg += u["key_bits"].get<int>() / 3.0;
    QVERIFY(avg <= 3.0 + 1e-12);
    QCOMPARE(j["average_key_bits"].get<double>(), avg);
    for (const char* k : {"plan", "measured_metric", "uniform_metric", "measured_output_error", "uniform_output_error"}) QVERIFY2(j.contains(k), k);
    QVERIFY(j["measured_metric"].get<double>() >= j["uniform_metric"].get<double>() - 1e-12);
    const Run h = run({"allocate", TQ_TEST_DATA_DIR "/smollm2_135m_slice.safetensors", "--budget-bits", "2.5", "--per-head", "--json"});
    QCOMPARE(h.code, 0);
    const auto jh = nlohmann::json::parse(h.out);
    QCOMPARE(jh["plan"].size(), size_t(3 * 3));
    QVERIFY(jh["uniform_metric"].is_null() && jh["uniform_floor_metric"].is_number());
  }
  void evaluateRealModelAtProductionHeadSize() {
    // SmolLM2-135M slice: head_dim 64, GQA 9q/3kv, real queries.
    const Run r = run({"evaluate", TQ_TEST_DATA_DIR "/smollm2_135m_slice.safetensors", "--key-bits", "3,8", "--value-bits", "8", "--mode", "mse",
                       "--backend", "cpu", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["head_dim"].get<int>(), 64);
    QCOMPARE(j["per_head"].size(), size_t(2 * 3 * 9));
    for (const auto& e : j["per_head"]) QCOMPARE(e["kv_head"].get<int>(), e["head"].get<int>() / 3);
    const auto& s8 = j["summary"][1];
    QCOMPARE(s8["key_bits"].get<int>(), 8);
    QVERIFY(s8["attention_cosine"].get<double>() > 0.999);
    QVERIFY(j["summary"][0]["attention_cosine"].get<double>() < s8["attention_cosine"].get<double>());
  }
  void evaluateBadInput() {
    QCOMPARE(run({"evaluate", "/nonexistent.safetensors"}).code, 2);
    QCOMPARE(run({"evaluate", TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors", "--layers", "9"}).code, 2);
    QCOMPARE(run({"evaluate", TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors", "--queries", "oracle"}).code, 2);
    QCOMPARE(run({"evaluate", TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors", "--json", "--csv"}).code, 2);
    const Run r = run({"info", TQ_TEST_DATA_DIR "/codebooks.json"});
    QCOMPARE(r.code, 2);
    QVERIFY(QString::fromStdString(r.err).contains("codebooks.json"));
  }
  void benchJsonFields() {
    const Run r = run({"bench", "--vectors", "2048", "--repeat", "1", "--dim", "64", "--json"});
    QCOMPARE(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    QStringList ops;
    for (const auto& rec : j["records"]) {
      ops << QString::fromStdString(rec["operation"].get<std::string>());
      for (const char* k : {"backend", "device", "dim", "bits", "proj_dim", "rotation", "vectors", "seconds", "vectors_per_second", "gb_per_second"})
        QVERIFY2(rec.contains(k), k);
      QVERIFY(rec["seconds"].get<double>() > 0);
    }
    QCOMPARE(ops, (QStringList{"compress_keys_prod", "compress_values_mse", "score_keys", "decompress_values", "baseline_fp32_gemv"}));
  }
};

QTEST_APPLESS_MAIN(TstCli)
#include "tst_cli.moc"
