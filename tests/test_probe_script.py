"""experiments.probe end to end: files written, missing labels skipped, clear task errors."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from speechinterp import store, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_probe(*args):
    return subprocess.run([sys.executable, "-m", "experiments.probe", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def store_with_gaps(tmp_path_factory):
    d = tmp_path_factory.mktemp("s")
    arrays, rows = synthetic.planted_arrays(num_utterances=400, num_speakers=20, dims=(8, 16),
                                            signal_layer=1, signal_neurons=(2, 5), strength=4.0)
    for i in range(0, 400, 10):
        rows[i]["prop"] = ""           # 40 missing labels
    for r in rows:
        r["constant"] = "x"            # a one-class task
    return str(store.write_store(str(d / "store"), "synthetic", ["a", "b"], arrays, rows).path)


def test_probe_script_writes_everything(store_with_gaps, tmp_path):
    out = str(tmp_path / "out")
    cache = tmp_path / "jax_cache"
    r = run_probe(f"--store={store_with_gaps}", "--task=prop", f"--out={out}", "--config=neurox",
                  f"--compilation_cache_dir={cache}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(cache.iterdir())        # the probe calls' executables, for the next run
    assert "skipped 40 utterances with an empty label" in r.stdout
    res = json.load(open(os.path.join(out, "prop", "results.json")))
    assert sum(res["split_sizes"].values()) == 360
    assert res["layers"][1]["accuracy"] > res["layers"][0]["accuracy"]
    for f in ("table.md", "details.json", "layerwise.png", "minimal_subset.png", "ablation.png"):
        assert os.path.getsize(os.path.join(out, "prop", f)) > 0
    assert "| b | 16 |" in open(os.path.join(out, "prop", "table.md")).read()


def test_one_class_task_and_unknown_column_are_clear_errors(store_with_gaps, tmp_path):
    out = str(tmp_path / "out")
    r = run_probe(f"--store={store_with_gaps}", "--task=constant,nope,prop", f"--out={out}",
                  "--config=neurox", "--noper_neuron")
    assert r.returncode != 0
    assert "task 'constant' has 1 class(es) ['x']" in r.stderr
    assert "no column 'nope'" in r.stderr
    assert os.path.exists(os.path.join(out, "prop", "results.json"))  # the rest went on


def test_split_without_a_class_is_a_clear_error(tmp_path):
    arrays, rows = synthetic.planted_arrays(num_utterances=60, num_speakers=6, dims=(4,),
                                            signal_layer=0, signal_neurons=(1,))
    for i, r in enumerate(rows):
        r["split"] = ["train", "dev", "test"][i % 3]
        r["lab"] = "a" if r["split"] == "dev" else ["a", "b"][i % 2]
    d = str(tmp_path / "s")
    store.write_store(d, "synthetic", ["x"], arrays, rows)
    r = run_probe(f"--store={d}", "--task=lab", f"--out={tmp_path / 'o'}")
    assert r.returncode != 0
    assert "the dev split has no examples of class(es) ['b']" in r.stderr


def test_inconsistent_store_fails_before_probing(store_with_gaps, tmp_path):
    import shutil
    bad = str(tmp_path / "bad")
    shutil.copytree(store_with_gaps, bad)
    np.save(os.path.join(bad, "layer_1.npy"), np.zeros((10, 16), np.float32))
    r = run_probe(f"--store={bad}", "--task=prop", f"--out={tmp_path / 'o'}")
    assert r.returncode != 0 and "layer_1.npy has 10 rows but utterances.csv has 400" in r.stderr


def test_two_process_probing_equals_one_process(tmp_path):
    """--distributed on two real processes (jax.distributed over localhost, gloo collectives):
    each process trains the probe groups of its own device, the predictions and the oracle's
    weights are gathered, and process 0 alone writes results equal to a one-process run."""
    import socket
    st = str(tmp_path / "store")
    synthetic.planted_store(st, num_utterances=400, num_speakers=20, dims=(16, 24, 20),
                            signal_layer=1, signal_neurons=(3, 7), strength=4.0)
    args = ["-m", "experiments.probe", f"--store={st}", "--task=prop", "--config=neurox",
            "--noper_neuron"]
    one = str(tmp_path / "one")
    r = subprocess.run([sys.executable, *args, f"--out={one}"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    two = str(tmp_path / "two")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, *args, f"--out={two}", "--distributed",
                               f"--coordinator_address=localhost:{port}", "--num_processes=2",
                               f"--process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    a = json.load(open(os.path.join(one, "prop", "results.json")))
    b = json.load(open(os.path.join(two, "prop", "results.json")))
    det = json.load(open(os.path.join(two, "prop", "details.json")))
    assert len(det["devices"]) == 2
    for x, y in zip(a["layers"] + [a["oracle"], a["minimal_subset"]],
                    b["layers"] + [b["oracle"], b["minimal_subset"]]):
        assert abs(x["accuracy"] - y["accuracy"]) < 1e-6, (x, y)
    assert a["ranking"] == b["ranking"]
