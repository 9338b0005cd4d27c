// Global generator state: get/set under each generator's mutex, as torch.random does.
#include "dsft/train/rng.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <mutex>

#include "dsft/util/error.h"

namespace dsft::train {

torch::Tensor get_rng_state(const torch::Device& device) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Device& device, const torch::Tensor& state) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

namespace {
std::vector<uint8_t> to_bytes(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU).contiguous();
  const uint8_t* p = static_cast<const uint8_t*>(c.data_ptr());
  return std::vector<uint8_t>(p, p + c.numel() * c.element_size());
}
torch::Tensor from_bytes(const std::vector<uint8_t>& b) {
  return torch::from_blob(const_cast<uint8_t*>(b.data()), {static_cast<int64_t>(b.size())}, torch::kUInt8).clone();
}
}  // namespace

RngSnapshot capture_rng() {
  RngSnapshot s;
  s.cpu = to_bytes(get_rng_state(torch::kCPU));
  if (torch::cuda::is_available()) {
    const auto n = static_cast<int>(torch::cuda::device_count());
    for (int i = 0; i < n; ++i) s.cuda.push_back(to_bytes(get_rng_state(torch::Device(torch::kCUDA, i))));
  }
  return s;
}

void restore_rng(const RngSnapshot& s) {
  const size_t devices = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  if (s.cuda.size() > devices)
    throw Error("cannot restore random state for " + std::to_string(s.cuda.size()) + " CUDA devices on a machine with " +
                std::to_string(devices) + "; resume on a machine with as many GPUs or start a new run");
  if (s.cpu.empty()) throw Error("cannot restore random state: the CPU generator state is empty");
  try {
    set_rng_state(torch::kCPU, from_bytes(s.cpu));
    for (size_t i = 0; i < s.cuda.size(); ++i)
      set_rng_state(torch::Device(torch::kCUDA, static_cast<int>(i)), from_bytes(s.cuda[i]));
  } catch (const c10::Error& e) {
    throw Error(std::string("cannot restore random state (saved by another libtorch version?): ") + e.what_without_backtrace());
  }
}

static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::vector<uint8_t>& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = in[i] << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(const std::string& text) {
  if (text.size() % 4 != 0) throw Error("base64 text has a length that is not a multiple of 4");
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        v[j] = 0;
        ++pad;
      } else {
        if (pad) throw Error("base64 text has data after padding");
        v[j] = value(c);
        if (v[j] < 0) throw Error("base64 text has an invalid character");
      }
    }
    const uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<uint8_t>(n >> 16));
    if (pad < 2) out.push_back(static_cast<uint8_t>((n >> 8) & 255));
    if (pad < 1) out.push_back(static_cast<uint8_t>(n & 255));
  }
  return out;
}

}  // namespace dsft::train
