"""The Python API as a program calling it sees it: what it exports, `verify=`, and `quiet` that is quiet."""
from __future__ import annotations

import logging

import pytest

from helpers import make_synthetic, run_cli
from iiif_server import Fault

import kaokore
from kaokore.pipeline.records import RetryPolicy

QUICK = RetryPolicy(backoff_factor=0.01, host_pause_max=0.1)


def test_the_result_and_error_types_are_exported():
    assert [name for name in kaokore.__all__ if not hasattr(kaokore, name)] == []  # every export resolves
    assert {"VerifyReport", "Problem", "Failure", "Version", "RetryPolicy", "Summary",
            "UsageError", "DirectoryError", "RunStopped", "Interrupted"} <= set(kaokore.__all__)
    assert issubclass(kaokore.RunStopped, kaokore.KaokoreError)


def test_quiet_prints_nothing_but_logs_what_a_user_must_hear(srv, tmp_path, capfd, caplog):
    synth = make_synthetic(srv, tmp_path, n=60)
    srv.fail_host(2, Fault.S500)
    with caplog.at_level(logging.INFO, logger="kaokore"):
        summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=QUICK)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert summary.exit_status == 1 and summary.hosts_unreachable
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("host failing" in m for m in warned), warned
    assert any(m.startswith("kaokore 1.0: INCOMPLETE") for m in caplog.messages)


def test_the_command_line_with_quiet_still_prints_warnings_and_the_summary_line(srv, tmp_path, capsys):
    synth = make_synthetic(srv, tmp_path, n=60)
    srv.kill_host(2)  # refused connections: given up at once, with no pauses to wait out
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"), "--metadata-dir",
                           str(synth.meta_dir), "--quiet")
    lines = err.strip().splitlines()
    assert code == 1
    assert any(line.startswith("kaokore: ") and "host unreachable" in line for line in lines), lines
    assert lines[-1].startswith("kaokore 1.0: INCOMPLETE")


@pytest.mark.parametrize("verify", [1, None, 0.5])
def test_verify_takes_what_requests_takes_and_nothing_else(tmp_path, verify):
    with pytest.raises(kaokore.UsageError, match="verify must be"):
        kaokore.download(tmp_path / "data", verify=verify, quiet=True)
    assert not (tmp_path / "data").exists()


def test_verify_with_a_missing_ca_bundle_is_a_usage_error_before_any_request(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path)
    srv.reset_stats()
    with pytest.raises(kaokore.KaokoreError):
        kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, verify=tmp_path / "missing.pem", quiet=True)
    assert srv.request_log == []
