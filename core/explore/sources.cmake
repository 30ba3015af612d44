list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/explore/allocate.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/explore/curves.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/explore/detail.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/explore/export.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/explore/lesson.cpp)
