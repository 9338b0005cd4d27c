// Tokenizer throughput: encodes corpus.json's strings (joined with "\n" and repeated) with one
// tokenizer, single-threaded as one text and as a batch of strings on every core, and writes the
// ids so that scripts/bench/tokenizer.sh can check them against Hugging Face's library.
//   dsft_bench_tokenizer TOKENIZER_DIR CORPUS_JSON REPEAT RUNS IDS_PREFIX
// writes IDS_PREFIX.single.json (ids of the joined text) and IDS_PREFIX.batch.json (per string).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "dsft/text/tokenizer.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Process CPU time: on a shared machine the single-threaded figures are also given per CPU
// second, which other processes do not disturb.
double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

struct Timing {
  double wall, cpu;  // medians
};

template <class F>
Timing median_seconds(int runs, F&& f) {
  f();  // warm-up (fills the word cache, as in the reference measurement)
  std::vector<double> wall, cpu;
  for (int i = 0; i < runs; ++i) {
    double t0 = now(), c0 = cpu_now();
    f();
    wall.push_back(now() - t0);
    cpu.push_back(cpu_now() - c0);
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR CORPUS_JSON REPEAT RUNS IDS_PREFIX\n", argv[0]);
    return 2;
  }
  try {
    int repeat = std::stoi(argv[3]), runs = std::stoi(argv[4]);
    std::ifstream f(argv[2]);
    auto corpus = nlohmann::json::parse(f).get<std::vector<std::string>>();
    std::string joined;
    for (size_t i = 0; i < corpus.size(); ++i) {
      if (i) joined += "\n";
      joined += corpus[i];
    }
    std::string text;
    std::vector<std::string> texts;
    for (int r = 0; r < repeat; ++r) {
      text += joined;
      texts.insert(texts.end(), corpus.begin(), corpus.end());
    }
    size_t batch_bytes = 0;
    for (const auto& t : texts) batch_bytes += t.size();

    double t0 = now();
    auto tok = dsft::text::load_tokenizer(argv[1]);
    double load_s = now() - t0;

    std::vector<int32_t> ids;
    Timing single_s = median_seconds(runs, [&] { ids = tok->encode(text); });
    Timing per_string_s = median_seconds(runs, [&] {
      for (const auto& t : texts) (void)tok->encode(t);
    });
    std::vector<std::vector<int32_t>> batch;
    Timing batch_s = median_seconds(runs, [&] { batch = tok->encode_batch(texts); });
    // The batch must equal per-text encoding.
    for (size_t i = 0; i < texts.size(); ++i) {
      if (batch[i] != tok->encode(texts[i])) {
        std::fprintf(stderr, "encode_batch differs from encode on text %zu\n", i);
        return 1;
      }
    }
    std::ofstream(std::string(argv[5]) + ".single.json") << nlohmann::json(ids).dump() << "\n";
    std::ofstream(std::string(argv[5]) + ".batch.json") << nlohmann::json(batch).dump() << "\n";
    nlohmann::json r = {{"bytes", text.size()},
                        {"tokens", ids.size()},
                        {"load_s", load_s},
                        {"single_mb_s", text.size() / single_s.wall / 1e6},
                        {"single_mb_per_cpu_s", text.size() / single_s.cpu / 1e6},
                        {"per_string_mb_s", batch_bytes / per_string_s.wall / 1e6},
                        {"per_string_mb_per_cpu_s", batch_bytes / per_string_s.cpu / 1e6},
                        {"batch_mb_s", batch_bytes / batch_s.wall / 1e6},
                        {"batch_cpu_s_per_wall_s", batch_s.cpu / batch_s.wall},
                        // CPU seconds the same strings take one at a time on one thread, over the
                        // CPU seconds the batch takes on all threads: 1.0 = no cost from threading.
                        {"batch_cpu_efficiency", per_string_s.cpu / batch_s.cpu},
                        {"threads", std::thread::hardware_concurrency()}};
    std::printf("%s\n", r.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsft_bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
