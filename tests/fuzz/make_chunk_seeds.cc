// Writes a few valid chunks (format versions 1 and 2, each value codec) into
// the directory given as argv[1], as seeds for fuzz_chunk_decoder:
//   build-fuzz/tests/fuzz/fuzz_make_chunk_seeds tests/fuzz/corpus/chunk_decoder
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "storage/chunk_codec.h"

namespace {

struct Seed {
  const char* name;
  std::vector<uint64_t> steps;
  std::vector<int64_t> times;
  std::vector<double> values;
};

Seed Make(const char* name, int n, uint64_t step0, uint64_t dstep,
          double (*value)(int)) {
  Seed s{name, {}, {}, {}};
  for (int i = 0; i < n; ++i) {
    s.steps.push_back(step0 + dstep * i + (dstep > 1 && i % 7 == 3 ? 1 : 0));
    s.times.push_back(1'700'000'000'000 + 1000 * i + (i * 37) % 11);
    s.values.push_back(value(i));
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<Seed> seeds = {
      Make("single", 1, 5'000'000, 1, [](int) { return 0.25; }),
      Make("loss_xor", 40, 0, 1'000'000,
           [](int i) { return 2.0 * std::exp(-0.01 * i) + 1e-3 * (i % 5); }),
      Make("float32", 24, 1'000'000, 1'000'000,
           [](int i) { return double(float(0.1f * i + 0.3f)); }),
      Make("integer", 20, 0, 500'000, [](int i) { return double(i * i); }),
      Make("decimal", 20, 0, 1'000'000,
           [](int i) { return (1234 + 3 * i) / 100.0; }),
      Make("constant", 16, 0, 1'000'000, [](int) { return 1.5; }),
      Make("nan_inf", 12, 0, 1'000'000,
           [](int i) {
             switch (i % 4) {
               case 0:
                 return std::numeric_limits<double>::quiet_NaN();
               case 1:
                 return std::numeric_limits<double>::infinity();
               case 2:
                 return -std::numeric_limits<double>::infinity();
               default:
                 return -0.0;
             }
           }),
      Make("micro_steps", 10, 3, 7, [](int i) { return 1e-300 * i; }),
      // A computed float64 (value codec ALP_RD).
      Make("computed_rate", 40, 0, 1'000'000,
           [](int i) { return 524288.0 / (0.5 + ((i * 37) % 41 - 20) * 1e-3); }),
  };
  int written = 0;
  for (const Seed& s : seeds) {
    for (int version : {1, 2}) {
      std::string chunk;
      if (version == 1) {
        stepdb::storage::internal::EncodeChunkV1(s.steps, s.times, s.values,
                                                 &chunk);
      } else {
        stepdb::storage::EncodeChunk(s.steps, s.times, s.values, &chunk);
      }
      const std::string path =
          dir + "/v" + std::to_string(version) + "_" + s.name + ".chunk";
      std::ofstream(path, std::ios::binary) << chunk;
      ++written;
    }
  }
  std::printf("wrote %d chunks to %s\n", written, dir.c_str());
  return 0;
}
