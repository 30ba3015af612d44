// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/compressed_io.h"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "data/io_util.h"
#include "data/queries.h"
#include "data/safetensors.h"

namespace tq {

using io::quote;

namespace {

constexpr const char* kFormat = "tq-compressed/1";

uint64_t fnv1a(const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(float); ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

nlohmann::json configJson(const QuantConfig& c, const Quantizer& q) {
  nlohmann::json j;
  j["dim"] = c.dim;
  j["bits"] = c.bits;
  j["mode"] = keyModeName(c.mode);
  j["proj_dim"] = c.projDim;
  j["rotation"] = rotationName(c.rotation);
  j["law"] = lawName(c.law);
  j["seed"] = c.seed;
  j["reference_one_bit"] = c.referenceOneBit;
  j["rotation_fnv1a"] = hex64(fnv1a(q.rotation().matrix()));
  j["qjl_fnv1a"] = hex64(fnv1a(q.qjlMatrix()));
  return j;
}

std::string prefix(size_t layer, bool values, size_t head) {
  return "layers." + std::to_string(layer) + (values ? ".v." : ".k.") + std::to_string(head);
}

void checkBuffers(const CompressedVectors& cv, const std::string& what, const Quantizer& q) {
  if (cv.dim != q.dim() || cv.mseBits != q.mseBits() || cv.projDim != q.projDim())
    throw std::invalid_argument("saveCompressed: " + what + " was not produced by its layer's configuration");
  if (cv.codes.size() != cv.count * cv.codeBytes() || cv.signs.size() != cv.count * (cv.projDim > 0 ? cv.signBytes() : 0) ||
      cv.norms.size() != cv.count || cv.residualNorms.size() != (cv.projDim > 0 ? cv.count : 0))
    throw std::invalid_argument("saveCompressed: buffer sizes of " + what + " do not match its count");
}

}  // namespace

size_t CompressedCache::bytes() const {
  size_t n = 0;
  for (const auto& l : layers) {
    for (const auto& cv : l.keys) n += cv.bytes();
    for (const auto& cv : l.values) n += cv.bytes();
  }
  return n;
}

CompressedCache compressCache(const KvSource& src, const QuantConfig& keyCfg, const QuantConfig& valueCfg, bool withValues,
                              const std::vector<int>& layers) {
  const KvShape s = src.shape();
  std::vector<int> which = layers;
  if (which.empty())
    for (int l = 0; l < s.layers; ++l) which.push_back(l);
  CompressedCache cache;
  cache.metadata["source"] = src.name();
  cache.metadata["model"] = src.modelName();
  for (int l : which) {
    if (l < 0 || l >= s.layers) throw std::out_of_range("compressCache: layer " + std::to_string(l) + " out of range");
    CompressedLayer cl;
    cl.sourceLayer = l;
    cl.keyConfig = keyCfg;
    cl.keyConfig.dim = s.headDim;
    cl.keyConfig.seed = layerSeed(keyCfg.seed, l, false);
    const Quantizer kq(cl.keyConfig);
    for (int h = 0; h < s.kvHeads; ++h) {
      const std::vector<float> k = src.keys(l, h);
      cl.keys.push_back(kq.compress(k.data(), k.size() / static_cast<size_t>(s.headDim)));
    }
    if (withValues && s.hasValues) {
      cl.valueConfig = valueCfg;
      cl.valueConfig.mode = KeyMode::Mse;
      cl.valueConfig.dim = s.headDimV;
      cl.valueConfig.seed = layerSeed(valueCfg.seed, l, true);
      const Quantizer vq(cl.valueConfig);
      for (int h = 0; h < s.kvHeads; ++h) {
        const std::vector<float> v = src.values(l, h);
        cl.values.push_back(vq.compress(v.data(), v.size() / static_cast<size_t>(s.headDimV)));
      }
    }
    cache.layers.push_back(std::move(cl));
  }
  return cache;
}

std::vector<uint8_t> serializeCompressed(const CompressedCache& cache) {
  SafetensorsWriter w;
  w.setMetadata("format", kFormat);
  w.setMetadata("layers", std::to_string(cache.layers.size()));
  nlohmann::json src = nlohmann::json::object();
  for (const auto& [k, v] : cache.metadata) src[k] = v;
  w.setMetadata("source_metadata", src.dump());
  for (size_t L = 0; L < cache.layers.size(); ++L) {
    const CompressedLayer& cl = cache.layers[L];
    const bool hasValues = !cl.values.empty();
    if (hasValues && cl.values.size() != cl.keys.size()) throw std::invalid_argument("saveCompressed: layer " + std::to_string(L) + " has different numbers of key and value heads");
    nlohmann::json lj;
    lj["source_layer"] = cl.sourceLayer;
    lj["kv_heads"] = cl.keys.size();
    for (int kind = 0; kind < (hasValues ? 2 : 1); ++kind) {
      const bool values = kind == 1;
      const QuantConfig& cfg = values ? cl.valueConfig : cl.keyConfig;
      if (cfg.rotation == RotationKind::Explicit) throw std::invalid_argument("saveCompressed: an explicit rotation cannot be rebuilt from a seed");
      if (values && cfg.mode != KeyMode::Mse) throw std::invalid_argument("saveCompressed: values must use the MSE mode");
      const Quantizer q(cfg);
      lj[values ? "values" : "keys"] = configJson(cfg, q);
      const auto& heads = values ? cl.values : cl.keys;
      if (q.codebookPtr()) {
        const auto& c = q.codebookPtr()->centroids;
        w.add("layers." + std::to_string(L) + (values ? ".v" : ".k") + ".codebook", DType::F64, {static_cast<int64_t>(c.size())}, c.data(), c.size() * sizeof(double));
      }
      for (size_t h = 0; h < heads.size(); ++h) {
        const CompressedVectors& cv = heads[h];
        const std::string p = prefix(L, values, h);
        checkBuffers(cv, p, q);
        const auto n = static_cast<int64_t>(cv.count);
        if (cv.codeBytes() > 0) w.add(p + ".codes", DType::U8, {n, static_cast<int64_t>(cv.codeBytes())}, cv.codes.data(), cv.codes.size());
        if (cv.projDim > 0) w.add(p + ".signs", DType::U8, {n, static_cast<int64_t>(cv.signBytes())}, cv.signs.data(), cv.signs.size());
        w.add(p + ".norms", DType::F16, {n}, cv.norms.data(), cv.norms.size() * 2);
        if (cv.projDim > 0) w.add(p + ".residual_norms", DType::F16, {n}, cv.residualNorms.data(), cv.residualNorms.size() * 2);
      }
    }
    if (!hasValues) lj["values"] = nullptr;
    w.setMetadata("layers." + std::to_string(L) + ".config", lj.dump());
  }
  return w.serialize();
}

void saveCompressed(const std::string& path, const CompressedCache& cache) {
  const std::vector<uint8_t> bytes = serializeCompressed(cache);
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw DataError(path, std::string("cannot write: ") + std::strerror(errno));
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw DataError(path, "write failed");
  }
}

// ---------------------------------------------------------------------------------------------------

namespace {

struct Loader {
  const SafetensorsFile& f;
  std::set<std::string> used;
  std::map<std::string, std::shared_ptr<const Quantizer>> quantizers;

  [[noreturn]] void fail(const std::string& m) const { throw DataError(f.path(), m); }

  int64_t intField(const nlohmann::json& j, const char* key, int64_t lo, int64_t hi, const std::string& where) const {
    if (!j.contains(key) || !j[key].is_number_integer()) fail(where + ": field " + key + " is missing or not an integer");
    const int64_t v = j[key].get<int64_t>();
    if (v < lo || v > hi) fail(where + ": " + key + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
  }
  std::string strField(const nlohmann::json& j, const char* key, const std::string& where) const {
    if (!j.contains(key) || !j[key].is_string()) fail(where + ": field " + key + " is missing or not a string");
    return j[key].get<std::string>();
  }

  QuantConfig parseConfig(const nlohmann::json& j, const std::string& where) const {
    if (!j.is_object()) fail(where + " is not a JSON object");
    QuantConfig c;
    c.dim = static_cast<int>(intField(j, "dim", 2, 4096, where));
    c.bits = static_cast<int>(intField(j, "bits", 1, 8, where));
    c.projDim = static_cast<int>(intField(j, "proj_dim", 0, 16384, where));
    try {
      c.mode = parseKeyMode(strField(j, "mode", where));
      c.rotation = parseRotation(strField(j, "rotation", where));
      c.law = parseLaw(strField(j, "law", where));
    } catch (const std::invalid_argument& e) {
      fail(where + ": " + io::printable(e.what()));
    }
    if (!j.contains("seed") || !j["seed"].is_number_unsigned()) fail(where + ": field seed is missing or not a non-negative integer");
    c.seed = j["seed"].get<uint64_t>();
    if (!j.contains("reference_one_bit") || !j["reference_one_bit"].is_boolean()) fail(where + ": field reference_one_bit is missing or not a boolean");
    c.referenceOneBit = j["reference_one_bit"].get<bool>();
    return c;
  }

  const TensorInfo& tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
    const TensorInfo* t = f.find(name);
    if (!t) fail("tensor " + quote(name) + " is missing");
    if (t->dtype != dtype || t->shape != shape) {
      std::string want, got;
      for (auto s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
      for (auto s : t->shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
      fail("tensor " + quote(name) + " is " + dtypeName(t->dtype) + " [" + got + "], expected " + dtypeName(dtype) + " [" + want + "]");
    }
    used.insert(name);
    return *t;
  }

  std::shared_ptr<const Quantizer> quantizer(const QuantConfig& c, const nlohmann::json& j, const std::string& where, const std::string& codebookName) {
    const std::string key = j.dump();
    std::shared_ptr<const Quantizer> q;
    if (auto it = quantizers.find(key); it != quantizers.end()) q = it->second;
    else {
      try {
        q = std::make_shared<const Quantizer>(c);
      } catch (const std::exception& e) {
        fail(where + ": cannot rebuild the quantizer: " + io::printable(e.what()));
      }
      quantizers.emplace(key, q);
    }
    if (strField(j, "rotation_fnv1a", where) != hex64(fnv1a(q->rotation().matrix())))
      fail(where + ": the rotation rebuilt from seed " + std::to_string(c.seed) + " differs from the one used to compress (other version or platform?)");
    if (strField(j, "qjl_fnv1a", where) != hex64(fnv1a(q->qjlMatrix())))
      fail(where + ": the QJL matrix rebuilt from seed " + std::to_string(c.seed) + " differs from the one used to compress");
    if (q->codebookPtr()) {
      const auto& c0 = q->codebookPtr()->centroids;
      const TensorInfo& t = tensor(codebookName, DType::F64, {static_cast<int64_t>(c0.size())});
      const uint8_t* b = f.bytes(t);
      double maxDiff = 0;
      bool same = true;
      for (size_t i = 0; i < c0.size(); ++i) {
        double v;
        std::memcpy(&v, b + 8 * i, 8);
        if (std::memcmp(&v, &c0[i], 8) != 0) {
          same = false;
          const double d = v > c0[i] ? v - c0[i] : c0[i] - v;
          if (!(d <= maxDiff)) maxDiff = d;
        }
      }
      if (!same) fail(where + ": stored codebook " + quote(codebookName) + " differs from the one rebuilt from the configuration (max difference " + std::to_string(maxDiff) + ")");
    }
    return q;
  }

  CompressedVectors heads(const Quantizer& q, const std::string& p) {
    CompressedVectors cv;
    cv.dim = q.dim();
    cv.mseBits = q.mseBits();
    cv.projDim = q.projDim();
    const TensorInfo* nt = f.find(p + ".norms");
    if (!nt) fail("tensor " + quote(p + ".norms") + " is missing");
    if (nt->shape.size() != 1) fail("tensor " + quote(p + ".norms") + " is not 1-D");
    const int64_t n = nt->shape[0];
    cv.count = static_cast<size_t>(n);
    const TensorInfo& norms = tensor(p + ".norms", DType::F16, {n});
    cv.norms.resize(cv.count);
    if (cv.count) std::memcpy(cv.norms.data(), f.bytes(norms), cv.count * 2);
    if (cv.codeBytes() > 0) {
      const TensorInfo& t = tensor(p + ".codes", DType::U8, {n, static_cast<int64_t>(cv.codeBytes())});
      cv.codes.assign(f.bytes(t), f.bytes(t) + (t.end - t.begin));
    }
    if (cv.projDim > 0) {
      const TensorInfo& s = tensor(p + ".signs", DType::U8, {n, static_cast<int64_t>(cv.signBytes())});
      cv.signs.assign(f.bytes(s), f.bytes(s) + (s.end - s.begin));
      const TensorInfo& r = tensor(p + ".residual_norms", DType::F16, {n});
      cv.residualNorms.resize(cv.count);
      if (cv.count) std::memcpy(cv.residualNorms.data(), f.bytes(r), cv.count * 2);
    }
    return cv;
  }
};

LoadedCompressedCache loadFrom(const SafetensorsFile& f) {
  Loader ld{f, {}, {}};
  const auto& md = f.metadata();
  auto meta = [&](const std::string& k) -> const std::string& {
    auto it = md.find(k);
    if (it == md.end()) ld.fail("metadata " + quote(k) + " is missing (not a " + std::string(kFormat) + " file?)");
    return it->second;
  };
  if (meta("format") != kFormat) ld.fail("metadata format is " + quote(meta("format")) + ", expected " + kFormat);
  const std::string& ls = meta("layers");
  char* end = nullptr;
  const long layers = std::strtol(ls.c_str(), &end, 10);
  if (ls.empty() || end != ls.c_str() + ls.size() || layers < 0 || static_cast<size_t>(layers) > f.tensors().size())
    ld.fail("metadata layers = " + quote(ls) + " is not a valid layer count");
  LoadedCompressedCache out;
  {
    const std::string& s = meta("source_metadata");
    const nlohmann::json j = io::parseJson(s.data(), s.data() + s.size(), f.path(), "metadata source_metadata", 4);
    if (!j.is_object()) ld.fail("metadata source_metadata is not a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.value().is_string()) out.cache.metadata[it.key()] = it.value().get<std::string>();
  }
  for (long L = 0; L < layers; ++L) {
    const std::string where = "layer " + std::to_string(L);
    const std::string& text = meta("layers." + std::to_string(L) + ".config");
    const nlohmann::json lj = io::parseJson(text.data(), text.data() + text.size(), f.path(), "metadata of " + where, 4);
    if (!lj.is_object()) ld.fail("configuration of " + where + " is not a JSON object");
    CompressedLayer cl;
    cl.sourceLayer = static_cast<int>(ld.intField(lj, "source_layer", 0, 1000000, where));
    const int kvHeads = static_cast<int>(ld.intField(lj, "kv_heads", 1, 65536, where));
    if (static_cast<size_t>(kvHeads) > f.tensors().size()) ld.fail(where + ": kv_heads = " + std::to_string(kvHeads) + " but the file holds only " + std::to_string(f.tensors().size()) + " tensors");
    if (!lj.contains("keys")) ld.fail(where + ": keys configuration is missing");
    const bool hasValues = lj.contains("values") && !lj["values"].is_null();
    for (int kind = 0; kind < (hasValues ? 2 : 1); ++kind) {
      const bool values = kind == 1;
      const std::string w = where + (values ? " values" : " keys");
      const nlohmann::json& cj = lj[values ? "values" : "keys"];
      const QuantConfig cfg = ld.parseConfig(cj, w);
      if (values && cfg.mode != KeyMode::Mse) ld.fail(w + ": values must use the MSE mode");
      // Check that the tensors exist with the configuration's shapes before building anything.
      {
        CompressedVectors probe;
        probe.dim = cfg.dim;
        probe.mseBits = cfg.mseBits();
        probe.projDim = cfg.qjlRows();
        for (int h = 0; h < kvHeads; ++h) {
          const std::string p = prefix(static_cast<size_t>(L), values, static_cast<size_t>(h));
          const TensorInfo* nt = f.find(p + ".norms");
          if (!nt || nt->shape.size() != 1) ld.fail("tensor " + quote(p + ".norms") + " is missing or not 1-D");
          if (probe.codeBytes() > 0) {
            const TensorInfo* ct = f.find(p + ".codes");
            if (!ct || ct->shape.size() != 2 || ct->shape[1] != static_cast<int64_t>(probe.codeBytes()))
              ld.fail("tensor " + quote(p + ".codes") + " is missing or does not match dim " + std::to_string(cfg.dim) + " x " + std::to_string(probe.mseBits) + " bits");
          }
          if (probe.projDim > 0) {
            const TensorInfo* st = f.find(p + ".signs");
            if (!st || st->shape.size() != 2 || st->shape[1] != static_cast<int64_t>(probe.signBytes()))
              ld.fail("tensor " + quote(p + ".signs") + " is missing or does not match proj_dim " + std::to_string(probe.projDim));
          }
        }
      }
      const auto q = ld.quantizer(cfg, cj, w, "layers." + std::to_string(L) + (values ? ".v" : ".k") + ".codebook");
      (values ? cl.valueConfig : cl.keyConfig) = cfg;
      for (int h = 0; h < kvHeads; ++h)
        (values ? cl.values : cl.keys).push_back(ld.heads(*q, prefix(static_cast<size_t>(L), values, static_cast<size_t>(h))));
      (values ? out.valueQuantizers : out.keyQuantizers).push_back(q);
    }
    if (!hasValues) out.valueQuantizers.push_back(nullptr);
    out.cache.layers.push_back(std::move(cl));
  }
  for (const auto& t : f.tensors())
    if (!ld.used.count(t.name)) ld.fail("unexpected tensor " + quote(t.name) + " in a " + kFormat + " file");
  return out;
}

}  // namespace

LoadedCompressedCache loadCompressed(const std::string& path) {
  const SafetensorsFile f(path);
  return loadFrom(f);
}

LoadedCompressedCache loadCompressedBuffer(const std::string& name, std::vector<uint8_t> bytes) {
  const SafetensorsFile f(std::make_shared<const MappedFile>(name, std::move(bytes)));
  return loadFrom(f);
}

CompressedSummary summarizeCompressed(const CompressedCache& cache) {
  CompressedSummary s;
  s.layers = cache.layers.size();
  s.bytes = cache.bytes();
  for (const auto& l : cache.layers) {
    s.kvHeads = std::max(s.kvHeads, l.keys.size());
    if (!l.keys.empty()) s.tokens = std::max(s.tokens, l.keys[0].count);
    std::string line = "layer " + std::to_string(l.sourceLayer) + ": keys " + std::to_string(l.keyConfig.bits) + "-bit " + keyModeName(l.keyConfig.mode);
    if (l.keyConfig.mode != KeyMode::Mse && !l.keys.empty()) line += " (m = " + std::to_string(l.keys[0].projDim) + ")";
    if (!l.values.empty()) line += ", values " + std::to_string(l.valueConfig.bits) + "-bit mse";
    if (!l.keys.empty()) {
      line += "; " + std::to_string(l.keys[0].bytesPerVector());
      if (!l.values.empty()) line += " + " + std::to_string(l.values[0].bytesPerVector());
      line += " B/vector";
    }
    s.layerLines.push_back(line);
  }
  return s;
}

std::string CompressedSummary::describe() const {
  std::string out = "tq-compressed/1 cache: " + std::to_string(layers) + " layers, " + std::to_string(kvHeads) + " kv heads, " +
                    std::to_string(tokens) + " tokens, " + std::to_string(bytes) + " bytes of codes, signs and norms\n";
  for (const auto& l : layerLines) out += "  " + l + "\n";
  out += "verified: codebooks, rotation and QJL fingerprints equal the rebuilt quantizers; every buffer has its size\n";
  return out;
}

bool isCompressedCacheFile(const std::string& path) {
  try {
    const SafetensorsFile f(path);
    const auto it = f.metadata().find("format");
    return it != f.metadata().end() && it->second == kFormat;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace tq
