# dsft_module(NAME [TORCH] DEPS ...): one static library per module from src/<name>/*.cpp.
# Headers live in include/dsft/<name>/. TORCH adds libtorch and the shared precompiled header.
function(dsft_module name)
  cmake_parse_arguments(M "TORCH" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(NOT srcs)
    # A module whose sources have not landed yet: headers only.
    add_library(dsft_${name} INTERFACE)
    target_include_directories(dsft_${name} INTERFACE ${PROJECT_SOURCE_DIR}/include)
    target_link_libraries(dsft_${name} INTERFACE ${M_DEPS})
    return()
  endif()
  add_library(dsft_${name} STATIC ${srcs})
  target_include_directories(dsft_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                          PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(dsft_${name} PRIVATE ${DSFT_WARNINGS})
  target_link_libraries(dsft_${name} PUBLIC ${M_DEPS})
  if(M_TORCH)
    target_link_libraries(dsft_${name} PUBLIC ${TORCH_LIBRARIES})
    if(OpenMP_CXX_FOUND)
      target_link_libraries(dsft_${name} PUBLIC OpenMP::OpenMP_CXX)
    endif()
    target_precompile_headers(dsft_${name} PRIVATE ${PROJECT_SOURCE_DIR}/src/pch/torch_pch.h)
  endif()
endfunction()

# dsft_test(MODULE LIBS ... [LABELS ...]): tests/<module>/*.cpp into one GoogleTest program.
function(dsft_test module)
  cmake_parse_arguments(T "TORCH" "" "LIBS;LABELS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(NOT srcs)
    return()
  endif()
  set(exe dsft_test_${module})
  add_executable(${exe} ${srcs})
  target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${exe} PRIVATE ${DSFT_WARNINGS})
  target_compile_definitions(${exe} PRIVATE
    DSFT_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    DSFT_FIXTURES_DIR="${PROJECT_SOURCE_DIR}/../shared/fixtures"
    DSFT_BINARY="$<$<TARGET_EXISTS:dsft>:$<TARGET_FILE:dsft>>")
  target_link_libraries(${exe} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  if(T_TORCH)
    target_precompile_headers(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/src/pch/torch_pch.h)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  gtest_discover_tests(${exe} PROPERTIES LABELS "${T_LABELS}" DISCOVERY_TIMEOUT 120
                       WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
endfunction()
