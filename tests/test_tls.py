"""TLS and proxies, against loopback https hosts whose certificates come from a throwaway CA.

What a user sees: a server their Python does not trust is refused with a message
naming both ways out (--ca-bundle, --ssl_unverified_context); each way out works,
REQUESTS_CA_BUNDLE works, the flags win over it, and proxies from the environment
are used. Nothing here leaves 127.0.0.1.
"""
from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import failure_rows, image_files, jpeg_info, make_synthetic, run_cli
from iiif_server import FakeIIIF

from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from kaokore.storage.lock import exclusive

trustme = pytest.importorskip("trustme")

FLAGS = ("--ssl_unverified_context", "--ca-bundle")
UNVERIFIED_WARNING = "kaokore: warning: --ssl_unverified_context"
# Everything in the environment that could send a loopback request elsewhere or
# make requests trust another CA; each test starts without any of them.
SCRUBBED_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The servers' CA and an unrelated one, each with its PEM on disk."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other.cert_pem.write_to_path(str(folder / "other.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return {"server_context": context, "ca": str(folder / "ca.pem"), "other": str(folder / "other.pem")}


@pytest.fixture
def tls_srv(pki):
    with FakeIIIF(hosts=2, ssl_context=pki["server_context"]) as server:
        yield server


@pytest.fixture
def tls_synth(tls_srv, tmp_path):
    return make_synthetic(tls_srv, tmp_path, n=24)


def download_args(synth, out: Path, *extra: str) -> list[str]:
    return ["download", "--dir", str(out), "--metadata-dir", str(synth.meta_dir), "--quiet", *extra]


def assert_complete(srv, synth, out: Path) -> None:
    files = image_files(out)
    assert sorted(files) == sorted(synth.name(i) for i in synth.urls)
    for index, url in synth.urls.items():
        path = files[synth.name(index)]
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB")
        assert path.read_bytes() == srv.expected_bytes(url)


def run_subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real command with its real stderr (warnings included), in a fresh interpreter;
    PYTHONWARNINGS is cleared so an `ignore` in the caller's environment cannot hide a warning."""
    return subprocess.run([sys.executable, "-m", "kaokore", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONWARNINGS=""))


# --------------------------------------------------------------------------
# Refused by default
# --------------------------------------------------------------------------


def test_untrusted_image_server_is_refused_naming_both_flags_and_not_hammered(tls_srv, tls_synth, tmp_path, capsys):
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, *download_args(tls_synth, out, "--per-host", "2"))
    assert code == EXIT_INCOMPLETE
    assert not image_files(out)
    rows = failure_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(tls_synth.name(i) for i in tls_synth.urls)
    for row in rows:
        assert all(flag in row["error"] for flag in FLAGS), row
        assert "certificate" in row["error"]
        assert int(row["attempts"]) <= 1, row  # not retried: it would fail the same way
    # Each host is reported once, and the advice reaches the terminal.
    notes = [line for line in err.splitlines() if "not trusted" in line]
    assert len(notes) == len(tls_srv.base_urls)
    assert all(all(flag in line for flag in FLAGS) for line in notes)
    # An untrusted certificate is fatal for its host: a dozen images per host,
    # but no more handshakes than the per-host limit lets start at once.
    for host, count in tls_srv.connections_opened.items():
        assert 1 <= count <= 2, (host, count)


@pytest.mark.parametrize("tls_flag, expected", [
    ((), "not trusted"),
    (("--ssl_unverified_context",), "SHA-256 mismatch"),
    (("--ca-bundle", "ca"), "SHA-256 mismatch"),
])
def test_metadata_fetch_over_tls(tls_srv, tls_synth, pki, tmp_path, capsys, tls_flag, expected):
    """--metadata-url is held to the pinned checksums, which synthetic files cannot
    match: getting as far as the checksum proves the TLS step was passed."""
    tls_flag = tuple(pki.get(a, a) for a in tls_flag)
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, "download", "--dir", str(out), "--quiet",
                           "--metadata-url", f"{tls_srv.base_urls[0]}/meta", *tls_flag)
    assert code == EXIT_USAGE
    lines = [line for line in err.splitlines() if not line.startswith(UNVERIFIED_WARNING)]
    assert len(lines) == 1, err
    assert lines[0].startswith("kaokore: error: ") and expected in lines[0], err
    if not tls_flag:
        assert all(flag in lines[0] for flag in FLAGS), err
    assert not image_files(out)


# --------------------------------------------------------------------------
# --ssl_unverified_context
# --------------------------------------------------------------------------


@pytest.mark.parametrize("env_bundle", [None, "other"], ids=["plain", "REQUESTS_CA_BUNDLE-of-another-CA"])
def test_ssl_unverified_context_downloads_and_warns_exactly_once(tls_srv, tls_synth, pki, tmp_path,
                                                                 monkeypatch, env_bundle):
    # requests lets REQUESTS_CA_BUNDLE override a session-wide verify=False; the
    # flag must survive an environment pointing at a CA that signed nothing here.
    if env_bundle:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki[env_bundle])
    out = tmp_path / "data"
    proc = run_subprocess(download_args(tls_synth, out, "--ssl_unverified_context", "--threads", "8"), tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr.count(UNVERIFIED_WARNING) == 1, proc.stderr
    # 23 unverified requests, and not one of urllib3's per-request warnings.
    assert "InsecureRequestWarning" not in proc.stderr
    assert "Unverified HTTPS request" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 2, proc.stderr  # the warning and the summary
    assert_complete(tls_srv, tls_synth, out)


# --------------------------------------------------------------------------
# --ca-bundle and REQUESTS_CA_BUNDLE
# --------------------------------------------------------------------------


@pytest.mark.parametrize("flag, env, trusted", [
    ("ca", None, True),
    (None, ("REQUESTS_CA_BUNDLE", "ca"), True),
    (None, ("CURL_CA_BUNDLE", "ca"), True),
    (None, ("REQUESTS_CA_BUNDLE", "other"), False),
    ("ca", ("REQUESTS_CA_BUNDLE", "other"), True),  # the flag wins over the environment ...
    ("other", ("REQUESTS_CA_BUNDLE", "ca"), False),  # ... even when the environment would have worked
], ids=["flag", "env", "curl-env", "env-other-CA", "flag-beats-env", "wrong-flag-beats-right-env"])
def test_ca_bundle_and_environment(tls_srv, tls_synth, pki, tmp_path, capsys, monkeypatch, flag, env, trusted):
    if env:
        monkeypatch.setenv(env[0], pki[env[1]])
    out = tmp_path / "data"
    extra = ("--ca-bundle", pki[flag]) if flag else ()
    code, _, err = run_cli(capsys, *download_args(tls_synth, out, *extra))
    if trusted:
        assert code == EXIT_OK, err
        assert_complete(tls_srv, tls_synth, out)
    else:
        assert code == EXIT_INCOMPLETE, err
        assert not image_files(out)
        rows = failure_rows(out)
        assert sorted(r["image"] for r in rows) == sorted(tls_synth.name(i) for i in tls_synth.urls)
        assert all("not trusted" in row["error"] for row in rows)


@pytest.mark.parametrize("source, content", [
    ("--ca-bundle", None),
    ("--ca-bundle", b""),
    ("--ca-bundle", b"not a certificate\n"),
    ("REQUESTS_CA_BUNDLE", None),
    ("REQUESTS_CA_BUNDLE", b"not a certificate\n"),
    # A PEM block that only OpenSSL's full load finds broken (it runs on a thread, beside the metadata).
    ("--ca-bundle", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"),
    ("REQUESTS_CA_BUNDLE", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
], ids=["flag-missing", "flag-empty", "flag-garbage", "env-missing", "env-garbage", "flag-bad-pem", "env-bad-pem"])
def test_unusable_ca_bundle_is_one_line_exit_2_before_any_request(tls_srv, tls_synth, tmp_path, capsys,
                                                                  monkeypatch, source, content):
    bundle = tmp_path / "bundle.pem"
    if content is not None:
        bundle.write_bytes(content)
    if source == "--ca-bundle":
        argv = download_args(tls_synth, tmp_path / "data", "--ca-bundle", str(bundle))
    else:
        monkeypatch.setenv(source, str(bundle))
        argv = download_args(tls_synth, tmp_path / "data")
    code, out, err = run_cli(capsys, *argv)
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and err.startswith("kaokore: error: "), err
    assert source in err and str(bundle) in err
    assert out == ""
    # Refused up front, not image by image after retries against a healthy server.
    assert sum(tls_srv.connections_opened.values()) == 0
    assert not image_files(tmp_path / "data")


def test_a_broken_pem_bundle_is_refused_before_the_metadata_is_fetched(tls_srv, tmp_path, capsys, monkeypatch):
    # The full load runs on a thread; the metadata's own request waits for it.
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    code, out, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"), "--quiet",
                             "--metadata-url", f"{tls_srv.base_urls[0]}/meta")
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "REQUESTS_CA_BUNDLE" in err and "no usable PEM CA certificate" in err, err
    assert sum(tls_srv.connections_opened.values()) == 0


def test_a_run_refused_at_once_exits_cleanly_while_its_ca_bundle_loads(pki, tls_synth, tmp_path):
    """The CA file loads on a thread beside the run; a run refused before it waits for that load
    (DIR held by another download) must not exit under it: OpenSSL's exit handlers free what the
    load is using, and the process died of SIGSEGV now and then."""
    bundle = tmp_path / "big.pem"
    bundle.write_bytes(Path(pki["ca"]).read_bytes() * 1000)  # a load long enough to outlast the run
    root = tmp_path / "data"
    root.mkdir()
    with exclusive(root):
        for _ in range(3):
            proc = run_subprocess(download_args(tls_synth, root, "--ca-bundle", str(bundle)), tmp_path)
            assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stderr)
            assert proc.stderr.startswith("kaokore: error: another kaokore download is using"), proc.stderr


def test_ssl_unverified_context_needs_no_usable_ca_bundle(tls_srv, tls_synth, tmp_path, capsys, monkeypatch):
    # A broken REQUESTS_CA_BUNDLE does not matter when nothing is verified.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, *download_args(tls_synth, out, "--ssl_unverified_context"))
    assert code == EXIT_OK, err
    assert_complete(tls_srv, tls_synth, out)


# --------------------------------------------------------------------------
# Proxies from the environment
# --------------------------------------------------------------------------


def test_http_proxy_from_environment_is_used(srv, tmp_path, capsys, monkeypatch):
    synth = make_synthetic(srv, tmp_path, n=12)
    monkeypatch.setenv("HTTP_PROXY", srv.proxy_url)
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, *download_args(synth, out))
    assert code == EXIT_OK, err
    assert_complete(srv, synth, out)
    assert sorted(url for method, url in srv.proxy_log) == sorted(synth.urls.values())


def test_https_proxy_from_environment_tunnels_and_still_verifies(tls_srv, tls_synth, pki, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", tls_srv.proxy_url)
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, *download_args(tls_synth, out, "--per-host", "1"))
    assert code == EXIT_INCOMPLETE, err  # through the tunnel, the certificate is still checked
    rows = failure_rows(out)
    assert len(rows) == len(tls_synth.urls) and all("not trusted" in row["error"] for row in rows)
    tunnels_refused = len(tls_srv.proxy_log)

    code, _, err = run_cli(capsys, *download_args(tls_synth, out, "--ca-bundle", pki["ca"]))
    assert code == EXIT_OK, err
    assert_complete(tls_srv, tls_synth, out)
    tunnels = tls_srv.proxy_log[tunnels_refused:]
    assert tunnels and {method for method, _ in tunnels} == {"CONNECT"}
    assert {target for _, target in tunnels} == {urlsplit(base).netloc for base in tls_srv.base_urls}
