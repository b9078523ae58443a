# Two commands do all the set-up: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DATA ?= ../shared/data/cifar10-train.tar.gz
LIMIT ?=
LAVA_LIMIT ?= 64
MODEL := spikeclip-native-small-cifar10
CLI := $(VENV)/bin/spikeclip-deploy

.PHONY: demo test venv clean-venv
venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/nodeps.txt pyproject.toml
	@$(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else "spikeclip-deploy needs Python 3.11 (lava-nc 0.10 with the bundled 3.11 import fix, and the torch 2.14.1 wheels on this machine); found %d.%d. Run with PY=/path/to/python3.11 make ..." % v)'
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements/base.txt
	$(VENV)/bin/pip install -q --no-deps --ignore-requires-python -r requirements/nodeps.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(CLI) export --target loihi --force
	$(CLI) verify --export exports/$(MODEL)-loihi --data $(DATA) --split val $(if $(LIMIT),--limit $(LIMIT)) \
		--lava-limit $(LAVA_LIMIT) --json exports/verify.json --energy-json exports/energy.json \
		--plots exports/figures

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
