# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo-out
DEMO_EPOCHS ?= 6
BENCH_SCALE ?= 0.1
BENCH_REPEATS ?= 3

.PHONY: setup test demo bench docs clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# TensorFlow comes with roistore now: a .venv made before holds tensorflow-cpu, a second wheel
	# of the same module that must not stay beside it.
	$(PY) -m pip uninstall --quiet --quiet --yes tensorflow-cpu
	# OpenCV comes with its contrib modules now (TV-L1 flow): a .venv made before holds
	# opencv-python-headless, another wheel of the same cv2 module, which must go before the new one lands.
	$(PY) -m pip uninstall --quiet --quiet --yes opencv-python-headless
	$(PY) -m pip install --quiet -e '.[dev]'
	# More real face photos for `roistore synth` (image files only; the package is never imported).
	$(PY) -m pip install --quiet --no-deps insightface==2.1
	touch $(STAMP)

setup: $(STAMP)

test: setup
	sh tests/install_browser.sh
	# Two worker processes (one a core; a module's tests stay together, the slowest modules first: tests/conftest.py); the slowest tests listed.
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

demo: setup
	rm -rf $(DEMO)
	$(VENV)/bin/roistore synth $(DEMO)/data --preset tiny --seed 1
	$(VENV)/bin/roistore ingest $(DEMO)/store.zarr --dataset casme2 --root $(DEMO)/data/CASME2/CASME2_RAW_selected --jobs 2
	$(VENV)/bin/roistore ingest $(DEMO)/store.zarr --dataset samm --root $(DEMO)/data/SAMM/SAMM --jobs 2
	$(VENV)/bin/roistore ingest $(DEMO)/store.zarr --dataset smic --root $(DEMO)/data/SMIC/HS --jobs 2
	$(VENV)/bin/roistore validate $(DEMO)/store.zarr
	$(VENV)/bin/roistore flow $(DEMO)/store.zarr --name flow28 --estimator tvl1 --size 28 --apex max-flow --jobs 2 --no-progress
	$(VENV)/bin/roistore fit $(DEMO)/store.zarr --run demo-ststnet --method ststnet --features flow28 --protocol kfold --folds 4 --seed 1
	$(VENV)/bin/roistore info $(DEMO)/store.zarr
	$(VENV)/bin/roistore embed $(DEMO)/store.zarr --run demo --cpu --protocol kfold --folds 4 --epochs $(DEMO_EPOCHS) --seed 1
	$(VENV)/bin/roistore fit-lstm $(DEMO)/store.zarr --run demo --epochs 40 --seed 1
	$(VENV)/bin/roistore report $(DEMO)/store.zarr --run demo --plot $(DEMO)/plots --html $(DEMO)/report.html
	$(VENV)/bin/roistore report $(DEMO)/store.zarr --runs demo,demo-ststnet

# The documentation (docs/), warnings as errors; the dev extra installs Sphinx and its extensions.
docs: setup
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: setup
	$(PY) -m benchmarks --scale $(BENCH_SCALE) --repeats $(BENCH_REPEATS) --out bench-out

clean:
	rm -rf $(VENV) $(DEMO) bench-out build docs/_build *.egg-info
