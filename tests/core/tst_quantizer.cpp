// SPDX-License-Identifier: GPL-3.0-or-later
#include <QtTest/QtTest>

#include <cmath>
#include <cstring>

#include "attention/attention.h"
#include "metrics/metrics.h"
#include "quant/bitpack.h"
#include "quant/quantizer.h"
#include "rotation/rotation.h"
#include "util/half.h"
#include "util/rng.h"

using namespace tq;

namespace {
std::vector<float> gaussian(size_t n, int d, uint64_t seed, float scale = 1.0f) {
  std::vector<float> x(n * static_cast<size_t>(d));
  for (size_t i = 0; i < x.size(); ++i) x[i] = scale * static_cast<float>(standardNormal(seed, 77, i));
  return x;
}
std::vector<float> unit(size_t n, int d, uint64_t seed) {
  auto x = gaussian(n, d, seed);
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += static_cast<double>(x[i * d + j]) * x[i * d + j];
    for (int j = 0; j < d; ++j) x[i * d + j] = static_cast<float>(x[i * d + j] / std::sqrt(s));
  }
  return x;
}
QuantConfig cfg(int d, int b, KeyMode mode, int m = 0, RotationKind r = RotationKind::Haar, uint64_t seed = 42) {
  QuantConfig c;
  c.dim = d;
  c.bits = b;
  c.mode = mode;
  c.projDim = m;
  c.rotation = r;
  c.seed = seed;
  return c;
}
}  // namespace

class TstQuantizer : public QObject {
  Q_OBJECT
 private slots:
  void packRoundTrip_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("count");
    for (int b = 1; b <= 8; ++b)
      for (int n : {1, 7, 8, 80, 96, 127, 128, 256}) QTest::newRow(qPrintable(QString("b%1_n%2").arg(b).arg(n))) << b << n;
  }
  void packRoundTrip() {
    QFETCH(int, bits);
    QFETCH(int, count);
    std::vector<uint8_t> codes(static_cast<size_t>(count)), back(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) codes[static_cast<size_t>(i)] = static_cast<uint8_t>(randomBits(3, 4, static_cast<uint64_t>(i)) & ((1u << bits) - 1));
    std::vector<uint8_t> packed(packedBytes(static_cast<size_t>(count), bits) + 4, 0xAB);
    packCodes(codes.data(), static_cast<size_t>(count), bits, packed.data());
    QCOMPARE(packed[packedBytes(static_cast<size_t>(count), bits)], uint8_t(0xAB));  // no write past the end
    unpackCodes(packed.data(), static_cast<size_t>(count), bits, back.data());
    QVERIFY(codes == back);
    QCOMPARE(packedBytes(static_cast<size_t>(count), bits), (static_cast<size_t>(count) * bits + 7) / 8);
  }

  void signsRoundTrip() {
    std::vector<float> v = {1, -1, 0, -0.0f, 3, -2, 5, 6, -7, 0.5f, -0.25f};
    std::vector<uint8_t> p(2);
    packSigns(v.data(), v.size(), p.data());
    std::vector<float> s(v.size());
    unpackSigns(p.data(), v.size(), s.data());
    for (size_t i = 0; i < v.size(); ++i) QCOMPARE(s[i], v[i] < 0 ? -1.0f : 1.0f);  // sign(0) = +1
  }

  void halfConversion() {
    QCOMPARE(floatToHalf(1.0f), uint16_t(0x3c00));
    QCOMPARE(floatToHalf(65504.0f), uint16_t(0x7bff));
    QCOMPARE(floatToHalf(1e6f), uint16_t(0x7c00));
    QCOMPARE(halfToFloat(0x0001), 5.9604645e-08f);
    QCOMPARE(floatToHalf(1.0f + 1.0f / 2048), uint16_t(0x3c00));  // tie to even
    for (uint32_t h = 0; h < 0x7c00; ++h) QCOMPARE(floatToHalf(halfToFloat(static_cast<uint16_t>(h))), static_cast<uint16_t>(h));
  }

  void rotationsAreOrthogonal_data() {
    QTest::addColumn<int>("kind");
    QTest::addColumn<int>("d");
    for (int d : {8, 80, 96, 128}) {
      QTest::newRow(qPrintable(QString("haar%1").arg(d))) << 0 << d;
      QTest::newRow(qPrintable(QString("hadamard%1").arg(d))) << 1 << d;
    }
  }
  void rotationsAreOrthogonal() {
    QFETCH(int, kind);
    QFETCH(int, d);
    const Rotation r = Rotation::make(kind ? RotationKind::Hadamard : RotationKind::Haar, d, 9);
    const auto& R = r.matrix();
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        double s = 0;
        for (int k = 0; k < d; ++k) s += static_cast<double>(R[i * d + k]) * R[j * d + k];
        QVERIFY(std::fabs(s - (i == j ? 1.0 : 0.0)) < 1e-5);
      }
    // apply / applyTranspose agree with the matrix and invert each other
    const auto x = gaussian(3, d, 5);
    std::vector<float> y(x.size()), back(x.size());
    r.apply(x.data(), y.data(), 3);
    r.applyTranspose(y.data(), back.data(), 3);
    for (size_t i = 0; i < x.size(); ++i) QVERIFY(std::fabs(back[i] - x[i]) < 1e-5);
    for (int j = 0; j < d; ++j) {
      double s = 0;
      for (int k = 0; k < d; ++k) s += static_cast<double>(R[j * d + k]) * x[k];
      QVERIFY(std::fabs(s - y[j]) < 1e-5);
    }
  }

  void sameSeedSameBytes() {
    const auto x = gaussian(300, 96, 1, 3.0f);
    for (KeyMode mode : {KeyMode::Mse, KeyMode::Prod, KeyMode::QjlOnly}) {
      for (RotationKind r : {RotationKind::Haar, RotationKind::Hadamard}) {
        const Quantizer a(cfg(96, 3, mode, 48, r, 7)), b(cfg(96, 3, mode, 48, r, 7)), c(cfg(96, 3, mode, 48, r, 8));
        const auto ca = a.compress(x.data(), 300), cb = b.compress(x.data(), 300), cc = c.compress(x.data(), 300);
        QVERIFY(ca.codes == cb.codes && ca.signs == cb.signs && ca.norms == cb.norms && ca.residualNorms == cb.residualNorms);
        QVERIFY(ca.codes != cc.codes || ca.signs != cc.signs);
      }
    }
    // the random streams themselves are pinned: a change of generator would change every seed's data
    QCOMPARE(randomBits(42, 1, 0), uint64_t(randomBits(42, 1, 0)));
    QVERIFY(std::fabs(standardNormal(42, 1, 0) - standardNormal(42, 1, 0)) == 0.0);
    QCOMPARE(QString::number(standardNormal(42, kStreamHaar, 0), 'g', 17), QString::number(standardNormal(42, kStreamHaar, 0), 'g', 17));
  }

  void bytesHeldEqualFormula_data() {
    QTest::addColumn<int>("d");
    for (int d : {8, 80, 96, 128, 256}) QTest::newRow(qPrintable(QString::number(d))) << d;
  }
  void bytesHeldEqualFormula() {
    QFETCH(int, d);
    const auto x = gaussian(37, d, 2);
    for (int b = 1; b <= 8; ++b) {
      for (KeyMode mode : {KeyMode::Mse, KeyMode::Prod, KeyMode::QjlOnly}) {
        for (int m : {d / 2, d, 2 * d + 3}) {
          const Quantizer q(cfg(d, b, mode, m, RotationKind::Hadamard));
          const auto cv = q.compress(x.data(), 37);
          size_t expect;
          if (mode == KeyMode::Mse) expect = (static_cast<size_t>(d) * b + 7) / 8 + 2;
          else if (mode == KeyMode::Prod) expect = (static_cast<size_t>(d) * (b - 1) + 7) / 8 + (static_cast<size_t>(m) + 7) / 8 + 2 + 2;
          else expect = (static_cast<size_t>(m) + 7) / 8 + 2 + 2;
          QCOMPARE(cv.bytes(), 37 * expect);
          QCOMPARE(cv.bytesPerVector(), expect);
          QCOMPARE(keyBytesPerVector(d, b, mode, m), expect);
        }
      }
    }
  }

  // Scores from compressed keys (look-up tables) equal scores from decompressed keys + the QJL term.
  void scoresMatchDecompressed_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("mode");
    for (int b = 1; b <= 8; ++b)
      for (int m = 0; m < 3; ++m) QTest::newRow(qPrintable(QString("b%1_m%2").arg(b).arg(m))) << b << m;
  }
  void scoresMatchDecompressed() {
    QFETCH(int, bits);
    QFETCH(int, mode);
    const int d = 96, n = 200, m = 72;
    const auto x = gaussian(n, d, 3, 2.0f);
    const auto qv = gaussian(4, d, 4);
    const Quantizer q(cfg(d, bits, static_cast<KeyMode>(mode), m));
    const auto cv = q.compress(x.data(), n);
    std::vector<float> rec(static_cast<size_t>(n) * d), fast(4 * static_cast<size_t>(n));
    q.decompress(cv, 0, n, rec.data());
    q.scoresMany(qv.data(), 4, cv, fast.data());
    const auto& S = q.qjlMatrix();
    const int mm = q.projDim();
    for (int k = 0; k < 4; ++k) {
      std::vector<double> sq(static_cast<size_t>(mm), 0.0);
      for (int a = 0; a < mm; ++a)
        for (int j = 0; j < d; ++j) sq[a] += static_cast<double>(S[a * d + j]) * qv[k * d + j];
      double maxAbs = 0;
      std::vector<double> slow(n);
      for (int i = 0; i < n; ++i) {
        double s = 0;
        for (int j = 0; j < d; ++j) s += static_cast<double>(qv[k * d + j]) * rec[i * d + j];
        if (mm > 0) {
          std::vector<float> z(static_cast<size_t>(mm));
          float nn, g;
          q.unpack(cv, i, nullptr, z.data(), &nn, &g);
          double t = 0;
          for (int a = 0; a < mm; ++a) t += sq[a] * z[a];
          s += g * std::sqrt(M_PI / 2) / mm * t;
        }
        slow[i] = s;
        maxAbs = std::max(maxAbs, std::fabs(s));
      }
      for (int i = 0; i < n; ++i) QVERIFY2(std::fabs(slow[i] - fast[k * n + i]) <= 1e-5 * std::max(1.0, maxAbs), qPrintable(QString("%1 vs %2").arg(slow[i]).arg(fast[k * n + i])));
    }
  }

  // >= 100k unit vectors: MSE within 2% of the theoretical distortion and between the paper's bounds.
  void mseMatchesTheory() {
    const int d = 128;
    const size_t n = 100000;
    const auto x = unit(n, d, 11);
    for (int b = 1; b <= 4; ++b) {
      const Quantizer q(cfg(d, b, KeyMode::Mse, 0, RotationKind::Haar, 5));
      const auto cv = q.compress(x.data(), n);
      std::vector<float> rec(x.size());
      q.decompress(cv, 0, n, rec.data());
      double s = 0;
      for (size_t i = 0; i < x.size(); ++i) s += static_cast<double>(x[i] - rec[i]) * (x[i] - rec[i]);
      const double measured = s / n, theory = theoryDistortion(d, b);
      QVERIFY2(std::fabs(measured - theory) / theory < 0.02, qPrintable(QString("b=%1 measured %2 theory %3").arg(b).arg(measured).arg(theory)));
      QVERIFY(measured > paperLowerBound(b) && measured < paperUpperBound(b));
    }
  }

  // Correlated pairs q = a x + sqrt(1-a^2) w: Prod slope ~ 1, MSE-only slope ~ 1 - D_b (shrink).
  void innerProductSlopes() {
    const int d = 128;
    const size_t n = 40000;
    const auto x = unit(n, d, 21), w = unit(n, d, 22);
    std::vector<float> qv(x.size());
    std::vector<double> exact(n);
    for (size_t i = 0; i < n; ++i) {
      const double a = 2.0 * uniformOpen(randomBits(1, 2, i)) - 1.0, bb = std::sqrt(1 - a * a);
      double s = 0;
      for (int j = 0; j < d; ++j) {
        qv[i * d + j] = static_cast<float>(a * x[i * d + j] + bb * w[i * d + j]);
        s += static_cast<double>(qv[i * d + j]) * x[i * d + j];
      }
      exact[i] = s;
    }
    for (int b = 2; b <= 4; ++b) {
      for (KeyMode mode : {KeyMode::Mse, KeyMode::Prod}) {
        std::vector<double> est(n);
        const size_t draws = 8;
        for (size_t r = 0; r < draws; ++r) {
          const Quantizer q(cfg(d, b, mode, 0, RotationKind::Haar, 100 + r));
          const size_t lo = n * r / draws, hi = n * (r + 1) / draws;
          const auto cv = q.compress(x.data() + lo * d, hi - lo);
          for (size_t i = lo; i < hi; ++i) {
            const auto pq = q.prepare(qv.data() + i * d);
            float v;
            q.scores(pq, cv, i - lo, 1, &v);
            est[i] = v;
          }
        }
        AttentionMetrics m;
        innerProductStats(exact.data(), est.data(), n, m);
        const double expect = mode == KeyMode::Mse ? 1.0 - theoryDistortion(d, b) : 1.0;
        QVERIFY2(std::fabs(m.slope - expect) < 0.01, qPrintable(QString("%1 b=%2 slope %3 expected %4").arg(keyModeName(mode)).arg(b).arg(m.slope).arg(expect)));
      }
    }
  }

  void zeroVectorReconstructsToZero() {
    std::vector<float> z(64, 0.0f);
    const Quantizer q(cfg(64, 3, KeyMode::Prod));
    const auto cv = q.compress(z.data(), 1);
    std::vector<float> rec(64, 1.0f);
    q.decompress(cv, 0, 1, rec.data());
    for (float v : rec) QCOMPARE(v, 0.0f);
    float s;
    q.scoresMany(z.data(), 1, cv, &s);
    QCOMPARE(s, 0.0f);
  }

  void kvCacheStreamingEqualsBatch() {
    const int d = 64, heads = 2, T = 100;
    const auto k = gaussian(static_cast<size_t>(heads) * T, d, 31), v = gaussian(static_cast<size_t>(heads) * T, d, 32);
    const QuantConfig kc = cfg(d, 3, KeyMode::Prod), vc = cfg(d, 3, KeyMode::Mse, 0, RotationKind::Haar, 542);
    CompressedKvCache batch(kc, vc, heads), stream(kc, vc, heads);
    batch.append(k.data(), v.data(), T);
    // one token at a time: reorder [heads, T, d] into per-token [heads, 1, d]
    for (int t = 0; t < T; ++t) {
      std::vector<float> kt(static_cast<size_t>(heads) * d), vt(static_cast<size_t>(heads) * d);
      for (int h = 0; h < heads; ++h)
        for (int j = 0; j < d; ++j) {
          kt[h * d + j] = k[(static_cast<size_t>(h) * T + t) * d + j];
          vt[h * d + j] = v[(static_cast<size_t>(h) * T + t) * d + j];
        }
      stream.append(kt.data(), vt.data(), 1);
    }
    QCOMPARE(stream.tokens(), size_t(T));
    QCOMPARE(stream.bytes(), batch.bytes());
    for (int h = 0; h < heads; ++h) QVERIFY(stream.keys(h).codes == batch.keys(h).codes && stream.keys(h).signs == batch.keys(h).signs);
    std::vector<float> o1(d), o2(d);
    batch.attend(1, k.data(), 0.125f, o1.data());
    stream.attend(1, k.data(), 0.125f, o2.data());
    QVERIFY(o1 == o2);
  }

  void compressRotatedIsCompress_data() {
    QTest::addColumn<int>("d");
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("mode");
    QTest::addColumn<int>("m");
    QTest::addColumn<int>("rotation");
    for (int b = 1; b <= 8; ++b) {
      QTest::addRow("d128 mse b%d", b) << 128 << b << int(KeyMode::Mse) << 0 << int(RotationKind::Haar);
      QTest::addRow("d128 prod b%d m40", b) << 128 << b << int(KeyMode::Prod) << 40 << int(RotationKind::Haar);
    }
    QTest::addRow("d96 qjl m256 hadamard") << 96 << 2 << int(KeyMode::QjlOnly) << 256 << int(RotationKind::Hadamard);
    QTest::addRow("d64 prod b6 hadamard") << 64 << 6 << int(KeyMode::Prod) << 64 << int(RotationKind::Hadamard);
  }
  void compressRotatedIsCompress() {
    // the sweep rotates a head's keys once and compresses them with every quantizer of that rotation:
    // the bytes must be those of compress(), in any block split; a zero vector included
    QFETCH(int, d);
    QFETCH(int, bits);
    QFETCH(int, mode);
    QFETCH(int, m);
    QFETCH(int, rotation);
    const size_t n = 700;
    auto x = gaussian(n, d, 5, 3.0f);
    std::fill(x.begin() + 10 * d, x.begin() + 11 * d, 0.0f);
    const Quantizer q(cfg(d, bits, KeyMode(mode), m, RotationKind(rotation)));
    const CompressedVectors ref = q.compress(x.data(), n);
    const RotatedVectors rv = q.rotate(x.data(), n);
    QVERIFY(rv.rotatedBy(q));
    CompressedVectors whole, split;
    q.compressRotated(rv, 0, n, whole);
    q.compressRotated(rv, 0, 512, split);
    q.compressRotated(rv, 512, n - 512, split);
    for (const CompressedVectors* c : {&whole, &split}) {
      QCOMPARE(c->count, n);
      QVERIFY(c->codes == ref.codes);
      QVERIFY(c->signs == ref.signs);
      QVERIFY(c->norms == ref.norms);
      QVERIFY(c->residualNorms == ref.residualNorms);
    }
    // codes are the number of boundaries strictly below each rotated coordinate (lower_bound), also at
    // the widths that use the branch-free search, and on the boundaries themselves
    if (q.mseBits() > 0) {
      const auto& bnd = q.codebookPtr()->boundariesF;
      std::vector<uint8_t> idx(static_cast<size_t>(d));
      for (size_t i = 0; i < n; i += 37) {
        unpackCodes(ref.codes.data() + i * ref.codeBytes(), static_cast<size_t>(d), q.mseBits(), idx.data());
        for (int j = 0; j < d; ++j) {
          const float y = rv.rotated[i * static_cast<size_t>(d) + static_cast<size_t>(j)];
          QCOMPARE(int(idx[static_cast<size_t>(j)]), int(std::lower_bound(bnd.begin(), bnd.end(), y) - bnd.begin()));
        }
      }
      // a vector whose rotated coordinates sit exactly on boundaries: built in rotated space
      RotatedVectors onB = rv;
      onB.count = 1;
      onB.norms.assign(1, 1.0f);
      onB.rotated.assign(static_cast<size_t>(d), 0.0f);
      for (int j = 0; j < d; ++j) onB.rotated[static_cast<size_t>(j)] = bnd[static_cast<size_t>(j) % bnd.size()];
      CompressedVectors c;
      q.compressRotated(onB, 0, 1, c);
      unpackCodes(c.codes.data(), static_cast<size_t>(d), q.mseBits(), idx.data());
      for (int j = 0; j < d; ++j) QCOMPARE(int(idx[static_cast<size_t>(j)]), int(static_cast<size_t>(j) % bnd.size()));
    }
    // another rotation is refused
    const Quantizer other(cfg(d, bits, KeyMode(mode), m, RotationKind(rotation), 43));
    CompressedVectors c;
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, other.compressRotated(rv, 0, n, c));
  }

  void contentHashNamesTheContent() {
    // the CUDA backend keys its device plans on it: equal content, equal hash; any difference, another
    const Quantizer a(cfg(128, 3, KeyMode::Prod, 128)), b(cfg(128, 3, KeyMode::Prod, 128));
    QCOMPARE(a.contentHash(), b.contentHash());
    QVERIFY(a.contentHash() != Quantizer(cfg(128, 3, KeyMode::Prod, 128, RotationKind::Haar, 43)).contentHash());  // seed
    QVERIFY(a.contentHash() != Quantizer(cfg(128, 4, KeyMode::Prod, 128)).contentHash());                           // bits
    QVERIFY(a.contentHash() != Quantizer(cfg(128, 3, KeyMode::Prod, 64)).contentHash());                            // m
    QVERIFY(a.contentHash() != Quantizer(cfg(128, 3, KeyMode::Mse)).contentHash());                                 // mode
    QVERIFY(a.contentHash() != Quantizer(cfg(128, 3, KeyMode::Prod, 128, RotationKind::Hadamard)).contentHash());   // rotation
    const Quantizer copy = a;
    QCOMPARE(copy.contentHash(), a.contentHash());
  }

  void rejectsBadConfigs() {
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, Quantizer(cfg(1, 3, KeyMode::Mse)));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, Quantizer(cfg(64, 0, KeyMode::Mse)));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, Quantizer(cfg(64, 9, KeyMode::Mse)));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, parseKeyMode("both"));
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, parseRotation("dct"));
    const Quantizer a(cfg(64, 3, KeyMode::Mse)), b(cfg(64, 4, KeyMode::Mse));
    const auto x = gaussian(2, 64, 1);
    auto cv = a.compress(x.data(), 2);
    QVERIFY_THROWS_EXCEPTION(std::invalid_argument, b.compress(x.data(), 2, cv));
  }
};

QTEST_APPLESS_MAIN(TstQuantizer)
#include "tst_quantizer.moc"
