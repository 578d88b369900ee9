# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pepo-installed
TEST_STAMP := $(VENV)/.pepo-test-installed
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench clean

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
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/pepo demo

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
