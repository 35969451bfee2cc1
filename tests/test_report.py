"""What a person (or a CI log) sees while a run goes and when it ends."""
import io
import json

from kaokore.pipeline.records import Failure
from kaokore.pipeline.report import Progress, Summary


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_lines_when_not_a_terminal():
    out = io.StringIO()
    progress = Progress({"a": 6, "b": 4}, stream=out, interval=0)
    for host, ok in (("a", True), ("b", True), ("a", False)):
        progress.advance(host, ok)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("kaokore: ") for line in lines)
    assert "3/10 images, 1 failed" in lines[-1] and "ETA" in lines[-1]
    assert "\r" not in out.getvalue()  # no bar redraws in a log file


def test_plain_progress_is_rate_limited():
    out = io.StringIO()
    progress = Progress({"a": 1000}, stream=out, interval=3600)
    for _ in range(1000):
        progress.advance("a", True)
    assert out.getvalue() == ""


def test_a_bar_on_a_terminal_and_nothing_when_quiet():
    term = FakeTerminal()
    progress = Progress({"a": 5}, stream=term)
    for _ in range(5):
        progress.advance("a", True)
    progress.close()
    assert "5/5" in term.getvalue() and "img" in term.getvalue()

    quiet = FakeTerminal()
    progress = Progress({"a": 5}, stream=quiet, quiet=True)
    progress.advance("a", True)
    progress.close()
    assert quiet.getvalue() == ""


def test_eta_follows_the_slowest_host(monkeypatch):
    """Two hosts at the same pace, one with 9 images left, one done: the run ends with the first."""
    clock = [100.0]
    monkeypatch.setattr("kaokore.pipeline.report.time.monotonic", lambda: clock[0])
    progress = Progress({"big": 10, "small": 1}, stream=io.StringIO(), interval=3600)
    clock[0] = 110.0
    progress.advance("big", True)
    progress.advance("small", True)
    # 1 image in 10 s on "big" with 9 to go: 90 s, although 2 of 11 done in 10 s would say 45 s.
    assert progress.eta() == "1m30s"
    fresh = Progress({"a": 3, "b": 3}, stream=io.StringIO())
    fresh.advance("a", True)
    assert fresh.eta() == "?"  # nothing yet from b: no honest estimate


def test_summary_line_and_json():
    s = Summary(dir="d", dataset_version="1.3", layout="split", total=10, downloaded=7, already_present=2,
                failed=1, unavailable=3, seconds=1.25, failures=[Failure("00000001.jpg", "http://x/1", "HTTP 404", 1)])
    assert s.exit_status == 1 and not s.complete
    line = s.line()
    assert "\n" not in line
    for part in ("7 new", "2 already present", "1 failed", "3 unavailable", "INCOMPLETE", "failures.csv"):
        assert part in line
    doc = json.loads(json.dumps(s.to_json()))
    assert doc["failures"] == [{"image": "00000001.jpg", "url": "http://x/1", "error": "HTTP 404", "attempts": 1}]
    assert doc["complete"] is False and doc["seconds"] == 1.25
    interrupted = Summary(dir="d", dataset_version="1.0", layout="flat", interrupted=True)
    assert interrupted.exit_status == 130 and "interrupted" in interrupted.line()
