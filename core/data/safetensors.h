// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// safetensors reader and writer. The reader memory-maps the file and validates the whole header against
/// the file before any tensor byte is touched: header length, JSON (depth-limited, UTF-8, no duplicate
/// names), dtypes, shapes (no overflow), byte spans (inside the data section, equal to shape x dtype,
/// not overlapping). Every problem is a DataError naming the file and the problem.
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
/// safetensors dtype name ("F16", "BF16", ...) -> DType; false for anything else.
bool parseDTypeName(const std::string& s, DType& t);
inline bool isFloatingDType(DType t) { return t == DType::F16 || t == DType::BF16 || t == DType::F32 || t == DType::F64; }
inline bool isIntegerDType(DType t) { return !isFloatingDType(t); }

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  ///< byte offsets relative to the data section
  uint64_t elements() const;
};

/// Read-only view of a whole file: memory-mapped for regular files, read into memory otherwise, or an
/// in-memory buffer (embedded resources, tests, fuzzers). Thread-safe for concurrent reads.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  /// An in-memory "file"; name is what error messages call it.
  MappedFile(std::string name, std::vector<uint8_t> bytes);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return m_data; }
  size_t size() const { return m_size; }
  const std::string& path() const { return m_path; }
  bool isMapped() const { return m_mapped; }
  /// Drops the resident pages wholly inside [p, p+n) from this process (mapped files only; the data is
  /// re-read from the page cache on the next access). Keeps RSS bounded when a large file is browsed.
  void release(const uint8_t* p, size_t n) const;
  /// Hint that [p, p+n) will be read sequentially (mapped files only).
  void adviseSequential(const uint8_t* p, size_t n) const;

 private:
  std::string m_path;
  const uint8_t* m_data = nullptr;
  size_t m_size = 0;
  bool m_mapped = false;
  std::vector<uint8_t> m_buffer;
};

/// Bytes kept alive by owner: a view into a mapping (owner = the file) or an inflated copy.
struct SharedBytes {
  std::shared_ptr<const void> owner;
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class SafetensorsFile {
 public:
  /// Largest JSON header accepted (64 MiB; the Rust reference accepts 100 MB, real KV dumps need < 1 MB).
  static constexpr uint64_t kMaxHeaderBytes = 64ull << 20;

  /// Opens and validates; throws DataError naming the file and the problem.
  explicit SafetensorsFile(const std::string& path);
  /// Validates an already opened (or in-memory) file.
  explicit SafetensorsFile(std::shared_ptr<const MappedFile> file);

  const std::string& path() const { return m_file->path(); }
  const std::vector<TensorInfo>& tensors() const { return m_tensors; }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return m_metadata; }
  const std::shared_ptr<const MappedFile>& file() const { return m_file; }
  /// Raw bytes of a tensor (inside the mapping).
  const uint8_t* bytes(const TensorInfo& t) const { return m_file->data() + m_dataStart + t.begin; }
  /// Converted to float (F16, BF16, F32, F64, integer types).
  std::vector<float> readFloat(const TensorInfo& t) const;
  std::vector<float> readFloat(const std::string& name) const;
  std::vector<int64_t> readInt(const TensorInfo& t) const;
  const TensorInfo& require(const std::string& name) const;

 private:
  void parse();

  std::shared_ptr<const MappedFile> m_file;
  size_t m_dataStart = 0;
  std::vector<TensorInfo> m_tensors;
  std::map<std::string, size_t> m_index;
  std::map<std::string, std::string> m_metadata;
};

/// Converts n elements of a raw little-endian buffer of dtype t to float (F64 outside the float range
/// becomes +-inf).
void convertToFloat(const uint8_t* src, DType t, size_t n, float* dst);
/// Number of NaN/Inf among n floating elements of dtype t (F64: also finite values that overflow float).
/// 0 for integer dtypes.
uint64_t countNonFinite(const uint8_t* src, DType t, size_t n);
/// Integer (or bool) elements widened to int64; false for floating dtypes.
bool convertToInt64(const uint8_t* src, DType t, size_t n, int64_t* dst);

/// Builds safetensors files: tensors are laid out in the order added, the header is padded to 8 bytes.
class SafetensorsWriter {
 public:
  void setMetadata(const std::string& key, const std::string& value) { m_metadata[key] = value; }
  /// Copies the bytes; bytes must equal product(shape) * dtypeSize(dtype). Throws std::invalid_argument
  /// on a size mismatch or a repeated name.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes);
  void addF32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v);
  /// The complete file.
  std::vector<uint8_t> serialize() const;
  /// Writes to path + ".tmp" and renames (an existing file is replaced only by a complete one).
  /// Throws DataError on I/O errors.
  void write(const std::string& path) const;

  /// The 8-byte length + padded JSON header for tensors whose offsets are already set (for writers that
  /// stream the data themselves, e.g. benchmarks producing large files).
  static std::vector<uint8_t> header(const std::vector<TensorInfo>& tensors, const std::map<std::string, std::string>& metadata);

 private:
  std::vector<TensorInfo> m_tensors;
  std::vector<uint8_t> m_data;
  std::map<std::string, std::string> m_metadata;
};

}  // namespace tq
