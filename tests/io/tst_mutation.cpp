// SPDX-License-Identifier: GPL-3.0-or-later
// Deterministic mutation test: >= 10,000 seeded mutations of the real sample files (bit flips, truncations,
// safetensors header-length and JSON edits, zip field edits, npy header edits, compressed-cache edits) go
// through every reader. Each must either load (and then convert every head without trouble) or be refused
// with a DataError; any other exception, a crash (ASan/UBSan in the asan preset), a slow case or a large
// allocation fails the test. TQ_MUTATIONS=<n> scales the run (default 10,400).
#include <QtTest/QtTest>

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <typeinfo>

#include "data/compressed_io.h"
#include "data/kv_dump.h"
#include "data/npy.h"
#include "data/npz.h"
#include "data/safetensors.h"

using namespace tq;

namespace {

using Bytes = std::vector<uint8_t>;

// SplitMix64: the same sequence on every platform.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n ? static_cast<size_t>(next() % n) : 0; }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
};

uint64_t rd(const Bytes& b, size_t at, int width) {
  uint64_t v = 0;
  for (int i = width - 1; i >= 0; --i) v = (v << 8) | b[at + static_cast<size_t>(i)];
  return v;
}
void wr(Bytes& b, size_t at, int width, uint64_t v) {
  for (int i = 0; i < width; ++i) b[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t interesting(Rng& r, uint64_t orig, int width) {
  const uint64_t maxv = width >= 8 ? ~0ull : (1ull << (8 * width)) - 1;
  switch (r.below(12)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return maxv;
    case 3: return maxv - 1;
    case 4: return orig + 1;
    case 5: return orig - 1;
    case 6: return orig * 2;
    case 7: return orig / 2;
    case 8: return maxv >> 1;
    case 9: return (maxv >> 1) + 1;
    case 10: return orig + r.below(64) - 32;
    default: return r.next();
  }
}

void flipBits(Rng& r, Bytes& b, size_t lo, size_t hi) {
  if (hi <= lo) return;
  const int n = 1 + static_cast<int>(r.below(8));
  for (int i = 0; i < n; ++i) b[lo + r.below(hi - lo)] ^= static_cast<uint8_t>(1u << r.below(8));
}

// ---- safetensors: JSON header edits keep the rest of the file.
struct StParts {
  std::string json;
  Bytes data;
};
StParts splitSt(const Bytes& b) {
  const uint64_t n = rd(b, 0, 8);
  return {std::string(b.begin() + 8, b.begin() + 8 + static_cast<long>(n)), Bytes(b.begin() + 8 + static_cast<long>(n), b.end())};
}
Bytes joinSt(const std::string& json, const Bytes& data) {
  // Reserved up front: growing an 8-byte vector by insert() trips GCC 12's -Warray-bounds false positive
  // at -O3 (Release with TQ_WERROR).
  Bytes out;
  out.reserve(8 + json.size() + data.size());
  out.resize(8);
  wr(out, 0, 8, json.size());
  out.insert(out.end(), json.begin(), json.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void editText(Rng& r, std::string& s) {
  static const char* numbers[] = {"0", "1", "-1", "18446744073709551615", "18446744073709551616", "9223372036854775808", "1e400", "4294967296",
                                  "65536", "2.5", "99999999999", "[]", "null", "\"7\""};
  static const char* words[] = {"\"F16\"", "\"BF16\"", "\"F64\"", "\"I32\"", "\"I64\"", "\"U8\"", "\"F8_E4M3\"", "\"\"", "\"layers.0.k\"",
                                "\"kv\"", "\"__metadata__\"", "{}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "\xff\xfe", "\xc3\x28",
                                "\"data_offsets\"", "\"shape\"", "\"dtype\""};
  if (s.empty()) return;
  switch (r.below(9)) {
    case 0: {  // a digit becomes another digit
      for (int tries = 0; tries < 64; ++tries) {
        const size_t i = r.below(s.size());
        if (s[i] >= '0' && s[i] <= '9') {
          s[i] = static_cast<char>('0' + r.below(10));
          return;
        }
      }
      return;
    }
    case 1: s.erase(r.below(s.size()), 1 + r.below(8)); return;
    case 2: s.insert(r.below(s.size()), 1, "{}[]\",:0- \\\xff"[r.below(12)]); return;
    case 3: {  // a number is replaced by an extreme one
      const size_t i = r.below(s.size());
      size_t b = s.find_first_of("0123456789", i);
      if (b == std::string::npos) return;
      size_t e = s.find_first_not_of("0123456789", b);
      s.replace(b, e - b, numbers[r.below(sizeof numbers / sizeof *numbers)]);
      return;
    }
    case 4: {  // a quoted word is replaced
      const size_t i = s.find('"', r.below(s.size()));
      if (i == std::string::npos) return;
      const size_t j = s.find('"', i + 1);
      if (j == std::string::npos) return;
      s.replace(i, j - i + 1, words[r.below(sizeof words / sizeof *words)]);
      return;
    }
    case 5: {  // a span is duplicated
      const size_t i = r.below(s.size());
      const size_t n = std::min(s.size() - i, 1 + r.below(200));
      s.insert(r.below(s.size()), s.substr(i, n));
      return;
    }
    case 6: s.resize(r.below(s.size())); return;
    case 7: s.insert(r.below(s.size()), words[r.below(sizeof words / sizeof *words)]); return;
    default: {  // a dtype swap, the most likely edit to survive the parser
      static const char* dt[] = {"\"F16\"", "\"BF16\"", "\"F32\"", "\"F64\"", "\"I32\"", "\"I64\"", "\"BOOL\""};
      const size_t i = s.find("\"dtype\":", r.below(s.size()));
      if (i == std::string::npos) return;
      const size_t b = s.find('"', i + 8), e = s.find('"', b + 1);
      if (b == std::string::npos || e == std::string::npos) return;
      s.replace(b, e - b + 1, dt[r.below(7)]);
      return;
    }
  }
}

// ---- zip: central directory fields, local header fields, end record fields.
struct ZipMap {
  size_t eocd = 0;
  std::vector<size_t> central, local;
};
ZipMap mapZip(const Bytes& z) {
  ZipMap m;
  m.eocd = z.size() - 22;
  const size_t n = rd(z, m.eocd + 10, 2);
  size_t pos = rd(z, m.eocd + 16, 4);
  for (size_t i = 0; i < n; ++i) {
    m.central.push_back(pos);
    m.local.push_back(rd(z, pos + 42, 4));
    pos += 46 + rd(z, pos + 28, 2) + rd(z, pos + 30, 2) + rd(z, pos + 32, 2);
  }
  return m;
}
void editZip(Rng& r, Bytes& z, const ZipMap& m) {
  static const std::pair<int, int> centralFields[] = {{8, 2}, {10, 2}, {16, 4}, {20, 4}, {24, 4}, {28, 2}, {30, 2}, {32, 2}, {34, 2}, {42, 4}, {0, 4}};
  static const std::pair<int, int> localFields[] = {{0, 4}, {6, 2}, {8, 2}, {14, 4}, {18, 4}, {22, 4}, {26, 2}, {28, 2}};
  static const std::pair<int, int> endFields[] = {{4, 2}, {6, 2}, {8, 2}, {10, 2}, {12, 4}, {16, 4}, {20, 2}, {0, 4}};
  const size_t which = r.below(10);
  size_t at;
  int width;
  if (which < 5) {
    const auto& f = centralFields[r.below(sizeof centralFields / sizeof *centralFields)];
    at = m.central[r.below(m.central.size())] + static_cast<size_t>(f.first);
    width = f.second;
  } else if (which < 8) {
    const auto& f = localFields[r.below(sizeof localFields / sizeof *localFields)];
    at = m.local[r.below(m.local.size())] + static_cast<size_t>(f.first);
    width = f.second;
  } else {
    const auto& f = endFields[r.below(sizeof endFields / sizeof *endFields)];
    at = m.eocd + static_cast<size_t>(f.first);
    width = f.second;
  }
  wr(z, at, width, interesting(r, rd(z, at, width), width));
}

// ---- one seed file and how to mutate it.
enum class Kind { Safetensors, Npz, Npy, Compressed };
struct Seed {
  std::string name;
  Kind kind;
  Bytes bytes;
  int share;  // mutants per 100
  ZipMap zip;
};

struct Tally {
  size_t mutants = 0, accepted = 0, refused = 0;
  std::map<std::string, std::pair<size_t, size_t>> byOp;  // op -> (accepted, refused)
  double slowest = 0;
  std::string slowestWhat;
};

// Everything a user of the dump would touch.
void exercise(const KvDump& d, bool zeroPolicy) {
  const KvShape s = d.shape();
  for (int l = 0; l < s.layers; ++l) {
    for (int h = 0; h < s.kvHeads; ++h) {
      const auto k = d.keys(l, h);
      if (k.size() != static_cast<size_t>(s.seq) * static_cast<size_t>(s.headDim)) throw std::logic_error("keys of the wrong size");
      if (zeroPolicy)
        for (float v : k)
          if (!std::isfinite(v)) throw std::logic_error("non-finite key under the zero policy");
      if (s.hasValues && d.values(l, h).size() != static_cast<size_t>(s.seq) * static_cast<size_t>(s.headDimV)) throw std::logic_error("values of the wrong size");
      d.keysPreRope(l, h);
    }
    for (int h = 0; s.hasQueries && h < s.qHeads; ++h)
      if (d.queries(l, h).size() != static_cast<size_t>(s.seq) * static_cast<size_t>(s.headDim)) throw std::logic_error("queries of the wrong size");
  }
  d.tokens();
  d.tokenStrings();
  d.name();
  d.softmaxScale();
}

}  // namespace

class TstMutation : public QObject {
  Q_OBJECT
  std::vector<Seed> m_seeds;

 private slots:
  void initTestCase() {
    auto file = [](const char* f) {
      MappedFile m(std::string(TQ_TEST_DATA_DIR "/") + f);
      return Bytes(m.data(), m.data() + m.size());
    };
    m_seeds.push_back({"lily.safetensors", Kind::Safetensors, file("stories260K_lily_512.safetensors"), 30, {}});
    m_seeds.push_back({"tom.safetensors", Kind::Safetensors, file("stories260K_tom_256_f32.safetensors"), 15, {}});
    m_seeds.push_back({"sun.npz", Kind::Npz, file("stories260K_sun_384.npz"), 25, {}});
    // Derived from the real samples: the sun arrays as a stored (uncompressed) npz, one lily tensor as .npy,
    // and a compressed cache of lily.
    {
      const NpzFile sun(std::string(TQ_TEST_DATA_DIR "/stories260K_sun_384.npz"));
      NpzWriter w;
      for (const auto& t : sun.tensors()) {
        const SharedBytes b = sun.data(t);
        w.add(t.name, t.header.dtype, t.header.shape, b.data, b.size);
      }
      w.setMetadata(sun.metadata());
      m_seeds.push_back({"sun_stored.npz", Kind::Npz, w.serialize(false), 10, {}});
    }
    {
      const SafetensorsFile lily(std::string(TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors"));
      const TensorInfo& t = lily.require("layers.2.k");
      m_seeds.push_back({"lily_k2.npy", Kind::Npy, makeNpy(t.dtype, t.shape, lily.bytes(t), t.end - t.begin), 10, {}});
      const auto dump = KvDump::open(TQ_TEST_DATA_DIR "/stories260K_lily_512.safetensors");
      QuantConfig kc;
      kc.mode = KeyMode::Prod;
      kc.bits = 3;
      QuantConfig vc;
      vc.bits = 2;
      m_seeds.push_back({"lily_cache.safetensors", Kind::Compressed, serializeCompressed(compressCache(*dump, kc, vc, true, {0, 1})), 10, {}});
    }
    for (auto& s : m_seeds)
      if (s.kind == Kind::Npz) s.zip = mapZip(s.bytes);
  }

  // The unmutated seeds load: the harness is not refusing everything.
  void seedsLoad() {
    for (const auto& s : m_seeds) {
      if (s.kind == Kind::Compressed) QCOMPARE(loadCompressedBuffer(s.name, s.bytes).cache.layers.size(), size_t{2});
      else exercise(*KvDump::openBuffer(s.name, s.bytes), false);
    }
  }

  void mutants() {
    const char* env = std::getenv("TQ_MUTATIONS");
    const size_t total = env ? static_cast<size_t>(std::strtoul(env, nullptr, 10)) : 10400;
    Rng rng{0x7153a11e5eedull};
    Tally tally;
    QTemporaryDir dir;
    int shareSum = 0;
    for (const auto& s : m_seeds) shareSum += s.share;
    for (size_t i = 0; i < total; ++i) {
      // Pick a seed by share, deterministically.
      size_t pick = rng.below(static_cast<size_t>(shareSum));
      const Seed* seed = &m_seeds[0];
      for (const auto& s : m_seeds) {
        if (pick < static_cast<size_t>(s.share)) {
          seed = &s;
          break;
        }
        pick -= static_cast<size_t>(s.share);
      }
      Bytes b = seed->bytes;
      std::string op;
      const int ops = rng.chance(80) ? 1 : 2 + static_cast<int>(rng.below(2));
      for (int k = 0; k < ops && !b.empty(); ++k) {
        const size_t choice = rng.below(10);
        const bool structured = seed->kind == Kind::Safetensors || seed->kind == Kind::Compressed;
        if (choice < 3) {
          // Bit flips, half of them in the header / directory region where they matter most.
          size_t lo = 0, hi = b.size();
          if (rng.chance(50)) {
            if (structured && b.size() >= 8) hi = std::min<size_t>(b.size(), 8 + rd(b, 0, 8));
            else if (seed->kind == Kind::Npz) lo = std::min(seed->zip.central.empty() ? b.size() : seed->zip.central[0], b.size());
            else hi = std::min<size_t>(b.size(), 128);
          }
          flipBits(rng, b, lo, hi);
          op += "flip ";
        } else if (choice < 4) {
          b.resize(rng.below(b.size()));
          op += "truncate ";
        } else if (structured && choice < 5 && b.size() >= 8) {
          wr(b, 0, 8, interesting(rng, rd(b, 0, 8), 8));
          op += "header-length ";
        } else if (structured && b.size() >= 8 && rd(b, 0, 8) <= b.size() - 8) {
          StParts p = splitSt(b);
          editText(rng, p.json);
          b = joinSt(p.json, p.data);
          op += "json ";
        } else if (seed->kind == Kind::Npz && b.size() == seed->bytes.size()) {
          editZip(rng, b, seed->zip);
          op += "zip-field ";
        } else if (seed->kind == Kind::Npy && b.size() > 10) {
          const size_t hl = std::min<size_t>(10 + rd(b, 8, 2), b.size());
          if (rng.chance(25)) {
            wr(b, 8, 2, interesting(rng, rd(b, 8, 2), 2));
            op += "npy-length ";
          } else {
            std::string h(b.begin() + 10, b.begin() + static_cast<long>(hl));
            editText(rng, h);
            Bytes out(b.begin(), b.begin() + 10);
            wr(out, 8, 2, h.size() & 0xffff);
            out.insert(out.end(), h.begin(), h.end());
            out.insert(out.end(), b.begin() + static_cast<long>(hl), b.end());
            b = std::move(out);
            op += "npy-header ";
          }
        } else {
          flipBits(rng, b, 0, b.size());
          op += "flip ";
        }
      }
      const std::string what = seed->name + " #" + std::to_string(i) + " (" + op + ")";
      LoadOptions o;
      o.scanOnOpen = rng.chance(70);
      o.nonFinite = rng.chance(50) ? NonFinitePolicy::Zero : NonFinitePolicy::Refuse;
      const bool viaFile = rng.chance(2);
      const auto t0 = std::chrono::steady_clock::now();
      bool accepted = false;
      try {
        if (seed->kind == Kind::Compressed) {
          loadCompressedBuffer(seed->name, b);
        } else {
          std::unique_ptr<KvDump> d;
          if (viaFile) {
            const std::string path = dir.filePath(QString::fromStdString(seed->name)).toStdString();
            std::FILE* f = std::fopen(path.c_str(), "wb");
            if (!b.empty()) std::fwrite(b.data(), 1, b.size(), f);
            std::fclose(f);
            d = KvDump::open(path, o);
          } else {
            d = KvDump::openBuffer(seed->name, b, o);
          }
          exercise(*d, o.nonFinite == NonFinitePolicy::Zero);
          if (seed->kind == Kind::Safetensors) SafetensorsFile(std::make_shared<const MappedFile>(seed->name, b));
        }
        accepted = true;
      } catch (const DataError& e) {
        const std::string msg = e.what();
        QVERIFY2(msg.rfind(seed->name, 0) == 0 || viaFile, qPrintable(QString::fromStdString("message does not start with the file name: " + msg + " — " + what)));
      } catch (const std::exception& e) {
        QFAIL(qPrintable(QString::fromStdString(what + ": unexpected " + typeid(e).name() + ": " + e.what())));
      }
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (sec > tally.slowest) tally.slowest = sec, tally.slowestWhat = what;
      ++tally.mutants;
      (accepted ? tally.accepted : tally.refused)++;
      auto& c = tally.byOp[ops == 1 ? op : std::string("combined ")];
      (accepted ? c.first : c.second)++;
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    qInfo("%zu mutants: %zu loaded, %zu refused; slowest %.3f s (%s); peak RSS %ld MiB", tally.mutants, tally.accepted, tally.refused, tally.slowest,
          tally.slowestWhat.c_str(), ru.ru_maxrss / 1024);
    for (const auto& [op, c] : tally.byOp) qInfo("  %-28s %6zu loaded %6zu refused", op.c_str(), c.first, c.second);
    QVERIFY(tally.mutants >= std::min<size_t>(total, 10000));
    // The mutations reach the validation (most structural edits are refused) and data-only edits still load.
    QVERIFY(tally.refused > tally.mutants / 4);
    QVERIFY(tally.accepted > tally.mutants / 20);
    for (const char* op : {"truncate ", "header-length ", "json ", "zip-field ", "npy-header "})
      if (tally.byOp.count(op)) QVERIFY2(tally.byOp[op].second > 0, op);
    QVERIFY2(tally.slowest < 10.0, qPrintable(QString::fromStdString("slow mutant: " + tally.slowestWhat)));
    QVERIFY2(ru.ru_maxrss < 3l * 1024 * 1024, "peak RSS above 3 GiB");
  }
};

QTEST_APPLESS_MAIN(TstMutation)
#include "tst_mutation.moc"
