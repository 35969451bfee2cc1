"""benchmarks/throughput.py still works: one tiny run of it, end to end.

Not a timed test. Nothing here asserts a speed, a CPU or a memory figure (those
depend on the machine and on whatever else runs on it); only that the benchmark
runs, downloads everything, exercises both the pass-through and the converting
path, and reports every figure and every target; and that its yardstick, the
ideal makespan, is the issue's formula.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"
FIGURES = (
    "wall_s", "images_per_s", "ideal_s", "efficiency", "connections", "peak_concurrency_per_host",
    "client_cpu_ms_per_image", "client_peak_rss_mb", "server_cpu_s",
)


def run_benchmark(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--server-time", "0.01", "--rtt", "0.005",
         "--workdir", str(tmp_path), "--json-out", str(out), *args],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_benchmark_runs_once_small(tmp_path):
    stdout, doc = run_benchmark(tmp_path, "--images", "24", "--rss-images", "30")

    runs = {r["spec"]["label"]: r for r in doc["runs"]}
    assert set(runs) == {"pass", "converted", "rss"}
    for run in runs.values():
        spec = run["spec"]
        assert run["downloaded"] == spec["images"] and run["failed"] == 0
        assert run["requests"] == spec["images"]  # no retries on a healthy server
        for name in FIGURES:
            assert run[name] is not None, name
        assert run["wall_s"] > 0 and run["client_cpu_s"] > 0 and run["client_peak_rss_mb"] > 0
        assert len(run["peak_concurrency_per_host"]) == spec["hosts"]
        assert 1 <= max(run["peak_concurrency_per_host"]) <= spec["per_host"]
    # The two timed runs exercise the two paths the CPU targets are about.
    assert runs["pass"]["converted"] == 0
    assert runs["converted"]["converted"] == runs["converted"]["spec"]["images"]
    assert runs["pass"]["ideal_s"] > 0 and runs["pass"]["efficiency"] > 0

    targets = {(t["run"], t["target"]) for t in doc["targets"]}
    assert {("pass", "efficiency"), ("pass", "CPU per pass image"), ("converted", "CPU per converted image"),
            ("rss", "peak RSS"), ("pass", "connections <= threads + hosts")} <= targets
    # Tiny runs are not the target configuration: their verdicts are marked as such.
    assert all(t["indicative_only"] for t in doc["targets"] if t["target"] != "all images downloaded")

    assert "| run " in stdout and "eff" in stdout and "peak RSS MB" in stdout
    # One printed verdict per target, agreeing with the JSON ("NOT MET" contains "MET", so match whole lines).
    assert "\nTargets " in stdout
    verdicts = [line for line in stdout.splitlines() if line.startswith("  [")]
    assert len(verdicts) == len(doc["targets"])
    for line, target in zip(verdicts, doc["targets"]):
        verdict = "[MET    ]" if target["met"] else "[NOT MET]"
        assert line.startswith(f"  {verdict} {target['run']:<10} {target['target']}: "), line
    # Whatever the tiny runs' speed, every image arriving is a real target, and it is met.
    downloaded = [t for t in doc["targets"] if t["target"] == "all images downloaded"]
    assert downloaded and all(t["met"] and not t["indicative_only"] for t in downloaded)


def test_benchmark_sweep_small(tmp_path):
    stdout, doc = run_benchmark(tmp_path, "--sweep", "--images", "12", "--sweep-per-host", "1,2",
                                "--sweep-threads", "2", "--progress", "quiet")

    runs = doc["runs"]
    assert [(r["spec"]["per_host"], r["spec"]["threads"]) for r in runs] == [(1, 2), (2, 2)]
    assert all(r["downloaded"] == 12 for r in runs)
    assert max(runs[0]["peak_concurrency_per_host"]) == 1
    assert doc["targets"] == []
    assert "sweep-p1-t2" in stdout and "sweep-p2-t2" in stdout


def load_benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kaokore_benchmark_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_ideal_makespan_is_the_issues_formula_in_the_target_configuration():
    bench = load_benchmark_module()
    spec = bench.RunSpec(label="x", mode="pass", images=1000, hosts=3, server_time=0.1, rtt=0.05, capacity=4,
                         threads=12, per_host=4, progress="quiet")
    counts = [334, 333, 333]
    assert spec.ideal(counts) == pytest.approx(84 * 0.15)  # ceil(334 / 4) rounds of server time + rtt
    # Fewer threads than slots: the threads are the bound.
    assert bench.replace(spec, threads=6).ideal(counts) == pytest.approx(167 * 0.15)
    # More per host than the server has workers: the workers are the bound (rtt does not hold one).
    assert bench.replace(spec, per_host=8, threads=24).ideal(counts) == pytest.approx(84 * 0.1 + 0.05)


def test_images_are_spread_over_hosts_by_weight():
    bench = load_benchmark_module()
    for images, hosts, weights, expected in [(10, 3, None, [4, 3, 3]), (1000, 3, (6, 3, 1), [600, 300, 100]),
                                             (7, 2, (1, 1), [4, 3])]:
        sequence = bench.host_sequence(images, hosts, weights)
        assert [sequence.count(h) for h in range(hosts)] == expected
        assert len(sequence) == images


# --- benchmarks/commands.py and the whole-process comparison ----------------------------------

COMMANDS = Path(__file__).resolve().parent.parent / "benchmarks" / "commands.py"
COMMAND_FIGURES = ("first_request", "end_of_run", "rerun", "verify", "verify_deep", "info", "import")


def run_commands(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "commands.json"
    proc = subprocess.run([sys.executable, str(COMMANDS), "--images", "40", "--repeat", "1", "--workdir",
                           str(tmp_path), "--json-out", str(out), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_commands_benchmark_runs_once_small(tmp_path):
    stdout, doc = run_commands(tmp_path)

    figures = {f["key"]: f for f in doc["figures"]}
    assert set(figures) == set(COMMAND_FIGURES) and doc["images"] == 40
    for key in COMMAND_FIGURES:
        (sample,) = figures[key]["samples"]
        assert sample["wall"] > 0 and sample["cpu"] is not None and sample["rss_mb"] > 0, key
        assert sample["status"] == 0, key  # verify and verify --deep called the built tree intact
    assert figures["first_request"]["samples"][0]["requests"] >= 1  # the server saw the first image request
    assert figures["end_of_run"]["samples"][0]["requests"] == 10  # exactly the images it deleted: a quarter
    assert figures["rerun"]["samples"][0]["requests"] == 0
    # One printed verdict per target, agreeing with the JSON ("NOT MET" contains "MET": whole lines).
    verdicts = [line for line in stdout.splitlines() if line.startswith("  [")]
    assert len(verdicts) == len(doc["targets"]) == 12  # wall and peak RSS of six figures
    for line, target in zip(verdicts, doc["targets"]):
        assert line.startswith(f"  [{'MET    ' if target['met'] else 'NOT MET'}] {target['target']}: "), line
        assert target["indicative_only"]  # 40 images are not 1.3's 9,683
    assert "| verify --deep " in stdout and "| first request " in stdout


def test_commands_benchmark_measures_an_existing_tree(srv, synth, tmp_path):
    import kaokore

    tree = tmp_path / "data"
    assert kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True).exit_status == 0
    images = {p: p.read_bytes() for p in tree.rglob("*.jpg")}
    manifest = (tree / "manifest.csv").read_bytes()
    srv.reset_stats()

    stdout, doc = run_commands(tmp_path, "--dir", str(tree), "--only", "rerun,verify,info")

    figures = {f["key"]: f for f in doc["figures"] if f["samples"]}
    assert set(figures) == {"rerun", "verify", "info"}
    assert all(f["samples"][0]["status"] == 0 for f in figures.values())
    # Measured, not changed: the rerun fetched and moved nothing (its card names the command it was).
    assert [path for _, path in srv.request_log if "/iiif/" in path] == []
    assert {p: p.read_bytes() for p in tree.rglob("*.jpg")} == images
    assert (tree / "manifest.csv").read_bytes() == manifest


def test_whole_process_comparison_runs_once_small(tmp_path):
    stdout, doc = run_benchmark(tmp_path, "--whole-process", "--images", "24", "--repeat", "1")

    whole = doc["whole_process"]
    assert len(whole["ratios"]) == 1 and whole["ratios"][0] > 0
    assert whole["kaokore_wall_s"][0] > 0 and whole["bare_wall_s"][0] > 0
    assert whole["kaokore_rss_mb"][0] > 0 and whole["bare_rss_mb"][0] > 0
    (target,) = doc["targets"]
    assert target["target"] == "whole process vs bare client" and target["limit"] == 1.03
    assert target["indicative_only"]
    assert "bare requests client" in stdout and "ratio kaokore / bare" in stdout
