"""The report checked in a real browser: headless Chromium renders report.html (from a small real sweep) at 1400x900
and a script injected into a copy of the page reports broken images, script and console errors, and where the answer
and the key figure sit; a screenshot of the first screen is saved under the test's tmp folder.

Skips, saying why, when no Chromium is installed (``.ci/run`` installs the Debian package when it runs as root).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from medprune.checkpoint import save_checkpoint
from medprune.models import create_model
from medprune.runs.compress import compress
from medprune.runs.report import ReportConfig, run_report
from medprune.runs.sweep import SweepConfig, run_sweep
from medprune.scoring.request import ScoreRecipe

WIDTH, HEIGHT = 1400, 900
#: Chromium binaries looked for, in order (Debian's package is ``chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Injected first into <head>: records every error (a resource that fails to load, an uncaught exception, a
#: console.error) and, once the page has loaded, writes what it found into <pre id="medprune-check"> as JSON.
PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__problems.push(t && t.tagName ? 'failed to load <' + t.tagName.toLowerCase() + '> ' + (t.alt || '')
                                         : 'error: ' + e.message);
}, true);
(function () {
  var original = console.error;
  console.error = function () {
    window.__problems.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var box = function (el) { if (!el) return null; var r = el.getBoundingClientRect(); return [r.top, r.bottom]; };
  var images = Array.prototype.slice.call(document.images);
  var answer = document.querySelector('.answer');
  var key = answer ? answer.nextElementSibling : null;
  var out = {
    problems: window.__problems,
    images: images.length,
    broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                  .map(function (i) { return i.alt; }),
    answer: box(answer),
    first_heading: box(document.querySelector('h2')),
    first_heading_text: document.querySelector('h2') ? document.querySelector('h2').textContent : null,
    key_figure: key && key.tagName === 'IMG' ? box(key) : null,
    viewport: [window.innerWidth, window.innerHeight]
  };
  var pre = document.createElement('pre');
  pre.id = 'medprune-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    """The path of a Chromium binary, or ``None``."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    assert binary is not None
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    command += [f"--window-size={WIDTH},{HEIGHT}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def browser_check(page: Path, folder: Path, screenshot: bool = True) -> dict[str, Any]:
    """Render ``page`` in headless Chromium; return what the probe found, the console errors Chromium logged and
    (``screenshot``) the path of a screenshot of the first screen, saved in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    probed = folder / f"probed_{page.name}"
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text, f"{page} has no <head>"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dom = _browser("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="medprune-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the probe did not report (rc {dom.returncode}): {dom.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    # console messages Chromium logs itself: uncaught exceptions and console.error reach stderr as CONSOLE lines
    result["console"] = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    if screenshot:
        path = folder / f"{page.stem}_first_screen.png"
        shot = _browser(f"--screenshot={path}", page.as_uri())
        assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot: {shot.stderr[-2000:]}"
        result["screenshot"] = path
    return result


def assert_readable(result: dict[str, Any]) -> None:
    """No broken image, no error, and the answer (with the start of its key figure) inside the first screen."""
    assert result["images"] > 0 and not result["broken"], f"broken images: {result['broken']}"
    assert not result["problems"] and not result["console"], f"errors: {result['problems']} {result['console']}"
    height = result["viewport"][1]
    assert result["answer"] is not None, "the page has no summary block (.answer)"
    assert result["answer"][1] <= height, f"the summary ends at {result['answer'][1]:.0f} px, below the first screen"
    assert result["key_figure"] is not None, "no key figure right after the summary"
    assert result["key_figure"][0] < height, f"the key figure starts at {result['key_figure'][0]:.0f} px"


needs_browser = pytest.mark.skipif(
    chromium() is None, reason=f"no Chromium found ({', '.join(BROWSERS)}): apt-get install chromium (.ci/run does)"
)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """An untrained resnet_small checkpoint for PneumoniaMNIST (28 px)."""
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return save_checkpoint(tmp_path_factory.mktemp("browser_train") / "model", model, meta)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, data_root, untrained) -> Path:
    """report.html of a small real sweep (untrained resnet_small on PneumoniaMNIST, LRP and the controls, 3 rates)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("browser")
    sweep = SweepConfig(
        checkpoints=[str(untrained)],
        out=str(root / "sweep"),
        data_root=str(data_root),
        methods=["lrp"],
        samplings=["random"],
        rates=[0.0, 0.3, 0.6],
        scoring=ScoreRecipe(n_per_class=2),
        seeds=[0],
    )
    run_sweep(sweep)
    report = ReportConfig(
        results=[str(root / "sweep")],
        out=str(root / "report"),
        heatmap_per_class=1,
        similarity_images=1,
        similarity_rates=[0.3],
        tolerances=[0.05, 0.5],
        n_resamples=200,
    )
    page = run_report(report).html
    torch.set_num_threads(threads)
    return page


@needs_browser
def test_report_reads_in_a_browser(report_page, tmp_path):
    result = browser_check(report_page, tmp_path)
    assert_readable(result)
    assert result["screenshot"].parent == tmp_path
    # the figures are embedded: the page loads alone, and it stays light
    assert result["images"] >= 5 and report_page.stat().st_size < 5_000_000


@needs_browser
def test_browser_check_fails_on_a_broken_image(report_page, tmp_path):
    broken = tmp_path / "broken.html"
    text = report_page.read_text(encoding="utf-8")
    start = text.index('src="data:image/png;base64,') + len('src="data:image/png;base64,')
    broken.write_text(text[:start] + "bm90IGEgcG5n" + text[text.index('"', start) :], encoding="utf-8")
    result = browser_check(broken, tmp_path / "check", screenshot=False)
    assert len(result["broken"]) == 1 and any("failed to load <img>" in p for p in result["problems"])
    with pytest.raises(AssertionError, match="broken images"):
        assert_readable(result)


@needs_browser
def test_browser_check_fails_on_a_script_error_and_a_buried_summary(report_page, tmp_path):
    text = report_page.read_text(encoding="utf-8")
    page = tmp_path / "late.html"
    spacer = "<div style='height:2000px'></div><script>undefinedFunction()</script>"
    page.write_text(text.replace("<h2>", spacer + "<h2>", 1), encoding="utf-8")
    result = browser_check(page, tmp_path / "check", screenshot=False)
    assert any("undefinedFunction" in p for p in result["problems"])
    with pytest.raises(AssertionError, match="errors"):
        assert_readable(result)
    with pytest.raises(AssertionError, match="below the first screen"):
        assert_readable({**result, "problems": [], "console": []})


@needs_browser
def test_card_reads_in_a_browser(untrained, data_root, tmp_path):
    """card.html of a tiny compress run (magnitude scores, two rates, BN recalibration in the search): its decision
    heads the first screen, no image is broken and nothing errs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "compress"
    compress(
        str(untrained),
        str(out),
        data_root=str(data_root),
        method="magnitude",
        rates=[0.3, 0.5],
        metric="accuracy",
        tolerance=0.9,  # an untrained model: every rate is "within tolerance"; the page is under test
        decision_rule="point",
        max_class_recall_drop=1.0,
        search_recovery="recalibrate",
        finetune_epochs=1,
        max_train_samples=48,
        recalibration_samples=32,
        batch_size=16,
        latency_repeats=1,
        latency_threads=1,
    )
    torch.set_num_threads(threads)
    card = out / "card.html"
    if not card.is_file():
        pytest.skip(f"compress wrote no card.html in {out} (card.md / card.json only)")
    result = browser_check(card, tmp_path / "check")
    assert not result["broken"], f"broken images: {result['broken']}"
    assert not result["problems"] and not result["console"], f"errors: {result['problems']} {result['console']}"
    assert result["first_heading"] is not None and result["first_heading"][1] <= result["viewport"][1]
    assert "Decision" in result["first_heading_text"]
