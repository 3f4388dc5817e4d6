"""Encoder throughput and peak memory: jitted Flax against the PyTorch reference.

    python -m experiments.benchmarks.bench_encoders [--cases=a,b] [--threads=2] [--utterances=8]
        [--seconds=10]

Each case lives in ``experiments/benchmarks/bench_cases/<family>.py`` as
``CASES = {name: build}``, where ``build(utterances, seconds) -> {"flax": fn, "torch": fn}``
returns two zero-argument callables that each extract all layers of ``utterances`` utterances
of ``seconds`` s (same weights).
Every (case, implementation) runs in its own child process with the same thread count, so peak
RSS is comparable; the figure printed is utterances/s and the Flax/PyTorch ratios.
"""
import importlib
import json
import pkgutil
import subprocess
import sys
import time

from absl import app, flags

from experiments.benchmarks.benchmarking import peak_rss_mb, thread_env

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", None, "Cases to run (default: all).")
flags.DEFINE_integer("threads", 2, "CPU threads for both implementations.")
flags.DEFINE_integer("utterances", 8, "Utterances per timed call.")
flags.DEFINE_float("seconds", 10.0, "Utterance duration in seconds.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions (best is reported).")
flags.DEFINE_string("child", None, "Internal: CASE:IMPL to run in this process.")


def all_cases() -> dict:
    import experiments.benchmarks.bench_cases as pkg
    cases = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        cases.update(importlib.import_module(f"{pkg.__name__}.{mod.name}").CASES)
    return cases


def run_child(spec: str) -> None:
    case, impl = spec.split(":")
    if impl == "torch":
        import torch
        torch.set_num_threads(FLAGS.threads)
    fn = all_cases()[case](FLAGS.utterances, FLAGS.seconds)[impl]
    fn()  # warm-up (and jit compilation)
    best = float("inf")
    for _ in range(FLAGS.repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    peak_mb = peak_rss_mb()
    print("RESULT " + json.dumps({"utt_per_s": FLAGS.utterances / best, "peak_mb": peak_mb}))


def main(argv):
    del argv
    if FLAGS.child:
        run_child(FLAGS.child)
        return
    names = FLAGS.cases or sorted(all_cases())
    print(f"{'case':28s} {'flax utt/s':>11s} {'torch utt/s':>12s} {'speed ratio':>12s} "
          f"{'flax MB':>9s} {'torch MB':>9s} {'mem ratio (torch/flax)':>23s}")
    for name in names:
        res = {}
        for impl in ("flax", "torch"):
            out = subprocess.run(
                [sys.executable, "-m", "experiments.benchmarks.bench_encoders",
                 f"--child={name}:{impl}", f"--threads={FLAGS.threads}",
                 f"--utterances={FLAGS.utterances}", f"--seconds={FLAGS.seconds}",
                 f"--repeats={FLAGS.repeats}"],
                capture_output=True, text=True, env=thread_env(FLAGS.threads))
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if not line:
                raise RuntimeError(f"{name}:{impl} failed:\n{out.stderr[-3000:]}")
            res[impl] = json.loads(line[-1][7:])
        f, t = res["flax"], res["torch"]
        print(f"{name:28s} {f['utt_per_s']:11.2f} {t['utt_per_s']:12.2f} "
              f"{f['utt_per_s'] / t['utt_per_s']:12.2f} {f['peak_mb']:9.0f} {t['peak_mb']:9.0f} "
              f"{t['peak_mb'] / f['peak_mb']:23.2f}", flush=True)


if __name__ == "__main__":
    app.run(main)
