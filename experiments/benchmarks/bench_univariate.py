"""Per-neuron probes: Adam (protocol.fit_neurons) vs safeguarded Newton (probes.univariate).

    python -m experiments.benchmarks.bench_univariate [--rows=2400 --neurons=4992 --classes=7]

On a synthetic standardised store (rows x neurons, a planted class signal of varying strength
in every neuron, 60/20/20 train/dev/test rows), times fit + predict of all univariate probes
both ways, first call (compile included) and a second call (compiled), and prints the ratio,
each solver's objective (weighted-mean CE + l2 ||W||^2 on the train rows) and how closely the
per-neuron dev accuracies agree.
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from speechinterp.probes import elastic_net as EN
from speechinterp.probes import univariate as U
from speechinterp.probes.elastic_net import DEFAULT

try:
    from speechinterp.probes import protocol
except Exception:                                    # the protocol module is being reworked
    protocol = None

FLAGS = flags.FLAGS
flags.DEFINE_integer("rows", 2400, "Rows of the synthetic store.")
flags.DEFINE_integer("neurons", 4992, "Neurons (columns) of the synthetic store.")
flags.DEFINE_integer("classes", 7, "Classes of the planted property.")
flags.DEFINE_float("l2", 1e-5, "l2 of the Newton probes; l1 = l2 of the Adam probes too.")
flags.DEFINE_bool("newton_only", False, "Skip the Adam reference.")


@functools.partial(jax.jit, static_argnames=("num_classes", "num_train", "cfg"))
def _adam_neurons(X, y, w, l1, l2, seed, *, num_classes, num_train, cfg):
    """protocol.fit_neurons as of commit dbd4765: vmapped elastic_net.fit_probe, one per
    column, batch-plan key = the first of jax.random.split(PRNGKey(seed), 1)."""
    key = jax.random.split(jax.random.PRNGKey(seed), 1)[0]
    fit = functools.partial(EN.fit_probe, num_classes=num_classes, num_train=num_train, cfg=cfg)
    one = jnp.ones((1,), X.dtype)
    return jax.vmap(lambda x: fit(x[:, None], y, w, one, l1, l2, key))(X.T)


@jax.jit
def _adam_predict(W, b, X):
    """protocol.predict_neurons as of commit dbd4765."""
    def one(args):
        x, w_, b_ = args
        return jnp.argmax(x[:, None] * w_[0][None] + b_[None], -1)
    return jax.lax.map(one, (X.T, W, b), batch_size=64)


def adam_fit_neurons(*args, **kw):
    """The Adam reference: protocol.fit_neurons where it exists, else its last definition."""
    return getattr(protocol, "fit_neurons", _adam_neurons)(*args, **kw)


def adam_predict_neurons(W, b, X):
    return getattr(protocol, "predict_neurons", _adam_predict)(W, b, X)


def synthetic(rows, neurons, classes, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    means = rng.normal(size=(classes, neurons))
    strength = rng.uniform(0.0, 1.5, neurons)
    X = rng.normal(size=(rows, neurons)) + strength * means[y]
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    split = rng.permutation(rows) % 5                   # 0..2 train, 3 dev, 4 test
    return X, y.astype(np.int32), (split < 3).astype(np.float32), split == 3


def timed(fn):
    """(output, wall s, CPU s of all threads): on a shared machine CPU time is the steadier."""
    t, c = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv):
    del argv
    X, y, w, dev = synthetic(FLAGS.rows, FLAGS.neurons, FLAGS.classes)
    C, lam = FLAGS.classes, np.float32(FLAGS.l2)
    ntr = int(w.sum())
    Xj = jax.numpy.asarray(X)

    def old():
        P = adam_fit_neurons(Xj, y, w, lam, lam, 0, num_classes=C, num_train=ntr, cfg=DEFAULT)
        return P, adam_predict_neurons(P["W"], P["b"], Xj)

    def new():
        P = U.fit_neurons(X, y, w, num_classes=C, l2=FLAGS.l2)
        return P, U.predict_neurons(P, X)

    src = "protocol" if getattr(protocol, "fit_neurons", None) else "dbd4765 copy"
    print(f"Adam reference: {src}.fit_neurons (DEFAULT: 40 epochs, batch 256, cosine lr 1e-2)")
    print(f"store {FLAGS.rows} x {FLAGS.neurons}, C={C}, train {ntr}, dev {int(dev.sum())}, "
          f"l2 {FLAGS.l2:g}, {jax.device_count()} {jax.default_backend()} device(s)")
    res = {}
    for name, fn in (("adam", old), ("newton", new))[1 if FLAGS.newton_only else 0:]:
        _, t_cold, c_cold = timed(fn)
        (P, pred), t_warm, c_warm = timed(fn)
        acc = np.mean(np.asarray(pred)[:, dev] == y[dev], -1)
        obj = U.objective(P, X, y, w, l2=FLAGS.l2)
        res[name] = (t_cold, t_warm, c_warm, acc, obj)
        print(f"{name:7s} fit+predict: first call {t_cold:6.2f} s (CPU {c_cold:6.2f} s), "
              f"second {t_warm:6.2f} s (CPU {c_warm:6.2f} s); mean objective {obj.mean():.6f}; "
              f"mean dev accuracy {acc.mean():.4f}")
    if FLAGS.newton_only:
        return
    (c0, w0, u0, a0, o0), (c1, w1, u1, a1, o1) = res["adam"], res["newton"]
    print(f"speed-up adam/newton: first call {c0 / c1:.1f}x, second call {w0 / w1:.1f}x "
          f"(CPU time {u0 / u1:.1f}x)")
    d = np.abs(a1 - a0)
    print(f"objective newton - adam: max {np.max(o1 - o0):+.2e}, mean {np.mean(o1 - o0):+.2e} "
          f"(newton lower on {np.mean(o1 <= o0 + 1e-7):.1%} of neurons)")
    print(f"dev accuracy |newton - adam|: mean {d.mean():.4f}, max {d.max():.4f}; "
          f"Spearman of the two per-neuron accuracy rankings "
          f"{np.corrcoef(np.argsort(np.argsort(-a0)), np.argsort(np.argsort(-a1)))[0, 1]:.4f}")


if __name__ == "__main__":
    app.run(main)
