// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// safetensors reader: memory-mapped, validates the header against the file before any access.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tq {

/// Any problem with an input file; what() names the file and the problem.
class DataError : public std::runtime_error {
 public:
  DataError(const std::string& path, const std::string& problem) : std::runtime_error(path + ": " + problem) {}
};

enum class DType { F16, BF16, F32, F64, I8, U8, I16, I32, I64, Bool };
const char* dtypeName(DType t);
size_t dtypeSize(DType t);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  ///< byte offsets relative to the data section
  uint64_t elements() const;
};

/// Read-only memory map of a whole file (falls back to reading for non-regular files).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return m_data; }
  size_t size() const { return m_size; }
  const std::string& path() const { return m_path; }

 private:
  std::string m_path;
  const uint8_t* m_data = nullptr;
  size_t m_size = 0;
  bool m_mapped = false;
  std::vector<uint8_t> m_buffer;
};

class SafetensorsFile {
 public:
  /// Opens and validates; throws DataError naming the file and the problem.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return m_file->path(); }
  const std::vector<TensorInfo>& tensors() const { return m_tensors; }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return m_metadata; }
  /// Raw bytes of a tensor (inside the mapping).
  const uint8_t* bytes(const TensorInfo& t) const { return m_file->data() + m_dataStart + t.begin; }
  /// Converted to float (F16, BF16, F32, F64, integer types).
  std::vector<float> readFloat(const TensorInfo& t) const;
  std::vector<float> readFloat(const std::string& name) const;
  std::vector<int64_t> readInt(const TensorInfo& t) const;
  const TensorInfo& require(const std::string& name) const;

 private:
  std::shared_ptr<MappedFile> m_file;
  size_t m_dataStart = 0;
  std::vector<TensorInfo> m_tensors;
  std::map<std::string, size_t> m_index;
  std::map<std::string, std::string> m_metadata;
};

/// Converts n elements of a raw little-endian buffer of dtype t to float.
void convertToFloat(const uint8_t* src, DType t, size_t n, float* dst);

}  // namespace tq
