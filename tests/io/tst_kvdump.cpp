// SPDX-License-Identifier: GPL-3.0-or-later
// KvDump and its readers: the real samples, every container / dtype / layout, and every error case.
#include <QtTest/QtTest>

#include <cmath>
#include <limits>

#include "data/kv_dump.h"
#include "data/npy.h"
#include "data/npz.h"
#include "io_fixtures.h"

using namespace tq;
using namespace tqtest;

Q_DECLARE_METATYPE(tq::DType)

namespace {

std::string dataPath(const char* file) { return std::string(TQ_TEST_DATA_DIR "/") + file; }

// The DataError message of f(), or an empty string when it did not throw one.
template <class F>
QString errorOf(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return QString::fromUtf8(e.what());
  }
  return {};
}

#define EXPECT_ERROR(expr, ...)                                                                           \
  do {                                                                                                    \
    const QString msg_ = errorOf([&] { expr; });                                                          \
    QVERIFY2(!msg_.isEmpty(), "no DataError from: " #expr);                                               \
    for (const char* s_ : {__VA_ARGS__})                                                                  \
      QVERIFY2(msg_.contains(QString::fromUtf8(s_)), qPrintable("'" + QString::fromUtf8(s_) + "' not in: " + msg_)); \
  } while (0)

std::unique_ptr<KvDump> openBytes(const std::string& name, const std::vector<uint8_t>& b, const LoadOptions& o = {}) {
  return KvDump::openBuffer(name, b, o);
}

// Every head of every role equals the fixture (after the dtype's rounding).
void checkAgainst(const KvDump& d, const Fixture& f, DType dt, bool values, bool queries) {
  const KvShape s = d.shape();
  QCOMPARE(s.layers, f.layers);
  QCOMPARE(s.kvHeads, f.kvHeads);
  QCOMPARE(s.seq, f.seq);
  QCOMPARE(s.headDim, f.dim);
  QCOMPARE(s.hasValues, values);
  QCOMPARE(s.hasQueries, queries);
  QCOMPARE(s.qHeads, queries ? f.qHeads : f.kvHeads);
  for (int l = 0; l < f.layers; ++l) {
    for (int h = 0; h < f.kvHeads; ++h) {
      QCOMPARE(d.keys(l, h), f.head(K, l, h, dt));
      if (values) QCOMPARE(d.values(l, h), f.head(V, l, h, dt));
      else QVERIFY(d.values(l, h).empty());
    }
    if (queries)
      for (int h = 0; h < f.qHeads; ++h) QCOMPARE(d.queries(l, h), f.head(Q, l, h, dt));
    else QVERIFY(d.queries(l, 0).empty());
  }
}

// Zip field edits on an archive without comment: member's central entry and local header.
struct ZipEntry {
  size_t central = 0, local = 0;
};
std::vector<ZipEntry> zipEntries(const std::vector<uint8_t>& z) {
  const size_t eocd = z.size() - 22;
  const uint16_t n = static_cast<uint16_t>(z[eocd + 10] | (z[eocd + 11] << 8));
  size_t pos = z[eocd + 16] | (z[eocd + 17] << 8) | (z[eocd + 18] << 16) | (static_cast<size_t>(z[eocd + 19]) << 24);
  std::vector<ZipEntry> out;
  for (int i = 0; i < n; ++i) {
    ZipEntry e;
    e.central = pos;
    e.local = z[pos + 42] | (z[pos + 43] << 8) | (z[pos + 44] << 16) | (static_cast<size_t>(z[pos + 45]) << 24);
    out.push_back(e);
    pos += 46 + (z[pos + 28] | (z[pos + 29] << 8)) + (z[pos + 30] | (z[pos + 31] << 8)) + (z[pos + 32] | (z[pos + 33] << 8));
  }
  return out;
}
void put32(std::vector<uint8_t>& z, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) z[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}

std::vector<uint8_t> f32bytes(size_t n, float v = 0.5f) {
  std::vector<float> x(n, v);
  return encode(x, DType::F32);
}

}  // namespace

class TstKvDump : public QObject {
  Q_OBJECT
 private slots:
  // ------------------------------------------------------------------ real samples
  void samples_data() {
    QTest::addColumn<QString>("file");
    QTest::addColumn<int>("seq");
    QTest::addColumn<int>("dtype");
    QTest::addColumn<QString>("container");
    QTest::addColumn<QString>("name");
    // Reference numbers computed independently with python3 + numpy + safetensors.
    QTest::addColumn<QVector<double>>("k1h3Last");  // layers.1.k[3, -1, :]
    QTest::addColumn<double>("q4h7Last7");          // layers.4.q[7, -1, 7]
    QTest::addColumn<QVector<double>>("v2h3Last");  // layers.2.v[3, -1, :2]
    QTest::addColumn<QVector<double>>("kpre");      // layers.3.k_prerope[2, 10, :2]
    QTest::addColumn<double>("sumAll");             // sum of every k, v, q in float64
    QTest::addColumn<QVector<qint64>>("tokens");    // first 6, then the last
    QTest::addColumn<QString>("lastTokenString");
    QTest::newRow("lily F16") << TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors" << 512 << int(DType::F16) << "safetensors"
                              << QString::fromUtf8("stories260K \xc2\xb7 lily \xc2\xb7 512 tokens")
                              << QVector<double>{-0.23046875, -2.9296875, -0.489990234375, 8.1328125, 5.859375, 3.61328125, -4.26171875, 13.1953125}
                              << -2.796875 << QVector<double>{-0.54248046875, 0.27880859375} << QVector<double>{0.5419921875, 0.95703125}
                              << 27719.799382269382 << QVector<qint64>{1, 403, 407, 261, 378, 432, 311} << " her";
    QTest::newRow("resource lily") << TQ_TEST_DATA_DIR "/../../resources/stories260K_lily_512.safetensors" << 512 << int(DType::F16) << "safetensors"
                                   << QString::fromUtf8("stories260K \xc2\xb7 lily \xc2\xb7 512 tokens")
                                   << QVector<double>{-0.23046875, -2.9296875, -0.489990234375, 8.1328125, 5.859375, 3.61328125, -4.26171875, 13.1953125}
                                   << -2.796875 << QVector<double>{-0.54248046875, 0.27880859375} << QVector<double>{0.5419921875, 0.95703125}
                                   << 27719.799382269382 << QVector<qint64>{1, 403, 407, 261, 378, 432, 311} << " her";
    QTest::newRow("tom F32") << TQ_TEST_DATA_DIR "/stories260K_tom_256_f32.safetensors" << 256 << int(DType::F32) << "safetensors"
                             << QString::fromUtf8("stories260K \xc2\xb7 tom_256_f32 \xc2\xb7 256 tokens")
                             << QVector<double>{3.194857597351074, 0.014764668419957161, 2.422943592071533, 5.202582836151123, -4.537502288818359,
                                                -6.00746488571167, -1.8394361734390259, 13.568891525268555}
                             << -1.6152938604354858 << QVector<double>{0.6024969220161438, -0.8264966011047363}
                             << QVector<double>{1.4023481607437134, 2.990896224975586} << 20151.629093259027
                             << QVector<qint64>{1, 274, 287, 381, 261, 352, 388} << "all";
    QTest::newRow("sun npz deflate") << TQ_TEST_DATA_DIR "/stories260K_sun_384.npz" << 384 << int(DType::F16) << "npz"
                                     << QString::fromUtf8("stories260K \xc2\xb7 sun \xc2\xb7 384 tokens")
                                     << QVector<double>{-1.7919921875, 1.6962890625, -0.362060546875, 3.072265625, 3.294921875, -1.99609375, -0.8203125, 7.18359375}
                                     << -3.845703125 << QVector<double>{-0.25634765625, 0.5595703125} << QVector<double>{0.69482421875, 1.59765625}
                                     << 25350.02053451538 << QVector<qint64>{1, 291, 262, 379, 286, 270, 423} << "m";
  }
  void samples() {
    QFETCH(QString, file);
    QFETCH(int, seq);
    QFETCH(int, dtype);
    QFETCH(QString, container);
    QFETCH(QString, name);
    QFETCH(QVector<double>, k1h3Last);
    QFETCH(double, q4h7Last7);
    QFETCH(QVector<double>, v2h3Last);
    QFETCH(QVector<double>, kpre);
    QFETCH(double, sumAll);
    QFETCH(QVector<qint64>, tokens);
    QFETCH(QString, lastTokenString);
    for (bool scan : {true, false}) {
      LoadOptions o;
      o.scanOnOpen = scan;
      const auto d = KvDump::open(file.toStdString(), o);
      const KvDumpSummary& s = d->summary();
      QCOMPARE(s.layers, 5);
      QCOMPARE(s.qHeads, 8);
      QCOMPARE(s.kvHeads, 4);
      QCOMPARE(s.headDim, 8);
      QCOMPARE(s.headDimV, 8);
      QCOMPARE(s.seq, seq);
      QCOMPARE(int(s.dtype), dtype);
      QCOMPARE(QString(containerName(s.container)), container);
      QCOMPARE(QString::fromStdString(s.layout), QString("tq-kvdump/1"));
      QVERIFY(s.hasQueries && s.hasValues && s.hasPreRopeKeys && s.hasTokens);
      QCOMPARE(s.nonfiniteScanned, scan);
      QCOMPARE(s.nonfiniteCount, uint64_t{0});
      QVERIFY2(s.warnings.empty(), s.warnings.empty() ? "" : s.warnings[0].c_str());
      QCOMPARE(s.metadata.at("format"), std::string("tq-kvdump/1"));
      QCOMPARE(QString::fromStdString(d->name()), name);
      QCOMPARE(d->modelName(), std::string("stories260K"));
      QCOMPARE(d->softmaxScale(), static_cast<float>(0.35355339059327373));
      // Values against the independent read.
      const auto k0 = d->keys(0, 0);
      const float k0ref[4] = {-0.306640625f, -0.7314453125f, 0.564453125f, -0.88134765625f};
      const float k0ref32[4] = {-0.3067140281200409f, -0.7315564155578613f, 0.5644227862358093f, -0.8813945055007935f};
      for (int j = 0; j < 4; ++j) QCOMPARE(k0[static_cast<size_t>(j)], dtype == int(DType::F32) ? k0ref32[j] : k0ref[j]);
      const auto k13 = d->keys(1, 3);
      QCOMPARE(k13.size(), static_cast<size_t>(seq * 8));
      for (int j = 0; j < 8; ++j) QCOMPARE(k13[static_cast<size_t>((seq - 1) * 8 + j)], static_cast<float>(k1h3Last[j]));
      QCOMPARE(d->queries(4, 7)[static_cast<size_t>((seq - 1) * 8 + 7)], static_cast<float>(q4h7Last7));
      const auto v23 = d->values(2, 3);
      for (int j = 0; j < 2; ++j) QCOMPARE(v23[static_cast<size_t>((seq - 1) * 8 + j)], static_cast<float>(v2h3Last[j]));
      const auto kp = d->keysPreRope(3, 2);
      for (int j = 0; j < 2; ++j) QCOMPARE(kp[static_cast<size_t>(10 * 8 + j)], static_cast<float>(kpre[j]));
      double sum = 0;
      for (int l = 0; l < 5; ++l) {
        for (int h = 0; h < 4; ++h) {
          for (float v : d->keys(l, h)) sum += v;
          for (float v : d->values(l, h)) sum += v;
        }
        for (int h = 0; h < 8; ++h)
          for (float v : d->queries(l, h)) sum += v;
      }
      QVERIFY2(std::fabs(sum - sumAll) <= 1e-9 * std::fabs(sumAll), qPrintable(QString::number(sum, 'g', 17)));
      const auto tk = d->tokens();
      QCOMPARE(static_cast<int>(tk.size()), seq);
      for (int i = 0; i < 6; ++i) QCOMPARE(static_cast<qint64>(tk[static_cast<size_t>(i)]), tokens[i]);
      QCOMPARE(static_cast<qint64>(tk.back()), tokens[6]);
      const auto ts = d->tokenStrings();
      QCOMPARE(static_cast<int>(ts.size()), seq);
      QCOMPARE(ts[0], std::string("<s>"));
      QCOMPARE(QString::fromStdString(ts.back()), lastTokenString);
    }
  }

  // A real model slice (SmolLM2-135M, GQA 9/3, head_dim 64; tests/data/README.md), numbers from numpy.
  void smollm2Slice() {
    const auto d = KvDump::open(dataPath("smollm2_135m_slice.safetensors"));
    const KvDumpSummary& s = d->summary();
    QCOMPARE(s.layers, 3);
    QCOMPARE(s.qHeads, 9);
    QCOMPARE(s.kvHeads, 3);
    QCOMPARE(s.seq, 512);
    QCOMPARE(s.headDim, 64);
    QVERIFY(s.hasQueries && s.hasValues && !s.hasPreRopeKeys && s.hasTokens);
    QCOMPARE(d->softmaxScale(), 0.125f);
    QCOMPARE(d->keys(2, 2)[511 * 64 + 63], 1.3984375f);
    QCOMPARE(d->queries(1, 8)[100 * 64 + 0], -0.042236328125f);
    QCOMPARE(d->values(0, 1)[5], 0.0205535888671875f);
    QCOMPARE(d->tokens()[2], int64_t{25824});
    QCOMPARE(d->shape().kvHeadOf(8), 2);
    double sum = 0;
    for (int l = 0; l < 3; ++l) {
      for (int h = 0; h < 3; ++h) {
        for (float v : d->keys(l, h)) sum += v;
        for (float v : d->values(l, h)) sum += v;
      }
      for (int h = 0; h < 9; ++h)
        for (float v : d->queries(l, h)) sum += v;
    }
    QVERIFY2(std::fabs(sum - -27459.748238623142) <= 1e-9 * 27459.75, qPrintable(QString::number(sum, 'g', 17)));
  }

  void samplesFromMemoryEqualMapped() {
    const std::string p = dataPath("stories260K_sun_384.npz");
    const auto a = KvDump::open(p);
    const auto b = KvDump::openBuffer("sun.npz", readFile(p));
    for (int l = 0; l < 5; ++l)
      for (int h = 0; h < 4; ++h) QCOMPARE(a->values(l, h), b->values(l, h));
  }

  void queryRowsEqualSelectedRows() {
    const auto d = KvDump::open(dataPath("smollm2_135m_slice.safetensors"));
    const std::vector<int> rows = {0, 7, 511, 128, 7};
    const auto all = d->queries(1, 4);
    const auto some = d->queryRows(1, 4, rows);
    const size_t D = static_cast<size_t>(d->shape().headDim);
    QCOMPARE(some.size(), rows.size() * D);
    for (size_t i = 0; i < rows.size(); ++i)
      for (size_t j = 0; j < D; ++j) QCOMPARE(some[i * D + j], all[static_cast<size_t>(rows[i]) * D + j]);
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, d->queryRows(1, 4, {512}));
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, d->queryRows(1, 9, {0}));
  }

  void progressAndCancel() {
    std::vector<std::pair<size_t, size_t>> calls;
    const auto d = KvDump::open(dataPath("stories260K_lily_512.safetensors"), {}, [&](size_t done, size_t total) {
      calls.emplace_back(done, total);
      return true;
    });
    QVERIFY(calls.size() >= 2);
    for (size_t i = 1; i < calls.size(); ++i) QVERIFY(calls[i].first >= calls[i - 1].first);
    QCOMPARE(calls.back().first, calls.back().second);
    QCOMPARE(static_cast<uint64_t>(calls.back().second), d->summary().tensorBytes);
    // 5 layers x (k 4 + v 4 + q 8 + k_prerope 4 heads) x 512 x 8 x 2 bytes
    QCOMPARE(d->summary().tensorBytes, uint64_t{5 * 20 * 512 * 8 * 2});
    for (const char* f : {"stories260K_lily_512.safetensors", "stories260K_sun_384.npz"}) {
      int n = 0;
      bool cancelled = false;
      try {
        KvDump::open(dataPath(f), {}, [&](size_t, size_t) { return ++n < 3; });
      } catch (const LoadCancelled& e) {
        cancelled = QString(e.what()).contains(f);
      }
      QVERIFY(cancelled);
      QCOMPARE(n, 3);
    }
  }

  void outOfRangeIndices() {
    const auto d = KvDump::open(dataPath("stories260K_tom_256_f32.safetensors"));
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, d->keys(5, 0));
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, d->keys(-1, 0));
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, d->values(0, 4));
    QVERIFY_THROWS_EXCEPTION(std::out_of_range, d->queries(0, 8));
  }

  // ------------------------------------------------------------------ containers and dtypes
  void containers_data() {
    QTest::addColumn<QString>("container");
    QTest::addColumn<DType>("dtype");
    for (DType t : {DType::F16, DType::BF16, DType::F32, DType::F64}) QTest::newRow(qPrintable(QString("safetensors ") + dtypeName(t))) << "safetensors" << t;
    for (DType t : {DType::F16, DType::F32, DType::F64}) {
      QTest::newRow(qPrintable(QString("npz stored ") + dtypeName(t))) << "npz-stored" << t;
      QTest::newRow(qPrintable(QString("npz deflate ") + dtypeName(t))) << "npz-deflate" << t;
    }
  }
  void containers() {
    QFETCH(QString, container);
    QFETCH(DType, dtype);
    Fixture f;
    f.tokens = {5, 6, 7, 8, 9};
    TensorList tl = describe(f, dtype, tqNames());
    tl.metadata["token_strings"] = "[\"a\", \"b\", \"c\", \"d\", \"\\u00e9\"]";
    tl.metadata["softmax_scale"] = "0.25";
    const auto bytes = container == "safetensors" ? tl.safetensors() : tl.npz(container == "npz-deflate");
    // From memory and from a real (memory-mapped) file.
    QTemporaryDir dir;
    const std::string path = dir.filePath(container == "safetensors" ? "f.safetensors" : "f.npz").toStdString();
    {
      std::FILE* fp = std::fopen(path.c_str(), "wb");
      QVERIFY(fp);
      QCOMPARE(std::fwrite(bytes.data(), 1, bytes.size(), fp), bytes.size());
      std::fclose(fp);
    }
    for (int viaFile = 0; viaFile < 2; ++viaFile) {
      const auto d = viaFile ? KvDump::open(path) : openBytes("mem", bytes);
      checkAgainst(*d, f, dtype, true, true);
      QCOMPARE(d->summary().dtype, dtype);
      QCOMPARE(d->summary().headDimV, f.dimV);
      QCOMPARE(d->tokens(), (std::vector<int64_t>{5, 6, 7, 8, 9}));
      QCOMPARE(d->tokenStrings().back(), std::string("\xc3\xa9"));
      QCOMPARE(d->softmaxScale(), 0.25f);
      QCOMPARE(d->modelName(), std::string("fixture"));
    }
  }

  void tokensInt64() {
    Fixture f;
    TensorList tl = describe(f, DType::F32, tqNames());
    std::vector<int64_t> tok = {1, -2, 3, 1ll << 40, 5};
    std::vector<uint8_t> b(tok.size() * 8);
    std::memcpy(b.data(), tok.data(), b.size());
    tl.add("tokens", DType::I64, {1, 5}, b);  // with a batch dimension
    const auto d = openBytes("i64", tl.safetensors());
    QCOMPARE(d->tokens(), tok);
  }

  void singleNpy() {
    Fixture f;
    f.layers = 1;
    for (DType t : {DType::F16, DType::F32, DType::F64}) {
      const auto bytes = makeNpy(t, f.shape(K, false), encode(f.tensor(K, 0), t).data(), encode(f.tensor(K, 0), t).size());
      const auto d = openBytes("keys.npy", bytes);
      QCOMPARE(d->summary().layout, std::string("bare-keys"));
      QCOMPARE(d->summary().container, Container::Npy);
      checkAgainst(*d, f, t, false, false);
    }
    // Stacked 5-D in a single .npy, from a file.
    f.layers = 3;
    f.dimV = f.dim;
    const TensorList st = describeStacked(f, DType::F32, "kv", false);
    const auto npy = makeNpy(DType::F32, st.tensors[0].shape, st.tensors[0].bytes.data(), st.tensors[0].bytes.size());
    QTemporaryDir dir;
    const std::string path = dir.filePath("kv.npy").toStdString();
    std::FILE* fp = std::fopen(path.c_str(), "wb");
    std::fwrite(npy.data(), 1, npy.size(), fp);
    std::fclose(fp);
    const auto d = KvDump::open(path);
    QCOMPARE(d->summary().layout, std::string("stacked-5d"));
    checkAgainst(*d, f, DType::F32, true, false);
  }

  // ------------------------------------------------------------------ layouts
  void layouts_data() {
    QTest::addColumn<QString>("layout");
    QTest::addColumn<bool>("batch");
    QTest::addColumn<bool>("npz");
    for (bool npz : {false, true}) {
      const QString c = npz ? " npz" : " safetensors";
      QTest::newRow(qPrintable("tq" + c)) << "tq-kvdump/1" << false << npz;
      QTest::newRow(qPrintable("tq batch" + c)) << "tq-kvdump/1" << true << npz;
      QTest::newRow(qPrintable("hf past" + c)) << "hf-past-key-values" << true << npz;
      QTest::newRow(qPrintable("hf model" + c)) << "hf-model-layers" << true << npz;
      QTest::newRow(qPrintable("layerN" + c)) << "layerN" << false << npz;
      QTest::newRow(qPrintable("kv" + c)) << "kv" << false << npz;
      QTest::newRow(qPrintable("past_key_values 6-D" + c)) << "past_key_values" << true << npz;
    }
  }
  void layouts() {
    QFETCH(QString, layout);
    QFETCH(bool, batch);
    QFETCH(bool, npz);
    Fixture f;
    f.layers = 3;
    TensorList tl;
    bool queries = true;
    QString expectId = layout;
    if (layout == "kv" || layout == "past_key_values") {
      f.dimV = f.dim;
      tl = describeStacked(f, DType::F32, layout.toStdString(), batch);
      queries = false;
      expectId = "stacked-5d";
    } else {
      const Namer n = layout == "tq-kvdump/1" ? tqNames() : layout == "hf-past-key-values" ? hfPastNames() : layout == "hf-model-layers" ? hfModelNames() : layerNNames();
      queries = layout != "hf-past-key-values";
      tl = describe(f, DType::F32, n, batch);
    }
    const auto d = openBytes("layout", npz ? tl.npz(true) : tl.safetensors());
    QCOMPARE(QString::fromStdString(d->summary().layout), expectId);
    checkAgainst(*d, f, DType::F32, true, queries);
  }

  void keysOnlyAndPreRope() {
    Fixture f;
    f.values = false;
    f.queries = false;
    TensorList tl = describe(f, DType::F16, tqNames());
    // Pre-RoPE keys: the fixture's keys of a shifted layer index, so they differ from the keys.
    for (int l = 0; l < f.layers; ++l) tl.add("layers." + std::to_string(l) + ".k_prerope", DType::F16, f.shape(K, false), encode(f.tensor(K, l + 5), DType::F16));
    tl.add("something_else", DType::F32, {2}, f32bytes(2));
    const auto d = openBytes("ko", tl.safetensors());
    checkAgainst(*d, f, DType::F16, false, false);
    QVERIFY(!d->summary().hasValues);
    QCOMPARE(d->summary().headDimV, 0);
    QVERIFY(d->summary().hasPreRopeKeys);
    QCOMPARE(d->keysPreRope(1, 1), f.head(K, 6, 1, DType::F16));
    QCOMPARE(d->summary().ignoredTensors, std::vector<std::string>{"something_else"});
    QVERIFY(!d->summary().warnings.empty());
  }

  void gqaAndDifferentValueDim() {
    Fixture f;
    f.kvHeads = 2;
    f.qHeads = 6;
    f.dimV = 3;
    const auto d = openBytes("gqa", describe(f, DType::F32, tqNames()).safetensors());
    checkAgainst(*d, f, DType::F32, true, true);
    QCOMPARE(d->shape().kvHeadOf(5), 1);
    QCOMPARE(d->summary().headDimV, 3);
    QCOMPARE(d->softmaxScale(), 0.5f);  // default 1/sqrt(4)
  }

  void metadataProblemsAreWarnings() {
    Fixture f;
    TensorList tl = describe(f, DType::F32, tqNames());
    tl.metadata["token_strings"] = "[\"a\", ";  // invalid JSON
    tl.metadata["softmax_scale"] = "-3";
    tl.metadata["num_layers"] = "7";
    tl.metadata["format"] = "other/2";
    const auto d = openBytes("warn", tl.safetensors());
    QVERIFY(d->tokenStrings().empty());
    QCOMPARE(d->softmaxScale(), 0.5f);
    QCOMPARE(d->summary().warnings.size(), size_t{4});
    tl.metadata["token_strings"] = "[\"a\", \"b\"]";  // wrong length
    const auto d2 = openBytes("warn", tl.safetensors());
    QVERIFY(d2->tokenStrings().empty());
    QString all;
    for (const auto& w : d2->summary().warnings) all += QString::fromStdString(w) + "\n";
    QVERIFY2(all.contains("token_strings has 2 entries for 5 tokens"), qPrintable(all));
  }

  // ------------------------------------------------------------------ non-finite values
  void nonFinite() {
    Fixture f;
    TensorList tl = describe(f, DType::F16, tqNames());
    // Two NaN and one Inf in layers.1.v (head 1), one Inf in layers.0.q.
    auto& v1 = tl.tensors[4];
    QCOMPARE(v1.name, std::string("layers.1.v"));
    const size_t head1 = static_cast<size_t>(f.seq * f.dimV);
    for (size_t i : {head1 + 0, head1 + 7}) v1.bytes[2 * i] = 0x00, v1.bytes[2 * i + 1] = 0x7e;  // NaN
    v1.bytes[2 * (head1 + 9)] = 0x00, v1.bytes[2 * (head1 + 9) + 1] = 0x7c;                      // +Inf
    auto& q0 = tl.tensors[2];
    QCOMPARE(q0.name, std::string("layers.0.q"));
    q0.bytes[0] = 0x00, q0.bytes[1] = 0xfc;  // -Inf
    for (bool deflate : {false, true}) {
      const auto bytes = deflate ? tl.npz(true) : tl.safetensors();
      EXPECT_ERROR(openBytes("nan.file", bytes), "nan.file", "layers.1.v' 3", "layers.0.q' 1", "4 NaN/Inf");
      LoadOptions zero;
      zero.nonFinite = NonFinitePolicy::Zero;
      const auto d = openBytes("nan.file", bytes, zero);
      QCOMPARE(d->summary().nonfiniteCount, uint64_t{4});
      QCOMPARE(d->summary().nonfiniteTensors.size(), size_t{2});
      const auto v = d->values(1, 1);
      QCOMPARE(v[0], 0.0f);
      QCOMPARE(v[7], 0.0f);
      QCOMPARE(v[9], 0.0f);
      QCOMPARE(v[1], roundTo(f.value(V, 1, 1, 0, 1), DType::F16));
      QCOMPARE(d->queries(0, 0)[0], 0.0f);
      QCOMPARE(d->nonFiniteReplaced(), uint64_t{4});
      // Lazy: open succeeds, the conversion refuses naming tensor and count.
      LoadOptions lazy;
      lazy.scanOnOpen = false;
      const auto l = openBytes("nan.file", bytes, lazy);
      QCOMPARE(l->keys(1, 1), f.head(K, 1, 1, DType::F16));
      EXPECT_ERROR(l->values(1, 1), "nan.file", "layers.1.v", "3 NaN/Inf");
    }
    // F64 beyond the float range counts as non-finite.
    Fixture g;
    TensorList t64 = describe(g, DType::F64, tqNames());
    const double big = 1e300;
    std::memcpy(t64.tensors[0].bytes.data(), &big, 8);
    EXPECT_ERROR(openBytes("big", t64.safetensors()), "layers.0.k' 1");
  }

  // ------------------------------------------------------------------ safetensors errors
  void safetensorsErrors() {
    Fixture f;
    const auto good = describe(f, DType::F32, tqNames()).safetensors();
    std::vector<uint8_t> b;

    EXPECT_ERROR(openBytes("empty.safetensors", {}), "empty.safetensors", "empty");
    EXPECT_ERROR(openBytes("short.safetensors", {1, 2, 3}), "short.safetensors", "too short");
    b.assign(good.begin(), good.begin() + static_cast<long>(good.size() / 2));
    EXPECT_ERROR(openBytes("trunc.safetensors", b), "trunc.safetensors", "outside the data section");
    b.assign(good.begin(), good.begin() + 40);
    EXPECT_ERROR(openBytes("trunc2.safetensors", b), "trunc2.safetensors", "runs past the end");
    b = good;
    b[5] = 0x10;  // header length ~ 2^40
    EXPECT_ERROR(openBytes("hlen.safetensors", b), "hlen.safetensors", "header length", "runs past the end");
    EXPECT_ERROR(openBytes("json.safetensors", rawSafetensors("{\"a\": {\"dtype\": ", {})), "json.safetensors", "not valid JSON");
    EXPECT_ERROR(openBytes("arr.safetensors", rawSafetensors("[1, 2]", {})), "does not start with a JSON object");
    const std::string deep = "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}";
    EXPECT_ERROR(openBytes("deep.safetensors", rawSafetensors(deep, {})), "nests deeper");
    EXPECT_ERROR(openBytes("dup.safetensors", rawSafetensors("{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", f32bytes(2))),
                 "repeats the key 'x'");
    EXPECT_ERROR(openBytes("range.safetensors", rawSafetensors("{\"layers.0.k\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1], \"data_offsets\": [0, 1000000000]}}", f32bytes(1))),
                 "range.safetensors", "'layers.0.k'", "outside the data section");
    EXPECT_ERROR(openBytes("rev.safetensors", rawSafetensors("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", f32bytes(1))), "outside the data section");
    EXPECT_ERROR(openBytes("overlap.safetensors",
                           rawSafetensors("{\"layers.0.k\": {\"dtype\": \"F32\", \"shape\": [1, 2, 2], \"data_offsets\": [0, 16]}, \"layers.0.v\": {\"dtype\": \"F32\", \"shape\": [1, 2, 2], \"data_offsets\": [8, 24]}}", f32bytes(6))),
                 "overlap.safetensors", "overlap");
    EXPECT_ERROR(openBytes("dtype.safetensors", rawSafetensors("{\"layers.0.k\": {\"dtype\": \"F8_E4M3\", \"shape\": [1, 1, 4], \"data_offsets\": [0, 4]}}", f32bytes(1))),
                 "dtype.safetensors", "unsupported dtype 'F8_E4M3'");
    EXPECT_ERROR(openBytes("span.safetensors", rawSafetensors("{\"layers.0.k\": {\"dtype\": \"F32\", \"shape\": [1, 2, 3], \"data_offsets\": [0, 20]}}", f32bytes(5))),
                 "span.safetensors", "spans 20 bytes", "needs 24");
    EXPECT_ERROR(openBytes("ovf.safetensors", rawSafetensors("{\"layers.0.k\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776, 16], \"data_offsets\": [0, 4]}}", f32bytes(1))),
                 "ovf.safetensors", "overflows");
    EXPECT_ERROR(openBytes("neg.safetensors", rawSafetensors("{\"layers.0.k\": {\"dtype\": \"F32\", \"shape\": [-1, 2], \"data_offsets\": [0, 4]}}", f32bytes(1))), "negative");
    EXPECT_ERROR(openBytes("md.safetensors", rawSafetensors("{\"__metadata__\": {\"a\": 3}}", {})), "metadata value of 'a'", "not a string");
    // Non-UTF-8 metadata.
    std::string bad = "{\"__metadata__\": {\"model\": \"caf";
    bad += "\xe9\"}}";
    EXPECT_ERROR(openBytes("utf8.safetensors", rawSafetensors(bad, {})), "utf8.safetensors", "not valid UTF-8");
    // Keys stored as integers.
    EXPECT_ERROR(openBytes("int.safetensors", rawSafetensors("{\"layers.0.k\": {\"dtype\": \"I32\", \"shape\": [1, 1, 1], \"data_offsets\": [0, 4]}}", f32bytes(1))),
                 "is I32", "must be F16, BF16, F32 or F64");
  }

  // ------------------------------------------------------------------ shape / layout errors
  void layoutErrors() {
    auto fixtureBytes = [](const Fixture& f) { return describe(f, DType::F32, tqNames()).safetensors(); };
    {
      Fixture f;
      f.qHeads = 3;
      EXPECT_ERROR(openBytes("gqa.st", fixtureBytes(f)), "gqa.st", "not a multiple of the kv heads");
    }
    {
      TensorList tl = describe(Fixture{}, DType::F32, tqNames());
      tl.tensors[2].shape = {4, 5, 2};  // layers.0.q with head_dim 2 (same bytes: 4*5*4 -> 4*5*2 needs fewer)
      tl.tensors[2].bytes.resize(4 * 5 * 2 * 4);
      EXPECT_ERROR(openBytes("hd.st", tl.safetensors()), "hd.st", "mismatched head_dim", "layers.0.q", "(2)", "(4)");
    }
    {
      Fixture f;
      f.seq = 0;
      EXPECT_ERROR(openBytes("zero.st", fixtureBytes(f)), "zero.st", "zero length");
    }
    {
      TensorList tl;
      tl.add("weights", DType::F32, {2, 2}, f32bytes(4));
      tl.add("bias", DType::F16, {3}, encode({1, 2, 3}, DType::F16));
      const QString m = errorOf([&] { openBytes("model.safetensors", tl.safetensors()); });
      for (const char* s : {"model.safetensors", "no KV tensors recognised", "2 tensors", "'weights' F32 [2, 2]", "'bias' F16 [3]", "layers.L.k", "past_key_values.L.key", "layerL.k", "'kv'"})
        QVERIFY2(m.contains(s), qPrintable(m));
    }
    {
      TensorList tl = describe(Fixture{}, DType::F32, tqNames());
      for (auto& t : tl.tensors)
        if (t.name.rfind("layers.1.", 0) == 0) t.name.replace(7, 1, "2");
      EXPECT_ERROR(openBytes("gap.st", tl.safetensors()), "gap.st", "layer 1 is missing");
    }
    {
      TensorList tl = describe(Fixture{}, DType::F32, tqNames());
      tl.tensors.erase(tl.tensors.begin() + 4);  // layers.1.v
      EXPECT_ERROR(openBytes("nov.st", tl.safetensors()), "nov.st", "layer 1 has no values");
    }
    {
      TensorList tl = describe(Fixture{}, DType::F32, tqNames());
      tl.tensors.erase(tl.tensors.begin() + 3);  // layers.1.k
      EXPECT_ERROR(openBytes("nok.st", tl.safetensors()), "nok.st", "layer 1 has no keys");
    }
    {
      Fixture f;
      TensorList tl = describe(f, DType::F32, tqNames());
      tl.tensors[0].shape = {2, 1, 5, 4};
      EXPECT_ERROR(openBytes("batch.st", tl.safetensors()), "batch.st", "batch of 2");
      tl.tensors[0].shape = {2, 20};
      EXPECT_ERROR(openBytes("rank.st", tl.safetensors()), "rank.st", "expected [heads, seq, head_dim]");
    }
    {
      Fixture f;
      TensorList tl = describe(f, DType::F32, tqNames());
      tl.tensors[4].shape = {2, 4, 6};  // layers.1.v: 4 tokens instead of 5
      tl.tensors[4].bytes.resize(2 * 4 * 6 * 4);
      EXPECT_ERROR(openBytes("seqv.st", tl.safetensors()), "hold 4 tokens but the keys hold 5");
    }
    {
      Fixture f;
      f.dimV = f.dim;
      TensorList tl = describeStacked(f, DType::F32, "kv", false);
      tl.tensors[0].shape = {2, 1, 2, 10, 4};  // second dim must be 2 (same element count)
      EXPECT_ERROR(openBytes("stack.st", tl.safetensors()), "second dimension must be 2");
    }
  }

  // ------------------------------------------------------------------ npy errors
  void npyErrors() {
    const auto data = f32bytes(8);
    EXPECT_ERROR(openBytes("m.npy", rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4, }", data)), "m.npy", "malformed .npy header");
    EXPECT_ERROR(openBytes("m.npy", rawNpy("{'descr': '<f4', 'fortran_order': False}", data)), "needs the keys");
    EXPECT_ERROR(openBytes("m.npy", rawNpy("{'descr': '<f4', 'fortran_order': maybe, 'shape': (1, 2, 4), }", data)), "fortran_order");
    EXPECT_ERROR(openBytes("f.npy", rawNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2, 4), }", data)), "f.npy", "Fortran");
    EXPECT_ERROR(openBytes("c.npy", rawNpy("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 1, 4), }", data)), "c.npy", "unsupported .npy dtype '<c8'");
    EXPECT_ERROR(openBytes("b.npy", rawNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2, 4), }", data)), "big-endian");
    EXPECT_ERROR(openBytes("s.npy", rawNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (8,), }", data)), "structured");
    EXPECT_ERROR(openBytes("t.npy", rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 5), }", data)), "t.npy", "holds 32 data bytes", "needs 40");
    EXPECT_ERROR(openBytes("o.npy", rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 65536), }", data)), "overflows");
    EXPECT_ERROR(openBytes("r.npy", rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", data)), "r.npy", "a single .npy must hold keys");
    EXPECT_ERROR(openBytes("x.npy", std::vector<uint8_t>{'P', 'K', 1, 2, 3}), "x.npy", "not an .npy array");
    auto v = rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 4), }", data);
    v[6] = 9;
    EXPECT_ERROR(openBytes("v.npy", v), "format version 9");
    v = rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 4), }", data);
    v[8] = 0xff, v[9] = 0xff;  // header length past the end
    EXPECT_ERROR(openBytes("h.npy", v), "h.npy", "truncated");
    // Zero-element arrays read as empty (found by fuzz_npy: memcpy into a null pointer), refused as keys.
    const auto zeroNpy = rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3, 4), }", {});
    QVERIFY(NpyFile(std::make_shared<const MappedFile>("z.npy", zeroNpy)).readFloat().empty());
    EXPECT_ERROR(openBytes("z.npy", zeroNpy), "z.npy", "empty dimension");
    SafetensorsFile zst(std::make_shared<const MappedFile>("z.st", rawSafetensors("{\"e\": {\"dtype\": \"F16\", \"shape\": [0, 4], \"data_offsets\": [0, 0]}}", {})));
    QVERIFY(zst.readFloat("e").empty());
    // Python 2 longs and a version 2.0 header (4-byte length) are fine.
    const auto ok = openBytes("ok.npy", rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 2L, 4L), }", data));
    QCOMPARE(ok->shape().headDim, 4);
    const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 4), }\n";
    std::vector<uint8_t> v2 = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, static_cast<uint8_t>(dict.size()), 0, 0, 0};
    v2.insert(v2.end(), dict.begin(), dict.end());
    v2.insert(v2.end(), data.begin(), data.end());
    const auto ok2 = openBytes("ok2.npy", v2);
    QCOMPARE(ok2->keys(0, 0), std::vector<float>(8, 0.5f));
  }

  // ------------------------------------------------------------------ npz / zip errors
  void npzErrors() {
    Fixture f;
    TensorList tl = describe(f, DType::F32, tqNames());
    const auto stored = tl.npz(false);
    const auto deflated = tl.npz(true);
    std::vector<uint8_t> z;

    z.assign(deflated.begin(), deflated.begin() + static_cast<long>(deflated.size() - 30));
    EXPECT_ERROR(openBytes("t.npz", z), "t.npz", "not a zip archive");
    EXPECT_ERROR(openBytes("x.npz", std::vector<uint8_t>(100, 7)), "x.npz", "not a zip archive");
    // Member claiming far more than deflate can produce (zip bomb by declaration).
    z = deflated;
    put32(z, zipEntries(z)[0].central + 24, 0x7fffffff);
    EXPECT_ERROR(openBytes("bomb.npz", z), "bomb.npz", "more than deflate can produce");
    // Global limit.
    LoadOptions small;
    small.maxInflatedBytes = 500;
    EXPECT_ERROR(openBytes("lim.npz", deflated, small), "lim.npz", "limit");
    // Compressed size running past the central directory.
    z = deflated;
    put32(z, zipEntries(z)[1].central + 20, 0x100000);
    EXPECT_ERROR(openBytes("cs.npz", z), "cs.npz", "runs past");
    // Local header offset out of range / pointing at another member.
    z = stored;
    put32(z, zipEntries(z)[1].central + 42, 0x0fffffff);
    EXPECT_ERROR(openBytes("lh.npz", z), "local header");
    z = stored;
    put32(z, zipEntries(z)[1].central + 42, static_cast<uint32_t>(zipEntries(z)[0].local));
    EXPECT_ERROR(openBytes("lh2.npz", z), "names a different member");
    // Unsupported method, encryption.
    z = deflated;
    z[zipEntries(z)[0].central + 10] = 12;
    EXPECT_ERROR(openBytes("m.npz", z), "compression method 12");
    z = deflated;
    z[zipEntries(z)[0].central + 8] |= 1;
    EXPECT_ERROR(openBytes("e.npz", z), "encrypted");
    // CRC mismatch (detected by the scan; lazily by the conversion).
    z = deflated;
    put32(z, zipEntries(z)[0].central + 16, 0x12345678);
    EXPECT_ERROR(openBytes("crc.npz", z), "crc.npz", "CRC-32 mismatch");
    LoadOptions lazy;
    lazy.scanOnOpen = false;
    const auto d = openBytes("crc.npz", z, lazy);
    EXPECT_ERROR(d->keys(0, 0), "crc.npz", "'layers.0.k.npy'", "CRC-32 mismatch");
    // Corrupt deflate data.
    z = deflated;
    const size_t dataAt = zipEntries(z)[0].local + 30 + 14;  // "layers.0.k.npy"
    for (size_t i = 0; i < 16; ++i) z[dataAt + 4 + i] ^= 0xa5;
    const QString m = errorOf([&] { openBytes("bad.npz", z); });
    QVERIFY2(m.contains("bad.npz") && m.contains("layers.0.k.npy"), qPrintable(m));
    // Stored member whose sizes disagree.
    z = stored;
    put32(z, zipEntries(z)[0].central + 20, 17);
    EXPECT_ERROR(openBytes("st.npz", z), "stored but its compressed and uncompressed sizes differ");
    // A member that inflates beyond its declared size: valid npy followed by extra bytes in the stream.
    {
      NpzWriter w;
      auto npy = makeNpy(DType::F32, {1, 2, 4}, f32bytes(8).data(), 32);
      const uint32_t npyLen = static_cast<uint32_t>(npy.size());
      npy.resize(npy.size() + 4000, 0);
      w.addRaw("layers.0.k.npy", npy);
      z = w.serialize(true);
      put32(z, zipEntries(z)[0].central + 24, npyLen);
      EXPECT_ERROR(openBytes("big.npz", z), "big.npz", "inflates beyond its declared size");
      const auto l = openBytes("big.npz", z, lazy);
      EXPECT_ERROR(l->keys(0, 0), "inflates beyond its declared size");
    }
    // Shorter than declared.
    {
      NpzWriter w;
      const auto npy = makeNpy(DType::F32, {1, 2, 4}, f32bytes(8).data(), 32);
      w.addRaw("layers.0.k.npy", npy);
      z = w.serialize(true);
      put32(z, zipEntries(z)[0].central + 24, static_cast<uint32_t>(npy.size() + 8));
      EXPECT_ERROR(openBytes("short.npz", z), "short.npz", "data bytes but shape x dtype needs");
    }
    // Duplicate and overlapping members.
    {
      NpzWriter w;
      const auto npy = makeNpy(DType::F32, {1, 2, 4}, f32bytes(8).data(), 32);
      w.addRaw("layers.0.k.npy", npy);
      w.addRaw("layers.0.k.npy", npy);
      EXPECT_ERROR(openBytes("dup.npz", w.serialize(false)), "appears twice");
    }
    // Metadata member that is not JSON / not UTF-8.
    {
      NpzWriter w;
      const auto npy = makeNpy(DType::F32, {1, 2, 4}, f32bytes(8).data(), 32);
      w.addRaw("layers.0.k.npy", npy);
      const std::string md = "{\"model\": \"caf\xe9\"}";
      w.add("__metadata__", DType::U8, {static_cast<int64_t>(md.size())}, md.data(), md.size());
      EXPECT_ERROR(openBytes("md.npz", w.serialize(true)), "md.npz", "__metadata__ is not valid UTF-8");
    }
    // Non-npy members are ignored (listed in the warnings).
    {
      NpzWriter w;
      const auto npy = makeNpy(DType::F32, {1, 2, 4}, f32bytes(8).data(), 32);
      w.addRaw("layers.0.k.npy", npy);
      w.addRaw("README.txt", {'h', 'i'});
      const auto ok = openBytes("ok.npz", w.serialize(true));
      QCOMPARE(ok->shape().layers, 1);
      QVERIFY(QString::fromStdString(ok->summary().warnings.at(0)).contains("README.txt"));
    }
  }

  void fileErrors() {
    EXPECT_ERROR(KvDump::open("/nonexistent/dump.safetensors"), "/nonexistent/dump.safetensors", "cannot open");
    QTemporaryDir dir;
    EXPECT_ERROR(KvDump::open(dir.path().toStdString()), "is a directory");
    const std::string empty = dir.filePath("empty.npz").toStdString();
    std::fclose(std::fopen(empty.c_str(), "wb"));
    EXPECT_ERROR(KvDump::open(empty), "empty.npz", "empty");
  }

  // The existing SafetensorsFile API (used by the golden cross-check) keeps working.
  void safetensorsApi() {
    SafetensorsFile f(dataPath("stories260K_tom_256_f32.safetensors"));
    QCOMPARE(f.tensors().size(), size_t{21});
    const auto k = f.readFloat("layers.0.k");
    QCOMPARE(k.size(), size_t{4 * 256 * 8});
    QCOMPARE(k[0], -0.3067140281200409f);
    QCOMPARE(f.readInt(f.require("tokens")).at(1), int64_t{274});
    QVERIFY_THROWS_EXCEPTION(DataError, f.readInt(f.require("layers.0.k")));
    QVERIFY_THROWS_EXCEPTION(DataError, f.require("nope"));
    QCOMPARE(f.metadata().at("num_layers"), std::string("5"));
    // Writer round trip, BF16 included.
    SafetensorsWriter w;
    const std::vector<float> x = {1.5f, -2.25f, 3.0e-3f};
    w.add("b", DType::BF16, {3}, encode(x, DType::BF16).data(), 6);
    w.addF32("f", {3}, x);
    w.setMetadata("k", "v");
    const auto bytes = w.serialize();
    QCOMPARE(bytes[0] % 8, 0);  // header length padded to 8 bytes, so the data section is aligned
    SafetensorsFile g(std::make_shared<const MappedFile>("mem", bytes));
    QCOMPARE(g.readFloat("f"), x);
    QCOMPARE(g.readFloat("b")[2], roundTo(3.0e-3f, DType::BF16));
    QCOMPARE(g.metadata().at("k"), std::string("v"));
  }
};

QTEST_APPLESS_MAIN(TstKvDump)
#include "tst_kvdump.moc"
