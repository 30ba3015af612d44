// SPDX-License-Identifier: GPL-3.0-or-later
// Hostile input, by failure class (issue 12): every refusal is exit 2 with one line that names the file
// or argument and the problem; nothing crashes, blocks, allocates without bound or succeeds wrongly; and
// nothing is written next to an input. Each case builds its own input in a temporary folder.
#include <QtTest/QtTest>

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "cli.h"
#include <nlohmann/json.hpp>
#include "data/npz.h"
#include "data/safetensors.h"
#include "util/half.h"

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

void writeBytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
void writeText(const std::string& path, const std::string& s) { std::ofstream(path, std::ios::binary) << s; }

/// A tq-kvdump/1 safetensors file: layers x [heads, seq, dim] keys, values and queries (fp16).
std::vector<uint8_t> kvDump(int layers, int heads, int seq, int dim, float scale = 1.0f, const std::map<std::string, std::string>& md = {}) {
  tq::SafetensorsWriter w;
  for (const auto& [k, v] : md) w.setMetadata(k, v);
  for (int l = 0; l < layers; ++l)
    for (const char* role : {"k", "v", "q"}) {
      std::vector<uint16_t> h(static_cast<size_t>(heads) * seq * dim);
      for (size_t i = 0; i < h.size(); ++i) h[i] = tq::floatToHalf(scale * static_cast<float>(std::sin(0.37 * i + l + role[0])));
      w.add("layers." + std::to_string(l) + "." + role, tq::DType::F16, {heads, seq, dim}, h.data(), h.size() * 2);
    }
  return w.serialize();
}

/// A safetensors file whose header is the given text (data section: `data` bytes of zeros).
std::vector<uint8_t> rawSafetensors(const std::string& header, size_t data) {
  std::vector<uint8_t> out(8 + header.size() + data, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

/// The refusal contract: exit 2, nothing on stdout, one line on stderr naming `who` and saying `what`.
void expectRefusal(const Run& r, const std::string& who, const std::string& what) {
  QVERIFY2(r.code == 2, (std::to_string(r.code) + " " + r.err + r.out).c_str());
  QVERIFY2(r.out.empty(), r.out.c_str());
  QVERIFY2(r.err.find(who) != std::string::npos, r.err.c_str());
  QVERIFY2(r.err.find(what) != std::string::npos, r.err.c_str());
  QVERIFY2(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err.c_str());
  QVERIFY2(r.err.find("std::") == std::string::npos && r.err.find("stoi") == std::string::npos, r.err.c_str());
}
}  // namespace

class TstHostile : public QObject {
  Q_OBJECT
  QTemporaryDir m_dir;
  std::string p(const char* name) const { return m_dir.filePath(name).toStdString(); }

 private slots:
  // ---------------------------------------------------------------- crashes
  void headDimTheQuantizerRefusesIsRefusedAtOpen() {
    writeBytes(p("d5000.safetensors"), kvDump(1, 1, 2, 5000));
    for (const char* cmd : {"info", "evaluate"}) expectRefusal(run({cmd, p("d5000.safetensors")}), "d5000.safetensors", "head_dim 5000 is outside 2..4096");
  }
  void workWithoutACancelPointIsBounded() {
    // A dense Haar rotation above d = 1024 (2 d^3 operations, minutes at 4096) is refused with the way out.
    writeBytes(p("d2048.safetensors"), kvDump(1, 1, 4, 2048));
    expectRefusal(run({"evaluate", p("d2048.safetensors"), "--key-bits", "2", "--mode", "mse"}), "d2048.safetensors", "use the Hadamard rotation");
  }
  void windowAndFigureSizesAreBounded() {
#ifdef TQ_HAVE_UI
    expectRefusal(run({"export-figures", "sample", "--out", p("o1"), "--window-size", "100000x100000"}), "--window-size", "outside");
    expectRefusal(run({"export-figures", "sample", "--out", p("o2"), "--size", "20000x20000"}), "--size 20000x20000", "outside");
    expectRefusal(run({"export-figures", "sample", "--out", p("o3"), "--dpi", "100000"}), "--dpi", "24..1200");
#else
    QSKIP("no GUI library in this build");
#endif
  }
  void crosscheckChecksSizesBeforeValues() {
    auto ref = [&](const char* name, const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors) {
      tq::SafetensorsWriter w;
      for (const auto& [n, shape] : tensors) {
        size_t e = 1;
        for (auto s : shape) e *= static_cast<size_t>(s);
        std::vector<float> v(e, 0.25f);
        // Valid where validity is checked first: an identity rotation, ascending centroids.
        if (n.size() > 9 && n.compare(n.size() - 9, 9, ".rotation") == 0 && shape.size() == 2 && shape[0] == shape[1])
          for (int64_t i = 0; i < shape[0]; ++i)
            for (int64_t j = 0; j < shape[0]; ++j) v[static_cast<size_t>(i * shape[0] + j)] = i == j ? 1.0f : 0.0f;
        if (n.find("centroids") != std::string::npos)
          for (size_t i = 0; i < e; ++i) v[i] = -1.0f + 2.0f * static_cast<float>(i) / static_cast<float>(e - 1);
        w.addF32(n, shape, v);
      }
      w.write(p(name));
      return p(name);
    };
    // d = 0 (used to divide by zero), a rotation of the wrong size, too few indices (read out of bounds).
    expectRefusal(run({"crosscheck", "--reference", ref("d0.safetensors", {{"d0.b2.mse.rotation", {1}}})}), "d0.safetensors", "head dimension 0");
    expectRefusal(run({"crosscheck", "--reference", ref("rot.safetensors", {{"d8.b2.mse.rotation", {8, 4}}, {"d8.unit_vectors", {3, 8}}})}),
                  "rot.safetensors", "d8.b2.mse.rotation holds 32 values, but the group needs 64");
    expectRefusal(run({"crosscheck", "--reference",
                       ref("idx.safetensors", {{"d8.b2.mse.rotation", {8, 8}}, {"d8.b2.mse.centroids", {4}}, {"d8.unit_vectors", {3, 8}},
                                               {"d8.b2.mse.indices", {2, 8}}, {"d8.b2.mse.reconstruction", {3, 8}}})}),
                  "idx.safetensors", "d8.b2.mse.indices holds 16 values, but the group needs 24");
    expectRefusal(run({"crosscheck", "--reference", ref("rows.safetensors", {{"d8.b2.mse.rotation", {8, 8}}, {"d8.unit_vectors", {3, 5}}})}),
                  "rows.safetensors", "not a positive multiple of 8");
    expectRefusal(run({"crosscheck", "--reference", ref("bits.safetensors", {{"d8.b9.mse.rotation", {8, 8}}})}), "bits.safetensors", "9 bits");
  }
  void experimentFilesAreBounded() {
#ifdef TQ_HAVE_UI
    writeText(p("big.json"), "{\"keyBits\": 3, \"pad\": \"" + std::string(2 << 20, 'x') + "\"}");
    expectRefusal(run({"export-figures", "sample", "--out", p("o4"), "--experiment", p("big.json")}), "big.json", "larger than the 1.0 MiB limit");
#else
    QSKIP("no GUI library in this build");
#endif
  }

  // ---------------------------------------------------------------- hangs
  void manyTensorsParseInLinearTime() {
    // 100k tensors (a quadratic parser took minutes); the ctest timeout turns a hang into a failure.
    std::string h = "{";
    for (int i = 0; i < 100000; ++i) h += (i ? ",\"x." : "\"x.") + std::to_string(i) + "\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[" +
                                         std::to_string(2 * i) + "," + std::to_string(2 * i + 2) + "]}";
    h += "}";
    writeBytes(p("many.safetensors"), rawSafetensors(h, 200000));
    expectRefusal(run({"info", p("many.safetensors")}), "many.safetensors", "no KV tensors recognised; found 100000 tensors");
  }
  void specialFilesAreRefusedWithoutBlocking() {
    QVERIFY(::mkfifo(p("fifo").c_str(), 0600) == 0);
    expectRefusal(run({"info", p("fifo")}), "fifo", "is a FIFO (named pipe), not a regular file");
    expectRefusal(run({"evaluate", p("fifo")}), "fifo", "not a regular file");
    expectRefusal(run({"crosscheck", "--reference", p("fifo")}), "fifo", "not a regular file");
    expectRefusal(run({"info", "/dev/zero"}), "/dev/zero", "is a character device, not a regular file");
    expectRefusal(run({"info", m_dir.path().toStdString()}), m_dir.path().toStdString(), "is a directory");
#ifdef TQ_HAVE_UI
    expectRefusal(run({"export-figures", "sample", "--out", p("o5"), "--experiment", p("fifo")}), "fifo", "not a regular file");
    expectRefusal(run({"export-figures", "sample", "--out", p("o6"), "--experiment", "/dev/urandom"}), "/dev/urandom", "not a regular file");
#endif
  }
  void hugeWorkIsRefusedWithTheLimit() {
    expectRefusal(run({"validate", "--dim", "1024", "--vectors", "10000000"}), "validate --vectors 10000000 --dim 1024", "more than the memory budget");
    expectRefusal(run({"bench", "--dim", "1024", "--vectors", "268435456"}), "bench --vectors 268435456 --dim 1024", "more than the memory budget");
    expectRefusal(run({"validate", "--memory-budget", "1M"}), "validate", "more than the memory budget of 1.0 MiB");
    expectRefusal(run({"validate", "--memory-budget", "lots"}), "--memory-budget", "expects a size");
  }

  // ---------------------------------------------------------------- unbounded memory
  void npzMembersAreCheckedAgainstTheBudgetBeforeInflating() {
    tq::NpzWriter w;
    std::vector<uint16_t> zeros(size_t{1} << 21);  // 4 MiB of fp16 zeros: deflates to a few KiB
    w.add("layers.0.k", tq::DType::F16, {1, 16384, 128}, zeros.data(), zeros.size() * 2);
    writeBytes(p("bomb.npz"), w.serialize(true));
    // info streams the member (bounded memory, whatever it inflates to); evaluate needs it whole.
    QCOMPARE(run({"info", p("bomb.npz"), "--memory-budget", "1M"}).code, 0);
    expectRefusal(run({"evaluate", p("bomb.npz"), "--memory-budget", "1M"}), "bomb.npz", "more than the memory budget of 1.0 MiB");
    // Metadata is capped whatever the budget (it is inflated and parsed whole).
    tq::NpzWriter m;
    std::vector<uint8_t> pad(17u << 20, ' ');
    m.add("__metadata__", tq::DType::U8, {static_cast<int64_t>(pad.size())}, pad.data(), pad.size());
    writeBytes(p("meta.npz"), m.serialize(true));
    expectRefusal(run({"info", p("meta.npz")}), "meta.npz", "limit for metadata");
  }

  // ---------------------------------------------------------------- wrong success
  void malformedHeadersAreRefused() {
    const std::string entry = "\"layers.0.k\":{\"dtype\":\"F16\",\"shape\":[1,2,4],\"data_offsets\":[0,16]}";
    writeBytes(p("nul.safetensors"), rawSafetensors("{" + entry + "}" + std::string(1, '\0') + "junk", 16));
    expectRefusal(run({"info", p("nul.safetensors")}), "nul.safetensors", "contains a NUL byte");
    writeBytes(p("dup.safetensors"),
               rawSafetensors("{\"layers.0.k\":{\"dtype\":\"F16\",\"shape\":[1,2,4],\"shape\":[1,4,2],\"data_offsets\":[0,16]}}", 16));
    expectRefusal(run({"info", p("dup.safetensors")}), "dup.safetensors", "repeats the key 'shape' inside one entry");
    writeBytes(p("dup2.safetensors"), rawSafetensors("{" + entry + "," + entry + "}", 16));
    expectRefusal(run({"info", p("dup2.safetensors")}), "dup2.safetensors", "repeats the key 'layers.0.k'");
  }
  void storedNpzMembersHaveTheirCrcChecked() {
    tq::NpzWriter w;
    std::vector<uint16_t> k(1 * 4 * 8);
    for (size_t i = 0; i < k.size(); ++i) k[i] = tq::floatToHalf(0.1f * static_cast<float>(i));
    w.add("layers.0.k", tq::DType::F16, {1, 4, 8}, k.data(), k.size() * 2);
    std::vector<uint8_t> b = w.serialize(false);
    writeBytes(p("good.npz"), b);
    QCOMPARE(run({"info", p("good.npz")}).code, 0);
    // Flip one byte of the array data (after the local header and the .npy header).
    const std::string needle(reinterpret_cast<const char*>(&k[5]), 2);
    const auto at = std::search(b.begin(), b.end(), needle.begin(), needle.end());
    QVERIFY(at != b.end());
    *at ^= 0x40;
    writeBytes(p("bad.npz"), b);
    expectRefusal(run({"info", p("bad.npz")}), "bad.npz", "CRC-32 mismatch");
  }
  void meaninglessScalesAndUnstorableNormsAreRefused() {
    for (const char* s : {"1e-50", "1e50", "0.0000001"}) {
      writeBytes(p("scale.safetensors"), kvDump(1, 1, 8, 8, 1.0f, {{"softmax_scale", s}}));
      expectRefusal(run({"evaluate", p("scale.safetensors"), "--key-bits", "3"}), "scale.safetensors", "outside the meaningful range");
    }
    writeBytes(p("big.safetensors"), kvDump(1, 1, 8, 8, 60000.0f));
    expectRefusal(run({"evaluate", p("big.safetensors"), "--key-bits", "3"}), "big.safetensors", "norm above 65504");
  }
  void flagsTakeNoStrayValues() {
    writeBytes(p("ok.safetensors"), kvDump(1, 1, 8, 8));
    const Run no = run({"info", p("ok.safetensors"), "--json=no"});
    QCOMPARE(no.code, 0);
    QVERIFY2(no.out.rfind("{", 0) != 0, no.out.c_str());  // text, not JSON
    QVERIFY(run({"info", p("ok.safetensors"), "--json=true"}).out.rfind("{", 0) == 0);
    expectRefusal(run({"info", p("ok.safetensors"), "--json=maybe"}), "--json", "is a flag");
  }
  void experimentFieldsAreTyped() {
#ifdef TQ_HAVE_UI
    const std::pair<const char*, const char*> cases[] = {{"{\"keyBits\": \"9\"}", "keyBits must be an integer in 1..8, got the string \"9\""},
                                                         {"{\"keyBits\": 2.5}", "keyBits must be an integer in 1..8, got the number 2.5"},
                                                         {"{\"sweepQueries\": true}", "sweepQueries must be an integer"},
                                                         {"{\"rotation\": 1}", "rotation must be a string"},
                                                         {"{\"data\": {\"kind\": \"synthetic\", \"synthetic\": {\"headDim\": 9000}}}", "data.synthetic.headDim"},
                                                         {"{\"format\": \"other/2\"}", "not tqstudio-experiment/1"},
                                                         {"[1, 2]", "not an experiment"}};
    int i = 0;
    for (const auto& [text, message] : cases) {
      const std::string f = p(("e" + std::to_string(i++) + ".json").c_str());
      writeText(f, text);
      expectRefusal(run({"export-figures", "sample", "--out", p("o7"), "--experiment", f}), f, message);
    }
#else
    QSKIP("no GUI library in this build");
#endif
  }

  // ---------------------------------------------------------------- unclear messages
  void rangesAreCheckedBeforeExpanding() {
    writeBytes(p("ok.safetensors"), kvDump(1, 1, 8, 8));
    expectRefusal(run({"evaluate", p("ok.safetensors"), "--layers", "1-2147483647"}), "--layers", "must be in 0..1048576, got 2147483647");
    expectRefusal(run({"evaluate", p("ok.safetensors"), "--layers", "99999999999999999999"}), "--layers", "is not an integer");
    expectRefusal(run({"evaluate", p("ok.safetensors"), "--key-bits", "4-2"}), "--key-bits", "descending range");
  }
  void foreignFilesSayWhatTheyAre() {
    writeBytes(p("image.safetensors"), {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'});
    expectRefusal(run({"info", p("image.safetensors")}), "image.safetensors", "is a PNG image, not a KV dump");
    writeText(p("model.gguf"), std::string("GGUF\x03\0\0\0", 8) + std::string(64, '\0'));
    expectRefusal(run({"info", p("model.gguf")}), "model.gguf", "is a GGUF model file");
  }

  // ---------------------------------------------------------------- tq-compressed/1
  void compressedCachesAreReadAndTamperingIsRefused() {
    writeBytes(p("src.safetensors"), kvDump(2, 2, 16, 8));
    const std::string c = p("c.safetensors");
    QCOMPARE(run({"compress", p("src.safetensors"), "--out", c, "--key-bits", "3", "--value-bits", "2"}).code, 0);
    expectRefusal(run({"compress", p("src.safetensors"), "--out", c}), c, "exists; pass --force");
    const Run info = run({"info", c, "--json"});
    QCOMPARE(info.code, 0);
    const auto j = nlohmann::json::parse(info.out);
    QCOMPARE(j["container"].get<std::string>(), std::string("tq-compressed/1"));
    QCOMPARE(j["layers"].get<int>(), 2);
    QCOMPARE(j["kv_heads"].get<int>(), 2);
    QCOMPARE(j["seq_len"].get<int>(), 16);
    QVERIFY(j["verified"].get<bool>());
    // Tampering: a codebook value changed; a buffer cut short (the file truncated).
    std::ifstream in(c, std::ios::binary);
    std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), {});
    const tq::SafetensorsFile sf(c);
    const tq::TensorInfo* cb = sf.find("layers.0.k.codebook");
    QVERIFY(cb);
    std::vector<uint8_t> t = b;
    uint64_t headerLen = 0;
    for (int i = 0; i < 8; ++i) headerLen |= static_cast<uint64_t>(b[static_cast<size_t>(i)]) << (8 * i);
    t[8 + headerLen + cb->begin + 3] ^= 0x10;
    writeBytes(p("tampered.safetensors"), t);
    expectRefusal(run({"info", p("tampered.safetensors")}), "tampered.safetensors", "codebook");
    // Commands that take a KV dump say what the file is instead of "no KV tensors recognised".
    expectRefusal(run({"evaluate", c}), c, "is a tq-compressed/1 cache");
    writeBytes(p("short.safetensors"), std::vector<uint8_t>(b.begin(), b.end() - 8));
    expectRefusal(run({"info", p("short.safetensors")}), "short.safetensors", "short.safetensors:");
  }

  // ---------------------------------------------------------------- nothing next to an input
  void refusalsWriteNothing() {
    QDir d(m_dir.path());
    const QStringList files = d.entryList(QDir::Files | QDir::NoDotAndDotDot | QDir::System);
    for (const QString& f : files) QVERIFY2(!f.endsWith(".tmp"), qPrintable(f));
    for (const char* out : {"o1", "o2", "o3", "o4", "o5", "o6", "o7"}) QVERIFY2(!QFileInfo(m_dir.filePath(out)).exists() || QDir(m_dir.filePath(out)).isEmpty(), out);
  }
};

QTEST_APPLESS_MAIN(TstHostile)
#include "tst_hostile.moc"
