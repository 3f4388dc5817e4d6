"""The command-line layer shared by the scripts, and the ``speechinterp`` console command.

``run(main)`` replaces ``absl.app.run(main)`` in every script of ``experiments/``:

* an expected error (:class:`UserError`, ``app.UsageError``, an error class of this project
  such as ``StoreError`` / ``TaskError`` / ``CheckpointMismatchError``, an ``OSError`` naming a
  file, or a ``ValueError`` / ``KeyError`` raised by one of our own checks) prints one line,
  ``error: ...``, on stderr and exits 1, without a traceback (``--verbose`` shows it) and
  without the flag help; anything else is a bug and keeps its traceback;
* library log lines (absl INFO from orbax, jax's backend messages) leave the console: they go
  to ``--log_file`` (or ``$SPEECHINTERP_LOG_FILE``), else nowhere; warnings stay on the
  console; ``--verbose`` shows everything.

``speechinterp COMMAND --flags...`` (``pyproject.toml`` ``[project.scripts]``) runs the command
script installed beside this library (``experiments/<script>.py``), from any folder: a console
command does not put the current folder on ``sys.path``. Another ``experiments`` package ahead
of ours on ``sys.path`` (on ``PYTHONPATH``) is refused with one line naming both folders.
"""
from __future__ import annotations

import importlib
import linecache
import os
import shutil
import signal
import sys
import traceback
from typing import Callable

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_bool("verbose", False, "Show tracebacks of expected errors and library log lines.")
flags.DEFINE_string("log_file", None, "Append library log lines (absl / orbax / jax INFO) here; "
                    "default: $SPEECHINTERP_LOG_FILE, else they are dropped.")

LOG_ENV = "SPEECHINTERP_LOG_FILE"


class UserError(Exception):
    """Bad input from the user: reported as one line, no traceback."""


# ----------------------------------------------------------------------------- error triage
_OUR_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d)
                  + os.sep for d in ("speechinterp", "experiments"))


def _ours(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_OUR_DIRS)


def is_expected(e: BaseException) -> bool:
    """Whether ``e`` reports bad input (one line) rather than a bug (traceback)."""
    if isinstance(e, (UserError, app.UsageError, flags.Error)):
        return True
    if type(e).__module__.split(".")[0] in ("speechinterp", "experiments"):
        return True                                   # our own error classes
    if isinstance(e, OSError) and getattr(e, "filename", None) is not None:
        return True                                   # a path that is missing / unreadable
    if isinstance(e, (ValueError, LookupError, FileNotFoundError)):
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is None:
            return False
        fname = tb.tb_frame.f_code.co_filename
        line = linecache.getline(fname, tb.tb_lineno).strip()
        return _ours(fname) and line.startswith("raise ")   # an explicit check of ours
    return False


def message(e: BaseException) -> str:
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        return e.args[0]                              # KeyError's str() adds quotes
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__


# ----------------------------------------------------------------------------- logging
class _LazyFile:
    """A stream that opens its file on the first write (no empty log files)."""

    def __init__(self, path: str | None):
        self.path, self._f = path, None

    def write(self, s):
        if self.path is None:
            return len(s)
        if self._f is None:
            d = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(d, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        return self._f.write(s)

    def flush(self):
        if self._f is not None:
            self._f.flush()

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


def setup_logging(log_file: str | None = None) -> str | None:
    """Library INFO lines to ``log_file`` (else ``--log_file`` / ``$SPEECHINTERP_LOG_FILE``,
    else nowhere); warnings stay on the console. ``--verbose`` / ``--logtostderr`` keep absl's
    behaviour. Returns the log file."""
    if FLAGS.verbose or FLAGS["logtostderr"].value:
        return None
    path = log_file or FLAGS.log_file or os.environ.get(LOG_ENV) or None
    logging.get_absl_handler().python_handler.stream = _LazyFile(path)
    if not FLAGS["stderrthreshold"].present:
        logging.set_stderrthreshold("warning")
    if path:
        os.environ[LOG_ENV] = os.path.abspath(path)   # child processes log there too
    return path


# ----------------------------------------------------------------------------- run
def run(main: Callable, log_file: Callable[[], str | None] | None = None) -> None:
    """``app.run(main)`` with one-line expected errors and quiet library logs."""
    def wrapped(argv):
        setup_logging(log_file() if log_file else None)
        signal.signal(signal.SIGTERM, _terminated)
        try:
            return main(argv)
        except KeyboardInterrupt:
            if FLAGS.verbose:
                traceback.print_exc()
            print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
            sys.exit(130)
        except Exception as e:        # noqa: BLE001 (triage: expected -> one line, bug -> raise)
            if not is_expected(e):
                raise
            if FLAGS.verbose:
                traceback.print_exc()
            print(f"error: {message(e)}", file=sys.stderr, flush=True)
            sys.exit(1)
    app.run(wrapped)


INTERRUPTED = "interrupted; rerun the same command to resume"


def _terminated(signum, frame):
    """SIGTERM ends a command as Ctrl-C does: every artefact is written under a temporary name,
    so an interrupted one never looks finished, and a rerun resumes."""
    raise KeyboardInterrupt


def study_log() -> str:
    """The study's log file, OUT/study.log (its stages' subprocesses append to it too)."""
    return os.path.join(os.path.abspath(FLAGS.out), "study.log")


# ----------------------------------------------------------------------------- flag checks
def _validator(names, check, what):
    for name in names:
        flags.register_validator(name, lambda v: v is None or check(v),
                                 message=f"--{name} must be {what}")


def positive(*names: str) -> None:
    """Flags that must be > 0 (sizes, counts, rates)."""
    _validator(names, lambda v: v > 0, "> 0")


def non_negative(*names: str) -> None:
    _validator(names, lambda v: v >= 0, ">= 0")


def fraction(*names: str, closed: bool = True) -> None:
    """Flags in [0, 1] (``closed``) or [0, 1)."""
    _validator(names, (lambda v: 0 <= v <= 1) if closed else (lambda v: 0 <= v < 1),
               "in [0, 1]" if closed else "in [0, 1)")


def positive_ints(*names: str) -> None:
    """List flags of positive integers (e.g. layer sizes)."""
    def ok(v):
        try:
            return all(int(x) > 0 for x in v)
        except ValueError:
            return False
    _validator(names, ok, "a comma-separated list of positive integers")


# ----------------------------------------------------------------------------- output checks
def artefact(path: str) -> str | None:
    """What ``path`` holds: None (nothing / an empty folder), 'file', 'encoder', 'store',
    'corpus', 'probe results', 'training run' or 'folder' (something else). Hidden files
    (a study stage's ``.started`` stamp, say) do not count."""
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return "file"
    if os.path.isdir(os.path.join(path, ".partial")):
        return "store"                                # an unfinished one: extract resumes it
    names = {n for n in os.listdir(path) if not n.startswith(".")}
    if not names:
        return None
    if "meta.json" in names and ("utterances.csv" in names or any(
            n.startswith(("layer_", "chunk")) for n in names)):
        return "store"
    if "train_state" in names or "train_history.json" in names:
        return "training run"
    if "config.json" in names and "params" in names:
        return "encoder"
    if "utterances.csv" in names and "wav" in names:
        return "corpus"
    if any(os.path.isfile(os.path.join(path, n, "results.json")) for n in names):
        return "probe results"
    return "folder"


def check_output(path: str, flag: str, allowed: tuple[str | None, ...], overwrite: bool,
                 what: str) -> str | None:
    """Refuse an output ``path`` holding something other than ``allowed`` artefacts, before
    any work; with ``overwrite`` return what it holds (the caller replaces it)."""
    held = artefact(path)
    if held in allowed or held is None:
        return held
    if overwrite:
        return held
    raise UserError(f"--{flag}={path} holds {_a(held)}, not {what}; pass --overwrite to "
                    f"replace it, or choose another --{flag}")


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def remove(path: str) -> None:
    """Delete a file or folder (after ``--overwrite``)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


# ----------------------------------------------------------------------------- entry point
COMMANDS = {
    "convert": ("convert", "convert a foreign checkpoint into an encoder folder"),
    "import-corpus": ("import_corpus", "import a corpus layout into a manifest"),
    "build-corpus": ("build_corpus", "build the built-in espeak-ng corpus"),
    "extract": ("extract", "extract every layer's utterance vectors into a store"),
    "probe": ("probe", "probe a store for one or more properties"),
    "amnesic": ("amnesic", "erase a property inside the encoder, probe the later layers"),
    "train-encoder": ("train_encoder", "train the dialect / speaker-ID CNN"),
    "study": ("run_study", "run the whole study with a report"),
}


EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments")


def _experiments_module(name: str):
    """``experiments.<name>``, the command script installed beside ``speechinterp/``.

    A plain import. Where it finds another ``experiments`` package first (a project's own on
    ``PYTHONPATH``), that package's script would run in place of ours: :class:`UserError`,
    naming both folders."""
    pkg = importlib.import_module("experiments")
    found = list(getattr(pkg, "__path__", []))
    if [os.path.realpath(p) for p in found] != [os.path.realpath(EXPERIMENTS_DIR)]:
        where = ", ".join(found) or getattr(pkg, "__file__", None) or "?"
        raise UserError(f"the 'experiments' package on sys.path is {where}, not this "
                        f"installation's {EXPERIMENTS_DIR}: take the other one off PYTHONPATH")
    return importlib.import_module(f"experiments.{name}")


def _usage() -> str:
    lines = ["usage: speechinterp COMMAND [--flags...]   (speechinterp COMMAND --help)", "",
             "commands:"]
    lines += [f"  {c:14s} {d}" for c, (_, d) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The ``speechinterp`` console command: ``speechinterp COMMAND --flags...``."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    cmd = argv[1].replace("_", "-")
    if cmd not in COMMANDS:
        print(f"error: unknown command {argv[1]!r}; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        sys.exit(2)
    try:
        mod = _experiments_module(COMMANDS[cmd][0])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    prog = f"speechinterp {cmd}"
    sys.argv = [prog, *argv[2:]]
    main_mod = sys.modules.get("__main__")
    if main_mod is not None:
        main_mod.__doc__ = mod.__doc__                # absl's usage text
    for flag in FLAGS.get_key_flags_for_module(mod.__name__):
        FLAGS.register_key_flag_for_module(prog, flag)  # --help lists the command's flags
    run(mod.main, study_log if cmd == "study" else None)


if __name__ == "__main__":
    main()
