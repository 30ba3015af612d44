// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// NumPy .npy reader (format versions 1.0, 2.0 and 3.0): the magic, the header length and the Python-dict
/// header ({'descr': '<f2', 'fortran_order': False, 'shape': (4, 512, 8), }) are parsed by a small strict
/// parser; little-endian F16/F32/F64, I8/I16/I32/I64, U8 and bool are supported. Fortran order, big-endian,
/// structured and object dtypes are refused with a DataError.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/safetensors.h"

namespace tq {

struct NpyHeader {
  std::string descr;           ///< as written, e.g. "<f2"
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t dataOffset = 0;       ///< bytes before the array data (preamble + header)
  uint64_t dataBytes = 0;      ///< product(shape) * dtypeSize
  uint64_t elements() const;
};

/// Largest .npy header accepted (numpy itself writes < 1 KiB; it refuses > 10 KB without allow_pickle-like flags).
constexpr size_t kMaxNpyHeaderBytes = 1u << 20;

/// Total header length (preamble + dict) from the first bytes of an .npy stream; 0 when fewer than 12
/// bytes are available. Throws DataError(path, where + problem) on a bad magic, version or length.
size_t npyHeaderLength(const uint8_t* p, size_t n, const std::string& path, const std::string& where);
/// Parses a complete header (n >= npyHeaderLength()). Throws DataError on anything malformed or unsupported.
NpyHeader parseNpyHeader(const uint8_t* p, size_t n, const std::string& path, const std::string& where);

/// A single .npy file, memory-mapped and validated (data size must equal shape x dtype exactly).
class NpyFile {
 public:
  explicit NpyFile(const std::string& path);
  explicit NpyFile(std::shared_ptr<const MappedFile> file);
  const std::string& path() const { return m_file->path(); }
  const NpyHeader& header() const { return m_header; }
  const uint8_t* data() const { return m_file->data() + m_header.dataOffset; }
  const std::shared_ptr<const MappedFile>& file() const { return m_file; }
  std::vector<float> readFloat() const;

 private:
  void parse();
  std::shared_ptr<const MappedFile> m_file;
  NpyHeader m_header;
};

/// The bytes of a .npy file holding the given array (little-endian, version 1.0, C order).
std::vector<uint8_t> makeNpy(DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes);

}  // namespace tq
