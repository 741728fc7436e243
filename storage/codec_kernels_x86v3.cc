// The chunk codec kernels for x86-64-v3 CPUs (AVX2, BMI1/2, LZCNT): the
// same source as the portable ones, built with -march=x86-64-v3 (see
// CMakeLists.txt and codec_kernels.h). Selected at run time only on CPUs
// that have those instructions.
#define STEPDB_KERNELS_TABLE kX86V3Kernels
#define STEPDB_KERNELS_NAME "x86-64-v3"
#include "storage/codec_kernels_body.inc"
