"""First contact with the command line: spelled-out flags, the right usage, the quickstart's defaults."""
from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_synthetic, run_cli

import kaokore
from kaokore import defaults
from kaokore.cli import build_parser
from kaokore.errors import EXIT_USAGE
from kaokore.pipeline.records import RetryPolicy

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("download", "verify", "info", "preview", "versions")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_abbreviated_flag_is_refused_with_the_subcommands_usage_and_moves_nothing(srv, tmp_path, capsys):
    synth = make_synthetic(srv, tmp_path)
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    before = snapshot(root)
    capsys.readouterr()  # the download's own summary line
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--layou", "flat")
    out, err = capsys.readouterr()
    assert stop.value.code == EXIT_USAGE and out == ""
    assert err.startswith("usage: kaokore download ")
    assert err.rstrip().endswith("kaokore download: error: unrecognized arguments: --layou flat")
    assert snapshot(root) == before


@pytest.mark.parametrize("argv", [
    ["download", "--dataset_v", "1.3"], ["download", "--tim", "5"], ["verify", "--js"], ["info", "--js"],
    ["preview", "--out", "x.png", "--nam"], ["versions", "--all"],
])
def test_every_subcommand_reports_a_mistyped_flag_with_its_own_usage(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_USAGE
    assert err.startswith(f"usage: kaokore {argv[0]} ")
    assert f"kaokore {argv[0]}: error: unrecognized arguments: " in err


def test_a_mistyped_top_level_flag_still_gets_the_top_level_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--vers"])
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_USAGE and err.startswith("usage: kaokore [-h]")


def test_upstreams_download_py_refuses_abbreviations_too(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "download.py"), "--dir", str(tmp_path / "d"), "--thread", "4"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == EXIT_USAGE
    assert "unrecognized arguments: --thread 4" in run.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_a_description(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    usage, _, rest = capsys.readouterr().out.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert usage.startswith(f"usage: kaokore {command}")
    assert not description.startswith(("options:", "optional arguments:")) and len(description) > 30, description


@pytest.mark.parametrize("command", ["download", "verify", "info", "preview"])
def test_every_command_defaults_to_the_quickstarts_dir(command):
    args = build_parser().parse_args([command] + (["--out", "x.png"] if command == "preview" else []))
    assert args.dir == defaults.DIR == "data"


def test_the_api_defaults_to_the_quickstarts_dir_too():
    from kaokore.offline.info import dataset_info
    from kaokore.offline.preview import contact_sheet
    from kaokore.offline.sheet import plan_sheet

    for function in (kaokore.download, kaokore.verify, dataset_info, plan_sheet, contact_sheet):
        assert inspect.signature(function).parameters["dir"].default == "data", function


def test_the_download_defaults_are_written_once():
    args = build_parser().parse_args(["download"])
    api = inspect.signature(kaokore.download).parameters
    assert (args.timeout, args.threads, args.retries, args.per_host) == (30, 12, 5, 4)
    assert (args.timeout, args.threads, args.per_host) == (defaults.TIMEOUT, defaults.THREADS, defaults.PER_HOST)
    assert (api["timeout"].default, api["threads"].default, api["per_host"].default) == (
        defaults.TIMEOUT, defaults.THREADS, defaults.PER_HOST)
    assert args.retries == RetryPolicy().retries == defaults.RETRIES


def test_upstreams_download_py_keeps_upstreams_dir_and_threads():
    run = subprocess.run([sys.executable, str(REPO / "download.py"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0
    assert "(default: kaokore)" in run.stdout and "(default: 16)" in run.stdout


def test_a_missing_dir_suggests_the_download_that_fills_it(tmp_path, capsys):
    code, out, err = run_cli(capsys, "verify", "--dir", str(tmp_path / "my data"))
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1
    assert f"run `kaokore download --dir '{tmp_path / 'my data'}'` first" in err


@pytest.mark.parametrize("command", ["info", "verify"])
def test_a_source_tree_as_dir_does_not_suggest_a_download_that_would_be_refused(command, tmp_path, capsys):
    """In a clone, `--dir kaokore` is the source package: `kaokore download --dir kaokore` is refused."""
    package = tmp_path / "kaokore"
    package.mkdir()
    (package / "__init__.py").write_text("")
    code, _, err = run_cli(capsys, command, "--dir", str(package))
    assert code == EXIT_USAGE and err.count("\n") == 1
    assert "looks like source code" in err and f"--dir {package}" not in err
    assert "`kaokore download --dir data`" in err


# -- help spells every option the way the docs do ---------------------------------------------------

# Each doc's tables headed `| option |`, in order, and the command whose flags each one lists.
# docs/cli.md holds the options tables; README.md links to them and has none of its own.
DOCUMENTED_OPTIONS = {"README.md": (), "docs/cli.md": ("download", "preview")}


def option_tables(text: str) -> list[list[str]]:
    """The option column of each `| option | ...` table, one entry per flag (`--rows R --cols C` is two)."""
    tables: list[list[str]] = []
    rows = None
    for line in text.splitlines():
        if line.startswith("| option |"):
            rows = []
            tables.append(rows)
        elif rows is not None and line.startswith("|"):
            cell = line.split("|")[1].strip()
            if not cell.startswith("---"):
                rows += [m.strip() for m in re.findall(r"--[^\s`]+(?: [^\s`-][^\s`]*)?", cell)]
        else:
            rows = None
    return tables


def help_of(command: str, capsys) -> tuple[str, set[str]]:
    """The usage text (whitespace collapsed) and the option entries of `kaokore COMMAND --help`."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    usage = " ".join(out.split("\n\n")[0].split())
    # An entry is the part of an indented line before the help text (two spaces or more away).
    entries = {line[2:].split("  ")[0] for line in out.splitlines() if line.startswith("  -")}
    return usage, entries


@pytest.mark.parametrize("doc", sorted(DOCUMENTED_OPTIONS))
def test_help_shows_every_documented_option_exactly_as_the_docs_spell_it(doc, capsys):
    tables = option_tables((REPO / doc).read_text(encoding="utf-8"))
    assert len(tables) == len(DOCUMENTED_OPTIONS[doc]), f"{doc}: expected an options table per command"
    for command, options in zip(DOCUMENTED_OPTIONS[doc], tables):
        assert len(options) >= 8 if command == "download" else len(options) >= 5
        usage, entries = help_of(command, capsys)
        for option in options:
            assert option in entries, f"{doc}: `kaokore {command} --help` does not show {option!r}: {sorted(entries)}"
            assert option in usage, f"{doc}: the usage line of `kaokore {command}` does not show {option!r}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_one_spelling_per_flag_with_underscores_only_for_upstreams_own(command, capsys):
    usage, entries = help_of(command, capsys)
    flags = set(re.findall(r"--[\w-]+", usage + " " + " ".join(entries)))
    assert {f for f in flags if "_" in f} <= {"--dataset_version", "--ssl_unverified_context"}
    for flag in flags:  # no flag shown under both spellings
        other = "--" + (flag[2:].replace("_", "-") if "_" in flag else flag[2:].replace("-", "_"))
        assert other == flag or other not in flags, (flag, other)


def _argv_for(action) -> list[str]:
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]
    return ["3"] if action.type in (int, float) else ["somewhere"]


@pytest.mark.parametrize("command", ["download", "verify", "preview"])
def test_the_spelling_help_does_not_show_works_the_same(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    required = ["--out", "x.png"] if command == "preview" else []
    hidden = [a for a in sub._actions if a.help == argparse.SUPPRESS]
    assert hidden, "every multi-word flag has a hidden twin"
    defaults_ = vars(parser.parse_args([command, *required]))
    for alias in hidden:
        shown = next(a for a in sub._actions if a.dest == alias.dest and a.help != argparse.SUPPRESS)
        (alias_flag,), (shown_flag,) = alias.option_strings, shown.option_strings
        assert alias_flag.replace("_", "-") == shown_flag.replace("_", "-")
        value = _argv_for(shown)
        by_alias = vars(parser.parse_args([command, *required, alias_flag, *value]))
        by_shown = vars(parser.parse_args([command, *required, shown_flag, *value]))
        assert by_alias == by_shown != defaults_, alias_flag
