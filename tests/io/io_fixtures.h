// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Small KV dumps built in memory for the I/O tests: every container, dtype and layout.
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/npy.h"
#include "data/npz.h"
#include "data/safetensors.h"
#include "util/half.h"

namespace tqtest {

using tq::DType;

enum Role { K = 0, V = 1, Q = 2 };

/// Raw little-endian bytes of v in dtype dt.
inline std::vector<uint8_t> encode(const std::vector<float>& v, DType dt) {
  std::vector<uint8_t> out(v.size() * tq::dtypeSize(dt));
  for (size_t i = 0; i < v.size(); ++i) {
    uint8_t* p = out.data() + i * tq::dtypeSize(dt);
    switch (dt) {
      case DType::F16: { const uint16_t h = tq::floatToHalf(v[i]); std::memcpy(p, &h, 2); break; }
      case DType::BF16: { const uint16_t h = tq::floatToBf16(v[i]); std::memcpy(p, &h, 2); break; }
      case DType::F32: std::memcpy(p, &v[i], 4); break;
      case DType::F64: { const double d = v[i]; std::memcpy(p, &d, 8); break; }
      default: break;
    }
  }
  return out;
}

/// What a reader must return for v stored as dt.
inline float roundTo(float v, DType dt) {
  switch (dt) {
    case DType::F16: return tq::halfToFloat(tq::floatToHalf(v));
    case DType::BF16: return tq::bf16ToFloat(tq::floatToBf16(v));
    default: return v;
  }
}

/// A deterministic dump: keys, values, queries per layer, [heads, seq, dim].
struct Fixture {
  int layers = 2, kvHeads = 2, qHeads = 4, seq = 5, dim = 4, dimV = 6;
  bool values = true, queries = true;
  std::vector<int32_t> tokens;  ///< written when non-empty

  float value(int role, int l, int h, int t, int j) const {
    return static_cast<float>(std::sin(0.37 * (role + 1) + 1.3 * l + 0.71 * h + 0.113 * t + 0.029 * j) * (1.0 + 0.5 * role + 0.25 * t));
  }
  int heads(int role) const { return role == Q ? qHeads : kvHeads; }
  int dimOf(int role) const { return role == V ? dimV : dim; }
  std::vector<float> tensor(int role, int l) const {
    std::vector<float> v;
    for (int h = 0; h < heads(role); ++h)
      for (int t = 0; t < seq; ++t)
        for (int j = 0; j < dimOf(role); ++j) v.push_back(value(role, l, h, t, j));
    return v;
  }
  /// Row-major [seq, dim] of one head as the reader must return it.
  std::vector<float> head(int role, int l, int h, DType dt) const {
    std::vector<float> v;
    for (int t = 0; t < seq; ++t)
      for (int j = 0; j < dimOf(role); ++j) v.push_back(roundTo(value(role, l, h, t, j), dt));
    return v;
  }
  std::vector<int64_t> shape(int role, bool batch) const {
    std::vector<int64_t> s = {heads(role), seq, dimOf(role)};
    if (batch) s.insert(s.begin(), 1);
    return s;
  }
  bool has(int role) const { return role == K || (role == V && values) || (role == Q && queries); }
};

/// Names of one (role, layer) in a layout; empty = the layout has no such tensor.
using Namer = std::function<std::string(int role, int layer)>;

inline Namer tqNames() {
  return [](int r, int l) { return "layers." + std::to_string(l) + (r == K ? ".k" : r == V ? ".v" : ".q"); };
}
inline Namer hfPastNames() {
  return [](int r, int l) { return r == Q ? std::string() : "past_key_values." + std::to_string(l) + (r == K ? ".key" : ".value"); };
}
inline Namer hfModelNames() {
  return [](int r, int l) { return "model.layers." + std::to_string(l) + ".self_attn." + (r == K ? "k" : r == V ? "v" : "q"); };
}
inline Namer layerNNames() {
  return [](int r, int l) { return "layer" + std::to_string(l) + (r == K ? ".k" : r == V ? ".v" : ".q"); };
}

/// Generic tensor sink so one description feeds safetensors and npz writers.
struct TensorList {
  struct T {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<T> tensors;
  std::map<std::string, std::string> metadata;

  void add(const std::string& name, DType dt, const std::vector<int64_t>& shape, std::vector<uint8_t> bytes) {
    tensors.push_back({name, dt, shape, std::move(bytes)});
  }
  std::vector<uint8_t> safetensors() const {
    tq::SafetensorsWriter w;
    for (const auto& [k, v] : metadata) w.setMetadata(k, v);
    for (const auto& t : tensors) w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
    return w.serialize();
  }
  std::vector<uint8_t> npz(bool deflate) const {
    tq::NpzWriter w;
    for (const auto& t : tensors) w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
    if (!metadata.empty()) w.setMetadata(metadata);
    return w.serialize(deflate);
  }
};

inline TensorList describe(const Fixture& f, DType dt, const Namer& names, bool batch = false) {
  TensorList tl;
  for (int l = 0; l < f.layers; ++l)
    for (int r : {K, V, Q}) {
      const std::string n = names(r, l);
      if (!f.has(r) || n.empty()) continue;
      tl.add(n, dt, f.shape(r, batch), encode(f.tensor(r, l), dt));
    }
  if (!f.tokens.empty()) {
    std::vector<uint8_t> b(f.tokens.size() * 4);
    std::memcpy(b.data(), f.tokens.data(), b.size());
    tl.add("tokens", DType::I32, {static_cast<int64_t>(f.tokens.size())}, b);
  }
  tl.metadata["format"] = "tq-kvdump/1";
  tl.metadata["model"] = "fixture";
  return tl;
}

/// One stacked tensor [layers, 2, heads, seq, dim] (dimV must equal dim).
inline TensorList describeStacked(const Fixture& f, DType dt, const std::string& name, bool batch) {
  std::vector<float> all;
  for (int l = 0; l < f.layers; ++l)
    for (int r : {K, V}) {
      const auto t = f.tensor(r, l);
      all.insert(all.end(), t.begin(), t.end());
    }
  std::vector<int64_t> shape = {f.layers, 2, f.kvHeads, f.seq, f.dim};
  if (batch) shape.insert(shape.begin() + 2, 1);
  TensorList tl;
  tl.add(name, dt, shape, encode(all, dt));
  return tl;
}

/// A safetensors file from a literal JSON header and data bytes.
inline std::vector<uint8_t> rawSafetensors(const std::string& header, const std::vector<uint8_t>& data) {
  // Reserved up front: growing an 8-byte vector by insert() trips GCC 12's -Warray-bounds false positive
  // at -O3 (Release with TQ_WERROR).
  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + data.size());
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// The bytes of an .npy file with a literal header dict (padded) and data.
inline std::vector<uint8_t> rawNpy(const std::string& dict, const std::vector<uint8_t>& data) {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64) h.push_back(' ');
  h.push_back('\n');
  const uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(h.size() & 0xff), static_cast<uint8_t>(h.size() >> 8)};
  std::vector<uint8_t> out(10 + h.size() + data.size());
  std::memcpy(out.data(), pre, 10);
  std::memcpy(out.data() + 10, h.data(), h.size());
  if (!data.empty()) std::memcpy(out.data() + 10 + h.size(), data.data(), data.size());
  return out;
}

inline std::vector<uint8_t> readFile(const std::string& path) {
  tq::MappedFile f(path);
  return std::vector<uint8_t>(f.data(), f.data() + f.size());
}

}  // namespace tqtest
