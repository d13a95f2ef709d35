"""What every Krabby command line shares: one-line usage errors, checked numbers, writable outputs, run config files.

A user mistake ends in one line on stderr that says what happened and what to do, and exit
status 2 (argparse's convention), before any long work starts. ``--config run.toml`` gives a
command its flags from a TOML file (keys are the flag names, dashes or underscores); flags on
the command line override the file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class UsageError(ValueError):
    """A mistake in how a command was called; the message is the whole story, in one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors as one line (``prog: error: ... (see prog --help)``) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive(unit: str, *, allow_zero: bool = False) -> Any:
    """An argparse type for a float > 0 (>= 0 with ``allow_zero``) whose message names the unit."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive number of {unit}{' (or 0)' if allow_zero else ''}, got {text}")
        return v

    parse.__name__ = f"positive {unit}"
    return parse


def port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 = any free port), got {v}")
    return v


def check_writable(path: str | Path, what: str) -> None:
    """Raise ``UsageError`` unless a file can be created at ``path`` (its folder is made if missing).

    Done before a run starts, so a read-only output folder fails in one line, not after the run.
    """
    p = Path(path)
    folder = p if what.endswith("folder") else p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".krabby-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"cannot write the {what} {str(p)!r}: {e.strerror or e} in {str(folder)!r}; "
                         f"choose a folder you can write to") from None


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="TOML", help="read flags from a TOML file (keys = flag names); "
                        "flags given on the command line override it")


def add_policy_flags(parser: argparse.ArgumentParser, *, checkpoint_help: str, control_rate_default: str) -> None:
    """The policy flags every runner shares: the checkpoint, the two size checks and the control rate."""
    parser.add_argument("--checkpoint", help=checkpoint_help)
    parser.add_argument("--action-dim", "--action_dim", dest="action_dim", type=int, default=12,
                        help="check: the policy's output size (default 12)")
    parser.add_argument("--obs-dim", "--obs_dim", dest="obs_dim", type=int, default=753,
                        help="check: the policy's observation size (default 753)")
    parser.add_argument("--control-rate", "--control_rate", dest="control_rate", type=positive("Hz"), default=None,
                        help=f"policy rate in Hz (default: {control_rate_default})")


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; when it names ``--config FILE``, that file's keys become the defaults first."""
    argv = _apply_config(parser, argv)
    return parser.parse_args(argv)


def parse_known_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """``parse_with_config`` for a command that passes unknown flags on (krabby-hal-server-isaac: to Kit)."""
    argv = _apply_config(parser, argv)
    return parser.parse_known_args(argv)


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> list[str]:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**config_defaults(parser, known.config))
    return argv


def config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The flag defaults a run config file sets, checked like the flags themselves."""
    try:
        import tomllib as toml
    except ModuleNotFoundError:  # Python 3.10
        import tomli as toml  # type: ignore[no-redef]

    try:
        with open(path, "rb") as f:
            data = toml.load(f)
    except OSError as e:
        parser.error(f"--config {path}: {e.strerror or e}")
    except toml.TOMLDecodeError as e:
        parser.error(f"--config {path}: not valid TOML ({e})")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    spellings = dict(actions)  # a key may also be any spelling of the flag: control-rate, control_rate, an old alias
    for a in parser._actions:  # every action: --realtime and --fast share one dest
        for option in a.option_strings:
            if option.startswith("--"):
                spellings.setdefault(option[2:].replace("-", "_"), a)
    out: dict[str, Any] = {}
    for key, value in data.items():
        action = spellings.get(key.replace("-", "_"))
        if action is None or action.dest in ("help", "config"):
            known = ", ".join(sorted(d for d in actions if d not in ("help", "config")))
            parser.error(f"--config {path}: unknown key {key!r} (known: {known})")
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                parser.error(f"--config {path}: {key} must be true or false, got {value!r}")
            if isinstance(action, argparse._StoreFalseAction) and key.replace("-", "_") not in actions:
                value = not value  # `realtime = true` is the flag --realtime given: fast = false
        elif action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(str(value))
            except (argparse.ArgumentTypeError, ValueError) as e:
                parser.error(f"--config {path}: {key}: {e}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"--config {path}: {key} = {value!r} is not one of {', '.join(map(str, action.choices))}")
        out[action.dest] = value
    return out
