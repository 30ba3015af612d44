list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/attention/attention.cpp)
