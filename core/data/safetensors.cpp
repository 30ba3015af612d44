// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/half.h"

namespace tq {

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

uint64_t TensorInfo::elements() const {
  uint64_t n = 1;
  for (int64_t s : shape) n *= static_cast<uint64_t>(s);
  return n;
}

MappedFile::MappedFile(const std::string& path) : m_path(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw DataError(path, std::string("cannot stat: ") + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw DataError(path, "is a directory, not a file");
  }
  if (S_ISREG(st.st_mode) && st.st_size > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      m_data = static_cast<const uint8_t*>(p);
      m_size = static_cast<size_t>(st.st_size);
      m_mapped = true;
    }
  }
  if (!m_mapped) {
    uint8_t buf[65536];
    for (;;) {
      const ssize_t r = ::read(fd, buf, sizeof buf);
      if (r < 0) {
        ::close(fd);
        throw DataError(path, std::string("read error: ") + std::strerror(errno));
      }
      if (r == 0) break;
      m_buffer.insert(m_buffer.end(), buf, buf + r);
    }
    m_data = m_buffer.data();
    m_size = m_buffer.size();
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (m_mapped) ::munmap(const_cast<uint8_t*>(m_data), m_size);
}

namespace {
bool parseDType(const std::string& s, DType& t) {
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
}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : m_file(std::make_shared<MappedFile>(path)) {
  const uint8_t* p = m_file->data();
  const size_t size = m_file->size();
  if (size < 8) throw DataError(path, "too short for a safetensors file (" + std::to_string(size) + " bytes, need at least 8)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
  if (n > size - 8) throw DataError(path, "safetensors header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  if (n > (100u << 20)) throw DataError(path, "safetensors header of " + std::to_string(n) + " bytes is larger than the 100 MB limit");
  m_dataStart = 8 + static_cast<size_t>(n);
  const size_t dataSize = size - m_dataStart;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(p + 8, p + 8 + n);
  } catch (const std::exception& e) {
    throw DataError(path, std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw DataError(path, "safetensors header is not a JSON object");
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw DataError(path, "__metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw DataError(path, "metadata value of '" + m.key() + "' is not a string");
        m_metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw DataError(path, "tensor '" + name + "' lacks dtype, shape or data_offsets");
    TensorInfo t;
    t.name = name;
    if (!v["dtype"].is_string() || !parseDType(v["dtype"].get<std::string>(), t.dtype))
      throw DataError(path, "tensor '" + name + "' has unknown dtype " + v["dtype"].dump());
    const auto& shape = v["shape"];
    if (!shape.is_array() || shape.size() > 8) throw DataError(path, "tensor '" + name + "' has an invalid shape");
    uint64_t elems = 1;
    for (const auto& s : shape) {
      if (!s.is_number_unsigned()) throw DataError(path, "tensor '" + name + "' has a negative or non-integer dimension");
      const uint64_t dim = s.get<uint64_t>();
      if (dim != 0 && elems > std::numeric_limits<uint64_t>::max() / 16 / dim)
        throw DataError(path, "tensor '" + name + "' shape product overflows");
      elems *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw DataError(path, "tensor '" + name + "' has invalid data_offsets");
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.begin > t.end || t.end > dataSize)
      throw DataError(path, "tensor '" + name + "' data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                ") lie outside the data section of " + std::to_string(dataSize) + " bytes");
    if (t.end - t.begin != elems * dtypeSize(t.dtype))
      throw DataError(path, "tensor '" + name + "' spans " + std::to_string(t.end - t.begin) + " bytes but shape x dtype needs " +
                                std::to_string(elems * dtypeSize(t.dtype)));
    spans.emplace_back(t.begin, t.end);
    m_index[name] = m_tensors.size();
    m_tensors.push_back(std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) throw DataError(path, "tensor data regions overlap");
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = m_index.find(name);
  return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

const TensorInfo& SafetensorsFile::require(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw DataError(path(), "tensor '" + name + "' not found");
  return *t;
}

void convertToFloat(const uint8_t* src, DType t, size_t n, float* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = halfToFloat(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16ToFloat(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        dst[i] = static_cast<float>(v);
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

std::vector<float> SafetensorsFile::readFloat(const TensorInfo& t) const {
  std::vector<float> out(t.elements());
  convertToFloat(bytes(t), t.dtype, out.size(), out.data());
  return out;
}

std::vector<float> SafetensorsFile::readFloat(const std::string& name) const { return readFloat(require(name)); }

std::vector<int64_t> SafetensorsFile::readInt(const TensorInfo& t) const {
  std::vector<int64_t> out(t.elements());
  const uint8_t* s = bytes(t);
  for (size_t i = 0; i < out.size(); ++i) {
    switch (t.dtype) {
      case DType::I64: { int64_t v; std::memcpy(&v, s + 8 * i, 8); out[i] = v; break; }
      case DType::I32: { int32_t v; std::memcpy(&v, s + 4 * i, 4); out[i] = v; break; }
      case DType::I16: { int16_t v; std::memcpy(&v, s + 2 * i, 2); out[i] = v; break; }
      case DType::I8: out[i] = static_cast<int8_t>(s[i]); break;
      case DType::U8: case DType::Bool: out[i] = s[i]; break;
      default: throw DataError(path(), "tensor '" + t.name + "' is " + dtypeName(t.dtype) + ", expected an integer type");
    }
  }
  return out;
}

}  // namespace tq
