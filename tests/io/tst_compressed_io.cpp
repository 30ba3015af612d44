// SPDX-License-Identifier: GPL-3.0-or-later
// Compressed cache files: a reloaded cache scores bit for bit like the original; tampering is refused.
#include <QtTest/QtTest>

#include <cstring>
#include <nlohmann/json.hpp>

#include "data/compressed_io.h"
#include "data/kv_dump.h"
#include "data/safetensors.h"

using namespace tq;

Q_DECLARE_METATYPE(tq::KeyMode)
Q_DECLARE_METATYPE(tq::RotationKind)
Q_DECLARE_METATYPE(tq::CodebookLaw)

namespace {

const std::string kLily = TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors";

template <class F>
QString errorOf(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return QString::fromUtf8(e.what());
  }
  return {};
}

void sameBuffers(const CompressedVectors& a, const CompressedVectors& b) {
  QCOMPARE(a.dim, b.dim);
  QCOMPARE(a.mseBits, b.mseBits);
  QCOMPARE(a.projDim, b.projDim);
  QCOMPARE(a.count, b.count);
  QVERIFY(a.codes == b.codes);
  QVERIFY(a.signs == b.signs);
  QVERIFY(a.norms == b.norms);
  QVERIFY(a.residualNorms == b.residualNorms);
}

void sameConfig(const QuantConfig& a, const QuantConfig& b) {
  QCOMPARE(a.dim, b.dim);
  QCOMPARE(a.bits, b.bits);
  QCOMPARE(a.mode, b.mode);
  QCOMPARE(a.projDim, b.projDim);
  QCOMPARE(a.rotation, b.rotation);
  QCOMPARE(a.law, b.law);
  QCOMPARE(a.seed, b.seed);
  QCOMPARE(a.referenceOneBit, b.referenceOneBit);
}

bool bitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Rewrites a safetensors file: edit(name, bytes) may change a tensor's bytes or return false to drop it;
// meta may edit the metadata; extra tensors can be appended.
std::vector<uint8_t> rewrite(const std::vector<uint8_t>& in, const std::function<bool(const std::string&, std::vector<uint8_t>&)>& edit,
                             const std::function<void(std::map<std::string, std::string>&)>& meta = {}, bool addExtra = false) {
  SafetensorsFile f(std::make_shared<const MappedFile>("in", in));
  SafetensorsWriter w;
  auto md = f.metadata();
  if (meta) meta(md);
  for (const auto& [k, v] : md) w.setMetadata(k, v);
  for (const auto& t : f.tensors()) {
    std::vector<uint8_t> b(f.bytes(t), f.bytes(t) + (t.end - t.begin));
    if (edit && !edit(t.name, b)) continue;
    w.add(t.name, t.dtype, t.shape, b.data(), b.size());
  }
  if (addExtra) w.add("stray", DType::U8, {1}, "x", 1);
  return w.serialize();
}

void editConfig(std::map<std::string, std::string>& md, const std::string& layerKey, const std::function<void(nlohmann::json&)>& fn) {
  nlohmann::json j = nlohmann::json::parse(md.at(layerKey));
  fn(j);
  md[layerKey] = j.dump();
}

}  // namespace

class TstCompressedIo : public QObject {
  Q_OBJECT
 private slots:
  void roundTrip_data() {
    QTest::addColumn<KeyMode>("mode");
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("projDim");
    QTest::addColumn<RotationKind>("rotation");
    QTest::addColumn<CodebookLaw>("law");
    QTest::addColumn<bool>("refOneBit");
    QTest::addColumn<int>("valueBits");
    QTest::newRow("mse 2") << KeyMode::Mse << 2 << 0 << RotationKind::Haar << CodebookLaw::Exact << false << 3;
    QTest::newRow("prod 3") << KeyMode::Prod << 3 << 0 << RotationKind::Haar << CodebookLaw::Exact << false << 2;
    QTest::newRow("prod 1 pure qjl") << KeyMode::Prod << 1 << 0 << RotationKind::Haar << CodebookLaw::Exact << false << 4;
    QTest::newRow("prod 1 reference 1+1") << KeyMode::Prod << 1 << 0 << RotationKind::Haar << CodebookLaw::Exact << true << 1;
    QTest::newRow("qjl m=13") << KeyMode::QjlOnly << 2 << 13 << RotationKind::Haar << CodebookLaw::Exact << false << 3;
    QTest::newRow("prod 4 m=12 hadamard gaussian") << KeyMode::Prod << 4 << 12 << RotationKind::Hadamard << CodebookLaw::Gaussian << false << 8;
    QTest::newRow("keys only") << KeyMode::Mse << 5 << 0 << RotationKind::Hadamard << CodebookLaw::Exact << false << 0;
  }
  void roundTrip() {
    QFETCH(KeyMode, mode);
    QFETCH(int, bits);
    QFETCH(int, projDim);
    QFETCH(RotationKind, rotation);
    QFETCH(CodebookLaw, law);
    QFETCH(bool, refOneBit);
    QFETCH(int, valueBits);
    const auto dump = KvDump::open(kLily);
    QuantConfig kc;
    kc.mode = mode;
    kc.bits = bits;
    kc.projDim = projDim;
    kc.rotation = rotation;
    kc.law = law;
    kc.referenceOneBit = refOneBit;
    kc.seed = 1234567890123ull;
    QuantConfig vc;
    vc.bits = valueBits > 0 ? valueBits : 3;
    vc.rotation = rotation;
    vc.law = law;
    vc.seed = 99;
    const std::vector<int> layers = {0, 2, 4};
    const CompressedCache cache = compressCache(*dump, kc, vc, valueBits > 0, layers);
    QTemporaryDir dir;
    const std::string path = dir.filePath("cache.safetensors").toStdString();
    saveCompressed(path, cache);
    const LoadedCompressedCache loaded = loadCompressed(path);
    const LoadedCompressedCache fromBytes = loadCompressedBuffer("mem", serializeCompressed(cache));
    QCOMPARE(loaded.cache.layers.size(), size_t{3});
    QCOMPARE(loaded.cache.bytes(), cache.bytes());
    QCOMPARE(loaded.cache.metadata.at("model"), std::string("stories260K"));
    const KvShape s = dump->shape();
    for (size_t i = 0; i < layers.size(); ++i) {
      const CompressedLayer& a = cache.layers[i];
      const CompressedLayer& b = loaded.cache.layers[i];
      QCOMPARE(b.sourceLayer, layers[i]);
      sameConfig(a.keyConfig, b.keyConfig);
      QCOMPARE(b.keys.size(), size_t{4});
      QCOMPARE(b.values.size(), valueBits > 0 ? size_t{4} : size_t{0});
      for (size_t h = 0; h < b.keys.size(); ++h) {
        sameBuffers(a.keys[h], b.keys[h]);
        sameBuffers(a.keys[h], fromBytes.cache.layers[i].keys[h]);
      }
      // Scores of every real query head against its kv head: original quantizer + in-memory cache vs
      // the quantizer rebuilt from the file + the reloaded buffers.
      const Quantizer original(a.keyConfig);
      const Quantizer& rebuilt = *loaded.keyQuantizers[i];
      for (int qh = 0; qh < s.qHeads; ++qh) {
        const std::vector<float> q = dump->queries(layers[i], qh);
        const size_t nq = q.size() / static_cast<size_t>(s.headDim);
        const int kv = s.kvHeadOf(qh);
        std::vector<float> sa(nq * a.keys[static_cast<size_t>(kv)].count), sb(sa.size());
        original.scoresMany(q.data(), nq, a.keys[static_cast<size_t>(kv)], sa.data());
        rebuilt.scoresMany(q.data(), nq, b.keys[static_cast<size_t>(kv)], sb.data());
        QVERIFY2(bitEqual(sa, sb), qPrintable(QString("layer %1 q head %2").arg(layers[i]).arg(qh)));
        // And the scores are real estimates, not zeros.
        double energy = 0;
        for (float v : sb) energy += std::fabs(v);
        QVERIFY(energy > 0);
      }
      if (valueBits > 0) {
        QVERIFY(loaded.valueQuantizers[i] != nullptr);
        sameConfig(a.valueConfig, b.valueConfig);
        QCOMPARE(b.valueConfig.mode, KeyMode::Mse);
        const Quantizer vOriginal(a.valueConfig);
        for (size_t h = 0; h < b.values.size(); ++h) {
          sameBuffers(a.values[h], b.values[h]);
          std::vector<float> w(a.values[h].count);
          for (size_t t = 0; t < w.size(); ++t) w[t] = static_cast<float>(1.0 / (1.0 + static_cast<double>(t)));
          std::vector<float> oa(static_cast<size_t>(s.headDimV)), ob(oa.size());
          vOriginal.weightedSum(a.values[h], w.data(), oa.data());
          loaded.valueQuantizers[i]->weightedSum(b.values[h], w.data(), ob.data());
          QVERIFY(bitEqual(oa, ob));
        }
      } else {
        QVERIFY(loaded.valueQuantizers[i] == nullptr);
      }
    }
  }

  void tampering() {
    const auto dump = KvDump::open(kLily);
    QuantConfig kc;
    kc.mode = KeyMode::Prod;
    kc.bits = 3;
    QuantConfig vc;
    vc.bits = 2;
    const std::vector<uint8_t> good = serializeCompressed(compressCache(*dump, kc, vc, true, {0, 1}));
    QVERIFY(!loadCompressedBuffer("good", good).cache.layers.empty());
    auto expect = [&](const std::vector<uint8_t>& b, std::initializer_list<const char*> parts) {
      const QString m = errorOf([&] { loadCompressedBuffer("t.safetensors", b); });
      QVERIFY2(!m.isEmpty(), "no DataError");
      QVERIFY2(m.contains("t.safetensors"), qPrintable(m));
      for (const char* p : parts) QVERIFY2(m.contains(p), qPrintable("'" + QString(p) + "' not in: " + m));
    };
    // A codebook one ulp away from the rebuilt one.
    expect(rewrite(good, [](const std::string& n, std::vector<uint8_t>& b) {
             if (n == "layers.1.k.codebook") b[0] ^= 1;
             return true;
           }),
           {"layer 1 keys", "codebook", "differs from the one rebuilt"});
    // Another seed: the rebuilt rotation differs.
    expect(rewrite(good, {}, [](auto& md) { editConfig(md, "layers.0.config", [](nlohmann::json& j) { j["keys"]["seed"] = 43; }); }),
           {"layer 0 keys", "rotation rebuilt from seed 43 differs"});
    // Another law: same rotation, different codebook.
    expect(rewrite(good, {}, [](auto& md) { editConfig(md, "layers.1.config", [](nlohmann::json& j) { j["values"]["law"] = "gaussian"; }); }),
           {"layer 1 values", "codebook"});
    // Another head dimension: the codes no longer fit.
    expect(rewrite(good, {}, [](auto& md) { editConfig(md, "layers.0.config", [](nlohmann::json& j) { j["keys"]["dim"] = 16; }); }),
           {"layers.0.k.0.codes", "does not match dim 16"});
    expect(rewrite(good, {}, [](auto& md) { editConfig(md, "layers.0.config", [](nlohmann::json& j) { j["keys"]["bits"] = 9; }); }),
           {"bits = 9 is outside [1, 8]"});
    expect(rewrite(good, {}, [](auto& md) { editConfig(md, "layers.0.config", [](nlohmann::json& j) { j["keys"]["mode"] = "fancy"; }); }),
           {"unknown key mode 'fancy'"});
    expect(rewrite(good, {}, [](auto& md) { editConfig(md, "layers.1.config", [](nlohmann::json& j) { j["values"]["mode"] = "prod"; }); }),
           {"values must use the MSE mode"});
    expect(rewrite(good, [](const std::string& n, std::vector<uint8_t>&) { return n != "layers.1.k.2.residual_norms"; }),
           {"layers.1.k.2.residual_norms", "missing"});
    expect(rewrite(good, {}, {}, true), {"unexpected tensor 'stray'"});
    expect(rewrite(good, {}, [](auto& md) { md["format"] = "tq-kvdump/1"; }), {"expected tq-compressed/1"});
    expect(rewrite(good, {}, [](auto& md) { md["layers"] = "9"; }), {"layers.2.config", "missing"});
    expect(rewrite(good, {}, [](auto& md) { md["layers"] = "-1"; }), {"not a valid layer count"});
    expect(rewrite(good, {}, [](auto& md) { md["layers.0.config"] = "{\"source_layer\": 0,"; }), {"not valid JSON"});
    // A KV dump is not a compressed cache.
    const QString m = errorOf([&] { loadCompressed(kLily); });
    QVERIFY2(m.contains("stories260K_lily_512.safetensors") && m.contains("expected tq-compressed/1"), qPrintable(m));
  }

  void inconsistentCacheIsRefusedOnSave() {
    const auto dump = KvDump::open(kLily);
    QuantConfig kc;
    kc.bits = 2;
    CompressedCache c = compressCache(*dump, kc, kc, false, {0});
    c.layers[0].keys[1].norms.pop_back();
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, serializeCompressed(c));
    c = compressCache(*dump, kc, kc, false, {0});
    c.layers[0].keyConfig.bits = 3;  // buffers were made with 2 bits
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, serializeCompressed(c));
    QVERIFY_THROWS_EXCEPTION(DataError, saveCompressed("/nonexistent/dir/c.safetensors", compressCache(*dump, kc, kc, false, {0})));
  }
};

QTEST_APPLESS_MAIN(TstCompressedIo)
#include "tst_compressed_io.moc"
