"""``roistore report --html``: the page opened in a real browser (headless Chromium), and checked to be self-contained.

The runs are the session's fitted tiny runs ``a`` and ``b`` (conftest ``method_runs``), read, never written.
Screenshots of the page, at a desktop's and a phone's width, and the page printed to PDF are kept in
``test-artifacts/`` at the top of the checkout.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from roi_store.cli.main import cli

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: Sections of a run's page, and of a group's, by anchor.
RUN_SECTIONS = ["summary", "scores", "confusion", "subjects", "null", "megc2019", "settings", "leakage", "timings",
                "gallery"]
GROUP_SECTIONS = ["runs", "comparison"]
#: Read by the browser after the page loaded: per section, its height and its images, and whether each decoded.
CHECK = """<script>
window.addEventListener("load", () => {
  const out = {};
  for (const s of document.querySelectorAll("section")) {
    const imgs = [...s.querySelectorAll("img")];
    out[s.id] = {height: s.getBoundingClientRect().height, images: imgs.length,
                 decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                 title: s.querySelector("h2").textContent};
  }
  out.page = {width: window.innerWidth, scrollWidth: document.documentElement.scrollWidth};
  const pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine: tests/install_browser.sh (run by 'make test') installs Debian's "
                "chromium with apt-get when run as root; elsewhere install it to run this test")


def browse(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, offline: no network service, sync, updates or first-run work."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def with_null_run(rep: dict) -> dict:
    """``rep`` with one null run beside it, as ``report`` lists a fitted permutation control: a's predictions
    scored against its true labels shuffled with seed 1 (the tiny store fits no control, to keep this module fast)."""
    import numpy as np

    from roi_store.evaluation.report import scores
    from roi_store.evaluation.stats import null_p_value

    preds = rep["predictions"]
    shuffled = np.random.default_rng(1).permutation([p["true"] for p in preds])
    null = scores([{**p, "true": str(t)} for p, t in zip(preds, shuffled)], rep["classes"])
    control = {"run": "a-perm1h", "permute_labels": 1, "permute_within": "dataset",
               "scores": {g: {m: v[m] for m in ("UF1", "UAR")} for g, v in null.items()}}
    p = {m: null_p_value(rep["scores"]["FULL"][m], [control["scores"]["FULL"][m]]) for m in ("UF1", "UAR")}
    return {**rep, "controls": [control], "null": {**rep["null"], "runs": 1, "p": p}}


@pytest.fixture(scope="module")
def pages(method_runs, tmp_path_factory):
    """Pages of the tiny runs: ``--run a`` with ``--runs a,b`` (through the CLI), a group's alone (``--run-group a
    --runs b``), and the first with a null run and a flow set (through :func:`roi_store.evaluation.html.write_html`,
    on a copy of the store with a Farneback flow set, the cheap estimator)."""
    from roi_store.evaluation.html import write_html
    from roi_store.ingest.flow import compute_flow
    from roi_store.store.store import open_store

    tmp, store = tmp_path_factory.mktemp("html"), method_runs["shared"]
    with_flow = tmp / "flow.zarr"
    shutil.copytree(store, with_flow)
    compute_flow(with_flow, "flow28", estimator="farneback", size=28, apex="middle")
    runner = CliRunner()
    run_page, group_page = tmp / "run.html", tmp / "group.html"
    out = runner.invoke(cli, ["report", str(store), "--run", "a", "--runs", "a,b", "--html", str(run_page),
                              "--resamples", "200", "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    group = runner.invoke(cli, ["report", str(store), "--run-group", "a", "--runs", "b", "--html", str(group_page),
                                "--seed", "1"])
    assert group.exit_code == 0, group.output
    full = write_html(open_store(with_flow), tmp / "full.html", report=with_null_run(rep), group=rep["group"],
                      resamples=200)
    return {"store": store, "tmp": tmp, "run": run_page, "group": group_page, "full": full, "report": rep,
            "group_output": group.output}


def test_the_page_renders_every_section_with_its_figures_in_a_browser(pages):
    browser = chromium()
    rep, tmp = pages["report"], pages["tmp"]
    checked = tmp / "checked.html"  # the page plus a script that reads back what the browser drew
    checked.write_text(pages["full"].read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"),
                       encoding="utf-8")
    # A phone's width; headless Chromium lays the DOM out no narrower than 500 px, still the page's narrow layout.
    dom = browse(browser, checked, tmp / "profile", "--window-size=390,2000", "--dump-dom")
    found = re.search(r'<pre id="check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the browser did not run the page's check: {dom.stderr[-2000:]}"
    drawn = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    page = drawn.pop("page")
    assert page["width"] <= 640 and page["scrollWidth"] <= page["width"], f"wider than a narrow window: {page}"
    assert list(drawn) == RUN_SECTIONS + GROUP_SECTIONS
    wrong = [p for p in rep["predictions"] if p["true"] != p["pred"]]
    assert wrong, "the tiny runs classify every clip: the gallery would be empty"  # each: a preview and its flow
    figures = {"scores": 1, "confusion": len(rep["scores"]), "subjects": 1, "null": 1, "gallery": 2 * len(wrong),
               "runs": 1, "comparison": 1}
    for anchor, seen in drawn.items():
        assert seen["height"] > 20, f"section {anchor} has no height"
        assert seen["images"] == figures.get(anchor, 0) == seen["decoded"], (anchor, seen)
    import cv2

    ARTIFACTS.mkdir(exist_ok=True)
    for width, name in ((1200, "report-desktop.png"), (390, "report-phone.png")):
        shot = tmp / name
        browse(browser, pages["full"], tmp / "profile", f"--window-size={width},4000", f"--screenshot={shot}")
        image = cv2.imread(str(shot))
        assert image is not None and image.shape[:2] == (4000, width) and image.std() > 20
        shutil.copy(shot, ARTIFACTS / name)
    pdf = tmp / "report.pdf"  # printed as a browser prints it, to paper without the navigation
    browse(browser, pages["full"], tmp / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    printed = pdf.read_bytes()
    assert printed.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", printed)) > 1
    shutil.copy(pdf, ARTIFACTS / "report.pdf")


def test_the_page_holds_no_external_address(pages):
    for page in (pages["run"], pages["group"], pages["full"]):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"(https?|ftp)://|<script|<link|<iframe|@import|<object|<embed", text, re.I)
        links = re.findall(r'''(?:src|href)\s*=\s*["']?([^"'\s>]*)''', text, re.I)
        assert links and all(u.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "#")) for u in links)
        assert all(u.startswith("data:") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text, re.I))


def test_the_page_shows_the_runs_results(pages):
    """What the page says matches the JSON report: scores, null runs, settings that differ, folds, mistakes."""
    rep, text = pages["report"], pages["run"].read_text(encoding="utf-8")
    assert rep["html"] == str(pages["run"])
    full = rep["scores"]["FULL"]
    assert f"{full['UF1']:.4f}" in text and f"{full['UAR']:.4f}" in text
    assert "No permutation control run with the same settings." in text
    # TINY_RUN gives 1 CNN epoch where both presets have 100: highlighted in each preset's column.
    assert re.search(r'<tr><td>epochs</td><td class="n">1</td><td class="differs">100</td>', text)
    assert "no fold trains its feature extractor or its head on its own test subjects" in text
    assert "Not applicable: the challenge's protocol is leave-one-subject-out" in text  # a kfold run
    assert text.count("<figcaption>casme2/") == sum(p["true"] != p["pred"] for p in rep["predictions"])
    assert "the store holds no flow set" in text
    assert "a - b" in text and "Identical settings." in text
    null = with_null_run(rep)
    text = pages["full"].read_text(encoding="utf-8")
    assert ">a-perm1h<" in text and f"UF1 <b>{null['null']['p']['UF1']:.4f}</b>" in text
    flows = re.findall(r"<figcaption>[^<]*; flow set flow28 \(farneback, 28 px, apex middle\)", text)
    assert len(flows) == sum(p["true"] != p["pred"] for p in rep["predictions"])


def test_another_method_a_leaking_run_and_a_megc2019_loso_run(pages, monkeypatch):
    """What the tiny runs are not: a run made without a preset (STSTNet's: one settings document for its one
    stage), shown as recorded, not measured against the region CNN presets; a run whose CNNs trained on every clip
    (``--cnn-scope global``), caught in its fold records; and a LOSO run of the megc2019 view short of the
    challenge's 68 folds."""
    import roi_store.evaluation.html as page
    from roi_store.evaluation.report import challenge_folds
    from roi_store.store.store import open_store

    store = open_store(pages["store"])
    real = page.run_document(store, "a")
    every = [c for f in real["folds"] for c in f["test_clips"]]
    monkeypatch.setattr(page, "run_document", lambda s, n: {**real, "folds": [{**f, "cnn_train_clips": every}
                                                                               for f in real["folds"]]})
    own = {"method": "ststnet", "features": "flow28", "epochs": 500, "learning_rate": 5e-05, "same_person": None}
    folds = challenge_folds([{"test_subjects": [f"casme2/sub{i:02d}"]} for i in range(1, 4)])
    rep = {**pages["report"], "preset": None, "settings": {"embed": own, "head": own}, "leakage": True,
           "megc2019_folds": folds}
    text = page.html_page(store, report=rep, gallery=0)
    assert "This run was made without a preset; its settings are shown as recorded." in text
    assert "<h3>settings</h3>" in text and "<h3>head</h3>" not in text and "preset roistore" not in text
    assert '<tr><td>learning_rate</td><td class="n">5e-05</td></tr>' in text and 'class="differs"' not in text
    assert text.count("LEAKAGE: the region CNNs were trained on every clip") == 2  # the summary's and leakage's
    assert f"{len(real['folds'])} training set(s) hold clips of their fold's test subjects." in text
    assert "Not the challenge's 68 folds (3 folds)" in text
    assert '<tr><td>casme2</td><td class="n">3</td><td class="n">24</td></tr>' in text


def test_a_page_of_methods_side_by_side(pages):
    """Runs of different methods (``report --runs A,B`` across methods): one table with intervals, each against the
    first. The tiny runs share one method; the page is the same for two."""
    from roi_store.evaluation.html import html_page
    from roi_store.evaluation.methods import side_by_side
    from roi_store.store.store import open_store

    store = open_store(pages["store"])
    side = side_by_side(store, ["a", "b"], resamples=200)
    text = html_page(store, methods=side)
    assert '<title>roistore report: runs a, b</title>' in text and 'id="methods"' in text and 'id="comparison"' in text
    assert "<td>region-cnn+lstm</td>" in text and "The runs test the same subjects in each fold." in text
    assert "Each later run is compared with the first." in text and text.count("<td>a - b</td>") == 2 * len(
        side["comparisons"][0]["scores"])


def test_a_group_page_and_the_html_option_errors(pages, tmp_path):
    text = pages["group"].read_text(encoding="utf-8")
    assert 'id="runs"' in text and 'id="comparison"' in text and 'id="summary"' not in text
    assert "<td>b</td>" in text and "<td>a</td>" in text and "b - a" in text and "seed 1." in text
    assert pages["group_output"].rstrip().endswith(f"wrote {pages['group']}")
    missing = tmp_path / "no" / "page.html"
    out = CliRunner().invoke(cli, ["report", str(pages["store"]), "--run", "a", "--html", str(missing)])
    assert out.exit_code == 1 and out.output == (f"Error: cannot write HTML report {missing}: folder {missing.parent} "
                                                 "does not exist; make it or give another path\n")
