// Ctrl-C / SIGTERM during training: the first signal sets a flag the training loop polls (it then
// saves a checkpoint and exits cleanly); a second one quits at once, as the user expects.
#pragma once

namespace dsft::train {

class StopSignal {
 public:
  // Installs the SIGINT and SIGTERM handlers; the previous ones come back on destruction.
  // Only one StopSignal may exist at a time (dsft::Error otherwise).
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  bool requested() const;  // a signal has arrived
  int signal_number() const;  // which one (0 if none)
  void reset();               // e.g. after the checkpoint on request has been written
};

}  // namespace dsft::train
