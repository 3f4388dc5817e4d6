"""Host memory of the streamed protocol is bounded by ``memory_budget_gb``, not by the store.

Each run is its own process (peak RSS = that process's ``VmHWM``, which starts afresh at exec;
``ru_maxrss`` where there is no /proc), and the stores are written by another process first, so
that neither the writing nor the test runner's own memory counts. Two stores with the same
layers, one twice the rows of the other, both at least 2x the budget: the streamed protocol's
peak must not grow with the store; the in-memory run of the larger store is the check that
the measurement sees a store's size at all.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# wide rows, as real stores have (25 x 1,024 neurons is 100 KiB a row): the store's metadata
# (utterances.csv, labels), which every run holds, stays small beside the features
DIMS = (1024, 1024, 1024, 1024)          # 16 KiB a row
ROWS = {"small": 7_168, "large": 28_672}   # 112 and 448 MiB of float32 features
BUDGET_GB = 0.05

_BUILD = r"""
import sys
from speechinterp import synthetic
out, n = sys.argv[1], int(sys.argv[2])
synthetic.planted_store(out, num_utterances=n, num_speakers=64, dims=%r, signal_layer=2,
                        signal_neurons=(3, 7, 11), num_classes=3, strength=4.0)
""" % (DIMS,)

_RUN = r"""
import dataclasses, json, sys

sys.path.insert(0, %r)
from measure import peak_rss_mb as peak_mb

from speechinterp.probes import elastic_net
from speechinterp.probes.protocol import run_probing
from speechinterp.store import open_store

path, budget = sys.argv[1], (None if sys.argv[2] == "none" else float(sys.argv[2]))
cfg = dataclasses.replace(elastic_net.NEUROX, epochs=1, batch_size=512)
stages = {}
base = peak_mb()
results, details = run_probing(open_store(path, check_values=False), "prop", cfg, seed=0, seeds=1,
                               memory_budget_gb=budget, per_neuron=False,
                               progress=lambda s: stages.__setitem__(s, peak_mb()))
print(json.dumps({"peak_mb": peak_mb(), "imports_mb": base, "streamed": details["streamed"],
                  "peak_before_stage_mb": stages, "timings_s": details["timings_s"],
                  "oracle": results["oracle"]["accuracy"]}))
""" % (os.path.dirname(os.path.abspath(__file__)),)


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    return env


def _python(code, *args):
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed_memory")
    out = {}
    for name, n in ROWS.items():
        out[name] = str(root / name)
        _python(_BUILD, out[name], n)
    return out


def _run(store, budget):
    return json.loads(_python(_RUN, store, "none" if budget is None else budget)
                      .strip().splitlines()[-1])


@pytest.mark.slow
def test_streamed_peak_rss_does_not_grow_with_the_store(stores):
    mb = {k: 4 * n * sum(DIMS) / 2 ** 20 for k, n in ROWS.items()}
    assert min(mb.values()) >= 2 * BUDGET_GB * 1024
    small, large = _run(stores["small"], BUDGET_GB), _run(stores["large"], BUDGET_GB)
    in_memory = _run(stores["large"], None)
    report = json.dumps({"store_mb": mb, "small": small, "large": large,
                         "in_memory": in_memory}, indent=1)
    print(f"peak RSS (MB): streamed {small['peak_mb']:.0f} for a {mb['small']:.0f} MB store, "
          f"{large['peak_mb']:.0f} for {mb['large']:.0f} MB (budget {1024 * BUDGET_GB:.0f} MB); "
          f"in memory {in_memory['peak_mb']:.0f} for {mb['large']:.0f} MB")
    assert small["streamed"] and large["streamed"] and not in_memory["streamed"], report
    # the measurement sees a store held in memory ...
    assert in_memory["peak_mb"] - large["peak_mb"] >= 0.9 * mb["large"], report
    # ... and the streamed peak does not follow the store's size
    assert large["peak_mb"] - small["peak_mb"] < 0.25 * (mb["large"] - mb["small"]), report
