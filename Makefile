# Two entry points: `make demo` (profile + show + validate on this machine's CPU) and `make test`.
# Both set up a virtualenv in .venv first; torch is pinned to the CPU build by constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,tflite,coreml
SPACE ?= autovit-xxs

.PHONY: install demo test bench
install: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(VENV)/bin/latencykit profile --device host --space $(SPACE)
	$(VENV)/bin/latencykit show --device host --space $(SPACE)
	$(VENV)/bin/latencykit validate --device host --space $(SPACE) --samples 50

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/host_tables.py
