# The two commands of the README: `make demo` and `make test`. Both create .venv from scratch if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast docs install clean

$(VENV)/.installed-test: setup.cfg pyproject.toml examples/plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]' -e examples/plugin
	touch $@

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e .
	touch $@

install: $(VENV)/.installed

# quick-start matrix on scikit-learn's bundled digits (no download), summary printed, report written
demo: $(VENV)/.installed
	$(VENV)/bin/clbench run --output runs

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# the tests without end-to-end processes, servers or clusters (marked slow): about a third of `make test`
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build site *.egg-info

# the documentation site (reference pages generated from the code, results included from results/)
docs: $(VENV)/.installed-test
	$(VENV)/bin/mkdocs build --strict -q
