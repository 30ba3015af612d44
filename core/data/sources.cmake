list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/data/io_util.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/safetensors.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/npy.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/npz.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/kv_dump.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/compressed_io.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/queries.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/data/samples.cpp)
