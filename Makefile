# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo-out
DEMO_EPOCHS ?= 6
BENCH_SCALE ?= 0.1
BENCH_REPEATS ?= 3

.PHONY: setup test demo bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# TensorFlow comes with roistore now: a .venv made before holds tensorflow-cpu, a second wheel
	# of the same module that must not stay beside it.
	$(PY) -m pip uninstall --quiet --quiet --yes tensorflow-cpu
	$(PY) -m pip install --quiet -e '.[dev]'
	# More real face photos for `roistore synth` (image files only; the package is never imported).
	$(PY) -m pip install --quiet --no-deps insightface==2.1
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	rm -rf $(DEMO)
	$(VENV)/bin/roistore synth $(DEMO)/data --preset tiny --seed 1
	$(VENV)/bin/roistore ingest $(DEMO)/store.zarr --dataset casme2 --root $(DEMO)/data/CASME2/CASME2_RAW_selected --jobs 2
	$(VENV)/bin/roistore ingest $(DEMO)/store.zarr --dataset samm --root $(DEMO)/data/SAMM/SAMM --jobs 2
	$(VENV)/bin/roistore ingest $(DEMO)/store.zarr --dataset smic --root $(DEMO)/data/SMIC/HS --jobs 2
	$(VENV)/bin/roistore validate $(DEMO)/store.zarr
	$(VENV)/bin/roistore info $(DEMO)/store.zarr
	$(VENV)/bin/roistore embed $(DEMO)/store.zarr --run demo --cpu --protocol kfold --folds 4 --epochs $(DEMO_EPOCHS) --seed 1
	$(VENV)/bin/roistore fit-lstm $(DEMO)/store.zarr --run demo --epochs 40 --seed 1
	$(VENV)/bin/roistore report $(DEMO)/store.zarr --run demo --plot $(DEMO)/plots

bench: setup
	$(PY) -m benchmarks --scale $(BENCH_SCALE) --repeats $(BENCH_REPEATS) --out bench-out

clean:
	rm -rf $(VENV) $(DEMO) bench-out build *.egg-info
