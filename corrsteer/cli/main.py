"""corrsteer command line: train-sae | run | select | eval | generate. It parses, dispatches and turns errors into
one line; what each command does lives in corrsteer.cli.commands.

Each command's options are generated from its settings dataclass in corrsteer.config (defaults, types, allowed
values and help live there only); run, select, eval and train-sae record their settings in <out>/config.json and
replay one with --config (options given on the command line override the file).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import fields

from tqdm import tqdm

from corrsteer.cli.commands import COMMANDS
from corrsteer.config import SETTINGS
from corrsteer.errors import RunError
from corrsteer.files import disk_full, unprotect_all
from corrsteer.runtime import dist
from corrsteer.settings import SettingsError, add_options, load_settings, one_line


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="corrsteer", description="CorrSteer: correlation-based SAE steering")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        add_options(sub.add_parser(name, help=text, description=text), SETTINGS[name])
    return ap


def parse_settings(argv=None, parser: argparse.ArgumentParser | None = None):
    """The settings a command line asks for: --config's file, then the options given, then the defaults."""
    given = vars((parser or build_parser()).parse_args(argv))
    cls = SETTINGS[given.pop("cmd")]
    config = given.pop("config", None)
    if config and "out" in {f.name for f in fields(cls)} and "out" not in given:
        given["out"] = None      # a replay writes where the command line says (default runs/<task>), never into
    return load_settings(cls, given, config)       # the folder recorded in the file


RESUMABLE = ("run", "select", "eval", "train-sae")      # commands that checkpoint their work


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds as after Ctrl-C (locks released, temporary files
    deleted, checkpoints kept)."""


def on_sigterm(signum, frame):
    raise Terminated()


def handle_sigterm(handler):
    """Set SIGTERM's handler (in the main thread, where signals arrive); returns the one it replaces."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, handler)
    return None


def disk_full_line(e: BaseException, argv) -> str:
    """The one line for a full disk: a run's checkpoints are intact; any other command changed no file."""
    args = sys.argv[1:] if argv is None else list(argv)
    if next((a for a in args if not a.startswith("-")), None) in RESUMABLE:
        return (f"no space left on device ({one_line(e, 160)}), expected free space: the checkpoints written so far "
                "are intact, free some space and rerun the same command to resume")
    return (f"no space left on device ({one_line(e, 160)}), expected free space: no file was changed (an existing "
            "output keeps its old content), free some space and rerun the same command")


def end_progress_bars() -> None:
    """Close the progress bars an exception left open (tqdm keeps every live bar in tqdm._instances), so that the
    error line starts a line of its own and stays the last: a bar left open was redrawn after it, when collected."""
    for bar in list(tqdm._instances):
        bar.close()


def main(argv=None) -> int:
    ap = build_parser()
    ok = False
    previous = handle_sigterm(on_sigterm)
    try:
        cfg = parse_settings(argv, ap)
        rc = COMMANDS[cfg.command][0](cfg)
        ok = rc == 0
        return rc
    except SettingsError as e:
        end_progress_bars()
        ap.error(str(e))        # "corrsteer: error: <message>", exit status 2
    except RunError as e:       # the data gave no result: exit status 1
        end_progress_bars()
        print(f"corrsteer: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        end_progress_bars()
        how, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted (Ctrl-C)", 130)
        print(f"corrsteer: error: {how}, rerun the same command to resume where it stopped", file=sys.stderr)
        return code
    except Exception as e:
        if not disk_full(e):
            raise
        end_progress_bars()
        ap.error(disk_full_line(e, argv))
    finally:
        if previous is not None:
            handle_sigterm(previous)
        unprotect_all()
        dist.shutdown(ok)


if __name__ == "__main__":
    sys.exit(main())
