list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/backend/centering.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/backend/cpu_backend.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/backend/cpu_task.cpp)
