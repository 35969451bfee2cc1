"""argparse's pieces every command shares: a parser that takes no abbreviations and blames the
right subcommand, and each multi-word flag under both spellings (`flag`)."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that takes no abbreviated flags and blames the right subcommand.

    argparse would read `--layou flat` as `--layout flat` and rearrange a whole tree, so
    every flag must be spelled out. It also reports an unknown flag with the top-level
    usage, which does not list the flags the user was reaching for; here the chosen
    subcommand reports it.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._commands = None

    def add_subparsers(self, **kwargs):
        # Subcommand parsers are built by this same class (argparse's default parser_class).
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self._chosen(namespace).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def _chosen(self, namespace: argparse.Namespace) -> argparse.ArgumentParser:
        if self._commands is not None:
            name = getattr(namespace, self._commands.dest, None)
            if name in self._commands.choices:
                return self._commands.choices[name]
        return self


# Upstream's download.py spells these two with underscores, and so do the scripts written for it.
UPSTREAM_SPELLING = frozenset({"dataset_version", "ssl_unverified_context"})


def flag(parser, name: str, **kwargs):
    """Add `--name` spelled the way the docs write it, and its other spelling as a hidden alias.

    Help and usage show one spelling per flag, the documented one: dashes (`--per-host`),
    except upstream's own flags (`--dataset_version`). The other spelling is parsed the
    same but kept out of the help, so a user reads the flags as README.md writes them.
    """
    dest = kwargs.pop("dest", name)
    if "_" not in name:
        return parser.add_argument(f"--{name}", dest=dest, **kwargs)
    dashed, underscored = f"--{name.replace('_', '-')}", f"--{name}"
    shown, alias = (underscored, dashed) if name in UPSTREAM_SPELLING else (dashed, underscored)
    action = parser.add_argument(shown, dest=dest, **kwargs)
    # SUPPRESS as the alias's default: the shown flag's default is the one the namespace gets.
    parser.add_argument(alias, dest=dest, **{**kwargs, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS})
    return action
