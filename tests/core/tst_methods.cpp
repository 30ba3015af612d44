// SPDX-License-Identifier: GPL-3.0-or-later
/// The baselines of core/methods: fp8 conversions, ledgers equal to their formulas, bit-for-bit agreement
/// with the numpy implementations (tools/methods_reference.py -> tests/data/methods_golden.safetensors),
/// and their rows in a sweep.
#include <QtTest/QtTest>

#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "data/safetensors.h"
#include "explore/allocate.h"
#include "explore/detail.h"
#include "explore/export.h"
#include "methods/methods.h"
#include "quant/bitpack.h"
#include "sweep/sweep.h"
#include "synth/synthetic.h"
#include "backend/backend.h"
#include "util/half.h"

using namespace tq;

namespace {
bool sameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }
std::vector<float> roundTrip(const VectorCodec& c, const std::vector<float>& x, size_t n, size_t d, size_t* bytes = nullptr) {
  const EncodedMatrix e = c.encode(x.data(), n, d);
  if (bytes) *bytes = e.bytes();
  std::vector<float> out(n * d, -1.0f);
  c.decode(e, out.data());
  return out;
}
SyntheticSpec spec() {
  SyntheticSpec s;
  s.kind = SyntheticKind::OutlierChannels;
  s.layers = 2;
  s.qHeads = 4;
  s.kvHeads = 2;
  s.tokens = 300;
  s.headDim = 64;
  s.seed = 5;
  return s;
}
/// The detail views' selection and key quantizer (MSE+QJL, m = 64) for the tests of core/explore/detail.
DetailConfig prodDetail(int layer, int qHead, int bits, QuerySource q) {
  DetailConfig e;
  e.layer = layer;
  e.qHead = qHead;
  e.keyMode = KeyMode::Prod;
  e.keyBits = bits;
  e.projDim = 64;
  e.queries = q;
  return e;
}
}  // namespace

class TestMethods : public QObject {
  Q_OBJECT
 private slots:
  void fp8FormatsKnownValues() {
    QCOMPARE(fp8E4M3ToFloat(0x7e), 448.0f);
    QCOMPARE(fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
    QCOMPARE(fp8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
    QVERIFY(std::isnan(fp8E4M3ToFloat(0x7f)));
    QCOMPARE(fp8E5M2ToFloat(0x7b), 57344.0f);
    QCOMPARE(fp8E5M2ToFloat(0x01), std::ldexp(1.0f, -16));
    QVERIFY(std::isinf(fp8E5M2ToFloat(0x7c)));
    QCOMPARE(fp8E4M3ToFloat(0xfe), -448.0f);
    // every finite code round-trips; midpoints go to the even code; beyond the largest value saturates
    for (int c = 0; c < 256; ++c) {
      const uint8_t u = static_cast<uint8_t>(c);
      if ((c & 0x7f) <= 0x7e) QCOMPARE(floatToFp8E4M3(fp8E4M3ToFloat(u)), u);
      if ((c & 0x7f) <= 0x7b) QCOMPARE(floatToFp8E5M2(fp8E5M2ToFloat(u)), u);
    }
    for (int c = 0; c < 0x7e; ++c) {
      const float mid = 0.5f * (fp8E4M3ToFloat(static_cast<uint8_t>(c)) + fp8E4M3ToFloat(static_cast<uint8_t>(c + 1)));
      QCOMPARE(int(floatToFp8E4M3(mid)), (c % 2 == 0) ? c : c + 1);
    }
    QCOMPARE(floatToFp8E4M3(1e9f), uint8_t(0x7e));
    QCOMPARE(floatToFp8E5M2(-1e9f), uint8_t(0xfb));
  }

  void ledgersEqualTheirFormulas() {
    struct Shape {
      size_t n, d;
    };
    for (const Shape s : {Shape{1, 8}, Shape{37, 48}, Shape{200, 64}, Shape{129, 128}, Shape{513, 128}, Shape{64, 80}})
      for (int window : {0, 16, 128})
        for (int group : {8, 32}) {
          MethodOptions o;
          o.group = group;
          o.window = window;
          std::vector<float> x(s.n * s.d);
          for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * (1 + i % 7));
          for (Method m : {Method::Kivi, Method::IntRot, Method::Fp8E4M3, Method::Fp8E5M2, Method::Fp16})
            for (int bits : {1, 2, 3, 4, 5, 8})
              for (bool values : {false, true}) {
                if (!methodHasBits(m) && bits != 1) continue;
                const auto c = makeCodec(m, bits, values, o);
                size_t held = 0;
                const auto rec = roundTrip(*c, x, s.n, s.d, &held);
                QVERIFY2(static_cast<double>(held) == c->formulaBytes(s.n, s.d),
                         qPrintable(QString("%1 b=%2 n=%3 d=%4: %5 held vs %6").arg(QString::fromStdString(methodName(m))).arg(bits).arg(s.n).arg(s.d).arg(held).arg(c->formulaBytes(s.n, s.d))));
                for (float v : rec) QVERIFY(std::isfinite(v));
              }
        }
    // the numbers of docs/METHODS.md for a 512-token, d = 128 head (R 128, G 32)
    const MethodOptions o;
    QCOMPARE(makeCodec(Method::Kivi, 2, false, o)->formulaBytes(512, 128) / 512, 100.0);
    QCOMPARE(makeCodec(Method::Kivi, 2, true, o)->formulaBytes(512, 128) / 512, 100.0);
    QCOMPARE(makeCodec(Method::IntRot, 4, false, o)->formulaBytes(512, 128) / 512, 72.0);
    QCOMPARE(makeCodec(Method::Fp8E4M3, 8, false, o)->formulaBytes(512, 128), 512.0 * 128 + 4);
    QCOMPARE(makeCodec(Method::Fp16, 16, false, o)->formulaBytes(512, 128) / 512, 256.0);
  }

  void agreesWithTheNumpyImplementationsBitForBit() {
    SafetensorsFile g(TQ_TEST_DATA_DIR "/methods_golden.safetensors");
    MethodOptions o;
    o.group = std::stoi(g.metadata().at("kivi_group"));
    o.window = std::stoi(g.metadata().at("kivi_window"));
    int compared = 0;
    for (const std::string name : {"a", "b"}) {
      const TensorInfo& xi = g.require(name + ".x");
      const size_t n = static_cast<size_t>(xi.shape[0]), d = static_cast<size_t>(xi.shape[1]);
      const std::vector<float> x = g.readFloat(xi);
      auto check = [&](const VectorCodec& c, const std::string& key) {
        size_t held = 0;
        const auto rec = roundTrip(c, x, n, d, &held);
        const auto want = g.readFloat(key);
        QCOMPARE(want.size(), rec.size());
        size_t diff = 0;
        for (size_t i = 0; i < rec.size(); ++i) diff += !sameBits(rec[i], want[i]);
        QVERIFY2(diff == 0, qPrintable(QString::fromStdString(key) + QString(": %1 of %2 values differ").arg(diff).arg(rec.size())));
        QCOMPARE(static_cast<int64_t>(held), g.readInt(g.require(key + ".bytes")).at(0));
        ++compared;
      };
      for (int bits : {1, 2, 3, 4, 8}) {
        check(*makeCodec(Method::Kivi, bits, false, o), name + ".kivi" + std::to_string(bits) + ".k");
        check(*makeCodec(Method::Kivi, bits, true, o), name + ".kivi" + std::to_string(bits) + ".v");
        check(*makeCodec(Method::IntRot, bits, false, o), name + ".introt" + std::to_string(bits));
      }
      check(*makeCodec(Method::Fp8E4M3, 8, false, o), name + ".fp8e4m3");
      check(*makeCodec(Method::Fp8E5M2, 8, false, o), name + ".fp8e5m2");
      check(*makeCodec(Method::Fp16, 16, false, o), name + ".fp16");
      // the fp8 codes themselves (ml_dtypes' conversion when the file was written)
      for (const std::string fmt : {"e4m3", "e5m2"}) {
        const auto e = makeCodec(fmt == "e4m3" ? Method::Fp8E4M3 : Method::Fp8E5M2, 8, false, o)->encode(x.data(), n, d);
        const auto& ci = g.require(name + ".fp8" + fmt + ".codes");
        QCOMPARE(static_cast<size_t>(ci.end - ci.begin), e.codes.size());
        QVERIFY(std::memcmp(g.bytes(ci), e.codes.data(), e.codes.size()) == 0);
      }
    }
    QCOMPARE(compared, 2 * 18);
  }

  void blockHadamardIsItsOwnInverse() {
    std::vector<float> x(3 * 64);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 11) - 5.0f;
    auto y = x;
    blockHadamard(y.data(), 3, 64, 32);
    double e2 = 0, y2 = 0, x2 = 0;
    for (size_t i = 0; i < x.size(); ++i) x2 += double(x[i]) * x[i], y2 += double(y[i]) * y[i];
    QVERIFY(std::fabs(y2 - x2) < 1e-3 * x2);  // orthonormal
    blockHadamard(y.data(), 3, 64, 32);
    for (size_t i = 0; i < x.size(); ++i) e2 += std::fabs(double(y[i]) - x[i]);
    QVERIFY(e2 < 1e-3);
    QCOMPARE(intRotBlock(128), size_t(32));
    QCOMPARE(intRotBlock(48), size_t(16));
    QCOMPARE(intRotBlock(8), size_t(8));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, blockHadamard(y.data(), 3, 64, 24));
  }

  void normCorrectionRestoresTheStoredNorm() {
    QuantConfig qc;
    qc.dim = 64;
    qc.bits = 2;
    qc.mode = KeyMode::Mse;
    auto q = std::make_shared<const Quantizer>(qc);
    const auto c = makeCodec(Method::TqMseNormCorrected, 2, false, {}, q);
    std::vector<float> x(50 * 64);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::cos(0.11 * static_cast<double>(i * i % 97))) * 3.0f;
    size_t held = 0;
    const auto rec = roundTrip(*c, x, 50, 64, &held);
    CompressedVectors cv = q->compress(x.data(), 50);
    QCOMPARE(held, cv.bytes());  // no byte more than TurboQuant-MSE
    std::vector<float> plain(50 * 64);
    q->decompress(cv, 0, 50, plain.data());
    double sumR = 0, sumP = 0;
    for (size_t i = 0; i < 50; ++i) {
      double r2 = 0, p2 = 0, dot = 0;
      for (size_t j = 0; j < 64; ++j) r2 += double(rec[i * 64 + j]) * rec[i * 64 + j], p2 += double(plain[i * 64 + j]) * plain[i * 64 + j],
                                        dot += double(rec[i * 64 + j]) * plain[i * 64 + j];
      QVERIFY(std::fabs(std::sqrt(r2) - halfToFloat(cv.norms[i])) < 1e-4 * halfToFloat(cv.norms[i]));
      sumR += std::sqrt(r2);
      sumP += std::sqrt(p2);
      QVERIFY(dot > 0.99999 * std::sqrt(r2) * std::sqrt(p2));      // the direction is unchanged
    }
    QVERIFY(sumP < 0.95 * sumR);  // MSE shrinks on average; the correction undoes it
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::TqMseNormCorrected, 2, false, {}, nullptr));
  }

  void outlierChannelsAtOneBitMore() {
    // 2.5 bits at d = 128: the 64 largest channels at 3 bits, the other 64 at 2, two norms, 64 indices
    QuantConfig qc;
    qc.dim = 128;
    qc.bits = 2;
    qc.mode = KeyMode::Mse;
    auto q = std::make_shared<const Quantizer>(qc);
    MethodOptions o;
    o.outlierChannels = 64;
    const auto c = makeCodec(Method::TqMseOutliers, 2, false, o, q);
    std::vector<float> x(300 * 128);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i))) + ((i % 128) % 3 == 0 ? 8.0f : 0.0f);
    size_t held = 0;
    const auto rec = roundTrip(*c, x, 300, 128, &held);
    QCOMPARE(static_cast<double>(held), c->formulaBytes(300, 128));
    QCOMPARE(c->formulaBytes(300, 128), 300.0 * (24 + 16 + 4) + 128);
    // the channels with the large offset are the outliers (43 of them; the rest by magnitude)
    const auto idx = outlierChannels(x.data(), 300, 128, 43);
    for (int j : idx) QCOMPARE(j % 3, 0);
    // one more bit on the outliers beats the plain 2-bit quantizer and loses to 3 bits
    auto mse = [&](const std::vector<float>& r) {
      double e = 0, n = 0;
      for (size_t i = 0; i < x.size(); ++i) e += (double(r[i]) - x[i]) * (double(r[i]) - x[i]), n += double(x[i]) * x[i];
      return e / n;
    };
    std::vector<float> r2(x.size()), r3(x.size());
    q->decompress(q->compress(x.data(), 300), 0, 300, r2.data());
    QuantConfig q3c = qc;
    q3c.bits = 3;
    const Quantizer q3(q3c);
    q3.decompress(q3.compress(x.data(), 300), 0, 300, r3.data());
    QVERIFY2(mse(rec) < mse(r2) && mse(rec) > mse(r3), qPrintable(QString("%1 %2 %3").arg(mse(r2)).arg(mse(rec)).arg(mse(r3))));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::TqMseOutliers, 8, false, o, q));
    o.outlierChannels = 127;
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::TqMseOutliers, 2, false, o, q)->encode(x.data(), 300, 128));
  }

  void allocationIsGreedyOnTheMeasuredCurves() {
    // two layers, widths 1..3: layer 0 gains 0.5 from its second bit, layer 1 only 0.1; values likewise
    SweepResult r;
    r.headDim = 8;
    const double cosine[2][3] = {{0.2, 0.7, 0.75}, {0.8, 0.9, 0.95}};
    const double oe[2][3] = {{0.9, 0.3, 0.2}, {0.2, 0.15, 0.1}};
    for (int layer = 0; layer < 2; ++layer)
      for (int kb = 1; kb <= 3; ++kb)
        for (int vb = 1; vb <= 3; ++vb)
          for (int h = 0; h < 2; ++h) {
            SweepRow row;
            row.key = {KeyMode::Mse, kb, 0, Method::TurboQuant};
            row.valueBits = vb;
            row.layer = layer;
            row.qHead = h;
            row.m.attentionCosine = cosine[layer][kb - 1];
            row.m.outputError = oe[layer][vb - 1] + 0.01 * (kb - 1);
            r.rows.push_back(row);
          }
    const KeyVariant fam{KeyMode::Mse, 0, 0, Method::TurboQuant};
    const AllocationPlan p = allocateBits(r, fam, "attention_cosine", 1.5, false);
    QCOMPARE(p.units.size(), size_t(2));
    QCOMPARE(p.units[0].keyBits, 2);
    QCOMPARE(p.units[1].keyBits, 1);
    QCOMPARE(p.units[0].valueBits, 2);
    QCOMPARE(p.units[1].valueBits, 1);
    QCOMPARE(p.averageKeyBits, 1.5);
    QVERIFY(std::fabs(p.measuredMetric - (0.7 + 0.8) / 2) < 1e-12);
    QVERIFY(std::fabs(p.measuredOutputError - ((0.3 + 0.01) + 0.2) / 2) < 1e-12);
    QVERIFY(std::isnan(p.uniformMetric));
    QVERIFY(std::fabs(p.uniformBelowMetric - 0.5) < 1e-12 && std::fabs(p.uniformAboveMetric - 0.8) < 1e-12);
    const AllocationPlan u = allocateBits(r, fam, "attention_cosine", 2, false);
    QVERIFY(std::fabs(u.uniformMetric - 0.8) < 1e-12);
    QVERIFY(u.measuredMetric >= u.uniformMetric);
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, allocateBits(r, fam, "output_error", 2, false));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, allocateBits(r, fam, "attention_cosine", 3.5, false));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, allocateBits(r, KeyVariant{KeyMode::Mse, 0, 0, Method::Kivi}, "attention_cosine", 2, false));
  }

  void memoryModelChargesCentering() {
    MemoryConfig mc;
    mc.layers = 2;
    mc.kvHeads = 4;
    mc.headDim = 128;
    mc.tokens = 32768;
    mc.keyBits = 3;
    mc.valueBits = 4;
    mc.keyMode = KeyMode::Prod;
    const MemoryReport plain = memoryModel(mc);
    QCOMPARE(plain.keyBytesCharged, 52.0);
    mc.keyMean = true;
    mc.exactKeys = 128;
    const MemoryReport c = memoryModel(mc);
    const double want = ((32768.0 - 128) * 52 + 128 * 256.0 + 256.0) / 32768;
    QCOMPARE(c.keyBytesCharged, want);
    QCOMPARE(c.totalBytes, (want + 66) * 2 * 4 * 32768);
    QCOMPARE(centredKeyBytes(52, 32768, 128, KeyCentering::Causal, 128), want);
    QCOMPARE(centredKeyBytes(52, 32768, 128, KeyCentering::Oracle, 128), (32768.0 * 52 + 256) / 32768);
    QCOMPARE(methodBytes(Method::Kivi, 2, false, 512, 128, MethodOptions{}), 51200.0);
  }

  void protectedLayersAreStoredAtTheirWidth() {
    SyntheticSpec sp = spec();
    sp.layers = 4;
    SyntheticKv src(sp);
    SweepConfig c;
    c.keyBits = {2};
    c.valueBits = {2};
    c.modes = {KeyMode::Mse};
    c.methods = {Method::Kivi, Method::Fp16};
    c.maxQueries = 4;
    c.protectLayers = 1;
    c.protectBits = 8;
    auto be = makeCpuBackend();
    const SweepResult r = runSweep(src, c, *be);
    for (const SweepRow& row : r.rows) {
      const bool prot = row.layer == 0 || row.layer == 3;
      if (row.key.method == Method::TurboQuant) {
        QCOMPARE(row.key.bits, 2);  // the nominal width
        QCOMPARE(row.keyBytesPerVector, double(packedBytes(64, prot ? 8 : 2) + 2));
        QCOMPARE(row.valueBytesPerVector, double(packedBytes(64, prot ? 8 : 2) + 2));
      } else if (row.key.method == Method::Kivi) {
        QCOMPARE(row.keyBytesPerVector, methodBytes(Method::Kivi, prot ? 8 : 2, false, 300, 64, c.methodOptions) / 300);
      } else {
        QCOMPARE(row.keyBytesPerVector, 128.0);  // fp16 has no width to protect
      }
    }
    std::ostringstream csv;
    writeCsv(r, csv);
    QVERIFY(csv.str().find(",1:8,0\n") != std::string::npos);
    int n = 0, b = 0;
    parseProtectLayers("2:6", &n, &b);
    QVERIFY(n == 2 && b == 6);
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, parseProtectLayers("2", &n, &b));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, parseProtectLayers("2:9", &n, &b));
    QVERIFY(isProtectedLayer(2, 27, 28) && !isProtectedLayer(2, 2, 28));
  }

  void referenceOnePlusOneIsChargedAsTwoBits() {
    // tq-ref11 is the reference's "1-bit" key: 1 MSE bit + d signs, i.e. TurboQuant-prod at b = 2; the ledger
    // says so (2 bits per coordinate and two norms), the values are TurboQuant-MSE's
    SyntheticKv src(spec());
    SweepConfig c;
    c.keyBits = {2};
    c.valueBits = {3};
    c.modes = {KeyMode::Prod};
    c.methods = {Method::TqRef11};
    c.maxQueries = 4;
    auto be = makeCpuBackend();
    const SweepResult r = runSweep(src, c, *be);
    std::map<std::pair<int, int>, const SweepRow*> prod;
    size_t ref = 0;
    for (const SweepRow& row : r.rows)
      if (row.key.method == Method::TurboQuant) prod[{row.layer, row.qHead}] = &row;
    for (const SweepRow& row : r.rows) {
      if (row.key.method != Method::TqRef11) continue;
      ++ref;
      QCOMPARE(row.key.bits, 1);
      QCOMPARE(row.key.projDim, 64);
      QCOMPARE(row.valueBits, 3);
      QCOMPARE(row.keyBytesPerVector, double(8 + 8 + 4));
      QCOMPARE(row.keyBytesPerVector, methodBytes(Method::TqRef11, 1, false, 300, 64, {}) / 300);
      const SweepRow& p = *prod.at({row.layer, row.qHead});
      QCOMPARE(row.m.attentionCosine, p.m.attentionCosine);
      QCOMPARE(row.keyBytesPerVector, p.keyBytesPerVector);
    }
    QCOMPARE(ref, size_t(2 * 4));
  }

  void orthogonalQjlRowsAndAnUnbiasedEstimate() {
    std::vector<float> S(96 * 32);
    for (size_t i = 0; i < S.size(); ++i) S[i] = static_cast<float>(std::sin(1.7 * static_cast<double>(i)) + 0.3 * std::cos(0.23 * static_cast<double>(i * i)));
    orthogonaliseRows(S, 96, 32);  // blocks of 32 rows: 32 + 32 + 32
    for (size_t i = 0; i < 96; ++i)
      for (size_t j = i; j < 96; ++j) {
        double dot = 0;
        for (size_t k = 0; k < 32; ++k) dot += double(S[i * 32 + k]) * S[j * 32 + k];
        if (i == j) QVERIFY(std::fabs(dot - 32) < 1e-3);
        else if (i / 32 == j / 32) QVERIFY(std::fabs(dot) < 1e-3);
      }
    // the QJL estimate of <q, x> stays unbiased over draws of S
    const int d = 64;
    std::vector<float> x(d), q(d);
    for (int j = 0; j < d; ++j) x[j] = static_cast<float>(std::sin(0.5 * j) + 0.2), q[j] = static_cast<float>(std::cos(0.3 * j) + 0.5 * std::sin(0.5 * j));
    double truth = 0;
    for (int j = 0; j < d; ++j) truth += double(x[j]) * q[j];
    double sum = 0, sum2 = 0;
    const int draws = 400;
    for (int s = 0; s < draws; ++s) {
      QuantConfig c;
      c.dim = d;
      c.bits = 1;
      c.mode = KeyMode::QjlOnly;
      c.projDim = d;
      c.seed = 1000 + static_cast<uint64_t>(s);
      c.orthogonalQjl = true;
      const Quantizer qz(c);
      const auto cv = qz.compress(x.data(), 1);
      float est = 0;
      qz.scores(qz.prepare(q.data()), cv, 0, 1, &est);
      sum += est;
      sum2 += double(est) * est;
    }
    const double mean = sum / draws, sd = std::sqrt(std::max(0.0, sum2 / draws - mean * mean));
    QVERIFY2(std::fabs(mean - truth) < 4 * sd / std::sqrt(double(draws)) + 0.01 * std::fabs(truth),
             qPrintable(QString("mean %1, truth %2, sd %3").arg(mean).arg(truth).arg(sd)));
  }

  void refusals() {
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::Kivi, 0, false, {}));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::IntRot, 9, false, {}));
    MethodOptions bad;
    bad.group = 0;
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::Kivi, 2, false, bad));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, parseMethod("kivi2"));
    QCOMPARE(int(parseMethod("tq-qjl").mode), int(KeyMode::QjlOnly));
    const std::vector<float> nan(8, NAN);
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, makeCodec(Method::Fp8E4M3, 8, false, {})->encode(nan.data(), 1, 8));
  }

  void recentWindowIsChargedAndExact() {
    // the V3 fp16 window of the last R tokens, an option of every method: keys and values of those tokens
    // are charged 2 d bytes, the method encodes the others; with R = every token the metrics are exact
    SyntheticKv src(spec());
    SweepConfig c;
    c.keyBits = {2};
    c.valueBits = {2};
    c.modes = {KeyMode::Mse};
    c.methods = {Method::Kivi, Method::IntRot, Method::Fp8E4M3};
    c.methodOptions.window = 16;
    c.maxQueries = 6;
    c.recentWindow = 50;
    auto be = makeCpuBackend();
    const SweepResult r = runSweep(src, c, *be);
    QVERIFY(!r.rows.empty());
    SweepConfig plain = c;
    plain.recentWindow = 0;
    const SweepResult r0 = runSweep(src, plain, *be);
    QCOMPARE(r0.rows.size(), r.rows.size());
    int changed = 0;
    for (size_t i = 0; i < r.rows.size(); ++i) {
      const SweepRow& row = r.rows[i];
      const Method m = row.key.method;
      if (m == Method::TurboQuant) {
        QCOMPARE(row.keyBytesPerVector, (250.0 * double(packedBytes(64, 2) + 2) + 50 * 128.0) / 300);
        QCOMPARE(row.valueBytesPerVector, (250.0 * double(packedBytes(64, 2) + 2) + 50 * 128.0) / 300);
      } else {
        const int vb = methodHasBits(m) ? 2 : methodFixedBits(m);
        const auto kc = makeCodec(m, row.key.bits, false, c.methodOptions), vc = makeCodec(m, vb, true, c.methodOptions);
        QCOMPARE(row.keyBytesPerVector, (kc->formulaBytes(250, 64) + 50 * 128.0) / 300);
        QCOMPARE(row.valueBytesPerVector, (vc->formulaBytes(250, 64) + 50 * 128.0) / 300);
      }
      // the same configurations in the same order; the queries after token 250 see the window
      QVERIFY(r0.rows[i].key == row.key && r0.rows[i].layer == row.layer && r0.rows[i].qHead == row.qHead);
      if (row.m.attentionCosine != r0.rows[i].m.attentionCosine) ++changed;
    }
    QVERIFY(changed > 0);
    // every token in the window: exact attention for every method
    c.recentWindow = 300;
    const SweepResult all = runSweep(src, c, *be);
    for (const SweepRow& row : all.rows) {
      QVERIFY2(row.m.attentionCosine > 1 - 1e-6, qPrintable(QString::fromStdString(row.key.methodName()) + QString(" %1").arg(row.m.attentionCosine)));
      QVERIFY(row.m.kl < 1e-6);
      QVERIFY(row.m.outputError < 1e-6);
      QCOMPARE(row.keyBytesPerVector, 128.0);
    }
    std::ostringstream csv;
    writeCsv(all, csv);
    QVERIFY(csv.str().find(",none,300\n") != std::string::npos);
    c.recentWindow = -1;
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, runSweep(src, c, *be));
  }

  void abHeatmapComparesTwoConfigurations() {
    auto src = std::make_shared<SyntheticKv>(spec());
    auto be = makeCpuBackend();
    DetailConfig e;
    e.layer = 1;
    e.qHead = 2;
    e.keyMode = KeyMode::Mse;
    e.keyBits = 3;
    e.queries = QuerySource::LastKey;
    HeatRegion reg;
    const DetailData plain = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QVERIFY(plain.heat.compare.empty() && plain.heat.diffAB.empty());
    // B = A: the same map, A - B zero everywhere it is defined
    e.compare = true;
    e.compareKey = {KeyMode::Mse, 3, 0, Method::TurboQuant};
    const DetailData same = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QCOMPARE(same.heat.compare.size(), same.heat.approx.size());
    for (size_t i = 0; i < same.heat.approx.size(); ++i) {
      if (std::isnan(same.heat.exact[i])) continue;
      QCOMPARE(same.heat.compare[i], same.heat.approx[i]);
      QCOMPARE(same.heat.diffAB[i], 0.0f);
    }
    QCOMPARE(same.heat.cosineA, same.heat.cosineB);
    QCOMPARE(same.heat.labelA, std::string("tq-mse 3 bits"));
    // B = fp16: near-exact, charged 2 d bytes; B = KIVI: charged its sweep ledger
    e.compareKey = {KeyMode::Mse, 16, 0, Method::Fp16};
    const DetailData f16 = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QCOMPARE(f16.heat.labelB, std::string("fp16"));
    QCOMPARE(f16.heat.keyBytesB, 128.0);
    QVERIFY(f16.heat.cosineB > 0.9999);
    QVERIFY(f16.heat.cosineB > f16.heat.cosineA);
    e.compareKey = {KeyMode::Mse, 2, 0, Method::Kivi};
    e.methodOptions.window = 40;
    const DetailData kv = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QCOMPARE(kv.heat.keyBytesB, makeCodec(Method::Kivi, 2, false, e.methodOptions)->formulaBytes(300, 64) / 300);
    QCOMPARE(kv.heat.labelB, std::string("kivi 2 bits G=32 R=40"));
    // A - B is A's map minus B's (pooled per bin: at full resolution, exactly)
    for (size_t i = 0; i < kv.heat.approx.size(); ++i)
      if (!std::isnan(kv.heat.exact[i])) QVERIFY(std::fabs(kv.heat.diffAB[i] - (kv.heat.approx[i] - kv.heat.compare[i])) < 1e-6f);
    // QJL-only keys have m sign bits and no width: the label says so
    e.compareKey = {KeyMode::QjlOnly, 3, 64, Method::TurboQuant};
    QCOMPARE(computeDetailData(src, {}, e, PartHeatmap, reg, *be).heat.labelB, std::string("tq-qjl m=64"));
    // the recent window reaches the views too: with every token in it, A is exact
    e.recentWindow = 300;
    const DetailData rw = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QVERIFY(rw.heat.cosineA > 1 - 1e-6);
    QCOMPARE(rw.heat.keyBytesA, 128.0);
  }

  void detailKeysCacheGivesTheSameMaps() {
    // The detail views keep compressed keys per (data, layer, kv head, centering, quantizer, backend): a
    // change back to a configuration seen before is served from the cache and draws the same map as a
    // compression of its own; another data set, head or centering never matches.
    auto src = std::make_shared<SyntheticKv>(spec());
    auto be = makeCpuBackend();
    DetailConfig e = prodDetail(1, 3, 3, QuerySource::LastKey);
    HeatRegion reg;
    const DetailData a = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QCOMPARE(a.keysCompressed, 1);
    QCOMPARE(a.keysFromCache, 0);
    e.keyBits = 4;
    const DetailData b = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QCOMPARE(b.keysCompressed, 1);
    e.keyBits = 3;
    const DetailData again = computeDetailData(src, {}, e, PartHeatmap, reg, *be);
    QCOMPARE(again.keysFromCache, 1);
    QCOMPARE(again.keysCompressed, 0);
    QCOMPARE(again.keyBytesPerVector, a.keyBytesPerVector);
    QCOMPARE(again.heat.approx.size(), a.heat.approx.size());
    QVERIFY(std::memcmp(again.heat.approx.data(), a.heat.approx.data(), a.heat.approx.size() * sizeof(float)) == 0);
    QVERIFY(std::memcmp(again.heat.approx.data(), b.heat.approx.data(), a.heat.approx.size() * sizeof(float)) != 0);
    // a new data set of the same shape and seed: compressed anew (its keys may differ)
    auto other = std::make_shared<SyntheticKv>(spec());
    QCOMPARE(computeDetailData(other, {}, e, PartHeatmap, reg, *be).keysCompressed, 1);
    // the other kv head, and centred keys: compressed anew
    e.qHead = 0;
    QCOMPARE(computeDetailData(src, {}, e, PartHeatmap, reg, *be).keysCompressed, 1);
    e.qHead = 3;
    e.centering = KeyCentering::Causal;
    QCOMPARE(computeDetailData(src, {}, e, PartHeatmap, reg, *be).keysCompressed, 1);
    // the estimator's three modes go through the cache too
    e.centering = KeyCentering::None;
    const DetailData est = computeDetailData(src, {}, e, PartHeatmap | PartEstimator, reg, *be);
    QCOMPARE(est.keysFromCache + est.keysCompressed, 4);
    QVERIFY(est.keysFromCache >= 2);  // the heatmap's Prod 3 and the estimator's Prod 3
  }

  void estimatorIsBoundedAtAnySize() {
    // The estimator holds at most estimatorPairs (query, key) pairs per mode: every stride-th causal pair
    // in (query, key) order, the same values as in the full list; its scores go in chunks of 64 queries
    auto src = std::make_shared<SyntheticKv>(spec());
    auto be = makeCpuBackend();
    DetailConfig e = prodDetail(0, 1, 2, QuerySource::Random);
    e.sweepQueries = 100;  // two chunks of queries
    HeatRegion reg;
    const DetailData full = computeDetailData(src, {}, e, PartEstimator, reg, *be);
    QCOMPARE(full.estimator.size(), size_t(3));
    const auto pos = evaluationPositions(e.queries, 300, e.sweepQueries);
    size_t total = 0;
    for (int p : pos) total += static_cast<size_t>(p) + 1;
    QCOMPARE(pos.size(), size_t(100));
    QVERIFY(total > 10000);
    for (const auto& s : full.estimator) {
      QCOMPARE(s.stride, size_t(1));
      QCOMPARE(s.pairsTotal, total);
      QCOMPARE(s.exact.size(), total);
    }
    e.estimatorPairs = 1000;
    const DetailData few = computeDetailData(src, {}, e, PartEstimator, reg, *be);
    for (size_t m = 0; m < 3; ++m) {
      const auto &a = full.estimator[m], &b = few.estimator[m];
      QCOMPARE(b.pairsTotal, total);
      QCOMPARE(b.stride, (total + 999) / 1000);
      QCOMPARE(b.exact.size(), (total + b.stride - 1) / b.stride);
      QVERIFY(b.exact.size() <= 1000 && b.exact.size() > 500);
      for (size_t j = 0; j < b.exact.size(); ++j) {
        QCOMPARE(b.exact[j], a.exact[j * b.stride]);
        QCOMPARE(b.estimate[j], a.estimate[j * b.stride]);
      }
      QVERIFY(std::fabs(b.stats.bias - a.stats.bias) < 0.5 * std::sqrt(a.stats.variance) + 1e-9);  // a sample of the same pairs
    }
  }

  void sweepChargesEveryMethodAndPairsValues() {
    SyntheticKv src(spec());
    SweepConfig c;
    c.keyBits = {2, 4};
    c.valueBits = {3};
    c.modes = {KeyMode::Mse};
    c.methods = {Method::Kivi, Method::IntRot, Method::Fp8E4M3, Method::Fp16, Method::TqMseNormCorrected, Method::TqMseOutliers};
    c.methodOptions.window = 44;
    c.maxQueries = 8;
    auto be = makeCpuBackend();
    const SweepResult r = runSweep(src, c, *be);
    const size_t heads = 2 * 4;
    // tq-mse 2 + kivi 2 + int-rot 2 + fp8 1 + fp16 1 + tq-mse-nc 2 + tq-mse-oc 2 key variants, one value variant each
    QCOMPARE(r.rows.size(), size_t(12) * heads);
    std::set<std::string> names;
    for (const SweepRow& row : r.rows) {
      names.insert(row.key.methodName());
      const Method m = row.key.method;
      if (m == Method::TqMseOutliers) {
        QCOMPARE(row.keyBytesPerVector, (300.0 * (packedBytes(32, row.key.bits + 1) + packedBytes(32, row.key.bits) + 4) + 64) / 300);
        continue;
      }
      if (m == Method::TurboQuant || m == Method::TqMseNormCorrected) {
        QCOMPARE(row.valueBits, 3);
        QCOMPARE(row.keyBytesPerVector, double(packedBytes(64, row.key.bits) + 2));
        QCOMPARE(row.valueBytesPerVector, double(packedBytes(64, 3) + 2));
      } else {
        const int vb = methodHasBits(m) ? 3 : methodFixedBits(m);
        QCOMPARE(row.valueBits, vb);
        const auto kc = makeCodec(m, row.key.bits, false, c.methodOptions), vc = makeCodec(m, vb, true, c.methodOptions);
        QCOMPARE(row.keyBytesPerVector, kc->formulaBytes(300, 64) / 300);
        QCOMPARE(row.valueBytesPerVector, vc->formulaBytes(300, 64) / 300);
      }
      if (m == Method::Fp16) {
        QVERIFY2(row.m.attentionCosine > 0.9999, qPrintable(QString("%1 %2 %3").arg(row.m.attentionCosine).arg(row.m.outputError).arg(row.m.kl)));
        QVERIFY2(row.m.outputError < 1e-2, qPrintable(QString::number(row.m.outputError)));
      }
    }
    QCOMPARE(names, (std::set<std::string>{"tq-mse", "kivi", "int-rot", "fp8-e4m3", "fp16", "tq-mse-nc", "tq-mse-oc"}));
    // the CSV says which method and options each row is
    std::ostringstream csv;
    writeCsv(r, csv);
    const std::string s = csv.str();
    QVERIFY(s.rfind("method,key_mode,key_bits", 0) == 0);
    QVERIFY(s.find("\nkivi,mse,2,0,3,") != std::string::npos);
    QVERIFY(s.find("G=32 R=44") != std::string::npos);
    // baselines alone, and with key centering (charged the same way as TurboQuant's)
    SweepConfig b = c;
    b.modes.clear();
    b.methods = {Method::Fp16};
    b.centering = KeyCentering::Causal;
    b.centerWindow = 20;
    const SweepResult rb = runSweep(src, b, *be);
    QCOMPARE(rb.rows.size(), heads);
    for (const SweepRow& row : rb.rows) QCOMPARE(row.keyBytesPerVector, ((300 - 20) * 128.0 + 20 * 128.0 + 128.0) / 300);
    // tq-mse-oc has no 8-bit variant (its outliers would need 9): at value bits 8 its keys get rows
    // without value metrics, and key bits 8 are left out
    SweepConfig oc = c;
    oc.modes.clear();
    oc.methods = {Method::TqMseOutliers};
    oc.keyBits = {2, 8};
    oc.valueBits = {8};
    oc.centering = KeyCentering::None;
    const SweepResult ro = runSweep(src, oc, *be);
    QCOMPARE(ro.rows.size(), heads);
    for (const SweepRow& row : ro.rows) {
      QCOMPARE(row.valueBits, 0);
      QCOMPARE(row.key.bits, 2);
    }
    b.methods.clear();
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, runSweep(src, b, *be));
  }
};

QTEST_APPLESS_MAIN(TestMethods)
#include "tst_methods.moc"
