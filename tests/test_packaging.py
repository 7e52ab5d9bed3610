"""Packaging: setup.cfg ships every package, and a source checkout runs as it is, installed or not."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Drops an editable install's own finder, so that the checkout is imported as it is after
#: ``pip install .`` (not editable) run from its top folder.
NOT_EDITABLE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
                "if '__editable__' not in getattr(f, '__module__', '')]; ")


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_every_package_of_the_checkout_is_shipped():
    options = setup_cfg()["options"]
    listed = {line.strip() for line in options["packages"].splitlines() if line.strip()}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "roi_store").rglob("__init__.py")}
    assert listed == found | {"roi_store.cli", "roi_store.schemas"}
    assert {"roi_store.store", "roi_store.ingest.datasets", "roi_store.method", "roi_store.evaluation",
            "roi_store.synth"} <= listed
    mapped = dict(line.replace(" ", "").split("=") for line in options["package_dir"].splitlines() if line.strip())
    assert mapped == {"roi_store.cli": "cli", "roi_store.schemas": "schemas"}


def test_tensorflow_is_installed_with_roistore_and_never_twice():
    cfg = setup_cfg()
    requires = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    assert any(r.startswith("tensorflow>=") for r in requires)
    extras = {name: value for name, value in cfg["options.extras_require"].items()}
    assert set(extras) == {"gpu", "jax", "dev", "docs"}
    assert "tensorflow[and-cuda]" in extras["gpu"]
    # tensorflow-cpu would be a second wheel of the module ``tensorflow``: no documented install may add it.
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line]
    assert installs and any("-e '.[dev]'" in line for line in installs)
    for text in (*extras.values(), *installs):
        assert "tensorflow-cpu" not in text


@pytest.mark.parametrize("prefix", ["", NOT_EDITABLE], ids=["as-installed-here", "not-editable"])
def test_the_checkout_imports_its_cli_and_schemas(prefix):
    code = prefix + (
        "import importlib.util, roi_store.schemas, roi_store.cli.main; "
        "print(roi_store.__file__, roi_store.cli.__file__, roi_store.schemas.__file__, sep='\\n'); "
        "print(importlib.util.find_spec('roi_store.tests'), importlib.util.find_spec('roi_store.benchmarks'))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    package, cli, schemas, others = result.stdout.strip().splitlines()
    assert Path(package) == ROOT / "roi_store" / "__init__.py"
    assert Path(cli) == ROOT / "cli" / "__init__.py" and Path(schemas) == ROOT / "schemas" / "__init__.py"
    assert others == "None None"  # nothing else of the checkout becomes part of the package


def test_python_m_benchmarks_runs_from_the_checkout():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: python -m benchmarks" in result.stdout and "--scale" in result.stdout
    code = NOT_EDITABLE + ("import runpy, sys; sys.argv = ['benchmarks', '--help']; "
                           "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--scale" in result.stdout
