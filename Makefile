# Two commands do all the set-up on a fresh machine: `make report MODELS=...` and `make test`.
# Both create .venv on first use (pinned torch, torchvision and the five counters).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# mmengine without its opencv-python (74 MB wheel, 188 MB installed), which only its image and
# visualization modules import; what mmengine.analysis imports is in the tools extra. pip cannot
# say --no-deps for one requirement of an extra, hence a line of its own in setup.
MMENGINE := mmengine==0.10.7
MODELS ?= resnet18,vgg16
INPUT ?=
TOOLS ?=
OUT ?= reports
SOURCE ?= torchvision
SUBSET ?= all
# `make roofline`: hardware table entries, local (this machine, measured once, cached) or custom:...
HARDWARE ?= a100-80gb,local
PLOTS ?= $(OUT)/roofline

# the report's roofline section runs on a100-80gb unless HARDWARE= is given (make roofline's own
# default, a100-80gb,local, measures this machine)
REPORT_ARGS := $(if $(INPUT),--input-shape $(INPUT),) $(if $(TOOLS),--tools $(TOOLS),) \
	$(if $(filter command line environment,$(origin HARDWARE)),--hardware $(HARDWARE),)

.PHONY: setup report test bench zoo roofline clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[tools,models,test]'
	$(PY) -m pip install --quiet --no-deps $(MMENGINE)
	touch $(STAMP)

report: $(STAMP)
	$(PY) -m reconcile report $(MODELS) --out $(OUT) $(REPORT_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

roofline: $(STAMP)
	$(PY) -m reconcile roofline $(MODELS) --hardware $(HARDWARE) --plot $(PLOTS) $(if $(INPUT),--input-shape $(INPUT),)

bench: $(STAMP)
	$(PY) benchmarks/bench.py

zoo: $(STAMP)
	$(PY) -m reconcile zoo --source $(SOURCE) --subset $(SUBSET) --out $(OUT)

clean:
	rm -rf $(VENV) build *.egg-info
