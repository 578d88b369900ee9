# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pepo-installed
TEST_STAMP := $(VENV)/.pepo-test-installed
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-recipe-gain test-latest demo bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The constraints file pins the CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e '.[test]'
	touch $(STAMP)

# DeepSpeed only for the test suite's ZeRO-2 CPU test (the demo does not need it): an sdist that
# imports torch to build; with build isolation pip would fetch a CUDA torch into the build
# environment, so it builds against the venv's CPU torch.
$(TEST_STAMP): $(STAMP)
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -c constraints/cpu.txt deepspeed
	touch $(TEST_STAMP)

setup: $(STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest -m "not recipe_gain" $(PYTEST_ARGS)

# A shipped tiny recipe trained in full from the demo warm start and scored on held-out questions
# (about 8 minutes): .ci/run runs it after `make test`.
test-recipe-gain: $(TEST_STAMP)
	$(PY) -m pytest -m recipe_gain $(PYTEST_ARGS)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The suite against the newest trl, transformers and accelerate that pyproject.toml's bounds allow, in a
# venv of its own (.venv is left alone). Every other package keeps its constraints/cpu.txt pin, torch
# included: the registry's newer torch wheels are CUDA builds, and 2.13.0+cpu is the newest CPU one here.
VENV_LATEST ?= .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python
LATEST_STAMP := $(VENV_LATEST)/.pepo-installed
LATEST_FREE := trl|transformers|accelerate

$(LATEST_STAMP): constraints/cpu.txt
	test -x $(PY_LATEST) || $(PYTHON) -m venv $(VENV_LATEST)
	grep -v -i -E '^($(LATEST_FREE))==' constraints/cpu.txt > $(VENV_LATEST)/constraints.txt
	$(PY_LATEST) -m pip install --quiet --disable-pip-version-check -c $(VENV_LATEST)/constraints.txt -e '.[test]'
	DS_BUILD_OPS=0 $(PY_LATEST) -m pip install --quiet --disable-pip-version-check --no-build-isolation -c $(VENV_LATEST)/constraints.txt deepspeed
	touch $(LATEST_STAMP)

# the upgrade runs every time: a release since .venv-latest was made, or a raised bound, is picked up
test-latest: $(LATEST_STAMP)
	$(PY_LATEST) -m pip install --quiet --disable-pip-version-check --upgrade -c $(VENV_LATEST)/constraints.txt -e '.[test]' $(subst |, ,$(LATEST_FREE))
	$(PY_LATEST) -m pip list --disable-pip-version-check 2>/dev/null | grep -i -E '^(torch|$(LATEST_FREE)) '
	$(PY_LATEST) -m pytest -m "not recipe_gain" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/pepo demo

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) $(VENV_LATEST) build src/*.egg-info .pytest_cache .hypothesis
