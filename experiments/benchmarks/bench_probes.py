"""The whole probing protocol, three ways: speechinterp, NeuroX, scikit-learn.

    python -m experiments.benchmarks.bench_probes [--utterances=5000 --layers=13 --dim=768
        --classes=10]

On one synthetic planted store (a 10-class property in 24 neurons of one layer, speaker
offsets everywhere), times layer-wise probes + control tasks, the oracle, the NeuroX ranking,
top/random/bottom ablation in both modes at 1..50%, and the minimal-subset search:

* ``speechinterp``: :func:`speechinterp.probes.protocol.run_probing` with NeuroX's algorithm
  exactly (``neurox_exact``: Adam, lr 1e-3, batch 32, 10 epochs, l1 = l2 = 1e-5, torch
  ``nn.Linear`` init, rows in order; ``--probe_configs=neurox_exact,default`` adds the
  well-converged default), all probes in two jitted calls (layer-wise + oracle; then every
  minimal-subset candidate and the ablation retrains), once cold and once with its XLA
  programs from the persistent compilation cache the cold run filled (``--nocached`` skips);
* ``neurox``: NeuroX 1.0.9's own functions (``train_logistic_regression_probe``,
  ``evaluate_probe``, ``get_neuron_ordering``, ``ablation.*``), one torch probe at a time, every
  minimal-subset candidate (``--subsets=early_stop``: stop at the first size that reaches the
  target, as a sequential user would); install with ``pip install --no-deps neurox==1.0.9 imbalanced-learn sklearn-compat``;
* ``sklearn``: ``LogisticRegression(solver="saga", l1_ratio=0.5)``, one fit per probe, same loop.

Each runs in its own child process (same thread count) so peak RSS is comparable; before timing,
each method's packages are imported once in a throwaway process, so that no timed run reads them
from disk (``--nowarm_file_cache`` skips this). Prints wall
time, CPU time (all threads, imports included), peak memory, mean layer-wise and oracle test
accuracy, and the ratios. On a shared machine the CPU-time ratio is the steadier one.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("utterances", 5000, "Utterances in the synthetic store.")
flags.DEFINE_integer("layers", 13, "Layers.")
flags.DEFINE_integer("dim", 768, "Neurons per layer.")
flags.DEFINE_integer("classes", 10, "Classes of the probed property.")
flags.DEFINE_integer("threads", 2, "CPU threads for every method.")
flags.DEFINE_list("methods", ["speechinterp", "neurox", "sklearn"], "Methods to run.")
flags.DEFINE_integer("sklearn_max_iter", 100, "saga iterations per scikit-learn fit.")
flags.DEFINE_string("store", None, "Store to reuse across runs (built there first when absent); "
                    "default: a fresh store in a temporary folder.")
flags.DEFINE_enum("subsets", "all", ["all", "early_stop"],
                  "Minimal-subset search of the one-probe-at-a-time peers: train every candidate "
                  "size (the protocol), or stop at the first size that reaches the target (a "
                  "sequential search). speechinterp always trains every candidate in one call.")
flags.DEFINE_list("probe_configs", ["neurox_exact"],
                  "speechinterp probe settings to time (each its own row).")
flags.DEFINE_bool("cached", True, "Also time speechinterp a second time, its XLA programs "
                  "read from the persistent compilation cache the first (cold) run filled, as "
                  "any later run on a store of the same shape (experiments.probe "
                  "--compilation_cache_dir); the cold row counts every compile.")
flags.DEFINE_bool("ranking_methods", True, "Also time each neuron-ranking method over every "
                  "neuron of the store (issue 15): weight mass, per-neuron probes, probeless, "
                  "IoU, the Gaussian intrinsic probe and the vote, in a child process.")
flags.DEFINE_bool("warm_file_cache", True, "Before timing, import each method's packages once "
                  "in a throwaway process, so that no timed run reads them from disk (the first "
                  "process to import jax or torch after a while can spend 1-2 s on disk reads).")
flags.DEFINE_string("cache_dir", None, "Internal: the compilation cache of a speechinterp child.")
flags.DEFINE_string("child", None, "Internal: run one method in this process.")

PCTS = (1, 5, 10, 15, 20, 50)
DELTA = 0.01
STAGES: dict = {}   # speechinterp's own stage timings (run_probing's details["timings_s"])


def build_store(path):
    from speechinterp import synthetic
    rng = np.random.default_rng(0)
    neurons = tuple(sorted(rng.choice(FLAGS.dim, 24, replace=False).tolist()))
    synthetic.planted_store(path, num_utterances=FLAGS.utterances, num_speakers=200,
                            dims=(FLAGS.dim,) * FLAGS.layers, signal_layer=FLAGS.layers * 2 // 3,
                            signal_neurons=neurons, num_classes=FLAGS.classes, strength=6.0)


def sequential_protocol(store, train_fn, predict_fn):
    """The protocol of docs/method.md with one probe at a time (the peers' way of running it)."""
    from speechinterp.probes import data as D
    from speechinterp.probes import ranking as R
    td = D.prepare_task(store, "prop", 0)
    layers = D.load_layers(store, td)
    y, ctrl = td.y, D.control_labels(td, 0)
    tr, dv, te = td.split == D.TRAIN, td.split == D.DEV, td.split == D.TEST
    acc = lambda p, lab, sel: float(np.mean(p[sel] == lab[sel]))
    layer_acc = []
    for X in layers:
        for lab in (y, ctrl):
            m = train_fn(X[tr], lab[tr])
            a = acc(predict_fn(m, X), lab, te)
            if lab is y:
                layer_acc.append(a)
    Xall = np.concatenate(layers, 1)
    Xtr = Xall[tr]          # the training rows, copied once (not once per probe)
    oracle = train_fn(Xtr, y[tr])
    po = predict_fn(oracle, Xall)
    oracle_acc, oracle_dev = acc(po, y, te), acc(po, y, dv)
    W = oracle_weights(oracle)
    ordering = np.asarray(ordering_fn(oracle, W, td.classes))
    n = Xall.shape[1]
    for pct in PCTS:
        for how in ("top", "random", "bottom"):
            keep = R.select(ordering, pct / 100, how, seed=0)
            m = train_fn(Xtr[:, keep], y[tr])
            acc(predict_fn(m, Xall[:, keep]), y, te)
            Xz = np.zeros_like(Xall)
            Xz[:, keep] = Xall[:, keep]
            acc(predict_fn(oracle, Xz), y, te)
    for size in R.minimal_subset_sizes(n):
        keep = ordering[:size]
        m = train_fn(Xtr[:, keep], y[tr])
        hit = acc(predict_fn(m, Xall[:, keep]), y, dv) >= oracle_dev * (1 - DELTA)
        if hit and FLAGS.subsets == "early_stop":
            break
    return float(np.mean(layer_acc)), oracle_acc


def oracle_weights(model):
    if hasattr(model, "coef_"):
        return model.coef_.T
    return list(model.parameters())[0].detach().numpy().T


def ordering_fn(model, W, classes):
    if hasattr(model, "coef_"):
        from speechinterp.probes import ranking as R
        return R.weight_mass_ordering(W)[0]
    from neurox.interpretation import linear_probe as lp
    return lp.get_neuron_ordering(model, {c: i for i, c in enumerate(classes)}, 100)[0]


IMPORTS = {"speechinterp": "import jax, optax, sklearn.metrics, speechinterp.probes.protocol",
           "neurox": "import torch, neurox.interpretation.linear_probe",
           "sklearn": "import sklearn.linear_model"}


def warm_file_cache(methods, env):
    """Import each method's packages once in a child process (nothing is timed), so that the
    timed runs find them in the OS file cache."""
    for m in sorted({m.split("-")[0] for m in methods}):
        subprocess.run([sys.executable, "-c", IMPORTS[m]], capture_output=True, env=env)


def run_method(method, store_path):
    from speechinterp import store as S
    store = S.open_store(store_path)
    if method.startswith("speechinterp"):
        import jax
        if FLAGS.cache_dir:
            jax.config.update("jax_compilation_cache_dir", FLAGS.cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        from speechinterp.probes import elastic_net, protocol
        cfg = elastic_net.CONFIGS[method.split("-")[1]]
        res, det = protocol.run_probing(store, "prop", cfg, delta=DELTA, per_neuron=False,
                                        ablation_pcts=PCTS)
        STAGES.update(det["timings_s"])
        return float(np.mean([l["accuracy"] for l in res["layers"]])), res["oracle"]["accuracy"]
    if method == "neurox":
        import torch
        torch.set_num_threads(FLAGS.threads)
        torch.manual_seed(0)   # NeuroX's nn.Linear init
        import neurox.interpretation.linear_probe as lp
        import neurox.interpretation.utils as nu
        nu.get_progress_bar = lambda: (lambda it, **kw: it)   # quiet, same work

        def train(X, y):
            return lp.train_logistic_regression_probe(X.astype(np.float32), y.astype(np.int64),
                                                      lambda_l1=1e-5,
                                                      lambda_l2=1e-5, num_epochs=10,
                                                      batch_size=32, learning_rate=1e-3)

        def predict(m, X):
            with torch.no_grad():
                return m(torch.from_numpy(np.ascontiguousarray(X, np.float32))).argmax(1).numpy()
        return sequential_protocol(store, train, predict)
    if method == "sklearn":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        warnings.filterwarnings("ignore", category=ConvergenceWarning)

        def train(X, y):
            return LogisticRegression(l1_ratio=0.5, solver="saga", C=1.0,
                                      max_iter=FLAGS.sklearn_max_iter).fit(X, y)
        return sequential_protocol(store, train, lambda m, X: m.predict(X))
    raise ValueError(method)


def time_rankings(store_path) -> dict:
    """Seconds of each ranking method over every neuron of the store's task ``prop`` (train
    rows, standardised as the probes see them): NeuroX weight mass (on an oracle-shaped weight
    matrix), per-neuron probes (Newton, with their dev accuracy), probeless, IoU, the Gaussian
    intrinsic probe (greedy over the first protocol.GAUSSIAN_GREEDY neurons) and the vote."""
    from speechinterp import store as S
    from speechinterp.probes import data as D
    from speechinterp.probes import engine as E
    from speechinterp.probes import protocol, ranking as R, ranking_methods as RM
    from speechinterp.probes.features import task_arrays
    st = S.open_store(store_path)
    arrays = task_arrays(st, D.prepare_task(st, "prop", 0), 0)
    ntr, C = arrays.num_train, arrays.num_classes
    X, y = arrays.X.array[:ntr], arrays.Y[0, :ntr]
    w = np.ones(ntr, np.float32)
    W = np.random.default_rng(0).normal(size=(X.shape[1], C))
    out, orderings = {}, {}

    def timed(name, fn):
        t = time.perf_counter()
        orderings[name] = fn()
        out[name] = time.perf_counter() - t
    timed("weight_mass", lambda: R.weight_mass_ordering(W)[0])
    timed("per_neuron", lambda: R.accuracy_ordering(E.neuron_dev_accuracy(arrays, (1e-5, 1e-5))))
    for m in RM.DATA_METHODS:
        kw = {"k": protocol.GAUSSIAN_GREEDY} if m == "gaussian" else {}
        timed(m, lambda m=m, kw=kw: RM.ordering_from_data(m, X, y, w, C, **kw))
    t = time.perf_counter()
    RM.voted_ranking(orderings)
    out["voted"] = time.perf_counter() - t
    return out


def main(argv):
    del argv
    if FLAGS.child and FLAGS.child.startswith("rankings:"):
        print("RESULT " + json.dumps(time_rankings(FLAGS.child.split(":", 1)[1])))
        return
    if FLAGS.child:
        method, path = FLAGS.child.split(":", 1)
        t0 = time.perf_counter()
        layer_acc, oracle_acc = run_method(method, path)
        wall = time.perf_counter() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        peak, cpu = ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime
        print("RESULT " + json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": peak,
                                      "layer_acc": layer_acc,
                                      "oracle_acc": oracle_acc, "stages": STAGES}))
        return
    from experiments.benchmarks.benchmarking import thread_env
    path = FLAGS.store or os.path.join(tempfile.mkdtemp(), "store")
    if not os.path.exists(os.path.join(path, "meta.json")):
        build_store(path)
    from speechinterp import store as S
    st = S.open_store(path)
    print(f"store: {len(st)} utterances x {st.num_layers} layers x {max(st.dims)} neurons, "
          f"{len(set(st.column('prop')))} classes, {FLAGS.threads} threads", flush=True)
    res = {}
    cached = ["", "-cached"] if FLAGS.cached else [""]
    methods = [x for m in FLAGS.methods for x in
               ([f"speechinterp-{c}{k}" for c in FLAGS.probe_configs for k in cached]
                if m == "speechinterp" else [m])]
    cache_root = tempfile.mkdtemp()
    if FLAGS.warm_file_cache:
        warm_file_cache(methods, thread_env(FLAGS.threads))
    for m in methods:
        # each setting's cold row starts from an empty cache, which its cached row then reads
        cache = (os.path.join(cache_root, m.removesuffix("-cached"))
                 if m.startswith("speechinterp") else None)
        out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.bench_probes",
                              f"--child={m}:{path}", f"--threads={FLAGS.threads}",
                              f"--sklearn_max_iter={FLAGS.sklearn_max_iter}",
                              f"--subsets={FLAGS.subsets}"]
                             + ([f"--cache_dir={cache}"] if cache else []),
                             capture_output=True, text=True, env=thread_env(FLAGS.threads))
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            print(f"{m}: failed\n{out.stderr[-3000:]}", flush=True)
            continue
        res[m] = json.loads(line[-1][7:])
        r = res[m]
        print(f"{m:20s} wall {r['wall_s']:8.1f} s  cpu {r['cpu_s']:8.1f} s  "
              f"peak {r['peak_mb']:7.0f} MB  "
              f"mean layer acc {r['layer_acc']:.3f}  oracle acc {r['oracle_acc']:.3f}", flush=True)
        if r.get("stages"):
            print("    stages (s, compilation overlapped): " + ", ".join(
                f"{k} {v:.1f}" for k, v in r["stages"].items()), flush=True)
    if FLAGS.ranking_methods:
        out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.bench_probes",
                              f"--child=rankings:{path}"], capture_output=True, text=True,
                             env=thread_env(FLAGS.threads))
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if line:
            secs = json.loads(line[-1][7:])
            print(f"ranking methods over all {st.num_layers} x {max(st.dims)} neurons "
                  f"(s, first call, compilation included): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in secs.items()), flush=True)
        else:
            print(f"ranking methods: failed\n{out.stderr[-3000:]}", flush=True)
    for o in [m for m in res if m.startswith("speechinterp")]:
        ours = res[o]
        for m, r in res.items():
            if not m.startswith("speechinterp"):
                print(f"{o} vs {m}: {r['wall_s'] / ours['wall_s']:.1f}x faster "
                  f"({r['cpu_s'] / ours['cpu_s']:.1f}x less CPU time), "
                      f"peak memory ratio ({m}/speechinterp) {r['peak_mb'] / ours['peak_mb']:.2f}, "
                      f"accuracy difference (layer mean) "
                      f"{100 * (ours['layer_acc'] - r['layer_acc']):+.1f} points, "
                      f"(oracle) {100 * (ours['oracle_acc'] - r['oracle_acc']):+.1f} points")


if __name__ == "__main__":
    app.run(main)
