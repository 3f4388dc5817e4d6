"""Seconds per data-only neuron ranking over every neuron of a synthetic store.

    python -m experiments.benchmarks.bench_ranking_methods [--layers=13 --dim=768 --rows=2400
        --classes=7]

The store: ``layers x dim`` standardised Gaussian neurons side by side, ``rows`` rows of which
the first 80% are train rows, ``classes`` classes carried by 24 planted neurons. Times
:mod:`speechinterp.probes.ranking_methods`' probeless, IoU and Gaussian (greedy ``k``) rankings
and the vote over the three, each twice: ``cold`` includes XLA compilation, ``warm`` is a
second call on the same shapes (wall time, and CPU time of all threads: the steadier figure on a
shared machine). Prints one line per method, whether the planted neurons lead its ordering, and
how far the methods agree.
"""
import time

import numpy as np
from absl import app, flags

from speechinterp.probes import ranking_methods as RM

FLAGS = flags.FLAGS
flags.DEFINE_integer("layers", 13, "Layers.")
flags.DEFINE_integer("dim", 768, "Neurons per layer.")
flags.DEFINE_integer("rows", 2400, "Rows (utterances or frames).")
flags.DEFINE_integer("classes", 7, "Classes of the probed property.")
flags.DEFINE_integer("k", 100, "Greedy steps of the Gaussian ranking.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic store.")

NUM_PLANTED = 24


def synthetic_store(num_rows, num_neurons, num_classes, seed):
    """Standardised X [rows, neurons], labels, train weights and the planted neurons."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, num_rows)
    X = rng.normal(size=(num_rows, num_neurons)).astype(np.float32)
    planted = rng.choice(num_neurons, NUM_PLANTED, replace=False)
    X[:, planted] += rng.normal(size=(num_classes, NUM_PLANTED)).astype(np.float32)[y]
    w = (np.arange(num_rows) < 0.8 * num_rows).astype(np.float32)
    mean, std = X[w > 0].mean(0), X[w > 0].std(0)
    return (X - mean) / std, y, w, planted


def main(_):
    D = FLAGS.layers * FLAGS.dim
    X, y, w, planted = synthetic_store(FLAGS.rows, D, FLAGS.classes, FLAGS.seed)
    print(f"store: {FLAGS.rows} rows x {D} neurons ({FLAGS.layers} x {FLAGS.dim}), "
          f"{FLAGS.classes} classes, {int(w.sum())} train rows, {NUM_PLANTED} planted neurons")
    kwargs = {"probeless": {}, "iou": {}, "gaussian": {"k": FLAGS.k}}
    orderings = {}
    print(f"{'method':<10} {'cold s':>8} {'warm s':>8} {'warm cpu s':>10}  "
          f"planted in top {NUM_PLANTED}")
    for method in RM.DATA_METHODS + ("voted",):
        seconds = []
        for _ in range(2):
            t0, cpu0 = time.perf_counter(), time.process_time()
            if method == "voted":
                ordering = RM.voted_ranking(orderings)
            else:
                ordering = RM.ordering_from_data(method, X, y, w, FLAGS.classes, **kwargs[method])
            seconds.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu0
        orderings.setdefault(method, ordering)
        found = len(np.intersect1d(ordering[:NUM_PLANTED], planted))
        print(f"{method:<10} {seconds[0]:8.3f} {seconds[1]:8.3f} {cpu:10.3f}  "
              f"{found}/{NUM_PLANTED}")
    agreement = RM.method_agreement({m: orderings[m] for m in RM.DATA_METHODS})
    for p in agreement["pairs"]:
        print(f"  {p['a']} ~ {p['b']}: top1 {p['top1_overlap']:.2f} top5 {p['top5_overlap']:.2f} "
              f"spearman {p['spearman']:.3f}")
    print(f"  chance: top1 {agreement['chance']['top1_overlap']:.3f} "
          f"top5 {agreement['chance']['top5_overlap']:.3f}")


if __name__ == "__main__":
    app.run(main)
