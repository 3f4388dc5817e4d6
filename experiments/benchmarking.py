"""Shared helpers of the benchmark scripts."""
import os


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
