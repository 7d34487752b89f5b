# ebgand: build, set-up and test targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ORT_VERSION := 1.31.1
ORT_DIR     := .cache/onnxruntime
ORT_LIB     := $(ORT_DIR)/libonnxruntime.so
FIXTURE_VENV := .venv/fixture
TRAINER_VENV := .venv/trainer
PEER_VENV   := .venv/peer
ZIG_VENV    := .venv/zig
# The oldest glibc the packaged binary runs on (Ubuntu 20.04, Debian 11, JetPack 5).
GLIBC_FLOOR := 2.31
RUST_HOST   := $(shell rustc -vV | sed -n 's/^host: //p')
PYTHON      ?= python3
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export ORT_DYLIB_PATH := $(abspath $(ORT_LIB))

.PHONY: help setup setup-broker setup-tools setup-ort setup-venv setup-peer setup-zig package package-arm64 demo test lint unit doc model fixture fixture-check trainer-check eval bench bench-cluster soak gpu-check fuzz clean-setup

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: setup-broker setup-tools setup-ort setup-venv ## Install what is missing (safe to re-run)

setup-broker: ## Debian's mosquitto + mosquitto-clients, nats-server (the cluster test) and tzdata (the seasons' time zones), used by the tests
	@if [ -x /usr/sbin/mosquitto ] && command -v mosquitto_sub >/dev/null && command -v nats-server >/dev/null \
	    && [ -e /usr/share/zoneinfo/Europe/Berlin ]; then \
	  echo "mosquitto, nats-server, tzdata: installed"; \
	else \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients nats-server tzdata; \
	fi

setup-tools: ## Debian's chromium-headless-shell, prometheus and mmdebstrap (the report, contrib and package tests use them)
	@if (command -v chromium-headless-shell || command -v chromium) >/dev/null && command -v promtool >/dev/null \
	    && command -v mmdebstrap >/dev/null && command -v objdump >/dev/null; then \
	  echo "chromium, prometheus, mmdebstrap: installed"; \
	else \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    chromium-headless-shell prometheus mmdebstrap binutils; \
	fi

setup-ort: $(ORT_LIB) ## ONNX Runtime C library from the onnxruntime==$(ORT_VERSION) wheel

$(ORT_LIB):
	@mkdir -p $(ORT_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: -d $(ORT_DIR)/wheel onnxruntime==$(ORT_VERSION)
	$(PYTHON) -c "import zipfile,glob,sys; w=glob.glob('$(ORT_DIR)/wheel/onnxruntime-$(ORT_VERSION)-*.whl')[0]; z=zipfile.ZipFile(w); [open('$(ORT_DIR)/'+n.rsplit('/',1)[1],'wb').write(z.read(n)) for n in z.namelist() if n.startswith('onnxruntime/capi/lib') or n in ('onnxruntime/LICENSE', 'onnxruntime/ThirdPartyNotices.txt')]"
	ln -sf libonnxruntime.so.$(ORT_VERSION) $(ORT_LIB)
	@rm -rf $(ORT_DIR)/wheel
	@echo "ONNX Runtime $(ORT_VERSION): $(ORT_LIB)"

setup-venv: $(FIXTURE_VENV)/.installed $(TRAINER_VENV)/.installed ## Python venvs for the model tooling (fixtures, trainer)

$(TRAINER_VENV)/.installed: models/trainer/requirements.txt
	$(PYTHON) -m venv $(TRAINER_VENV)
	$(TRAINER_VENV)/bin/pip install --quiet --disable-pip-version-check -r models/trainer/requirements.txt
	@touch $@

$(FIXTURE_VENV)/.installed: models/fixture/requirements.txt
	$(PYTHON) -m venv $(FIXTURE_VENV)
	$(FIXTURE_VENV)/bin/pip install --quiet --disable-pip-version-check -r models/fixture/requirements.txt
	@touch $@

setup-zig: $(ZIG_VENV)/.installed ## cargo-zigbuild and zig from PyPI (packaging/zig-requirements.txt), for make package

$(ZIG_VENV)/.installed: packaging/zig-requirements.txt
	$(PYTHON) -m venv $(ZIG_VENV)
	$(ZIG_VENV)/bin/pip install --quiet --disable-pip-version-check -r packaging/zig-requirements.txt
	@touch $@

package: setup-ort setup-zig ## Debian package target/debian/ebgand_<version>-1_<arch>.deb (binary linked for glibc >= $(GLIBC_FLOOR))
	PATH="$(abspath $(ZIG_VENV))/bin:$$PATH" CARGO_ZIGBUILD_PYTHON_PATH="$(abspath $(ZIG_VENV))/bin/python" \
	  cargo zigbuild --release --locked --target $(RUST_HOST).$(GLIBC_FLOOR)
	packaging/build-deb.sh target/$(RUST_HOST)/release/ebgand target/debian

package-arm64: setup-zig ## arm64 .deb cross-built here and checked under qemu-user (packaging/cross-arm64.sh; needs Debian's rustc-web and arm64 std)
	packaging/cross-arm64.sh

setup-peer: $(PEER_VENV)/.installed ## Python venv for the throughput bench's peer: paho-mqtt, onnxruntime, numpy (benches/peer-requirements.txt)

$(PEER_VENV)/.installed: benches/peer-requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --disable-pip-version-check -r benches/peer-requirements.txt
	@touch $@

demo: setup-ort ## Run the daemon on an embedded broker with a simulated machine
	cargo run --release --quiet -- demo

test: setup lint doc fixture-check trainer-check package unit ## Everything CI runs: format, lints, docs, fixtures, trainer self-check, all tests

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

unit: setup-broker setup-tools setup-ort ## cargo test (unit + integration against mosquitto and ONNX Runtime)
	cargo test --locked

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet

model: setup-ort setup-venv ## Retrain the served default model (deterministic on one CPU: same bytes)
	@# The binary embeds the current default for the demo: build it before replacing the model.
	cargo build --release --quiet
	rm -rf .cache/model-build
	target/release/ebgand train --simulate 120 --name vibration --version ebgan-1 --window 64 --seed 7 --out .cache/model-build/vibration/ebgan-1
	rm -rf models/vibration/ebgan-1 && mv .cache/model-build/vibration/ebgan-1 models/vibration/ebgan-1

fixture: setup-venv ## Regenerate the committed fixture models
	$(FIXTURE_VENV)/bin/python models/fixture/make_fixture.py --kind vibration --out models/vibration/fixture-1
	$(FIXTURE_VENV)/bin/python models/fixture/make_fixture.py --kind multichannel --out models/multichannel/fixture-1

fixture-check: setup-venv ## The committed fixtures are what the script makes (model bytes; manifest but its command line)
	@tmp=$$(mktemp -d); \
	for k in vibration multichannel; do \
	  $(FIXTURE_VENV)/bin/python models/fixture/make_fixture.py --kind $$k --out $$tmp/$$k/fixture-1 >/dev/null; \
	  cmp models/$$k/fixture-1/model.onnx $$tmp/$$k/fixture-1/model.onnx && \
	  diff <(grep -v '^command' models/$$k/fixture-1/manifest.toml) <(grep -v '^command' $$tmp/$$k/fixture-1/manifest.toml) || { echo "fixture $$k differs from its script"; exit 1; }; \
	done; rm -rf $$tmp; echo "fixtures reproduce byte for byte"

trainer-check: setup-venv ## The trainer's self-check: both modes separate synthetic faults, the worker contract holds
	PYTHONPATH=models/trainer $(TRAINER_VENV)/bin/python -m ebgand_trainer.selfcheck

bench: setup setup-peer ## Benchmarks: throughput of ebgand, mosquitto_sub (ceiling) and a Python peer; training time and memory; checkpoints of seasonal streams
	cargo bench --bench throughput
	cargo bench --bench train
	cargo bench --bench audio
	cargo bench --bench checkpoint

bench-cluster: setup-broker setup-ort ## Throughput through three NATS nodes against one mosquitto (same run)
	cargo bench --bench cluster

soak: setup-broker setup-ort ## Soak: 30 min at 20k msg/s over 1,000 streams; RSS, CPU, queues, latency (SOAK_ARGS="--minutes 2")
	cargo bench --bench soak -- $(SOAK_ARGS)

gpu-check: ## TensorRT FP16/FP32, CUDA and CPU on the same windows: windows/s, energy differences (NVIDIA GPU; GPU_CHECK_ARGS=...)
	bash scripts/gpu-check.sh $(GPU_CHECK_ARGS)

FUZZ_RUNS    ?= 1000000
FUZZ_TARGETS := decode_number decode_array decode_object decode_f32le decode_i16le decode_logmel config manifest control journal

fuzz: ## cargo fuzz (nightly) every payload decoder, the config, manifest and control parsers; 10^6 runs each (FUZZ_RUNS=...)
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	@mkdir -p fuzz/corpus/config fuzz/corpus/manifest
	@cp config.toml fuzz/corpus/config/documented.toml
	@for m in models/*/*/manifest.toml; do cp $$m fuzz/corpus/manifest/$$(echo $$m | tr / _); done
	@for t in $(FUZZ_TARGETS); do \
	  case $$t in config|manifest) dict=-dict=fuzz/toml.dict;; *) dict=;; esac; \
	  echo "== fuzz $$t: $(FUZZ_RUNS) runs"; \
	  cargo +nightly fuzz run $$t -- -runs=$(FUZZ_RUNS) -print_final_stats=1 $$dict || exit 1; \
	done

EVAL_ARGS ?= --seeds 3 --nab-per-file

eval: setup-ort setup-venv ## Judgment on the dev sets through `ebgand train`/`score` (NAB dev and look-alikes of its anomaly-free, long and short streams, drifting streams, NAB dev with rows missing, SKAB, the fan clean and noisy, DCASE; old rule vs new), then the models' ranking (SKAB, CWRU, NAB); EVAL_ARGS=...
	cargo build --release --quiet
	PYTHONPATH=models/trainer $(TRAINER_VENV)/bin/python scripts/eval_judgment.py --data ../shared/data $(EVAL_ARGS)
	PYTHONPATH=models/trainer $(TRAINER_VENV)/bin/python -m ebgand_trainer.evaluate --data ../shared/data --seeds 3 --modes ebgan,ae,zscore

clean-setup: ## Remove the downloaded library and venvs
	rm -rf .cache .venv
