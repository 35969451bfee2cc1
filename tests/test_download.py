"""`kaokore download` end to end against loopback IIIF hosts: what lands on disk, what is requested."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import image_files, jpeg_info, make_synthetic, run_cli
from iiif_server import Fault

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from kaokore.storage.store import content_providers

REPO = Path(__file__).resolve().parent.parent
CLASS = {"gender": ("male", "female"), "status": ("noble", "warrior", "incarnation", "commoner")}


def expected_path(synth, index: int, layout: str) -> str:
    label = synth.labels.get(index)
    name = synth.name(index)
    if layout == "flat":
        return f"images_256/{name}"
    if label is None:
        return f"unlabeled/{name}"
    split, gender, status = label
    if layout == "split":
        return f"{split}/{name}"
    return f"{split}/{CLASS[layout][gender if layout == 'gender' else status]}/{name}"


@pytest.mark.parametrize("layout", ["split", "flat", "gender", "status"])
def test_every_layout_puts_every_image_where_it_belongs(srv, synth, tmp_path, capsys, layout):
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, "download", "--dir", str(out), "--metadata-dir", str(synth.meta_dir),
                           "--layout", layout, "--quiet")
    assert code == EXIT_OK, err
    on_disk = {p.relative_to(out).as_posix() for p in image_files(out).values()}
    assert on_disk == {expected_path(synth, i, layout) for i in synth.urls}
    for path in image_files(out).values():
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB")
    # Byte-exact metadata copies and the provider list at the root, in every layout.
    for name, data in synth.files.items():
        assert (out / name).read_bytes() == data
    assert (out / "CONTENT_PROVIDERS.txt").read_bytes() == content_providers()
    assert "complete" in err


def test_server_bytes_are_kept_when_already_256_rgb_jpeg(srv, synth, tmp_path):
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    for index, url in synth.urls.items():
        on_disk = (tmp_path / "data" / expected_path(synth, index, "split")).read_bytes()
        assert on_disk == srv.expected_bytes(url)


def test_grayscale_and_200px_become_256_rgb(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=12, sizes={1: "!200,200", 2: "!200,200", 4: "256,"})
    srv.inject(synth.urls[6], Fault.GRAY)
    srv.inject(synth.urls[8], Fault.CMYK)
    srv.inject(synth.urls[9], Fault.PNG)
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    assert summary.exit_status == EXIT_OK
    for index in synth.urls:
        assert jpeg_info(tmp_path / "data" / expected_path(synth, index, "split")) == ("JPEG", (256, 256), "RGB")
    manifest = {r["image"]: r for r in csv.DictReader(open(tmp_path / "data" / "manifest.csv"))}
    assert manifest[synth.name(1)]["converted"] == "true"
    assert (manifest[synth.name(1)]["source_width"], manifest[synth.name(1)]["source_height"]) == ("200", "200")
    assert manifest[synth.name(6)]["source_mode"] == "L"
    assert manifest[synth.name(8)]["source_mode"] == "CMYK"
    assert manifest[synth.name(4)]["converted"] == "false"  # `256,` of a square crop is already 256x256
    assert summary.converted == 5


def test_second_run_requests_nothing(srv, synth, tmp_path):
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    srv.reset_stats()
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    assert srv.request_log == []
    assert summary.downloaded == 0 and summary.already_present == len(synth.urls)


def test_politeness_connections_are_reused_and_per_host_is_never_exceeded(tmp_path):
    from iiif_server import FakeIIIF

    with FakeIIIF(hosts=3, server_time=0.01) as srv:
        synth = make_synthetic(srv, tmp_path, n=150, blank=(), unlabeled=())
        summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, threads=12, per_host=2,
                                   quiet=True)
        assert summary.downloaded == 150
        assert max(srv.peak_concurrency.values()) <= 2
        assert min(srv.peak_concurrency.values()) == 2  # the limit is used, not just respected
        assert sum(srv.connections_opened.values()) <= 3 * 2  # kept alive, never one per image


def test_user_agent_names_the_tool_and_its_version(srv, synth, tmp_path):
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, limit=3)
    agents = srv.user_agents
    assert len(agents) == 3  # one image request each, every one of them identified
    assert all(a.startswith(f"kaokore/{kaokore.__version__} ") for a in agents), agents


def test_threads_is_a_total_across_hosts_not_a_number_per_host(tmp_path):
    """--threads 3 with --per-host 10: never more than 3 requests at once, whatever the host."""
    from iiif_server import FakeIIIF

    with FakeIIIF(hosts=3, server_time=0.05) as srv:
        synth = make_synthetic(srv, tmp_path, n=60, blank=(), unlabeled=())
        summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, threads=3, per_host=10,
                                   quiet=True)
        assert summary.downloaded == 60
        assert srv.peak_total_concurrency == 3  # the total is used, and never exceeded
        assert max(srv.peak_concurrency.values()) <= 3


@pytest.mark.parametrize("why", ["a file as --dir", "no metadata", "another download"])
def test_json_says_why_a_download_cannot_start(srv, synth, tmp_path, capsys, why):
    """A CI script parsing --json gets {"error", "exit_status"} and nothing else (docs/cli.md)."""
    from kaokore.storage.lock import exclusive

    root, metadata = tmp_path / "data", synth.meta_dir
    if why == "a file as --dir":
        root.write_bytes(b"not a folder")
    elif why == "no metadata":
        metadata = tmp_path / "nowhere"
    argv = ["download", "--dir", str(root), "--metadata-dir", str(metadata), "--json"]
    if why == "another download":
        root.mkdir()
        with exclusive(root):
            code, out, err = run_cli(capsys, *argv)
    else:
        code, out, err = run_cli(capsys, *argv)
    assert code == EXIT_USAGE
    doc = json.loads(out)
    assert sorted(doc) == ["error", "exit_status"] and doc["exit_status"] == 2 and doc["error"]
    assert err == f"kaokore: error: {doc['error']}\n"  # the same one line for a human
    assert srv.request_log == []


def test_permanent_failure_gives_exit_1_and_failures_csv_then_a_later_complete_run_removes_it(
        srv, synth, tmp_path, capsys):
    bad = synth.urls[2]
    srv.inject(bad, Fault.S404)
    args = ("download", "--dir", str(tmp_path / "data"), "--metadata-dir", str(synth.meta_dir), "--quiet")
    code, _, err = run_cli(capsys, *args)
    assert code == EXIT_INCOMPLETE
    rows = list(csv.DictReader(open(tmp_path / "data" / "failures.csv")))
    assert [(r["image"], r["url"], r["error"], r["attempts"]) for r in rows] == [(synth.name(2), bad, "HTTP 404", "1")]
    assert srv.requests(bad) == 1  # a 404 is final: not retried
    assert "1 failed" in err

    srv.clear_faults(bad)
    srv.reset_stats()
    code, _, _ = run_cli(capsys, *args)
    assert code == EXIT_OK
    assert srv.requests(bad) == 1 and len(srv.request_log) == 1  # only the missing image
    assert not (tmp_path / "data" / "failures.csv").exists()


def test_transient_errors_are_retried_until_the_image_arrives(srv, synth, tmp_path):
    srv.inject(synth.urls[0], Fault.S503, times=2)
    srv.inject(synth.urls[1], Fault.S500, times=1)
    srv.inject(synth.urls[2], Fault.GARBAGE200, times=1)
    policy = kaokore.RetryPolicy(backoff_factor=0.01)
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=policy)
    assert summary.exit_status == EXIT_OK
    assert (srv.requests(synth.urls[0]), srv.requests(synth.urls[1]), srv.requests(synth.urls[2])) == (3, 2, 2)


def test_checksum_mismatch_on_remote_metadata_is_exit_2_and_names_the_file(srv, synth, tmp_path, capsys):
    # The synthetic files are served where a mirror of upstream would be; they are not the pinned bytes.
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"),
                           "--metadata-url", srv.base_urls[0] + "/meta", "--quiet")
    assert code == EXIT_USAGE
    assert "urls.txt" in err and "SHA-256 mismatch" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert image_files(tmp_path / "data") == {}


def test_pinned_mirror_via_env_is_fetched_checked_and_copied(srv, synth, tmp_path, monkeypatch):
    monkeypatch.setenv("KAOKORE_METADATA_URL", srv.base_urls[1] + "/meta")
    summary = kaokore.download(tmp_path / "data", dataset_version=synth.version(), quiet=True)
    assert summary.exit_status == EXIT_OK and summary.downloaded == len(synth.urls)
    assert srv.requests("/meta/dataset/urls.txt") == 1
    # Once DIR holds the pinned copies, a rerun needs no metadata request at all.
    srv.reset_stats()
    kaokore.download(tmp_path / "data", dataset_version=synth.version(), quiet=True)
    assert srv.request_log == []


def test_labelled_images_without_url_are_counted_unavailable_not_failed(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=10, blank=(), labeled_blank=(4,))
    assert 4 in synth.labels and 4 not in synth.urls  # as v1.1's 40 rows with a blank URL line
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    assert summary.unavailable == 1 and summary.failed == 0 and summary.exit_status == EXIT_OK
    assert synth.name(4) not in image_files(tmp_path / "data")
    assert not (tmp_path / "data" / "failures.csv").exists()


def test_split_and_limit_fetch_a_subset(srv, synth, tmp_path):
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, splits=["dev"])
    dev = {synth.name(i) for i, lab in synth.labels.items() if lab[0] == "dev" and i in synth.urls}
    assert set(image_files(tmp_path / "data")) == dev and summary.total == len(dev)
    summary = kaokore.download(tmp_path / "limited", metadata_dir=synth.meta_dir, quiet=True, limit=3)
    assert len(image_files(tmp_path / "limited")) == 3 and summary.exit_status == EXIT_OK


def test_force_fetches_again(srv, synth, tmp_path):
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    srv.reset_stats()
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, force=True)
    assert summary.downloaded == len(synth.urls) and len(srv.request_log) == len(synth.urls)


def test_json_summary_on_stdout_matches_the_tree(srv, synth, tmp_path, capsys):
    srv.inject(synth.urls[1], Fault.S404)
    code, out, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"), "--metadata-dir",
                             str(synth.meta_dir), "--json", "--layout", "status")
    doc = json.loads(out)
    assert code == EXIT_INCOMPLETE
    for key in ("dir", "dataset_version", "layout", "total", "downloaded", "already_present", "failed",
                "unavailable", "seconds", "failures"):
        assert key in doc
    assert doc["layout"] == "status" and doc["dataset_version"] == "1.0"
    assert doc["total"] == len(synth.urls)
    assert doc["downloaded"] == len(image_files(tmp_path / "data")) == len(synth.urls) - 1
    assert doc["failed"] == 1
    assert doc["failures"] == [{"image": synth.name(1), "url": synth.urls[1], "error": "HTTP 404", "attempts": 1}]
    assert "complete" in err or "INCOMPLETE" in err  # the human line went to stderr


def test_python_m_kaokore_and_version(tmp_path):
    run = subprocess.run([sys.executable, "-m", "kaokore", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("kaokore ")
    run = subprocess.run([sys.executable, "-m", "kaokore", "versions"], capture_output=True, text=True)
    assert run.returncode == 0
    assert [line.split("\t")[0] for line in run.stdout.splitlines()] == ["1.0", "1.1", "1.2", "1.3"]
    assert "9,683" in run.stdout


def test_flags_take_both_spellings(srv, synth, tmp_path, capsys):
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "a"), "--metadata_dir", str(synth.meta_dir),
                           "--dataset-version", "1.0", "--per_host", "2", "--ssl-unverified-context", "--quiet")
    assert code == EXIT_OK, err
    assert err.count("NOT checked") == 1  # warned once, not per request


def test_download_py_is_a_drop_in_for_upstream(srv, synth, tmp_path):
    """Upstream's flags and defaults, upstream's tree (DIR/images_256/), but an honest exit status."""
    srv.inject(synth.urls[0], Fault.GRAY)
    run = subprocess.run(
        [sys.executable, str(REPO / "download.py"), "--dir", str(tmp_path / "k"), "--dataset_version", "1.0",
         "--threads", "4", "--metadata-dir", str(synth.meta_dir)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    images = sorted(p.relative_to(tmp_path / "k").as_posix() for p in image_files(tmp_path / "k").values())
    assert images == sorted(f"images_256/{synth.name(i)}" for i in synth.urls)
    for name in ("labels.csv", "original_tags.txt", "labels.metadata.en.txt", "labels.metadata.ja.txt"):
        assert (tmp_path / "k" / name).read_bytes() == synth.files[name]
    assert jpeg_info(tmp_path / "k" / "images_256" / synth.name(0)) == ("JPEG", (256, 256), "RGB")

    srv.inject(synth.urls[1], Fault.S404)
    run = subprocess.run([sys.executable, str(REPO / "download.py"), "--dir", str(tmp_path / "k"), "--force",
                          "--metadata-dir", str(synth.meta_dir)], capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_INCOMPLETE  # upstream would have said 0
    help_text = subprocess.run([sys.executable, str(REPO / "download.py"), "--help"],
                               capture_output=True, text=True).stdout
    for flag in ("--dir", "--dataset_version", "--force", "--threads", "--ssl_unverified_context"):
        assert flag in help_text


def test_content_providers_file_matches_the_packaged_copy():
    assert (REPO / "CONTENT_PROVIDERS.txt").read_bytes() == content_providers()


def test_a_source_tree_is_refused_as_dir(synth, tmp_path, capsys):
    """Upstream's default --dir is 'kaokore': in a clone of this project that is the package itself."""
    package = tmp_path / "kaokore"
    package.mkdir()
    (package / "__init__.py").write_text("")
    code, _, err = run_cli(capsys, "download", "--dir", str(package), "--metadata-dir", str(synth.meta_dir))
    assert code == EXIT_USAGE and "source code" in err
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py"]


def test_a_subset_run_keeps_the_record_of_failures_outside_it(srv, synth, tmp_path):
    train = [i for i, lab in synth.labels.items() if lab[0] == "train" and i in synth.urls]
    srv.inject(synth.urls[train[0]], Fault.S404)
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, splits=["dev"])
    assert summary.exit_status == EXIT_OK
    rows = list(csv.DictReader(open(tmp_path / "data" / "failures.csv")))
    assert [(r["image"], r["error"]) for r in rows] == [(synth.name(train[0]), "HTTP 404")]
    srv.clear_faults(synth.urls[train[0]])
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    assert not (tmp_path / "data" / "failures.csv").exists()
