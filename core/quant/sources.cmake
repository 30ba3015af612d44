list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/quant/bitpack.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/quant/quantizer.cpp)
