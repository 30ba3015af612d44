# CPU instruction set for the core's hot loops.
#   TQ_CPU_ARCH=auto (default): x86-64-v3 (AVX2+FMA) when the build host has AVX2 and FMA, else the
#   compiler's default. The binary is then meant for machines like the build host.
#   TQ_CPU_ARCH=portable: compiler default (SSE2 on x86-64). Any other value is passed as -march=<value>.
set(TQ_CPU_ARCH "auto" CACHE STRING "auto | portable | a -march value")
set(TQ_CPU_ARCH_FLAGS "")
if(TQ_CPU_ARCH STREQUAL "auto")
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64" AND EXISTS /proc/cpuinfo)
    file(READ /proc/cpuinfo _tq_cpuinfo LIMIT 20000)
    if(_tq_cpuinfo MATCHES " avx2 " AND _tq_cpuinfo MATCHES " fma ")
      include(CheckCXXCompilerFlag)
      check_cxx_compiler_flag(-march=x86-64-v3 TQ_HAS_MARCH_V3)
      if(TQ_HAS_MARCH_V3)
        set(TQ_CPU_ARCH_FLAGS -march=x86-64-v3)
      endif()
    endif()
  endif()
elseif(NOT TQ_CPU_ARCH STREQUAL "portable")
  set(TQ_CPU_ARCH_FLAGS -march=${TQ_CPU_ARCH})
endif()
