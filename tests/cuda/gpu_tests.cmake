# GPU tests of the CUDA backend (included from core/cuda/CMakeLists.txt; no Qt needed).
# Each case is one ctest entry labelled gpu; exit code 77 (no usable device) counts as skipped.
add_executable(tq_gpu_tests ${CMAKE_CURRENT_LIST_DIR}/gpu_tests.cpp)
target_link_libraries(tq_gpu_tests PRIVATE tq_cuda)
target_compile_definitions(tq_gpu_tests PRIVATE TQ_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
tq_set_warnings(tq_gpu_tests)
foreach(c probe no_device compress_fast compress_generic compress_dense scores values real_data fallback sweep grid)
  add_test(NAME gpu_${c} COMMAND tq_gpu_tests ${c})
  set_tests_properties(gpu_${c} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900)
endforeach()
# Hides every device: checks the no-device messages and the CPU fallback (runs on any machine).
set_tests_properties(gpu_no_device PROPERTIES ENVIRONMENT "CUDA_VISIBLE_DEVICES=")
