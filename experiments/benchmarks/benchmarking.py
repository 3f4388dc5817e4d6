"""Shared helpers of the benchmark scripts."""
import os

from measure import peak_rss_mb  # noqa: F401 (tests/measure.py; shared with the memory test)


def thread_env(threads: int) -> dict:
    """Environment that pins numpy/torch/XLA to ``threads`` CPU threads in a child process."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "XLA_FLAGS": (env.get("XLA_FLAGS", "") +
                      f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                      f" intra_op_parallelism_threads={threads}").strip(),
    })
    return env


def pin_cpus(threads: int) -> None:
    """Pin this process to its first ``threads`` allowed CPUs (where the OS supports it)."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])


def bench_waveforms(utterances: int, seconds: float, sample_rate: int = 16000):
    """The benchmark input: ``utterances`` equal-length float32 noise rows [U, S] (seed 0)."""
    import numpy as np

    n = int(seconds * sample_rate)
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((utterances, n))).astype(np.float32)


def flax_extractor(enc, waveforms):
    """Zero-argument timed callable: ``jax.jit(enc.apply)`` on ``waveforms`` [U, S] (all at
    full length), blocking until every layer's output is ready; returns the outputs."""
    import jax
    import jax.numpy as jnp

    apply = jax.jit(enc.apply)
    params = jax.tree.map(jnp.asarray, enc.params)
    wav = jnp.asarray(waveforms)
    lens = jnp.full((wav.shape[0],), wav.shape[1], jnp.int32)

    def flax_fn():
        outs, _ = apply(params, wav, lens)
        return jax.block_until_ready(outs)

    return flax_fn


def built_on_first_call(**makers):
    """``{name: zero-argument fn}`` whose first call runs ``makers[name]()`` to build the timed
    callable (loading, conversion, jit), so that a child process builds only its own side."""
    built = {}

    def timed(name):
        def fn():
            if name not in built:
                built[name] = makers[name]()
            return built[name]()
        return fn

    return {name: timed(name) for name in makers}
