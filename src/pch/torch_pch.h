// Precompiled header for the targets that use libtorch: torch/torch.h costs ~20 s per
// translation unit, so it is parsed once per target here.
#pragma once
#include <torch/torch.h>
