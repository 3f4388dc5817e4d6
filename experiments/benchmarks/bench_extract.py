"""Whole-pipeline extraction throughput: ``experiments.extract`` against a transformers pipeline.

    python -m experiments.benchmarks.bench_extract [--corpus=DIR] [--num_utterances=200]
        [--batch_size=16] [--threads=2] [--rounds=1] [--tiny] [--encoder=DIR] [--workdir=DIR]

Both pipelines go from audio files to per-layer utterance vectors on disk: decode, resample,
front end (waveform normalisation), encoder, per-layer mean over frames, write.

* Ours: ``experiments.extract.main`` itself (``speechinterp.extract``: length-sorted batches of
  ``--batch_size``, bucketed jit forward, mean over valid frames, chunked atomic store).
* PyTorch: the usual transformers recipe: ``librosa.load(path, sr=16000)``,
  ``Wav2Vec2FeatureExtractor`` (``do_normalize``), ``Wav2Vec2Model(..., output_hidden_states=True)``
  in eager mode under ``torch.inference_mode()``, the CNN output via a forward hook, mean over
  frames, one ``layer_<k>.npy`` per layer. It runs **one utterance at a time**, the fair
  standard practice for wav2vec2-base: its processor has ``return_attention_mask=False``, and
  transformers' Wav2Vec2 docs say such models must get no ``attention_mask``: their batches are
  zero-padded, which changes a padded utterance's outputs (the group norm and attention see the
  padding, and a mean over frames would include it). Exact per-utterance vectors therefore
  mean unpadded, one-by-one inference.

The model is the real wav2vec2-base architecture (``Wav2Vec2Config()``) with random weights
(``torch.manual_seed(--seed)``), saved with ``save_pretrained`` together with the
``preprocessor_config.json`` of facebook/wav2vec2-base (``do_normalize=True``), and converted
with the ``huggingface_wav2vec2`` converter: both sides run the same weights and the same
computation, which the script checks (max |ours - PyTorch| over all pooled vectors and layers;
exit status 1 above ``--atol``). ``--tiny`` uses a tiny config instead (for the smoke test).
``--encoder=DIR`` times only our pipeline, for any converted encoder.

Every pipeline runs in its own child process with the same thread count (``OMP``/``MKL``/XLA
flags, ``torch.set_num_threads``, and the process pinned to the first ``--threads`` CPUs), twice:
a *cold* pass (first run in the process: jit compilation of every bucket shape for us, oneDNN
warm-up for PyTorch) and a *warm* pass (same process, fresh output). Each pass includes loading
the model. Figures: utterances/s and the real-time factor RTF = wall seconds / audio seconds
(lower is better; its inverse, "x real time", is printed too), the process's CPU seconds,
peak RSS per process, and the throughput ratio ours / PyTorch by wall time and by CPU time. On a
machine shared with other work, prefer ``--threads=1`` and the CPU-time ratio (wall time then
counts the waits for a core): with several threads, PyTorch's OpenMP threads spin at barriers and
slow down many times over when the cores are oversubscribed (XLA's thread pool much less), which
would flatter us, and spinning counts as CPU time.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from experiments.benchmarks.benchmarking import peak_rss_mb, pin_cpus, thread_env

FLAGS = flags.FLAGS
flags.DEFINE_string("corpus", None, "Built-in corpus directory (utterances.csv + wav/); default: "
                    "build the tiny built-in corpus once into a cache folder.")
flags.DEFINE_integer("num_utterances", 200, "Utterances taken from the corpus, evenly spread "
                     "over its rows (0: all).")
flags.DEFINE_integer("batch_size", 16, "Our extraction's batch size.")
flags.DEFINE_integer("threads", 2, "CPU threads for both pipelines.")
flags.DEFINE_bool("tiny", False, "Tiny wav2vec2 config instead of wav2vec2-base (smoke test).")
flags.DEFINE_string("encoder", None, "Time only our pipeline on this converted encoder "
                    "directory (no PyTorch peer).")
flags.DEFINE_integer("rounds", 1, "Alternating rounds of both pipelines; the fastest round "
                     "of each pass is reported.")
flags.DEFINE_integer("seed", 0, "Seed of the random weights and of the built corpus.")
flags.DEFINE_float("atol", 1e-4, "Largest accepted |ours - PyTorch| of a pooled vector entry.")
flags.DEFINE_string("workdir", None, "Working folder (default: a temporary one, removed).")
flags.DEFINE_string("child", None, "Internal: models (make the model directories) or torch "
                    "(run the timed PyTorch pipeline) in this process.")

SAMPLE_RATE = 16000
CORPUS_CACHE = os.path.join(tempfile.gettempdir(), "speechinterp_bench_extract_corpus_tiny_s{}")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
PASSES = ("cold", "warm")

# Our pipeline: experiments.extract.main, run in-process twice (its flags only exist here, so
# they cannot clash with this script's). main() loads the encoder afresh each time, and a new
# encoder instance has a new jax.jit, so the warm pass finds its executables in JAX's persistent
# compilation cache (a fresh folder: the cold pass compiles and fills it).
_OURS_CHILD = r"""
import json, sys, time
from experiments.benchmarks.benchmarking import peak_rss_mb, pin_cpus
threads, argv, outs, cache = json.loads(sys.argv[1])
pin_cpus(threads)
import jax
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
from absl import flags
import experiments.extract as extract
import speechinterp.audio, speechinterp.encoders, speechinterp.extract, speechinterp.store
times, cpu = [], []
for out in outs:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["extract"] + argv + ["--out=" + out])
    t0, c0 = time.perf_counter(), time.process_time()
    extract.main([])
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
print("RESULT " + json.dumps({"seconds": times, "cpu_seconds": cpu, "peak_mb": peak_rss_mb()}))
"""


# ------------------------------------------------------------------------------ setup
def corpus_dir() -> str:
    """``--corpus``, or the tiny built-in corpus built once by ``experiments.build_corpus``."""
    if FLAGS.corpus:
        if not os.path.isfile(os.path.join(FLAGS.corpus, "utterances.csv")):
            raise app.UsageError(f"--corpus={FLAGS.corpus}: no utterances.csv there (build one "
                                 f"with python -m experiments.build_corpus --out=DIR)")
        return FLAGS.corpus
    cache = CORPUS_CACHE.format(FLAGS.seed)
    if not os.path.isfile(os.path.join(cache, "utterances.csv")):
        print(f"building the tiny built-in corpus into {cache}", flush=True)
        tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(cache))
        _child([sys.executable, "-m", "experiments.build_corpus", f"--out={tmp}",
                "--size=tiny", f"--seed={FLAGS.seed}"], "building the built-in corpus")
        try:
            os.replace(tmp, cache)
        except OSError:            # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def write_subset_manifest(corpus: str, n: int, path: str) -> list[dict]:
    """``n`` rows spread evenly over the corpus (all channels, languages), absolute paths."""
    with open(os.path.join(corpus, "utterances.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"utt_id", "path"} <= set(rows[0]):
        raise app.UsageError(f"{corpus}/utterances.csv: empty, or no utt_id / path columns")
    if 0 < n < len(rows):
        rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))]
    for r in rows:
        if not os.path.isabs(r["path"]):
            r["path"] = os.path.join(os.path.abspath(corpus), r["path"])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def audio_seconds(rows) -> float:
    """Total duration; librosa reads the header with soundfile, or decodes with audioread."""
    import librosa

    return float(sum(librosa.get_duration(path=r["path"]) for r in rows))


def make_models(work: str) -> tuple[str, str]:
    """Random-weight HF wav2vec2 directory (model + feature extractor) and its conversion."""
    import torch
    import transformers

    from speechinterp import checkpoint, convert

    hf_dir, enc_dir = os.path.join(work, "hf"), os.path.join(work, "encoder")
    torch.manual_seed(FLAGS.seed)
    cfg = transformers.Wav2Vec2Config(**(TINY if FLAGS.tiny else {}))
    transformers.Wav2Vec2Model(cfg).eval().save_pretrained(hf_dir)
    # facebook/wav2vec2-base's preprocessor_config.json
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
        return_attention_mask=False).save_pretrained(hf_dir)
    enc = convert.convert(hf_dir, format="huggingface_wav2vec2")
    checkpoint.save_encoder(enc_dir, enc, source_format="huggingface_wav2vec2")
    return hf_dir, enc_dir


# ------------------------------------------------------------------------------ children
def torch_pipeline(manifest: str, hf_dir: str, out_dir: str) -> None:
    """The transformers recipe, one utterance at a time; writes ``out_dir/layer_<k>.npy``."""
    import librosa
    import torch
    import transformers

    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(hf_dir)
    model = transformers.Wav2Vec2Model.from_pretrained(hf_dir).eval()
    captured = {}
    model.feature_extractor.register_forward_hook(
        lambda mod, inp, out: captured.__setitem__("cnn", out))
    pooled = None
    with torch.inference_mode():
        for r in rows:
            wav, _ = librosa.load(r["path"], sr=fe.sampling_rate, mono=True)
            x = fe(wav, sampling_rate=fe.sampling_rate, return_tensors="pt").input_values
            out = model(x, output_hidden_states=True)
            layers = [captured["cnn"].transpose(1, 2)] + list(out.hidden_states)
            if pooled is None:
                pooled = [[] for _ in layers]
            for k, h in enumerate(layers):
                pooled[k].append(h[0].mean(0).numpy())
    os.makedirs(out_dir, exist_ok=True)
    for k, p in enumerate(pooled):
        np.save(os.path.join(out_dir, f"layer_{k}.npy"), np.stack(p).astype(np.float32))


def run_torch_child() -> None:
    pin_cpus(FLAGS.threads)
    import librosa  # noqa: F401  (imports outside the timed passes, as on our side)
    import torch
    import transformers

    transformers.Wav2Vec2Model, transformers.Wav2Vec2FeatureExtractor  # resolve lazy imports
    torch.set_num_threads(FLAGS.threads)
    work = FLAGS.workdir
    times, cpu = [], []
    for p in PASSES:
        t0, c0 = time.perf_counter(), time.process_time()
        torch_pipeline(os.path.join(work, "manifest.csv"), os.path.join(work, "hf"),
                       os.path.join(work, f"torch_{p}"))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print("RESULT " + json.dumps({"seconds": times, "cpu_seconds": cpu, "peak_mb": peak_rss_mb()}))


def _child(cmd, what: str) -> str:
    """Run a child process with the benchmark's thread settings; its stdout, or an error."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(FLAGS.threads))
    if out.returncode:
        raise RuntimeError(f"{what} failed (exit {out.returncode}):\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def _result(cmd, what: str) -> dict:
    line = [l for l in _child(cmd, f"{what} pipeline").splitlines() if l.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"{what} pipeline printed no RESULT line")
    return json.loads(line[-1][7:])


def run_ours(work: str, enc_dir: str) -> dict:
    argv = [f"--encoder={enc_dir}", f"--manifest={os.path.join(work, 'manifest.csv')}",
            f"--batch_size={FLAGS.batch_size}"]
    outs = [os.path.join(work, f"ours_{p}") for p in PASSES]
    cache = os.path.join(work, "jax_cache")
    shutil.rmtree(cache, ignore_errors=True)
    return _result([sys.executable, "-c", _OURS_CHILD,
                    json.dumps([FLAGS.threads, argv, outs, cache])], "our")


def run_torch(work: str) -> dict:
    return _result([sys.executable, "-m", "experiments.benchmarks.bench_extract", "--child=torch",
                    f"--workdir={work}", f"--threads={FLAGS.threads}"], "PyTorch")


# ------------------------------------------------------------------------------ report
def agreement(ours_dir: str, torch_dir: str) -> tuple[float, str]:
    """Max |ours - PyTorch| over every pooled vector entry, and the layer where it occurs."""
    from speechinterp import store

    s = store.validate(ours_dir)
    worst, where = 0.0, ""
    for k, name in enumerate(s.layer_names):
        ref = np.load(os.path.join(torch_dir, f"layer_{k}.npy"))
        ours = np.asarray(s.layer(k), np.float32)
        if ours.shape != ref.shape:
            raise RuntimeError(f"layer {name}: ours {ours.shape} vs PyTorch {ref.shape} (did our "
                               f"extraction skip files? see {ours_dir}/skipped.csv)")
        d = float(np.max(np.abs(ours - ref)))
        if d >= worst:
            worst, where = d, f"{name} (max |PyTorch| there {float(np.max(np.abs(ref))):.3g})"
    return worst, where


def best_of(rounds: list[dict]) -> dict:
    """Per pass, the fastest round (and its CPU time); the largest peak memory."""
    best = [min(range(len(rounds)), key=lambda r: rounds[r]["seconds"][p])
            for p in range(len(PASSES))]
    return {"seconds": [rounds[r]["seconds"][p] for p, r in enumerate(best)],
            "cpu_seconds": [rounds[r]["cpu_seconds"][p] for p, r in enumerate(best)],
            "peak_mb": max(r["peak_mb"] for r in rounds)}


def print_rows(name: str, res: dict, n: int, audio_s: float) -> None:
    for p, sec, cpu in zip(PASSES, res["seconds"], res["cpu_seconds"]):
        print(f"{name:26s} {p:5s} {sec:8.1f} {cpu:8.1f} {n / sec:8.2f} {sec / audio_s:17.4f} "
              f"{audio_s / sec:12.1f} {res['peak_mb']:9.0f}")


def main(argv):
    del argv
    if FLAGS.child == "torch":
        run_torch_child()
        return
    if FLAGS.child == "models":
        make_models(FLAGS.workdir)
        return
    if FLAGS.child:
        raise app.UsageError(f"unknown --child={FLAGS.child}")
    if FLAGS.encoder and not os.path.isfile(os.path.join(FLAGS.encoder, "config.json")):
        raise app.UsageError(f"--encoder={FLAGS.encoder}: not a converted encoder directory "
                             f"(no config.json; make one with python -m experiments.convert)")
    if min(FLAGS.batch_size, FLAGS.threads, FLAGS.rounds) < 1:
        raise app.UsageError("--batch_size, --threads and --rounds must be positive")
    work = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_extract_")
    os.makedirs(work, exist_ok=True)
    try:
        rows = write_subset_manifest(corpus_dir(), FLAGS.num_utterances,
                                     os.path.join(work, "manifest.csv"))
        audio_s = audio_seconds(rows)
        enc_dir = FLAGS.encoder or os.path.join(work, "encoder")
        if not FLAGS.encoder:   # in a child, so that this process stays small
            _child([sys.executable, "-m", "experiments.benchmarks.bench_extract", "--child=models",
                    f"--workdir={work}", f"--seed={FLAGS.seed}"] +
                   (["--tiny"] if FLAGS.tiny else []), "making the models")
        model = (FLAGS.encoder if FLAGS.encoder else
                 "wav2vec2 " + ("tiny" if FLAGS.tiny else "base") + " (random weights, "
                 f"seed {FLAGS.seed})")
        print(f"model: {model}\ncorpus: {len(rows)} utterances, {audio_s:.1f} s of audio "
              f"(mean {audio_s / len(rows):.2f} s); {FLAGS.threads} threads; ours in batches of "
              f"{FLAGS.batch_size}" + ("" if FLAGS.encoder else
                                       ", PyTorch one utterance at a time"), flush=True)
        runs = {"ours (experiments.extract)": ("ours", lambda: run_ours(work, enc_dir))}
        if not FLAGS.encoder:
            runs["PyTorch (transformers)"] = ("torch", lambda: run_torch(work))
        rounds = {name: [] for name in runs}
        for _ in range(FLAGS.rounds):     # alternate, so that a noisy machine hurts both alike
            for name, (side, fn) in runs.items():
                for p in PASSES:          # fresh outputs (a finished store would be kept as is)
                    shutil.rmtree(os.path.join(work, f"{side}_{p}"), ignore_errors=True)
                rounds[name].append(fn())
        res = {name: best_of(r) for name, r in rounds.items()}
        print(f"{'pipeline':26s} {'pass':5s} {'wall s':>8s} {'cpu s':>8s} {'utt/s':>8s} "
              f"{'RTF (wall/audio)':>17s} {'x real time':>12s} {'peak MB':>9s}")
        for name, r in res.items():
            print_rows(name, r, len(rows), audio_s)
        if FLAGS.encoder:
            return
        ours, peer = res.values()
        ratio = lambda key: ", ".join(f"{p} {t / o:.2f}" for p, o, t in
                                      zip(PASSES, ours[key], peer[key]))
        print(f"throughput ratio ours / PyTorch: by wall time {ratio('seconds')}; by CPU time "
              f"{ratio('cpu_seconds')}; peak memory ratio PyTorch / ours: "
              f"{peer['peak_mb'] / ours['peak_mb']:.2f}")
        diff, where = agreement(os.path.join(work, "ours_warm"), os.path.join(work, "torch_warm"))
        ok = diff <= FLAGS.atol
        print(f"agreement: max |ours - PyTorch| over all pooled vectors = {diff:.2e} at layer "
              f"{where}; {'OK' if ok else 'FAIL'} (atol {FLAGS.atol:g})")
        if not ok:
            sys.exit(1)
    finally:
        if not FLAGS.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
