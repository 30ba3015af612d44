list(APPEND TQ_CORE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/util/rng.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/util/memory_budget.cpp)
