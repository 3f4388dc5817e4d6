"""The command-line layer (speechinterp/cli.py) as a user meets it: bad input through the scripts
gives one line naming the culprit, a non-zero exit, no traceback and no finished-looking output;
library log lines stay off the console; the ``speechinterp`` command runs this installation's
scripts from a folder holding its own ``experiments`` package, and refuses in one line another
``experiments`` package ahead of ours on ``PYTHONPATH``."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechinterp import checkpoint, cli, synthetic
from speechinterp.encoders.cnn import CNNEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = os.path.join(os.path.dirname(sys.executable), "speechinterp")


def run(module, *args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


def one_line_error(r, *names):
    """Non-zero exit, ``error: ...`` naming every one of ``names``, no traceback, no flag help."""
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "flags:" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3, r.stderr
    for n in names:
        assert n in r.stderr, (n, r.stderr)


def ge2e_source():
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None:   # a required reference (the test extra, .ci/install): fail, do not skip
        raise ImportError("tests/test_cli.py needs resemblyzer's pretrained.pt: run .ci/install")
    return os.path.join(os.path.dirname(spec.origin), "pretrained.pt")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("enc") / "cnn")
    enc = CNNEncoder.from_preset("tiny", seed=0, n_classes=2, classes=("a", "b"))
    checkpoint.save_encoder(d, enc)
    return d


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("st") / "store")
    synthetic.planted_store(d, num_utterances=120, num_speakers=12, dims=(4, 6),
                            signal_layer=1, signal_neurons=(1,), num_classes=2)
    return d


def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else None


# ----------------------------------------------------------------------------- the wrapper
def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path):
    script = ("import sys; import numpy as np; from speechinterp import cli\n"
              "def main(argv):\n"
              "    if sys.argv[-1] == 'user': raise cli.UserError('--thing=x: no such thing')\n"
              "    if sys.argv[-1] == 'ours': raise ValueError('layer 3: bad row 7')\n"
              "    np.zeros(2).reshape(3)   # a bug: numpy's own ValueError\n"
              "cli.run(main)\n")
    path = tmp_path / "tool.py"
    path.write_text(script)

    def go(*a):
        return subprocess.run([sys.executable, str(path), *a], capture_output=True, text=True,
                              cwd=ROOT)
    one_line_error(go("--", "user"), "error: --thing=x: no such thing")
    verbose = go("--verbose", "--", "user")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    bug = go("--", "bug")
    assert bug.returncode != 0 and "Traceback" in bug.stderr and "reshape" in bug.stderr
    # a plain ValueError raised by a `raise` in a file outside speechinterp/ and experiments/
    # is not one of our checks: it keeps its traceback
    assert "Traceback" in go("--", "ours").stderr


def test_is_expected_tells_our_checks_from_library_errors():
    try:
        raise ValueError("ours")            # a check of ours (this file is not ours: not it)
    except ValueError as e:
        assert not cli.is_expected(e)
    try:
        np.zeros(2).reshape(3)
    except ValueError as e:
        assert not cli.is_expected(e)
    from speechinterp.store import StoreError
    assert cli.is_expected(StoreError("x")) and cli.is_expected(cli.UserError("x"))
    assert cli.is_expected(FileNotFoundError(2, "No such file or directory", "/nope"))
    assert cli.message(KeyError("unknown format 'x'")) == "unknown format 'x'"


# ----------------------------------------------------------------------------- convert
def test_convert_misspelt_option_names_it_and_lists_the_valid_ones(tmp_path):
    src = tmp_path / "tiny.pth"
    src.write_bytes(b"not read: the option is checked first")
    out = tmp_path / "out"
    r = run("convert", f"--source={src}", f"--out={out}", "--format=torchcrepe",
            "--option=hop=160")
    one_line_error(r, "hop", "torchcrepe", "hop_length", "within_frame")
    assert not out.exists()
    r = run("convert", f"--source={src}", f"--out={out}", "--format=torchcrepe", "--option=x")
    one_line_error(r, "--option=x", "KEY=VALUE")


def test_convert_bad_sources_are_one_line(tmp_path):
    out = tmp_path / "out"
    one_line_error(run("convert", f"--source={tmp_path / 'nope.pt'}", f"--out={out}"),
                   "nope.pt")
    junk = tmp_path / "junk.pth"
    junk.write_text("garbage")
    one_line_error(run("convert", f"--source={junk}", f"--out={out}"), "junk.pth",
                   "no known checkpoint format")
    one_line_error(run("convert", f"--source={junk}", f"--out={out}", "--format=torchcrepe"),
                   "junk.pth", "not a torchcrepe checkpoint")
    one_line_error(run("convert", f"--source={ge2e_source()}", f"--out={out}",
                       "--format=tf_dialect_cnn"), "pretrained.pt", "resemblyzer_ge2e")
    assert not out.exists()


def test_convert_refuses_an_out_holding_something_else(tmp_path, tiny_encoder, tiny_store):
    src = ge2e_source()
    # another model's encoder (trained here, no source): refused before any work, untouched
    other = str(tmp_path / "other")
    shutil.copytree(tiny_encoder, other)
    before = open(os.path.join(other, "config.json")).read()
    one_line_error(run("convert", f"--source={src}", f"--out={other}"), other, "cnn encoder",
                   "--overwrite")
    assert open(os.path.join(other, "config.json")).read() == before
    # a store: refused, nothing merged into it
    store = str(tmp_path / "store")
    shutil.copytree(tiny_store, store)
    files = listing(store)
    one_line_error(run("convert", f"--source={src}", f"--out={store}"), store, "store")
    assert listing(store) == files
    # a file
    f = tmp_path / "file"
    f.write_text("mine")
    one_line_error(run("convert", f"--source={src}", f"--out={f}"), str(f), "a file")
    assert f.read_text() == "mine"
    # the same source again is fine; --overwrite replaces another artefact, leaving nothing
    # of the store behind; library INFO lines (orbax) stay off the console
    out = str(tmp_path / "ge2e")
    log = tmp_path / "convert.log"
    r = run("convert", f"--source={src}", f"--out={out}", f"--log_file={log}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [ln for ln in r.stderr.splitlines() if ln[:1] == "I" and ln[1:5].isdigit()]
    assert "wrote" in r.stdout and log.read_text().count("\n") > 3
    assert run("convert", f"--source={src}", f"--out={out}").returncode == 0
    r = run("convert", f"--source={src}", f"--out={store}", "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    assert listing(store) == ["config.json", "params"]
    assert json.load(open(os.path.join(store, "config.json")))["family"] == "ge2e"


# ----------------------------------------------------------------------------- masks
def test_extract_mask_for_an_unknown_layer_is_an_error(tmp_path, tiny_encoder):
    rng = np.random.default_rng(0)
    rows = ["utt_id,path"]
    for i in range(2):
        sf.write(tmp_path / f"u{i}.wav", 0.1 * rng.standard_normal(8000), 16000)
        rows.append(f"u{i},u{i}.wav")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "masks.npz", layer_9=np.zeros(8, np.float32))
    out = tmp_path / "store"
    r = subprocess.run([ENTRY, "extract", f"--encoder={tiny_encoder}",
                        f"--manifest={tmp_path / 'm.csv'}", f"--out={out}",
                        f"--masks={tmp_path / 'masks.npz'}"],
                       cwd=tmp_path, capture_output=True, text=True)
    one_line_error(r, "layer_9")
    assert not (out / "meta.json").exists()


# ----------------------------------------------------------------------------- probe
def test_probe_out_that_holds_something_else_fails_before_work(tmp_path, tiny_store,
                                                               tiny_encoder):
    f = tmp_path / "results"
    f.write_text("mine")
    r = run("probe", f"--store={tiny_store}", "--task=prop", f"--out={f}")
    one_line_error(r, str(f), "a file", "--overwrite")
    assert f.read_text() == "mine"
    files = listing(tiny_store)
    one_line_error(run("probe", f"--store={tiny_store}", "--task=prop", f"--out={tiny_store}"),
                   tiny_store, "store")
    assert listing(tiny_store) == files
    one_line_error(run("probe", f"--store={tiny_encoder}", "--task=prop",
                       f"--out={tmp_path / 'o'}"), tiny_encoder)
    assert not (tmp_path / "o" / "prop").exists()


def test_probe_prints_class_counts_beside_the_majority(tmp_path, tiny_store):
    out = tmp_path / "o"
    r = run("probe", f"--store={tiny_store}", "--task=prop", f"--out={out}", "--layerwise_only",
            "--config=neurox")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "prop" / "results.json").exists()
    line = next(ln for ln in r.stdout.splitlines() if "class counts per split" in ln)
    for split in ("train", "dev", "test"):
        assert re.search(rf"{split}: c0 \d+, c1 \d+", line), line
    assert sum(int(x) for x in re.findall(r"c\d (\d+)", line)) == 120   # every labelled row
    assert "training majority" in line


# ----------------------------------------------------------------------------- flag values
@pytest.mark.parametrize("module,args,flag", [
    ("probe", ["--task=prop", "--seeds=0"], "--seeds"),
    ("probe", ["--task=prop", "--delta=1.5"], "--delta"),
    ("probe", ["--task=prop", "--search_stride=-1"], "--search_stride"),
    ("train_encoder", ["--property=p", "--epochs=0"], "--epochs"),
    ("train_encoder", ["--property=p", "--batch_size=-4"], "--batch_size"),
    ("train_encoder", ["--property=p", "--crop_seconds=0"], "--crop_seconds"),
    ("train_encoder", ["--property=p", "--augment_noise=2"], "--augment_noise"),
    ("train_encoder", ["--property=p", "--filters=64,0"], "--filters"),
])
def test_flag_values_that_cannot_work(tmp_path, tiny_store, module, args, flag):
    out = tmp_path / "out"
    extra = ([f"--store={tiny_store}"] if module == "probe"
             else [f"--manifest={os.path.join(tiny_store, 'utterances.csv')}"])
    r = run(module, *extra, *args, f"--out={out}")
    assert r.returncode != 0 and flag in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- train_encoder
def test_train_encoder_bad_input_is_one_line(tmp_path, tiny_store, tiny_encoder):
    man = os.path.join(tiny_store, "utterances.csv")
    out = tmp_path / "out"
    one_line_error(run("train_encoder", f"--manifest={tmp_path / 'nope.csv'}", "--property=p",
                       f"--out={out}"), "nope.csv")
    one_line_error(run("train_encoder", f"--manifest={man}", "--property=accent",
                       f"--out={out}"), "'accent'")
    one_line_error(run("train_encoder", f"--manifest={man}", "--property=prop",
                       f"--out={tiny_encoder}"), tiny_encoder, "--overwrite")
    assert not out.exists()


def test_build_corpus_refuses_an_out_holding_something_else(tmp_path, tiny_store):
    files = listing(tiny_store)
    one_line_error(run("build_corpus", f"--out={tiny_store}", "--size=tiny"), tiny_store,
                   "store")
    assert listing(tiny_store) == files


# ----------------------------------------------------------------------------- entry point
def _their_experiments(tmp_path):
    """A project folder with its own ``experiments`` package (its probe prints THEIR PROBE)."""
    theirs = tmp_path / "experiments"
    theirs.mkdir()
    (theirs / "__init__.py").write_text("")
    (theirs / "probe.py").write_text("print('THEIR PROBE')\n")
    return theirs


def test_entry_point_runs_ours_from_a_folder_with_its_own_experiments_package(tmp_path,
                                                                               tiny_store):
    """``speechinterp probe`` from a project with its own experiments/: ours runs."""
    _their_experiments(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "experiments.probe"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert "THEIR PROBE" in r.stdout          # what `python -m` runs in such a folder
    out = tmp_path / "o"
    r = subprocess.run([ENTRY, "probe", f"--store={tiny_store}", "--task=prop", f"--out={out}",
                        "--layerwise_only", "--config=neurox"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "THEIR PROBE" not in r.stdout and (out / "prop" / "results.json").exists()
    r = subprocess.run([ENTRY, "prob"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'prob'" in r.stderr and "probe" in r.stderr
    r = subprocess.run([ENTRY, "convert", "--help"], capture_output=True, text=True)
    assert "--source: Checkpoint file" in r.stdout      # the command's own flags


def test_entry_point_refuses_another_experiments_package_first_on_the_path(tmp_path,
                                                                            tiny_store):
    """Another ``experiments`` ahead of ours on ``sys.path`` (PYTHONPATH): one line naming both
    folders and a non-zero exit; neither their script nor ours runs."""
    theirs = _their_experiments(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = tmp_path / "o"
    r = subprocess.run([ENTRY, "probe", f"--store={tiny_store}", "--task=prop", f"--out={out}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    one_line_error(r, str(theirs), cli.EXPERIMENTS_DIR, "PYTHONPATH")
    assert len(r.stderr.strip().splitlines()) == 1
    assert "THEIR PROBE" not in r.stdout and not out.exists()
