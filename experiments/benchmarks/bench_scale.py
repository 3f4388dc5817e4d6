"""The whole protocol at the paper's scale: 25 layers x 1,024 neurons, 1,251 classes.

    python -m experiments.benchmarks.bench_scale [--utterances=3753,5004,6255 --epochs=1
                                                  --probe_config=neurox [--per_neuron]
                                                  --memory_budget_gb=2 --out=scale.json]

VoxCeleb1 speaker identification as the paper probes it (1,251 speakers, each its own class;
wav2vec2-large-like 25 x 1,024 representations), on a synthetic store of that shape (unit noise
plus a per-speaker offset in every neuron): :func:`~speechinterp.probes.protocol.run_probing`
with every stage (layer-wise + control probes, the oracle, the NeuroX weight-mass ranking,
per-neuron probes, every minimal-subset candidate and the top / random / bottom retrains, the
zero-out ablation), seeds 1, at a few store sizes. Speaker identity gets a stratified split of the
utterances (70 / 15 / 15%) that needs every speaker in every split, so the smallest store is
3 utterances a speaker (3,753); each size in 1,251-utterance steps adds 1,251 training rows.

Each size is written by one child process and probed by another (so the peak RSS is that
size's own), which prints the wall time, ``details["timings_s"]`` per stage, the peak RSS,
whether the store was streamed from its files (``--memory_budget_gb``) and the devices.
Then a least-squares fit time = a + b * N over the sizes projects the time for VoxCeleb1's
153,516 utterances on this machine.

FLOPs: counted from the engine's layout (:func:`speechinterp.probes.engine.plan` of both
training calls, as run_probing lays them out): a call trains ``W = sum over bands of width x
stack x heads x classes`` weights, and costs ``6 W`` per training row and epoch (forward and
backward multiply-adds, 2 flops each) and ``2 W`` per evaluation row (the predictions); the
per-neuron probes (solved by Newton's method, speechinterp.probes.univariate; their time is in
the ranking stage) are not counted, nor the optimiser's elementwise updates (Adam reads and
writes ~5 arrays of W floats per step, memory-bound, more of the time at small batches) and
the zero-out ablation (one product on the test rows). The achieved FLOP/s of each size is
those FLOPs over the whole protocol's wall time (load, compiles and per-neuron probes
included), and over the two training stages' time (layerwise + ablation), so a run on a
GPU (nothing to set: when ``jax.devices()[0].platform`` is not ``cpu`` the children simply run
there, the devices column says so) compares on the same count.

``--epochs`` (default 1) overrides the probe setting's epochs so that the three sizes finish in
minutes on a 2-core CPU (NeuroX's 10 epochs cost 10x the training FLOPs); the projection is
given at the epochs run (the fit) and at the setting's own epochs (the FLOPs at 153,516
utterances over the FLOP/s of the largest size). Measured on this 2-core CPU (2026-12-02,
defaults): 82 / 120 / 145 s for 3,753 / 5,004 / 6,255 utterances, 13.1-13.7 GB peak RSS in
memory (the subset call's 542M weights with Adam's state, not the store), 98-121 GFLOP/s;
time = -10.7 s + 25.2 ms x utterances, so VoxCeleb1 takes 1.1 h per epoch, 9.6 h at NeuroX's
10 epochs (4.2 PFLOP). Streamed (``--memory_budget_gb=0.3``, 3,753 utterances): 136 s, 9.0 GB
peak. ``--per_neuron`` adds the Newton per-neuron probes: at 1,251 classes they ran more than
8 min at 3,753 utterances before that run was stopped.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

LAYERS, DIM, CLASSES = 25, 1024, 1251       # the paper's wav2vec2-large x VoxCeleb1 speakers
VOXCELEB1_UTTERANCES = 153_516
TASK = "speaker"

FLAGS = flags.FLAGS
flags.DEFINE_list("utterances", ["3753", "5004", "6255"],
                  "Store sizes (utterances; at least 3 per speaker, 3,753).")
flags.DEFINE_enum("probe_config", "neurox", ["neurox", "neurox_exact", "default"],
                  "Probe setting (speechinterp.probes.elastic_net.CONFIGS).")
flags.DEFINE_integer("epochs", 1, "Epochs (0: the probe setting's own).")
flags.DEFINE_bool("per_neuron", False, "Also solve the per-neuron probes (run_probing's "
                  "per_neuron; not part of NeuroX's protocol, and at 1,251 classes the slowest "
                  "stage on a CPU).")
flags.DEFINE_float("memory_budget_gb", None, "run_probing's memory_budget_gb: stream the "
                   "store from its files when holding it twice would exceed this.")
flags.DEFINE_integer("threads", 0, "CPU threads of each child (0: all of this machine's).")
flags.DEFINE_string("out", None, "Write the table and the projection here as JSON.")
flags.DEFINE_string("work_dir", None, "Where the stores are written (default: a temporary "
                    "folder, removed at the end).")
flags.DEFINE_string("child", None, "Internal: build:<path>:<N> or run:<path>.")


def probe_cfg():
    from speechinterp.probes import elastic_net as EN
    cfg = EN.CONFIGS[FLAGS.probe_config]
    return dataclasses.replace(cfg, epochs=FLAGS.epochs) if FLAGS.epochs else cfg


# ----------------------------------------------------------------------------- FLOPs
def job_weights(job) -> int:
    """Weights a training call trains: over its groups and bands, width x stack x heads x
    classes."""
    w = 0
    for g in job.groups:
        for start, width, S, runs in g.bands.layout:
            heads = max(h1 for _, h1, _, _ in runs)
            w += width * S * heads * job.num_classes
    return int(w)


def protocol_weights(cfg, num_train: int, num_rows: int, rankings=("weight_mass",)) -> dict:
    """Weights trained by run_probing's two calls, laid out as it lays them out (one device:
    the layout, so the weights, does not depend on the number of devices)."""
    import jax
    from speechinterp.probes import engine as E
    from speechinterp.probes import protocol as P
    from speechinterp.probes import ranking as R
    dims = [DIM] * LAYERS
    ntot = sum(dims)
    l1s = np.asarray([a for a, _ in cfg.lambdas], np.float32)
    l2s = np.asarray([b for _, b in cfg.lambdas], np.float32)
    shape = dict(num_rows=num_rows, num_train=num_train, num_classes=CLASSES, cfg=cfg,
                 devices=jax.devices()[:1], precompile=False)
    job1 = E.plan(P.layer_probes(dims, l1s, l2s), num_cols=ntot, seeds=1, **shape)
    pct_sizes = [max(1, int(round(p / 100.0 * ntot))) for p in P.ABLATION_PCTS]
    layout = P.subset_probes(np.union1d(R.minimal_subset_sizes(ntot), pct_sizes), pct_sizes,
                             ntot, len(rankings))
    job2 = E.plan(layout.specs, num_cols=layout.num_cols, seeds=1, **shape)
    return {"layerwise_oracle": job_weights(job1), "subsets": job_weights(job2),
            "per_neuron": ntot * CLASSES,
            "bands": {"layerwise_oracle": sum(len(g.bands.layout) for g in job1.groups),
                      "subsets": sum(len(g.bands.layout) for g in job2.groups)},
            "probes": {"layerwise_oracle": len(job1.specs), "subsets": len(job2.specs)}}


def protocol_flops(weights: dict, epochs: int, num_train: int, num_eval: int,
                   seeds: int = 1) -> dict:
    """Training (6 per weight, row and epoch) and prediction (2 per weight and evaluation row)
    FLOPs of the two engine calls (the per-neuron probes are solved by Newton's method,
    speechinterp.probes.univariate, and not counted: their time is in the ranking stage)."""
    out = {}
    for name in ("layerwise_oracle", "subsets"):
        s = seeds if name == "layerwise_oracle" else 1
        out[name] = s * weights[name] * (6 * epochs * num_train + 2 * num_eval)
    out["total"] = sum(out.values())
    return out


def split_sizes(n: int) -> tuple[int, int]:
    """(train, eval) rows of the stratified 70 / 15 / 15% split of n utterances spread evenly
    over the speakers (as speechinterp.corpus.splits would give them)."""
    from speechinterp.corpus.splits import PROBE_FRACTIONS, stratified_split
    y = np.arange(n) % CLASSES
    split = stratified_split(y, 0, PROBE_FRACTIONS)
    ntr = int(np.sum(split == 0))
    return ntr, n - ntr


# ----------------------------------------------------------------------------- children
def child_build(path: str, n: int) -> None:
    from speechinterp import synthetic
    synthetic.planted_store(path, num_utterances=n, num_speakers=CLASSES, dims=(DIM,) * LAYERS,
                            signal_layer=LAYERS * 2 // 3, signal_neurons=(0, 1, 2),
                            num_classes=2, strength=1.0, speaker_scale=0.5)


def child_run(path: str) -> None:
    import jax
    from experiments.benchmarks.benchmarking import peak_rss_mb
    from speechinterp.probes.protocol import run_probing
    from speechinterp.store import open_store
    t0 = time.perf_counter()
    store = open_store(path, check_values=False)
    t1 = [t0]

    def progress(stage):   # to stderr, for a look at a long run (the parent keeps it)
        now = time.perf_counter()
        print(f"[{now - t0:7.1f} s, +{now - t1[0]:.1f}] {stage}", file=sys.stderr, flush=True)
        t1[0] = now

    results, details = run_probing(store, TASK, probe_cfg(), seed=0, seeds=1,
                                   per_neuron=FLAGS.per_neuron,
                                   memory_budget_gb=FLAGS.memory_budget_gb, progress=progress)
    wall = time.perf_counter() - t0
    print(json.dumps({"utterances": len(store), "wall_s": wall,
                      "timings_s": details["timings_s"], "peak_rss_mb": peak_rss_mb(),
                      "streamed": details["streamed"], "devices": details["devices"],
                      "platform": jax.devices()[0].platform,
                      "split_sizes": results["split_sizes"],
                      "oracle_accuracy": results["oracle"]["accuracy"],
                      "minimal_subset": results["minimal_subset"]["size"]}))


def run_child(args: list, env: dict) -> str:
    p = subprocess.run([sys.executable, "-m", "experiments.benchmarks.bench_scale", *args],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{p.stderr[-4000:]}")
    return p.stdout


# ----------------------------------------------------------------------------- main
def fmt_row(cols, widths):
    return "  ".join(str(c).rjust(w) for c, w in zip(cols, widths))


def main(argv):
    del argv
    if FLAGS.child:
        kind, rest = FLAGS.child.split(":", 1)
        if kind == "build":
            path, n = rest.rsplit(":", 1)
            return child_build(path, int(n))
        return child_run(rest)

    from experiments.benchmarks.benchmarking import thread_env
    threads = FLAGS.threads or os.cpu_count() or 1
    env = dict(thread_env(threads), PYTHONPATH=os.getcwd())
    sizes = sorted(int(u) for u in FLAGS.utterances)
    if sizes[0] < 3 * CLASSES:
        raise app.UsageError(f"at least 3 utterances per speaker: --utterances >= {3 * CLASSES}")
    cfg = probe_cfg()
    # the layout is computed here on the CPU backend: the children (given the environment as
    # it was) own the accelerator, which a parent holding it would starve
    os.environ["JAX_PLATFORMS"] = "cpu"
    from speechinterp.probes import elastic_net as EN
    weights = protocol_weights(cfg, *split_sizes(sizes[0]))
    print(f"bench_scale: {LAYERS} layers x {DIM} neurons, {CLASSES} classes; probe setting "
          f"{FLAGS.probe_config} (epochs {cfg.epochs}, batch {cfg.batch_size}, "
          f"{len(cfg.lambdas)} lambda(s)), seeds 1, per-neuron {FLAGS.per_neuron}, "
          f"memory budget {FLAGS.memory_budget_gb} GB, {threads} CPU thread(s)")
    print(f"weights trained: layer-wise + control + oracle {weights['layerwise_oracle']:,} "
          f"({weights['probes']['layerwise_oracle']} probes, "
          f"{weights['bands']['layerwise_oracle']} bands), subset retrains "
          f"{weights['subsets']:,} ({weights['probes']['subsets']} probes, "
          f"{weights['bands']['subsets']} bands), per-neuron "
          f"{weights['per_neuron']:,} (Newton; not in the FLOPs)")
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_scale_")
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        for n in sizes:
            path = os.path.join(work, f"store_{n}")
            run_child([f"--child=build:{path}:{n}"], env)
            flag_args = [f"--child=run:{path}", f"--probe_config={FLAGS.probe_config}",
                         f"--epochs={FLAGS.epochs}",
                         "--per_neuron" if FLAGS.per_neuron else "--noper_neuron"]
            if FLAGS.memory_budget_gb is not None:
                flag_args.append(f"--memory_budget_gb={FLAGS.memory_budget_gb}")
            r = json.loads(run_child(flag_args, env).strip().splitlines()[-1])
            if not FLAGS.work_dir:
                shutil.rmtree(path, ignore_errors=True)
            ntr = r["split_sizes"]["train"]
            r["flops"] = protocol_flops(weights, cfg.epochs, ntr, n - ntr)
            r["flop_per_s"] = r["flops"]["total"] / r["wall_s"]
            r["train_flop_per_s"] = r["flops"]["total"] / (r["timings_s"]["layerwise"]
                                                            + r["timings_s"]["ablation"])
            r["store_gb"] = 4 * n * LAYERS * DIM / 2 ** 30
            rows.append(r)
            print(f"  N={n}: {r['wall_s']:.1f} s ("
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items())
                  + f"), peak RSS {r['peak_rss_mb']:.0f} MB, streamed {r['streamed']}, "
                  f"{r['flops']['total'] / 1e12:.2f} TFLOP, {r['flop_per_s'] / 1e9:.1f} GFLOP/s overall, "
                  f"{r['train_flop_per_s'] / 1e9:.1f} in the two training stages "
                  f"on {r['devices']}", flush=True)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    stages = ["load", "layerwise", "oracle", "ranking", "ablation", "minimal_subset"]
    head = ["utterances", "train", "store_GB", "wall_s", *[s + "_s" for s in stages],
            "peak_RSS_MB", "streamed", "TFLOP", "GFLOP/s", "train_GFLOP/s", "devices"]
    table = [[r["utterances"], r["split_sizes"]["train"], f"{r['store_gb']:.2f}",
              f"{r['wall_s']:.1f}", *[f"{r['timings_s'].get(s, 0):.1f}" for s in stages],
              f"{r['peak_rss_mb']:.0f}", r["streamed"], f"{r['flops']['total'] / 1e12:.2f}",
              f"{r['flop_per_s'] / 1e9:.1f}", f"{r['train_flop_per_s'] / 1e9:.1f}",
              ",".join(r["devices"])] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *table)]
    print()
    print(fmt_row(head, widths))
    for t in table:
        print(fmt_row(t, widths))

    N = np.array([r["utterances"] for r in rows], float)
    T = np.array([r["wall_s"] for r in rows], float)
    if len(rows) >= 2:
        b, a = np.polyfit(N, T, 1)
    else:
        a, b = 0.0, T[0] / N[0]
    ntr_v, nev_v = split_sizes(VOXCELEB1_UTTERANCES)
    own = EN.CONFIGS[FLAGS.probe_config].epochs
    fl_run = protocol_flops(weights, cfg.epochs, ntr_v, nev_v)
    fl_own = protocol_flops(weights, own, ntr_v, nev_v)
    rate = rows[-1]["flop_per_s"]
    proj = {"fit": {"a_s": a, "b_s_per_utterance": b},
            "voxceleb1_utterances": VOXCELEB1_UTTERANCES, "voxceleb1_train_rows": ntr_v,
            "time_s_fit_at_run_epochs": a + b * VOXCELEB1_UTTERANCES,
            "flops_at_run_epochs": fl_run, "time_s_flops_at_run_epochs": fl_run["total"] / rate,
            "setting_epochs": own, "flops_at_setting_epochs": fl_own,
            "time_s_flops_at_setting_epochs": fl_own["total"] / rate,
            "flop_per_s_used": rate}
    print()
    print(f"fit: time = {a:.1f} s + {b * 1e3:.2f} ms x utterances "
          f"(epochs {cfg.epochs})")
    print(f"VoxCeleb1 ({VOXCELEB1_UTTERANCES:,} utterances, {ntr_v:,} training rows):")
    print(f"  epochs {cfg.epochs}: {proj['time_s_fit_at_run_epochs'] / 3600:.1f} h by the fit; "
          f"{fl_run['total'] / 1e15:.1f} PFLOP "
          f"(layer-wise+oracle {fl_run['layerwise_oracle'] / 1e15:.2f}, subsets "
          f"{fl_run['subsets'] / 1e15:.2f})"
          f" -> {proj['time_s_flops_at_run_epochs'] / 3600:.1f} h at "
          f"{rate / 1e9:.1f} GFLOP/s")
    if own != cfg.epochs:
        print(f"  epochs {own} ({FLAGS.probe_config}'s own): {fl_own['total'] / 1e15:.1f} PFLOP "
              f"-> {proj['time_s_flops_at_setting_epochs'] / 3600:.1f} h at "
              f"{rate / 1e9:.1f} GFLOP/s")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump({"layers": LAYERS, "dim": DIM, "classes": CLASSES,
                       "probe_config": FLAGS.probe_config, "epochs": cfg.epochs,
                       "per_neuron": FLAGS.per_neuron, "memory_budget_gb": FLAGS.memory_budget_gb,
                       "threads": threads, "weights": weights, "runs": rows,
                       "projection": proj}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
