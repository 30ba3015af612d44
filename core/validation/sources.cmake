list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/validation/crosscheck.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/validation/validate.cpp)
