"""medprune.progress: a bar with an ETA on a terminal, silent (or rare INFO lines) in logs/CI, nothing when quiet."""

from __future__ import annotations

import io
import logging

import pytest

from medprune import progress as progress_module
from medprune.progress import QUIET_ENV, progress, quiet, set_quiet, show_bar, visible_logs


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _not_quiet(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(QUIET_ENV, raising=False)
    set_quiet(False)
    yield
    set_quiet(False)


def test_silent_when_stderr_is_not_a_tty(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    caplog.set_level(logging.INFO, logger="medprune.progress")
    items = list(progress(range(50), "scoring", "sample"))
    assert items == list(range(50))
    assert stderr.getvalue() == ""
    assert caplog.records == []  # a short job logs nothing either


def test_log_lines_without_a_tty_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="medprune.progress")
    for _ in progress(range(100), "sweep", "rate", log_interval_s=30):  # one clock second per step
        pass
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 5  # ~100 s / 30 s, plus the final line
    assert lines[0].startswith("sweep: 30/100 rate (30%)") and "ETA" in lines[0]
    assert lines[-1].startswith("sweep: 100/100") and lines[-1].endswith("done")


def test_bar_with_eta_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _Tty()
    monkeypatch.setattr("sys.stderr", stderr)
    assert show_bar() is True
    with progress(total=4, desc="report", unit="figure") as bar:
        bar.update(2)
        bar.update(2)
    text = stderr.getvalue()
    assert "report" in text and "4/4" in text and "figure" in text
    assert "<" in text  # tqdm's "elapsed<remaining" ETA field


def test_bar_shown_when_forced_without_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    assert list(progress(range(3), "forced", "it", enabled=True)) == [0, 1, 2]
    assert "forced" in stderr.getvalue() and "3/3" in stderr.getvalue()


@pytest.mark.parametrize("how", ["set_quiet", "env"])
def test_quiet_silences_bar_and_log_lines(
    how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stderr = _Tty()
    monkeypatch.setattr("sys.stderr", stderr)
    if how == "env":
        monkeypatch.setenv(QUIET_ENV, "1")
    else:
        set_quiet(True)
    caplog.set_level(logging.INFO, logger="medprune.progress")
    assert list(progress(range(5), "quiet", enabled=True, log_interval_s=0)) == list(range(5))
    assert stderr.getvalue() == ""
    assert caplog.records == []


def test_skip_removes_finished_work_from_the_total() -> None:
    bar = progress(total=10, desc="resume", enabled=False)
    bar.skip(6)
    bar.update(2)
    assert bar.total == 4 and bar.n == 2
    eta = bar.eta_s()
    assert eta is not None and eta >= 0


def test_visible_logs_shows_info_lines_to_a_python_caller_without_logging_setup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a plain script: nothing configured logging
    stage = logging.getLogger("medprune.runs.compress")
    with visible_logs():
        stage.info("search rate 0.300: accepted")
    stage.info("after the block: not shown")
    err = capsys.readouterr().err
    assert "INFO medprune.runs.compress: search rate 0.300: accepted" in err and "after the block" not in err
    assert logging.getLogger("medprune").handlers == []


def test_visible_logs_leaves_a_configured_program_and_quiet_mode_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with quiet(), visible_logs():
        logging.getLogger("medprune.x").info("quiet")
    assert capsys.readouterr().err == ""
