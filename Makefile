# Two commands do all the set-up on a fresh machine: `make report MODELS=...` and `make test`.
# Both create .venv on first use (pinned torch, torchvision and the five counters; the pinned
# versions of reconcile/tool_versions.toml in .venv/tools).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# tools pinned at other versions (reconcile/tool_versions.toml), each in .venv/tools/NAME
TOOLS_STAMP := $(VENV)/tools/.installed
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
# `make zoo EXECUTOR=ray [RAY_ADDRESS=host:6379] [RESUME=1 [RECOUNT=1]] [PAGE=1]`: jobs as Ray tasks; resume an interrupted run (RECOUNT: count again the models kept only as rows of other reconcile code; PAGE: count nothing, write the page of what is kept)
EXECUTOR ?= local
RAY_ADDRESS ?=
RESUME ?=
RECOUNT ?=
PAGE ?=
# `make roofline`: hardware table entries, local (this machine, measured once, cached) or custom:...
HARDWARE ?= a100-80gb,local
PLOTS ?= $(OUT)/roofline

# the report's roofline section runs on a100-80gb unless HARDWARE= is given (make roofline's own
# default, a100-80gb,local, measures this machine)
REPORT_ARGS := $(if $(INPUT),--input-shape $(INPUT),) $(if $(TOOLS),--tools $(TOOLS),) \
	$(if $(filter command line environment,$(origin HARDWARE)),--hardware $(HARDWARE),)

# `make roofline-check`: this machine's bounds against measured layer times (CPU, real tensors),
# once per input shape; exit status 1 if a layer ran faster than its lower bound
CHECK_SHAPES ?= 1,3,224,224 8,3,224,224

.PHONY: setup report test bench zoo roofline roofline-check clean

setup: $(STAMP) $(TOOLS_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e '.[tools,models,ray,test]'  # deepspeed: no CUDA ops built
	$(PY) -m pip install --quiet --no-deps $(MMENGINE)
	touch $(STAMP)

# each pin with `pip install --no-deps --target .venv/tools/NAME DIST==VERSION`, only when its
# folder does not hold that version (idempotent); never into .venv itself
$(TOOLS_STAMP): $(STAMP) reconcile/tool_versions.toml
	$(PY) -m reconcile.versions install
	touch $(TOOLS_STAMP)

report: $(STAMP) $(TOOLS_STAMP)
	$(PY) -m reconcile report $(MODELS) --out $(OUT) $(REPORT_ARGS)

# 2 pytest-xdist workers (the default), each running whole files (--dist loadfile) so a file's module
# fixtures run once, the longest files first and each worker with a temporary folder of its own
# (tests/conftest.py); `make test TEST_WORKERS=0` runs in pytest's own process. Measured on this
# 2-core machine: 22 min 20 s in one process (2026-12-05); 10 min 42 s with 2 workers on a fresh
# clone (2026-12-07; docs/development.md has where the time goes).
TEST_WORKERS ?= 2

test: $(STAMP) $(TOOLS_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

roofline: $(STAMP) $(TOOLS_STAMP)
	$(PY) -m reconcile roofline $(MODELS) --hardware $(HARDWARE) --plot $(PLOTS) $(if $(INPUT),--input-shape $(INPUT),)

roofline-check: $(STAMP) $(TOOLS_STAMP)
	rc=0; for s in $(CHECK_SHAPES); do \
		$(PY) -m reconcile roofline $(MODELS) --hardware local --measure --input-shape $$s || rc=1; done; exit $$rc

bench: $(STAMP) $(TOOLS_STAMP)
	$(PY) benchmarks/bench.py

zoo: $(STAMP) $(TOOLS_STAMP)
	$(PY) -m reconcile zoo --source $(SOURCE) --subset $(SUBSET) --out $(OUT) --executor $(EXECUTOR) \
		$(if $(TOOLS),--tools $(TOOLS),) $(if $(RAY_ADDRESS),--ray-address $(RAY_ADDRESS),) $(if $(RESUME),--resume,) $(if $(RECOUNT),--recount-earlier,) $(if $(PAGE),--page-only,)

clean:
	rm -rf $(VENV) build *.egg-info
