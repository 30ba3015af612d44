// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "data/io_util.h"
#include "util/half.h"
#include "util/memory_budget.h"

namespace tq {

using io::quote;

const char* dtypeName(DType t) {
  switch (t) {
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

size_t dtypeSize(DType t) {
  switch (t) {
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::F32: case DType::I32: return 4;
    case DType::F64: case DType::I64: return 8;
    default: return 1;
  }
}

bool parseDTypeName(const std::string& s, DType& t) {
  static const std::pair<const char*, DType> table[] = {
      {"F16", DType::F16}, {"BF16", DType::BF16}, {"F32", DType::F32}, {"F64", DType::F64}, {"I8", DType::I8},
      {"U8", DType::U8},   {"I16", DType::I16},   {"I32", DType::I32}, {"I64", DType::I64}, {"BOOL", DType::Bool}};
  for (const auto& [n, v] : table)
    if (s == n) {
      t = v;
      return true;
    }
  return false;
}

uint64_t TensorInfo::elements() const {
  uint64_t n = 1;
  for (int64_t s : shape) n *= static_cast<uint64_t>(s);
  return n;
}

// ---------------------------------------------------------------------------------------------------
// MappedFile

MappedFile::MappedFile(const std::string& path) : m_path(path) {
  // Only regular files: a FIFO would block the open (or the read) forever, /dev/zero or /dev/urandom never
  // end. stat() first, so that opening a FIFO never blocks; O_NONBLOCK covers a swap between the two calls.
  io::requireRegularFile(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw DataError(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw DataError(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw DataError(path, "is not a regular file (it changed while being opened)");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      m_data = static_cast<const uint8_t*>(p);
      m_size = static_cast<size_t>(size);
      m_mapped = true;
    } else {
      // mmap refused (some file systems): read exactly the file's size, within the memory budget.
      try {
        checkMemory(static_cast<double>(size), "reading " + path + " into memory (mmap was refused)");
      } catch (...) {
        ::close(fd);
        throw;
      }
      m_buffer.resize(static_cast<size_t>(size));
      size_t have = 0;
      while (have < size) {
        const ssize_t r = ::read(fd, m_buffer.data() + have, static_cast<size_t>(size - have));
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) {
          const int err = r < 0 ? errno : 0;
          ::close(fd);
          throw DataError(path, r < 0 ? std::string("read error: ") + std::strerror(err) : std::string("file shrank while being read"));
        }
        have += static_cast<size_t>(r);
      }
      m_data = m_buffer.data();
      m_size = m_buffer.size();
    }
  }
  ::close(fd);
}

MappedFile::MappedFile(std::string name, std::vector<uint8_t> bytes) : m_path(std::move(name)), m_buffer(std::move(bytes)) {
  m_data = m_buffer.data();
  m_size = m_buffer.size();
}

MappedFile::~MappedFile() {
  if (m_mapped) ::munmap(const_cast<uint8_t*>(m_data), m_size);
}

namespace {
size_t pageSize() {
  static const size_t ps = [] {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<size_t>(v) : size_t{4096};
  }();
  return ps;
}
}  // namespace

void MappedFile::release(const uint8_t* p, size_t n) const {
  if (!m_mapped || n == 0 || p < m_data || p > m_data + m_size) return;
  const size_t ps = pageSize();
  const auto base = reinterpret_cast<uintptr_t>(m_data);
  uintptr_t b = reinterpret_cast<uintptr_t>(p);
  uintptr_t e = std::min(b + n, base + m_size);
  b = (b + ps - 1) / ps * ps;  // only pages wholly inside the range
  e = e / ps * ps;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

void MappedFile::adviseSequential(const uint8_t* p, size_t n) const {
  if (!m_mapped || n == 0 || p < m_data || p > m_data + m_size) return;
  const size_t ps = pageSize();
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) / ps * ps;
  const uintptr_t e = std::min(reinterpret_cast<uintptr_t>(p) + n, reinterpret_cast<uintptr_t>(m_data) + m_size);
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_SEQUENTIAL);
}

// ---------------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : m_file(std::make_shared<MappedFile>(path)) { parse(); }

SafetensorsFile::SafetensorsFile(std::shared_ptr<const MappedFile> file) : m_file(std::move(file)) { parse(); }

namespace {
std::string jsonKind(const nlohmann::json& v) {
  if (v.is_string()) return quote(v.get_ref<const std::string&>(), 40);
  if (v.is_number()) return "the number " + v.dump();
  return std::string("a JSON ") + v.type_name();
}
}  // namespace

void SafetensorsFile::parse() {
  const std::string& path = m_file->path();
  const uint8_t* p = m_file->data();
  const size_t size = m_file->size();
  if (size == 0) throw DataError(path, "file is empty");
  if (size < 8) throw DataError(path, "too short for a safetensors file (" + std::to_string(size) + " bytes, need at least 8)");
  const uint64_t n = io::rd64(p);
  if (n > size - 8)
    throw DataError(path, "safetensors header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
                              " bytes; truncated, or not a safetensors file)");
  if (n > kMaxHeaderBytes)
    throw DataError(path, "safetensors header of " + io::humanBytes(n) + " is larger than the " + io::humanBytes(kMaxHeaderBytes) + " limit");
  if (n < 2 || p[8] != '{') throw DataError(path, "safetensors header does not start with a JSON object ('{')");
  m_dataStart = 8 + static_cast<size_t>(n);
  const uint64_t dataSize = size - m_dataStart;
  const nlohmann::json header = io::parseJson(reinterpret_cast<const char*>(p + 8), reinterpret_cast<const char*>(p + 8 + n), path,
                                              "safetensors header");
  if (!header.is_object()) throw DataError(path, "safetensors header is not a JSON object");
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  spans.reserve(header.size());
  m_tensors.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw DataError(path, "__metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw DataError(path, "metadata value of " + quote(m.key()) + " is " + jsonKind(m.value()) + ", not a string");
        m_metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tn = "tensor " + quote(name);
    if (name.empty()) throw DataError(path, "a tensor has an empty name");
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw DataError(path, tn + " lacks dtype, shape or data_offsets");
    TensorInfo t;
    t.name = name;
    if (!v["dtype"].is_string() || !parseDTypeName(v["dtype"].get<std::string>(), t.dtype))
      throw DataError(path, tn + " has unsupported dtype " + jsonKind(v["dtype"]) + " (supported: F16, BF16, F32, F64, I8, U8, I16, I32, I64, BOOL)");
    const auto& shape = v["shape"];
    if (!shape.is_array()) throw DataError(path, tn + " has a shape that is not a list");
    if (shape.size() > 8) throw DataError(path, tn + " has " + std::to_string(shape.size()) + " dimensions (at most 8 supported)");
    uint64_t elems = 1;
    for (const auto& s : shape) {
      if (!s.is_number_unsigned()) throw DataError(path, tn + " has a negative or non-integer dimension " + jsonKind(s));
      const uint64_t dim = s.get<uint64_t>();
      if (dim > (1ull << 48)) throw DataError(path, tn + " has an absurd dimension " + std::to_string(dim));
      if (!io::mulChecked(elems, dim, &elems) || elems > (1ull << 60)) throw DataError(path, tn + " shape product overflows");
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw DataError(path, tn + " has invalid data_offsets (expected [begin, end], two non-negative integers)");
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.begin > t.end || t.end > dataSize)
      throw DataError(path, tn + " data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ") lie outside the data section of " +
                                std::to_string(dataSize) + " bytes");
    const uint64_t need = elems * dtypeSize(t.dtype);
    if (t.end - t.begin != need)
      throw DataError(path, tn + " spans " + std::to_string(t.end - t.begin) + " bytes but shape x dtype (" + std::to_string(elems) + " x " +
                                dtypeName(t.dtype) + ") needs " + std::to_string(need));
    if (t.end > t.begin) spans.emplace_back(t.begin, t.end);
    m_index[name] = m_tensors.size();
    m_tensors.push_back(std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      throw DataError(path, "tensor data regions overlap (bytes " + std::to_string(spans[i].first) + " to " +
                                std::to_string(std::min(spans[i].second, spans[i - 1].second)) + " are claimed twice)");
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = m_index.find(name);
  return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

const TensorInfo& SafetensorsFile::require(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw DataError(path(), "tensor " + quote(name) + " not found");
  return *t;
}

// ---------------------------------------------------------------------------------------------------
// Conversion

void convertToFloat(const uint8_t* src, DType t, size_t n, float* dst) {
  if (n == 0) return;  // dst may be null (empty vector): memcpy(nullptr, ..., 0) is undefined
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16: {
      size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
      // Exact (half -> float is lossless), identical to halfToFloat.
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
      }
#endif
      for (; i < n; ++i) dst[i] = halfToFloat(io::rd16(src + 2 * i));
      return;
    }
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16ToFloat(io::rd16(src + 2 * i));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        // Out-of-range doubles saturate to +-inf explicitly (a plain cast is undefined behaviour).
        if (std::isnan(v)) dst[i] = std::numeric_limits<float>::quiet_NaN();
        else if (v > static_cast<double>(std::numeric_limits<float>::max())) dst[i] = std::numeric_limits<float>::infinity();
        else if (v < -static_cast<double>(std::numeric_limits<float>::max())) dst[i] = -std::numeric_limits<float>::infinity();
        else dst[i] = static_cast<float>(v);
      }
      return;
    case DType::I8: for (size_t i = 0; i < n; ++i) dst[i] = static_cast<int8_t>(src[i]); return;
    case DType::U8: case DType::Bool: for (size_t i = 0; i < n; ++i) dst[i] = src[i]; return;
    case DType::I16:
      for (size_t i = 0; i < n; ++i) { int16_t v; std::memcpy(&v, src + 2 * i, 2); dst[i] = v; }
      return;
    case DType::I32:
      for (size_t i = 0; i < n; ++i) { int32_t v; std::memcpy(&v, src + 4 * i, 4); dst[i] = static_cast<float>(v); }
      return;
    case DType::I64:
      for (size_t i = 0; i < n; ++i) { int64_t v; std::memcpy(&v, src + 8 * i, 8); dst[i] = static_cast<float>(v); }
      return;
  }
}

uint64_t countNonFinite(const uint8_t* src, DType t, size_t n) {
  uint64_t c = 0;
  switch (t) {
    case DType::F16:
      for (size_t i = 0; i < n; ++i) c += (io::rd16(src + 2 * i) & 0x7c00u) == 0x7c00u;
      return c;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) c += (io::rd16(src + 2 * i) & 0x7f80u) == 0x7f80u;
      return c;
    case DType::F32:
      for (size_t i = 0; i < n; ++i) c += (io::rd32(src + 4 * i) & 0x7f800000u) == 0x7f800000u;
      return c;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        c += !(std::fabs(v) <= static_cast<double>(std::numeric_limits<float>::max()));
      }
      return c;
    default: return 0;
  }
}

bool convertToInt64(const uint8_t* s, DType t, size_t n, int64_t* out) {
  for (size_t i = 0; i < n; ++i) {
    switch (t) {
      case DType::I64: { int64_t v; std::memcpy(&v, s + 8 * i, 8); out[i] = v; break; }
      case DType::I32: { int32_t v; std::memcpy(&v, s + 4 * i, 4); out[i] = v; break; }
      case DType::I16: { int16_t v; std::memcpy(&v, s + 2 * i, 2); out[i] = v; break; }
      case DType::I8: out[i] = static_cast<int8_t>(s[i]); break;
      case DType::U8: case DType::Bool: out[i] = s[i]; break;
      default: return false;
    }
  }
  return true;
}

std::vector<float> SafetensorsFile::readFloat(const TensorInfo& t) const {
  std::vector<float> out(t.elements());
  convertToFloat(bytes(t), t.dtype, out.size(), out.data());
  return out;
}

std::vector<float> SafetensorsFile::readFloat(const std::string& name) const { return readFloat(require(name)); }

std::vector<int64_t> SafetensorsFile::readInt(const TensorInfo& t) const {
  if (!isIntegerDType(t.dtype))
    throw DataError(path(), "tensor " + quote(t.name) + " is " + dtypeName(t.dtype) + ", expected an integer type");
  std::vector<int64_t> out(t.elements());
  convertToInt64(bytes(t), t.dtype, out.size(), out.data());
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Writer

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  uint64_t elems = 1;
  for (int64_t s : shape) {
    if (s < 0) throw std::invalid_argument("safetensors writer: negative dimension in " + name);
    elems *= static_cast<uint64_t>(s);
  }
  if (elems * dtypeSize(dtype) != bytes) throw std::invalid_argument("safetensors writer: " + name + " has " + std::to_string(bytes) + " bytes, shape needs " + std::to_string(elems * dtypeSize(dtype)));
  if (name == "__metadata__" || name.empty()) throw std::invalid_argument("safetensors writer: invalid tensor name");
  for (const auto& t : m_tensors)
    if (t.name == name) throw std::invalid_argument("safetensors writer: repeated tensor " + name);
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  t.begin = m_data.size();
  t.end = t.begin + bytes;
  const auto* p = static_cast<const uint8_t*>(data);
  if (bytes) m_data.insert(m_data.end(), p, p + bytes);
  m_tensors.push_back(std::move(t));
}

void SafetensorsWriter::addF32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
  add(name, DType::F32, shape, v.data(), v.size() * sizeof(float));
}

std::vector<uint8_t> SafetensorsWriter::header(const std::vector<TensorInfo>& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = m;
  }
  for (const auto& t : tensors) {
    nlohmann::ordered_json e;
    e["dtype"] = dtypeName(t.dtype);
    e["shape"] = t.shape;
    e["data_offsets"] = {t.begin, t.end};
    h[t.name] = e;
  }
  std::string text = h.dump();
  while (text.size() % 8) text.push_back(' ');
  std::vector<uint8_t> out(8 + text.size());
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

std::vector<uint8_t> SafetensorsWriter::serialize() const {
  std::vector<uint8_t> out = header(m_tensors, m_metadata);
  out.insert(out.end(), m_data.begin(), m_data.end());
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw DataError(path, std::string("cannot write: ") + std::strerror(errno));
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw DataError(path, "write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw DataError(path, std::string("cannot replace: ") + std::strerror(err));
  }
}

}  // namespace tq
