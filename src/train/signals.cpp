// Signal handling with async-signal-safe operations only: an atomic store, signal(), raise().
#include "dsft/train/signals.h"

#include <atomic>
#include <csignal>

#include "dsft/util/error.h"

namespace dsft::train {
namespace {

std::atomic<int> g_signal{0};
std::atomic<bool> g_installed{false};
struct sigaction g_old_int, g_old_term;

extern "C" void on_stop_signal(int sig) {
  if (g_signal.load() != 0) {
    // Second signal: the user insists. Default action (terminate) for this signal.
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_signal.store(sig);
}

}  // namespace

StopSignal::StopSignal() {
  static_assert(std::atomic<int>::is_always_lock_free, "signal flag must be lock-free");
  if (g_installed.exchange(true)) throw Error("a stop-signal handler is already installed in this process");
  g_signal.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking reads and writes continue; the loop polls the flag
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignal::~StopSignal() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  g_signal.store(0);
  g_installed.store(false);
}

bool StopSignal::requested() const { return g_signal.load() != 0; }
int StopSignal::signal_number() const { return g_signal.load(); }
void StopSignal::reset() { g_signal.store(0); }

}  // namespace dsft::train
