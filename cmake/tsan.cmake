# Project include for ThreadSanitizer builds (make test-tsan):
#   cmake ... -DCMAKE_PROJECT_stepdb_INCLUDE=cmake/tsan.cmake
# Links cmake/tsan/absl_sync_annotations.cc, a shared library that makes
# Debian's uninstrumented absl::Mutex visible to TSan, ahead of Abseil into
# every target of the project. See docs/RELIABILITY.md.
find_package(absl CONFIG REQUIRED)
add_library(stepdb_tsan_absl SHARED
  ${CMAKE_CURRENT_LIST_DIR}/tsan/absl_sync_annotations.cc)
target_link_libraries(stepdb_tsan_absl PRIVATE absl::synchronization
  absl::time ${CMAKE_DL_LIBS})
# Every target created after this line links the annotations first.
link_libraries(stepdb_tsan_absl)
