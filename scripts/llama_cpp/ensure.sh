#!/usr/bin/env bash
# Installs llama.cpp's Node bindings (node-llama-cpp with its prebuilt CPU binary) into a scratch
# prefix for the GGUF tests, once: later runs reuse it. Never a dependency of dsft itself.
# Usage: scripts/llama_cpp/ensure.sh PREFIX   (prints PREFIX when ready; exit 1 when npm fails)
set -euo pipefail
prefix=${1:?usage: ensure.sh PREFIX}
version=3.22.1
mkdir -p "$prefix"
marker="$prefix/.dsft-node-llama-cpp-$version"
exec 9>"$prefix/.lock"
flock 9  # several test processes may start at once
if [ ! -f "$marker" ]; then
  command -v npm >/dev/null || { echo "npm is not installed (scripts/setup installs it)" >&2; exit 1; }
  # Only the x64 CPU build: the optional CUDA/Vulkan/ARM packages are ~650 MB the tests never use.
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --prefix "$prefix" --no-audit --no-fund --omit=optional \
    "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >&2
  touch "$marker"
fi
echo "$prefix"
