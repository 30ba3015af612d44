// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/kv_dump.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/io_util.h"
#include "quant/quantizer.h"
#include "util/parallel.h"
#include "data/npy.h"
#include "data/npz.h"

namespace tq {

using io::quote;

const char* containerName(Container c) {
  switch (c) {
    case Container::Safetensors: return "safetensors";
    case Container::Npz: return "npz";
    case Container::Npy: return "npy";
  }
  return "?";
}

KvShape KvDumpSummary::shape() const {
  KvShape s;
  s.layers = layers;
  s.qHeads = qHeads;
  s.kvHeads = kvHeads;
  s.seq = seq;
  s.headDim = headDim;
  s.headDimV = headDimV;
  s.hasQueries = hasQueries;
  s.hasValues = hasValues;
  return s;
}

std::string KvDumpSummary::describe() const {
  std::ostringstream os;
  os << layers << (layers == 1 ? " layer, " : " layers, ");
  if (hasQueries) os << qHeads << " q / ";
  os << kvHeads << " kv heads, " << seq << " tokens, head_dim " << headDim;
  if (hasValues && headDimV != headDim) os << " (values " << headDimV << ")";
  if (!hasValues) os << ", keys only";
  os << ", " << dtypeName(dtype) << ", " << containerName(container) << " (" << layout << ")";
  return os.str();
}

namespace {

// ---------------------------------------------------------------------------------------------------
// One interface over the three containers.

struct StoreTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t elements = 0;
  uint64_t bytes = 0;
};

std::string shapeText(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class Store {
 public:
  virtual ~Store() = default;
  Container container = Container::Safetensors;
  std::shared_ptr<const MappedFile> file;
  std::vector<StoreTensor> tensors;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> otherMembers;

  const std::string& path() const { return file->path(); }
  /// The whole tensor's bytes (a view into the mapping, or an inflated copy).
  virtual SharedBytes bytes(size_t i) const = 0;
  /// The tensor's bytes in order, bounded memory; false when fn cancelled.
  virtual bool stream(size_t i, const std::function<bool(const uint8_t*, size_t)>& fn) const = 0;

 protected:
  bool streamMapped(const uint8_t* p, uint64_t n, const std::function<bool(const uint8_t*, size_t)>& fn) const {
    constexpr uint64_t kChunk = 4u << 20;
    file->adviseSequential(p, static_cast<size_t>(n));
    for (uint64_t off = 0; off < n; off += kChunk) {
      const size_t step = static_cast<size_t>(std::min(kChunk, n - off));
      if (!fn(p + off, step)) return false;
      file->release(p + off, step);  // keep RSS flat while scanning a file larger than RAM
    }
    return true;
  }
};

class SafetensorsStore : public Store {
 public:
  explicit SafetensorsStore(std::shared_ptr<const MappedFile> f) : m_st(f) {
    container = Container::Safetensors;
    file = std::move(f);
    for (const auto& t : m_st.tensors()) tensors.push_back({t.name, t.dtype, t.shape, t.elements(), t.end - t.begin});
    metadata = m_st.metadata();
  }
  SharedBytes bytes(size_t i) const override {
    const TensorInfo& t = m_st.tensors()[i];
    return SharedBytes{file, m_st.bytes(t), t.end - t.begin};
  }
  bool stream(size_t i, const std::function<bool(const uint8_t*, size_t)>& fn) const override {
    const TensorInfo& t = m_st.tensors()[i];
    return streamMapped(m_st.bytes(t), t.end - t.begin, fn);
  }

 private:
  SafetensorsFile m_st;
};

class NpzStore : public Store {
 public:
  NpzStore(std::shared_ptr<const MappedFile> f, const ZipLimits& limits) : m_npz(f, limits) {
    container = Container::Npz;
    file = std::move(f);
    for (const auto& t : m_npz.tensors()) tensors.push_back({t.name, t.header.dtype, t.header.shape, t.header.elements(), t.header.dataBytes});
    metadata = m_npz.metadata();
    otherMembers = m_npz.otherMembers();
  }
  SharedBytes bytes(size_t i) const override { return m_npz.data(m_npz.tensors()[i]); }
  bool stream(size_t i, const std::function<bool(const uint8_t*, size_t)>& fn) const override { return m_npz.streamData(m_npz.tensors()[i], fn); }

 private:
  NpzFile m_npz;
};

class NpyStore : public Store {
 public:
  explicit NpyStore(std::shared_ptr<const MappedFile> f) : m_npy(f) {
    container = Container::Npy;
    file = std::move(f);
    std::string stem = file->path();
    const size_t slash = stem.find_last_of('/');
    if (slash != std::string::npos) stem = stem.substr(slash + 1);
    if (stem.size() > 4 && stem.compare(stem.size() - 4, 4, ".npy") == 0) stem.resize(stem.size() - 4);
    const NpyHeader& h = m_npy.header();
    tensors.push_back({stem.empty() ? "array" : stem, h.dtype, h.shape, h.elements(), h.dataBytes});
  }
  SharedBytes bytes(size_t) const override { return SharedBytes{file, m_npy.data(), m_npy.header().dataBytes}; }
  bool stream(size_t, const std::function<bool(const uint8_t*, size_t)>& fn) const override {
    return streamMapped(m_npy.data(), m_npy.header().dataBytes, fn);
  }

 private:
  NpyFile m_npy;
};

// ---------------------------------------------------------------------------------------------------
// Layouts

enum Role { kKeys = 0, kValues, kQueries, kPreRope, kRoles };
const char* roleName(int r) {
  static const char* names[] = {"keys", "values", "queries", "pre-RoPE keys"};
  return names[r];
}

// Where the heads of one (layer, role) live: head h is elements [offset + h*seq*dim, +seq*dim) of a tensor.
struct Slice {
  int tensor = -1;
  uint64_t offset = 0;
  int heads = 0, seq = 0, dim = 0;
  bool present() const { return tensor >= 0; }
};

struct LayerRefs {
  Slice s[kRoles];
};

struct NamedLayout {
  const char* id;
  const char* prefix;
  std::vector<std::pair<const char*, Role>> suffixes;
};

const std::vector<NamedLayout>& namedLayouts() {
  static const std::vector<NamedLayout> l = {
      {"tq-kvdump/1", "layers.", {{"k", kKeys}, {"v", kValues}, {"q", kQueries}, {"k_prerope", kPreRope}}},
      {"hf-past-key-values", "past_key_values.", {{"key", kKeys}, {"value", kValues}, {"query", kQueries}}},
      {"hf-model-layers",
       "model.layers.",
       {{"self_attn.k", kKeys}, {"self_attn.v", kValues}, {"self_attn.q", kQueries}, {"self_attn.key", kKeys},
        {"self_attn.value", kValues}, {"self_attn.query", kQueries}, {"self_attn.key_states", kKeys},
        {"self_attn.value_states", kValues}, {"self_attn.query_states", kQueries}, {"self_attn.k_prerope", kPreRope}}},
      {"layerN", "layer", {{"k", kKeys}, {"v", kValues}, {"q", kQueries}, {"k_prerope", kPreRope}}},
  };
  return l;
}

constexpr int kMaxLayers = 100000;
constexpr int kMaxHeads = 1 << 16;
constexpr int kMaxHeadDim = 1 << 16;
constexpr double kMinSoftmaxScale = 1e-6, kMaxSoftmaxScale = 1e6;

// "<prefix><digits>.<suffix>" -> layer, role.
bool matchName(const NamedLayout& l, const std::string& name, int& layer, Role& role) {
  const size_t pl = std::strlen(l.prefix);
  if (name.size() <= pl || name.compare(0, pl, l.prefix) != 0) return false;
  size_t i = pl;
  long v = 0;
  const size_t digitsStart = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
    v = v * 10 + (name[i] - '0');
    if (v >= kMaxLayers) return false;
    ++i;
  }
  if (i == digitsStart || i >= name.size() || name[i] != '.') return false;
  const std::string suffix = name.substr(i + 1);
  for (const auto& [s, r] : l.suffixes)
    if (suffix == s) {
      layer = static_cast<int>(v);
      role = r;
      return true;
    }
  return false;
}

std::string expectedNames() {
  return "expected tq-kvdump/1 names layers.L.k, layers.L.v, layers.L.q (L = 0, 1, ...), or Hugging Face past_key_values.L.key / "
         ".value, model.layers.L.self_attn.k / .v / .q, layerL.k / .v / .q, or one tensor 'kv' or 'past_key_values' of shape "
         "[layers, 2, heads, seq, head_dim]";
}

std::string listTensors(const Store& st) {
  std::string r;
  const size_t n = st.tensors.size();
  for (size_t i = 0; i < n && i < 20; ++i)
    r += (i ? ", " : "") + quote(st.tensors[i].name, 60) + " " + dtypeName(st.tensors[i].dtype) + " " + shapeText(st.tensors[i].shape);
  if (n > 20) r += ", ... and " + std::to_string(n - 20) + " more";
  if (n == 0) r = "none";
  return std::to_string(n) + (n == 1 ? " tensor" : " tensors") + ": " + r;
}

// Counts NaN/Inf over a byte stream whose chunks may split elements.
class NonFiniteCounter {
 public:
  explicit NonFiniteCounter(DType t) : m_t(t), m_size(dtypeSize(t)) {}
  void feed(const uint8_t* p, size_t n) {
    if (m_carryLen) {
      const size_t take = std::min(n, m_size - m_carryLen);
      std::memcpy(m_carry + m_carryLen, p, take);
      m_carryLen += take;
      p += take;
      n -= take;
      if (m_carryLen < m_size) return;
      m_count += countNonFinite(m_carry, m_t, 1);
      m_carryLen = 0;
    }
    const size_t whole = n / m_size;
    m_count += countNonFinite(p, m_t, whole);
    const size_t rest = n - whole * m_size;
    if (rest) std::memcpy(m_carry, p + whole * m_size, rest);
    m_carryLen = rest;
  }
  uint64_t count() const { return m_count; }

 private:
  DType m_t;
  size_t m_size;
  uint8_t m_carry[8] = {};
  size_t m_carryLen = 0;
  uint64_t m_count = 0;
};

bool parsePositiveDouble(const std::string& s, double& out) {
  if (s.empty() || s.size() > 64) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v) || v <= 0) return false;
  out = v;
  return true;
}

bool parseInt(const std::string& s, long& out) {
  if (s.empty() || s.size() > 18) return false;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (end != s.c_str() + s.size()) return false;
  out = v;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

struct KvDump::Impl {
  std::unique_ptr<Store> store;
  LoadOptions options;
  KvDumpSummary summary;
  std::vector<LayerRefs> layers;
  int tokensTensor = -1;
  std::vector<std::string> tokenStrings;
  float softmaxScale = 0;
  std::string displayName;
  mutable std::atomic<uint64_t> replaced{0};

  const std::string& path() const { return store->path(); }
  [[noreturn]] void fail(const std::string& problem) const { throw DataError(path(), problem); }

  Slice headSlice(int t, Role role, int layer) const;
  void resolveLayout();
  void validateShapes();
  void readMetadata();
  void scan(const Progress& progress);
  std::vector<float> convert(int layer, Role role, int head) const;
  /// rows == nullptr: the whole head
  std::vector<float> convertRows(int layer, Role role, int head, const std::vector<int>* rows) const;
};

// [heads, seq, dim] or [1, heads, seq, dim] of a float dtype.
Slice KvDump::Impl::headSlice(int t, Role role, int layer) const {
  const StoreTensor& st = store->tensors[static_cast<size_t>(t)];
  const std::string tn = "tensor " + quote(st.name);
  if (!isFloatingDType(st.dtype))
    fail(tn + " (" + roleName(role) + " of layer " + std::to_string(layer) + ") is " + dtypeName(st.dtype) + "; keys, values and queries must be F16, BF16, F32 or F64");
  std::vector<int64_t> s = st.shape;
  if (s.size() == 4) {
    if (s[0] != 1) fail(tn + " has a batch of " + std::to_string(s[0]) + " " + shapeText(st.shape) + "; only batch 1 is supported");
    s.erase(s.begin());
  }
  if (s.size() != 3) fail(tn + " has shape " + shapeText(st.shape) + "; expected [heads, seq, head_dim] (or [1, heads, seq, head_dim])");
  if (s[1] == 0) fail(tn + " has zero length (no tokens) " + shapeText(st.shape));
  if (s[0] == 0 || s[2] == 0) fail(tn + " has an empty dimension " + shapeText(st.shape));
  if (s[0] > kMaxHeads || s[2] > kMaxHeadDim || s[1] > INT_MAX) fail(tn + " has implausibly large dimensions " + shapeText(st.shape));
  Slice sl;
  sl.tensor = t;
  sl.heads = static_cast<int>(s[0]);
  sl.seq = static_cast<int>(s[1]);
  sl.dim = static_cast<int>(s[2]);
  return sl;
}

void KvDump::Impl::resolveLayout() {
  const auto& ts = store->tensors;
  for (size_t i = 0; i < ts.size(); ++i)
    if (ts[i].name == "tokens") tokensTensor = static_cast<int>(i);

  // Single .npy: a bare keys array, or a stacked [layers, 2, heads, seq, dim].
  int stacked = -1;
  if (store->container == Container::Npy) {
    const auto& s = ts[0].shape;
    if (s.size() == 3 || s.size() == 4) {
      summary.layout = "bare-keys";
      LayerRefs l;
      l.s[kKeys] = headSlice(0, kKeys, 0);
      layers.push_back(l);
      return;
    }
    if (s.size() == 5 || s.size() == 6) stacked = 0;
    else fail("a single .npy must hold keys [heads, seq, head_dim] or a stacked [layers, 2, heads, seq, head_dim] array, got shape " + shapeText(s));
  }

  // Named layouts: take the one that names the most tensors.
  const NamedLayout* best = nullptr;
  size_t bestCount = 0;
  for (const auto& l : namedLayouts()) {
    size_t c = 0;
    int layer;
    Role role;
    for (const auto& t : ts) c += matchName(l, t.name, layer, role);
    if (c > bestCount) best = &l, bestCount = c;
  }
  if (stacked < 0 && !best) {
    for (size_t i = 0; i < ts.size(); ++i)
      if (ts[i].name == "kv" || ts[i].name == "past_key_values") stacked = static_cast<int>(i);
  }
  if (stacked >= 0) {
    const StoreTensor& st = ts[static_cast<size_t>(stacked)];
    const std::string tn = "tensor " + quote(st.name);
    if (!isFloatingDType(st.dtype)) fail(tn + " is " + dtypeName(st.dtype) + "; keys and values must be F16, BF16, F32 or F64");
    std::vector<int64_t> s = st.shape;
    if (s.size() == 6 && s[1] == 2 && s[2] == 1) s.erase(s.begin() + 2);
    else if (s.size() == 6 && s[0] == 1) s.erase(s.begin());
    if (s.size() != 5) fail(tn + " has shape " + shapeText(st.shape) + "; expected [layers, 2, heads, seq, head_dim] (a batch of 1 may follow the 2)");
    if (s[1] != 2) fail(tn + " has shape " + shapeText(st.shape) + "; its second dimension must be 2 (keys, values)");
    if (s[0] == 0 || s[2] == 0 || s[4] == 0) fail(tn + " has an empty dimension " + shapeText(st.shape));
    if (s[3] == 0) fail(tn + " has zero length (no tokens) " + shapeText(st.shape));
    if (s[0] > kMaxLayers || s[2] > kMaxHeads || s[4] > kMaxHeadDim || s[3] > INT_MAX) fail(tn + " has implausibly large dimensions " + shapeText(st.shape));
    summary.layout = "stacked-5d";
    const uint64_t per = static_cast<uint64_t>(s[2]) * static_cast<uint64_t>(s[3]) * static_cast<uint64_t>(s[4]);
    for (int64_t L = 0; L < s[0]; ++L) {
      LayerRefs l;
      for (int r = 0; r < 2; ++r) {
        Slice& sl = l.s[r];
        sl.tensor = stacked;
        sl.offset = (static_cast<uint64_t>(L) * 2 + static_cast<uint64_t>(r)) * per;
        sl.heads = static_cast<int>(s[2]);
        sl.seq = static_cast<int>(s[3]);
        sl.dim = static_cast<int>(s[4]);
      }
      layers.push_back(l);
    }
    for (size_t i = 0; i < ts.size(); ++i)
      if (static_cast<int>(i) != stacked && static_cast<int>(i) != tokensTensor) summary.ignoredTensors.push_back(ts[i].name);
    return;
  }
  if (!best) fail("no KV tensors recognised; found " + listTensors(*store) + "; " + expectedNames());

  summary.layout = best->id;
  std::map<int, LayerRefs> found;
  for (size_t i = 0; i < ts.size(); ++i) {
    int layer;
    Role role;
    if (!matchName(*best, ts[i].name, layer, role)) {
      if (static_cast<int>(i) != tokensTensor) summary.ignoredTensors.push_back(ts[i].name);
      continue;
    }
    Slice& sl = found[layer].s[role];
    if (sl.present())
      fail("tensors " + quote(ts[static_cast<size_t>(sl.tensor)].name) + " and " + quote(ts[i].name) + " both hold the " + roleName(role) + " of layer " + std::to_string(layer));
    sl = headSlice(static_cast<int>(i), role, layer);
  }
  // Layers 0..L-1, each with keys.
  int expect = 0;
  for (const auto& [idx, refs] : found) {
    if (idx != expect) fail("layer " + std::to_string(expect) + " is missing (found layer " + std::to_string(idx) + " after " + std::to_string(expect) + " layers; " + expectedNames() + ")");
    if (!refs.s[kKeys].present()) fail("layer " + std::to_string(idx) + " has no keys (" + summary.layout + " layout; found " + listTensors(*store) + ")");
    layers.push_back(refs);
    ++expect;
  }
  if (!summary.ignoredTensors.empty()) {
    std::string w = "ignored " + std::to_string(summary.ignoredTensors.size()) + " tensor(s) outside the " + summary.layout + " layout: ";
    for (size_t i = 0; i < summary.ignoredTensors.size() && i < 8; ++i) w += (i ? ", " : "") + quote(summary.ignoredTensors[i], 60);
    summary.warnings.push_back(w);
  }
}

void KvDump::Impl::validateShapes() {
  const auto& ts = store->tensors;
  auto nameOf = [&](const Slice& s) { return quote(ts[static_cast<size_t>(s.tensor)].name, 60); };
  const int L = static_cast<int>(layers.size());
  // All-or-none for values and queries; pre-RoPE keys are optional extras.
  int with[kRoles] = {0, 0, 0, 0};
  for (const auto& l : layers)
    for (int r = 0; r < kRoles; ++r) with[r] += l.s[r].present();
  for (int r : {kValues, kQueries})
    if (with[r] != 0 && with[r] != L) {
      for (int i = 0; i < L; ++i)
        if (!layers[static_cast<size_t>(i)].s[r].present())
          fail(std::string("layer ") + std::to_string(i) + " has no " + roleName(r) + " but other layers do (" + std::to_string(with[r]) + " of " + std::to_string(L) + ")");
    }
  if (with[kPreRope] != 0 && with[kPreRope] != L) {
    summary.warnings.push_back("pre-RoPE keys exist for only " + std::to_string(with[kPreRope]) + " of " + std::to_string(L) + " layers; ignored");
    for (auto& l : layers) l.s[kPreRope] = Slice{};
  }
  const Slice& k0 = layers[0].s[kKeys];
  summary.layers = L;
  summary.kvHeads = k0.heads;
  summary.seq = k0.seq;
  summary.headDim = k0.dim;
  summary.dtype = ts[static_cast<size_t>(k0.tensor)].dtype;
  summary.hasValues = with[kValues] == L;
  summary.hasQueries = with[kQueries] == L;
  summary.hasPreRopeKeys = with[kPreRope] == L;
  summary.headDimV = summary.hasValues ? layers[0].s[kValues].dim : 0;
  summary.qHeads = summary.hasQueries ? layers[0].s[kQueries].heads : summary.kvHeads;
  // The same head-dimension bounds as the quantizer, so that a dump that opens can be evaluated.
  for (const auto& [what, dim] : {std::pair<const char*, int>{"head_dim", summary.headDim}, {"value head_dim", summary.headDimV}})
    if ((dim != 0 || std::string(what) == "head_dim") && (dim < kMinHeadDimension || dim > kMaxHeadDimension))
      fail(std::string(what) + " " + std::to_string(dim) + " is outside " + std::to_string(kMinHeadDimension) + ".." +
           std::to_string(kMaxHeadDimension) + ", the head sizes the quantizer supports");
  for (int i = 0; i < L; ++i) {
    const LayerRefs& l = layers[static_cast<size_t>(i)];
    const Slice& k = l.s[kKeys];
    const std::string at = " (layer " + std::to_string(i) + ")";
    if (k.heads != summary.kvHeads || k.seq != summary.seq || k.dim != summary.headDim)
      fail("keys " + nameOf(k) + " are [" + std::to_string(k.heads) + ", " + std::to_string(k.seq) + ", " + std::to_string(k.dim) + "] but layer 0's are [" +
           std::to_string(summary.kvHeads) + ", " + std::to_string(summary.seq) + ", " + std::to_string(summary.headDim) + "]");
    if (summary.hasValues) {
      const Slice& v = l.s[kValues];
      if (v.heads != k.heads) fail("values " + nameOf(v) + " have " + std::to_string(v.heads) + " heads but the keys have " + std::to_string(k.heads) + at);
      if (v.seq != k.seq) fail("values " + nameOf(v) + " hold " + std::to_string(v.seq) + " tokens but the keys hold " + std::to_string(k.seq) + at);
      if (v.dim != summary.headDimV) fail("values " + nameOf(v) + " have head_dim " + std::to_string(v.dim) + " but layer 0's have " + std::to_string(summary.headDimV));
    }
    if (summary.hasQueries) {
      const Slice& q = l.s[kQueries];
      if (q.dim != k.dim) fail("mismatched head_dim between queries " + nameOf(q) + " (" + std::to_string(q.dim) + ") and keys " + nameOf(k) + " (" + std::to_string(k.dim) + ")");
      if (q.seq != k.seq) fail("queries " + nameOf(q) + " hold " + std::to_string(q.seq) + " tokens but the keys hold " + std::to_string(k.seq) + at);
      if (q.heads % k.heads != 0) fail("query heads (" + std::to_string(q.heads) + " in " + nameOf(q) + ") are not a multiple of the kv heads (" + std::to_string(k.heads) + ")");
      if (q.heads != summary.qHeads) fail("queries " + nameOf(q) + " have " + std::to_string(q.heads) + " heads but layer 0's have " + std::to_string(summary.qHeads));
    }
    if (summary.hasPreRopeKeys) {
      const Slice& p = l.s[kPreRope];
      if (p.heads != k.heads || p.seq != k.seq || p.dim != k.dim) fail("pre-RoPE keys " + nameOf(p) + " do not have the keys' shape" + at);
    }
  }
  // Bytes of the tensors in use.
  std::vector<bool> used(ts.size(), false);
  for (const auto& l : layers)
    for (int r = 0; r < kRoles; ++r)
      if (l.s[r].present()) used[static_cast<size_t>(l.s[r].tensor)] = true;
  for (size_t i = 0; i < ts.size(); ++i)
    if (used[i]) summary.tensorBytes += ts[i].bytes;
}

void KvDump::Impl::readMetadata() {
  summary.metadata = store->metadata;
  const auto& md = summary.metadata;
  auto get = [&](const char* k) -> const std::string* {
    auto it = md.find(k);
    return it == md.end() ? nullptr : &it->second;
  };
  if (const std::string* f = get("format"); f && *f != "tq-kvdump/1")
    summary.warnings.push_back("metadata format is " + quote(*f) + ", not tq-kvdump/1; reading the tensors anyway");
  softmaxScale = 1.0f / std::sqrt(static_cast<float>(summary.headDim));
  if (const std::string* s = get("softmax_scale")) {
    double v;
    if (!parsePositiveDouble(*s, v))
      summary.warnings.push_back("metadata softmax_scale " + quote(*s, 40) + " is not a positive number; using 1/sqrt(head_dim)");
    else if (!(v >= kMinSoftmaxScale && v <= kMaxSoftmaxScale))
      // As a float such a scale becomes 0 or infinity (NaN metrics), or makes every attention weight
      // equal or one-hot whatever the keys: no metric would mean anything.
      fail("metadata softmax_scale " + quote(*s, 40) + " is outside the meaningful range [1e-6, 1e6] (1/sqrt(head_dim) is " +
           std::to_string(1.0 / std::sqrt(static_cast<double>(summary.headDim))) + ")");
    else softmaxScale = static_cast<float>(v);
  }
  const std::pair<const char*, int> checks[] = {{"num_layers", summary.layers},
                                               {"num_kv_heads", summary.kvHeads},
                                               {"num_q_heads", summary.hasQueries ? summary.qHeads : -1},
                                               {"head_dim", summary.headDim}};
  for (const auto& [k, v] : checks) {
    const std::string* s = get(k);
    long n;
    if (s && v >= 0 && (!parseInt(*s, n) || n != v))
      summary.warnings.push_back(std::string("metadata ") + k + " = " + quote(*s, 40) + " but the tensors say " + std::to_string(v) + " (the tensors are used)");
  }
  if (const std::string* s = get("token_strings")) {
    try {
      const nlohmann::json j = io::parseJson(s->data(), s->data() + s->size(), path(), "metadata token_strings", 4, false);
      if (!j.is_array()) throw DataError(path(), "metadata token_strings is not a JSON list");
      std::vector<std::string> v;
      v.reserve(j.size());
      for (const auto& e : j) {
        if (!e.is_string()) throw DataError(path(), "metadata token_strings holds a non-string entry");
        v.push_back(e.get<std::string>());
      }
      if (v.size() != static_cast<size_t>(summary.seq))
        summary.warnings.push_back("metadata token_strings has " + std::to_string(v.size()) + " entries for " + std::to_string(summary.seq) + " tokens; ignored");
      else tokenStrings = std::move(v);
    } catch (const DataError& e) {
      summary.warnings.push_back(std::string(e.what()).substr(path().size() + 2) + "; token labels ignored");
    }
  }
  if (tokensTensor >= 0) {
    const StoreTensor& t = store->tensors[static_cast<size_t>(tokensTensor)];
    const bool shapeOk = (t.shape.size() == 1 && t.shape[0] == summary.seq) || (t.shape.size() == 2 && t.shape[0] == 1 && t.shape[1] == summary.seq);
    if (!isIntegerDType(t.dtype)) summary.warnings.push_back(std::string("tensor 'tokens' is ") + dtypeName(t.dtype) + ", not an integer type; ignored");
    else if (!shapeOk) summary.warnings.push_back("tensor 'tokens' has shape " + shapeText(t.shape) + " for " + std::to_string(summary.seq) + " tokens; ignored");
    if (!isIntegerDType(t.dtype) || !shapeOk) tokensTensor = -1;
  }
  summary.hasTokens = tokensTensor >= 0;
  if (!store->otherMembers.empty()) {
    std::string w = "ignored " + std::to_string(store->otherMembers.size()) + " archive member(s) that are not .npy arrays: ";
    for (size_t i = 0; i < store->otherMembers.size() && i < 8; ++i) w += (i ? ", " : "") + quote(store->otherMembers[i], 60);
    summary.warnings.push_back(w);
  }

  // Display name: "<model> · <file stem without the model prefix> · <seq> tokens".
  std::string stem = path();
  const size_t slash = stem.find_last_of('/');
  if (slash != std::string::npos) stem = stem.substr(slash + 1);
  const size_t dot = stem.find_last_of('.');
  if (dot != std::string::npos && dot > 0) stem.resize(dot);
  std::string model;
  if (const std::string* m = get("model")) model = *m;
  if (!model.empty() && stem.size() > model.size() + 1 && stem.compare(0, model.size(), model) == 0 && (stem[model.size()] == '_' || stem[model.size()] == '-'))
    stem = stem.substr(model.size() + 1);
  const std::string seqSuffix = "_" + std::to_string(summary.seq);
  if (stem.size() > seqSuffix.size() && stem.compare(stem.size() - seqSuffix.size(), seqSuffix.size(), seqSuffix) == 0) stem.resize(stem.size() - seqSuffix.size());
  displayName = (model.empty() ? "" : io::printable(model, 60) + " \xc2\xb7 ") + io::printable(stem, 80) + " \xc2\xb7 " + std::to_string(summary.seq) + " tokens";
}

void KvDump::Impl::scan(const Progress& progress) {
  const auto& ts = store->tensors;
  std::vector<int> used;
  for (const auto& l : layers)
    for (int r = 0; r < kRoles; ++r)
      if (l.s[r].present() && std::find(used.begin(), used.end(), l.s[r].tensor) == used.end()) used.push_back(l.s[r].tensor);
  uint64_t total = 0;
  for (int t : used) total += ts[static_cast<size_t>(t)].bytes;
  if (!options.scanOnOpen) {
    if (progress && !progress(1, 1)) throw LoadCancelled(path());
    return;
  }
  if (progress && !progress(0, static_cast<size_t>(total))) throw LoadCancelled(path());
  // Memory-mapped containers: tensors scanned on all cores (a 1.6 GB dump took 0.6 s on one); progress
  // calls stay serialised. Zip members are inflated one at a time, as before.
  std::mutex mu;
  uint64_t done = 0;
  std::atomic<bool> cancelled{false};
  std::vector<uint64_t> counts(used.size(), 0);
  auto scanOne = [&](size_t k) {
    const StoreTensor& st = ts[static_cast<size_t>(used[k])];
    NonFiniteCounter counter(st.dtype);
    const bool ok = store->stream(static_cast<size_t>(used[k]), [&](const uint8_t* p, size_t n) {
      if (cancelled.load()) return false;
      counter.feed(p, n);
      std::lock_guard<std::mutex> lock(mu);
      if (cancelled.load()) return false;  // no progress call after one returned false
      done += n;
      if (progress && !progress(static_cast<size_t>(done), static_cast<size_t>(total))) cancelled.store(true);
      return !cancelled.load();
    });
    if (!ok) cancelled.store(true);
    counts[k] = counter.count();
  };
  if (store->container == Container::Npz) {
    for (size_t k = 0; k < used.size() && !cancelled.load(); ++k) scanOne(k);
  } else {
    parallelRanges(used.size(), 1, [&](size_t b, size_t e) {
      for (size_t k = b; k < e && !cancelled.load(); ++k) scanOne(k);
    });
  }
  if (cancelled.load()) throw LoadCancelled(path());
  for (size_t k = 0; k < used.size(); ++k)
    if (counts[k]) {
      summary.nonfiniteCount += counts[k];
      summary.nonfiniteTensors.emplace_back(ts[static_cast<size_t>(used[k])].name, counts[k]);
    }
  summary.nonfiniteScanned = true;
  if (summary.nonfiniteCount && options.nonFinite == NonFinitePolicy::Refuse) {
    std::string list;
    for (size_t i = 0; i < summary.nonfiniteTensors.size() && i < 6; ++i)
      list += (i ? ", " : "") + quote(summary.nonfiniteTensors[i].first, 60) + " " + std::to_string(summary.nonfiniteTensors[i].second);
    if (summary.nonfiniteTensors.size() > 6) list += ", ...";
    fail(std::to_string(summary.nonfiniteCount) + " NaN/Inf value(s) in tensor " + list + " (refused; the 'zero' policy replaces them by 0)");
  }
  if (summary.nonfiniteCount)
    summary.warnings.push_back(std::to_string(summary.nonfiniteCount) + " NaN/Inf value(s) will be replaced by 0");
}

std::vector<float> KvDump::Impl::convert(int layer, Role role, int head) const { return convertRows(layer, role, head, nullptr); }

std::vector<float> KvDump::Impl::convertRows(int layer, Role role, int head, const std::vector<int>* rows) const {
  if (layer < 0 || layer >= summary.layers) throw std::out_of_range("layer " + std::to_string(layer) + " out of range [0, " + std::to_string(summary.layers) + ")");
  const Slice& s = layers[static_cast<size_t>(layer)].s[role];
  if (!s.present()) return {};
  if (head < 0 || head >= s.heads) throw std::out_of_range(std::string(roleName(role)) + " head " + std::to_string(head) + " out of range [0, " + std::to_string(s.heads) + ")");
  const StoreTensor& st = store->tensors[static_cast<size_t>(s.tensor)];
  const size_t dim = static_cast<size_t>(s.dim), n = static_cast<size_t>(s.seq) * dim;
  const uint64_t first = s.offset + static_cast<uint64_t>(head) * n;
  const SharedBytes b = store->bytes(static_cast<size_t>(s.tensor));
  const size_t esz = dtypeSize(st.dtype);
  if ((first + n) * esz > b.size) fail("tensor " + quote(st.name) + " is shorter than its shape says");  // cannot happen after validation
  const uint8_t* p = b.data + first * esz;
  std::vector<float> out;
  if (!rows) {  // the whole head, then its pages are dropped from the process
    out.resize(n);
    convertToFloat(p, st.dtype, n, out.data());
    store->file->release(p, n * esz);
  } else {
    out.resize(rows->size() * dim);
    for (size_t i = 0; i < rows->size(); ++i) {
      const int r = (*rows)[i];
      if (r < 0 || r >= s.seq) throw std::out_of_range("row " + std::to_string(r) + " out of range [0, " + std::to_string(s.seq) + ")");
      convertToFloat(p + static_cast<uint64_t>(r) * dim * esz, st.dtype, dim, out.data() + i * dim);
    }
  }
  uint64_t bad = 0;
  for (float v : out) bad += !std::isfinite(v);
  if (bad) {
    if (options.nonFinite == NonFinitePolicy::Refuse)
      fail("tensor " + quote(st.name) + " holds " + std::to_string(bad) + " NaN/Inf value(s) in head " + std::to_string(head) + " (refused; the 'zero' policy replaces them by 0)");
    for (float& v : out)
      if (!std::isfinite(v)) v = 0.0f;
    replaced += bad;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------

namespace {
/// Recognises common files that are not KV dumps by their signature, for a message that says what the
/// file is instead of reporting an absurd safetensors header length.
const char* foreignFormat(const uint8_t* p, size_t n) {
  auto starts = [&](const char* sig, size_t len) { return n >= len && std::memcmp(p, sig, len) == 0; };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "a PNG image";
  if (starts("\xff\xd8\xff", 3)) return "a JPEG image";
  if (starts("GIF8", 4)) return "a GIF image";
  if (starts("%PDF", 4)) return "a PDF document";
  if (starts("<svg", 4) || starts("<?xml", 5)) return "an XML/SVG document";
  if (starts("\x1f\x8b", 2)) return "a gzip-compressed file";
  if (starts("\x7f" "ELF", 4)) return "an executable (ELF)";
  if (starts("GGUF", 4)) return "a GGUF model file (make a KV dump from it with tools/gguf_numpy_dump.py)";
  if (starts("BZh", 3)) return "a bzip2-compressed file";
  if (starts("\xfd" "7zXZ", 6)) return "an xz-compressed file";
  if (n >= 1 && (p[0] == '{' || p[0] == '[')) return "a JSON text";
  return nullptr;
}
}  // namespace

KvDump::KvDump(std::unique_ptr<Impl> impl) : d(std::move(impl)) {}
KvDump::~KvDump() = default;

std::unique_ptr<KvDump> KvDump::open(const std::string& path, const LoadOptions& options, const Progress& progress) {
  return openFile(std::make_shared<MappedFile>(path), options, progress);
}

std::unique_ptr<KvDump> KvDump::openBuffer(const std::string& name, std::vector<uint8_t> bytes, const LoadOptions& options, const Progress& progress) {
  return openFile(std::make_shared<MappedFile>(name, std::move(bytes)), options, progress);
}

std::unique_ptr<KvDump> KvDump::openFile(std::shared_ptr<const MappedFile> file, const LoadOptions& options, const Progress& progress) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const uint8_t* p = file->data();
  const size_t n = file->size();
  const std::string& path = file->path();
  if (n == 0) throw DataError(path, "file is empty");
  auto endsWith = [&](const char* ext) {
    const size_t l = std::strlen(ext);
    return path.size() >= l && path.compare(path.size() - l, l, ext) == 0;
  };
  const bool zip = n >= 4 && p[0] == 'P' && p[1] == 'K' && ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6));
  const bool npy = n >= 6 && std::memcmp(p, "\x93NUMPY", 6) == 0;
  ZipLimits limits;
  limits.maxTotalInflated = options.maxInflatedBytes;
  limits.cacheMembers = options.inflateCacheMembers;
  if (zip) impl->store = std::make_unique<NpzStore>(file, limits);
  else if (npy) impl->store = std::make_unique<NpyStore>(file);
  else if (endsWith(".npz")) throw DataError(path, "not a zip archive (an .npz must start with the signature PK\\x03\\x04)");
  else if (endsWith(".npy")) throw DataError(path, "not an .npy array (the \\x93NUMPY signature is missing)");
  else if (const char* kind = (n < 8 || io::rd64(p) > n - 8) ? foreignFormat(p, n) : nullptr)  // not a plausible safetensors length
    throw DataError(path, std::string("is ") + kind + ", not a KV dump (expected a safetensors, .npz or .npy file; see docs/KVDUMP.md)");
  else impl->store = std::make_unique<SafetensorsStore>(file);
  if (const auto f = impl->store->metadata.find("format"); f != impl->store->metadata.end() && f->second == "tq-compressed/1")
    throw DataError(path, "is a tq-compressed/1 cache (compressed keys and values), not a KV dump: `tqstudio-cli info` shows and verifies it; "
                          "open the dump it was made from to explore it");
  impl->summary.container = impl->store->container;
  impl->summary.fileBytes = n;
  impl->resolveLayout();
  impl->validateShapes();
  impl->readMetadata();
  impl->scan(progress);
  return std::unique_ptr<KvDump>(new KvDump(std::move(impl)));
}

const KvDumpSummary& KvDump::summary() const { return d->summary; }
const std::string& KvDump::path() const { return d->path(); }
KvShape KvDump::shape() const { return d->summary.shape(); }
std::string KvDump::name() const { return d->displayName; }
std::vector<float> KvDump::keys(int layer, int kvHead) const { return d->convert(layer, kKeys, kvHead); }
std::vector<float> KvDump::values(int layer, int kvHead) const { return d->convert(layer, kValues, kvHead); }
std::vector<float> KvDump::queries(int layer, int qHead) const { return d->convert(layer, kQueries, qHead); }
std::vector<float> KvDump::queryRows(int layer, int qHead, const std::vector<int>& rows) const { return d->convertRows(layer, kQueries, qHead, &rows); }
std::vector<float> KvDump::keysPreRope(int layer, int kvHead) const { return d->convert(layer, kPreRope, kvHead); }
float KvDump::softmaxScale() const { return d->softmaxScale; }
std::vector<std::string> KvDump::tokenStrings() const { return d->tokenStrings; }
const std::map<std::string, std::string>& KvDump::metadata() const { return d->summary.metadata; }
uint64_t KvDump::nonFiniteReplaced() const { return d->replaced.load(); }

std::string KvDump::modelName() const {
  auto it = d->summary.metadata.find("model");
  return it == d->summary.metadata.end() ? std::string() : it->second;
}

std::vector<int64_t> KvDump::tokens() const {
  if (d->tokensTensor < 0) return {};
  const StoreTensor& t = d->store->tensors[static_cast<size_t>(d->tokensTensor)];
  const SharedBytes b = d->store->bytes(static_cast<size_t>(d->tokensTensor));
  std::vector<int64_t> out(static_cast<size_t>(t.elements));
  convertToInt64(b.data, t.dtype, out.size(), out.data());
  return out;
}

}  // namespace tq
