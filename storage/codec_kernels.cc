// The portable chunk codec kernels and the choice between kernel tables
// (codec_kernels.h).
#include "storage/codec_kernels.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#define STEPDB_KERNELS_TABLE kPortableKernels
#define STEPDB_KERNELS_NAME "portable"
#include "storage/codec_kernels_body.inc"

namespace stepdb::storage::internal {
namespace {

bool CpuRunsX86V3() {
#if defined(STEPDB_HAVE_X86V3_KERNELS)
  __builtin_cpu_init();
  // libgcc's checks include the OS having enabled the AVX state (XGETBV).
  // The kernels are built with -march=x86-64-v3, so the compiler may use
  // any of its extensions (movbe and fma too, not only what the code asks
  // for): the whole level is checked.
  return __builtin_cpu_supports("x86-64-v3");
#else
  return false;
#endif
}

const CodecKernels* Choose() {
  const char* force = std::getenv("STEPDB_CODEC_KERNELS");
  if (force != nullptr && std::strcmp(force, "portable") == 0) {
    return &kPortableKernels;
  }
#if defined(STEPDB_HAVE_X86V3_KERNELS)
  if (CpuRunsX86V3()) return &kX86V3Kernels;
#endif
  return &kPortableKernels;
}

std::atomic<const CodecKernels*>& Active() {
  static std::atomic<const CodecKernels*> active{Choose()};
  return active;
}

}  // namespace

const CodecKernels& ActiveCodecKernels() {
  return *Active().load(std::memory_order_relaxed);
}

bool UseCodecKernelsForTesting(const char* name) {
  if (std::strcmp(name, kPortableKernels.name) == 0) {
    Active().store(&kPortableKernels, std::memory_order_relaxed);
    return true;
  }
#if defined(STEPDB_HAVE_X86V3_KERNELS)
  if (std::strcmp(name, kX86V3Kernels.name) == 0 && CpuRunsX86V3()) {
    Active().store(&kX86V3Kernels, std::memory_order_relaxed);
    return true;
  }
#endif
  return false;
}

}  // namespace stepdb::storage::internal
