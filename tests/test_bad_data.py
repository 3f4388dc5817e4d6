"""Bad data through the CLIs as a user feeds it (issue 16): a non-zero exit whose message names
the culprit and leaves no finished-looking output, or a named skip; never a silent wrong
answer."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechinterp import checkpoint, store, synthetic
from speechinterp.encoders.cnn import CNNEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def failed(r, *culprits):
    """A non-zero exit, no traceback, every culprit named on stderr."""
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    for c in culprits:
        assert c in r.stderr, (c, r.stderr[-2000:])


# ----------------------------------------------------------------------------- stores -> probe
@pytest.fixture
def planted(tmp_path):
    d = str(tmp_path / "store")
    synthetic.planted_store(d, num_utterances=90, num_speakers=9, dims=(6, 8),
                            signal_layer=1, signal_neurons=(1, 2), num_classes=2)
    return d


def edit_csv(d, fn):
    p = os.path.join(d, "utterances.csv")
    lines = open(p).read().splitlines()
    fn(lines)
    open(p, "w").write("\n".join(lines) + "\n")


def with_split(lines, typo_line=None):
    lines[0] += ",split"
    for i in range(1, len(lines)):
        lines[i] += "," + ("tset" if i + 1 == typo_line else ["train", "dev", "test"][i % 3])


def break_store(d, how):
    if how == "nan":
        a = np.load(os.path.join(d, "layer_1.npy"))
        a[57, 3] = np.nan
        a[80, 0] = np.inf
        np.save(os.path.join(d, "layer_1.npy"), a)
        return ["layer_1.npy", "2 cell(s) in 2 row(s)", "first at row 57", "u00057"]
    if how == "split_typo":
        edit_csv(d, lambda lines: with_split(lines, typo_line=42))
        return ["utterances.csv", "line 42", "'tset'"]
    if how == "extra_field":
        edit_csv(d, lambda lines: lines.__setitem__(10, lines[10] + ",c9"))
        return ["utterances.csv:11", "5 fields, the header has 4"]
    m = json.load(open(os.path.join(d, "meta.json")))
    if how == "no_dim":
        del m["layers"][0]["dim"]
        culprit = ["meta.json", "layers[0] ('layer_0') lacks 'dim'"]
    else:
        m["dtype"] = "float16"
        culprit = ["layer_0.npy has dtype float32 but meta.json says float16"]
    json.dump(m, open(os.path.join(d, "meta.json"), "w"))
    return culprit


@pytest.mark.parametrize("how", ["nan", "split_typo", "extra_field", "no_dim", "dtype"])
def test_probe_refuses_a_broken_store(planted, tmp_path, how):
    culprits = break_store(planted, how)
    out = str(tmp_path / "probe")
    r = run("experiments.probe", f"--store={planted}", "--task=prop", f"--out={out}")
    failed(r, *culprits)
    assert not os.path.exists(os.path.join(out, "prop", "results.json"))


def test_an_empty_split_column_is_no_split(planted):
    edit_csv(planted, lambda lines: [lines.__setitem__(i, lines[i] + ",") if i else
                                     lines.__setitem__(0, lines[0] + ",split")
                                     for i in range(len(lines))])
    from speechinterp.probes.data import prepare_task
    data = prepare_task(store.open_store(planted), "prop")
    assert set(np.unique(data.split)) == {0, 1, 2}


# ----------------------------------------------------------------------------- extract
@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("enc") / "cnn_tiny")
    checkpoint.save_encoder(d, CNNEncoder.from_preset("tiny", seed=0))
    return d


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        p = str(d / f"w{i}.wav")
        t = np.arange(8000) / 16000
        sf.write(p, (0.3 * np.sin(2 * np.pi * (150 + 30 * i) * t)
                     + 0.05 * rng.standard_normal(t.size)).astype(np.float32), 16000)
        out.append(p)
    return out


def write_manifest(path, wavs, edit=None, lines_edit=None):
    rows = [{"utt_id": f"u{i}", "path": p, "speaker": f"s{i % 4}", "gender": "mf"[i % 2],
             "split": ["train", "dev", "test"][i % 3]} for i, p in enumerate(wavs)]
    if edit:
        edit(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if lines_edit:
        lines = open(path).read().splitlines()
        lines_edit(lines)
        open(path, "w").write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("flag", ["--chunk_size=0", "--chunk_size=-2", "--batch_size=0",
                                  "--min_seconds=-1"])
def test_extract_flags_that_cannot_work(tmp_path, encoder_dir, wavs, flag):
    m = write_manifest(str(tmp_path / "m.csv"), wavs)
    out = str(tmp_path / "store")
    r = run("experiments.extract", f"--encoder={encoder_dir}", f"--manifest={m}", f"--out={out}",
            flag)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert flag[2:].split("=")[0] in r.stderr
    assert not os.path.exists(out)


@pytest.mark.parametrize("case", ["dup", "split_typo", "extra_field", "empty_path"])
def test_extract_checks_the_manifest_before_any_work(tmp_path, encoder_dir, wavs, case):
    m = str(tmp_path / "m.csv")
    if case == "dup":
        write_manifest(m, wavs, edit=lambda rows: rows[6].update(utt_id="u2"))
        culprits = ["m.csv", "utt_id 'u2' repeats (lines 4 and 8)"]
    elif case == "split_typo":
        write_manifest(m, wavs, edit=lambda rows: rows[4].update(split="tets"))
        culprits = ["m.csv", "line 6: 'tets'"]
    elif case == "extra_field":
        write_manifest(m, wavs, lines_edit=lambda lines: lines.__setitem__(3, lines[3] + ",x"))
        culprits = ["m.csv:4", "6 fields, the header has 5"]
    else:
        write_manifest(m, wavs, edit=lambda rows: rows[1].update(path=""))
        culprits = ["m.csv", "line 3: empty path"]
    out = str(tmp_path / "store")
    r = run("experiments.extract", f"--encoder={encoder_dir}", f"--manifest={m}", f"--out={out}")
    failed(r, *culprits)
    assert not os.path.exists(out)


def test_extract_absurd_audio_is_a_named_skip(tmp_path, encoder_dir, wavs):
    """A 40 KB wav whose header says 4 Hz, and audio whose encoder output overflows to NaN/inf:
    each a named skip in skipped.csv, the other rows of their chunk kept, the store finite."""
    four_hz, loud = str(tmp_path / "four_hz.wav"), str(tmp_path / "loud.wav")
    sf.write(four_hz, 0.1 * np.random.default_rng(0).standard_normal(20000), 4, subtype="PCM_16")
    sf.write(loud, np.full(8000, 3e38, np.float32) * np.sign(np.sin(np.arange(8000))),
             16000, subtype="FLOAT")
    m = write_manifest(str(tmp_path / "m.csv"), wavs,
                       edit=lambda rows: (rows[2].update(path=four_hz),
                                          rows[5].update(path=loud)))
    out = str(tmp_path / "store")
    r = run("experiments.extract", f"--encoder={encoder_dir}", f"--manifest={m}", f"--out={out}",
            "--chunk_size=4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "four_hz.wav: implausible sample rate 4 Hz" in r.stdout
    assert "loud.wav: the encoder's output is non-finite" in r.stdout
    s = store.open_store(out)
    assert s.column("utt_id") == ["u0", "u1", "u3", "u4", "u6", "u7"]
    with open(os.path.join(out, "skipped.csv"), newline="") as f:
        skipped = list(csv.DictReader(f))
    assert [x["utt_id"] for x in skipped] == ["u2", "u5"]
    assert "sample rate 4 Hz" in skipped[0]["reason"] and "non-finite" in skipped[1]["reason"]


def test_extract_masks_are_checked_and_part_of_the_digest(tmp_path, encoder_dir, wavs):
    from speechinterp import encoders
    from speechinterp.extract import layer_dims
    enc = encoders.load(encoder_dir)
    names, dims = enc.layer_names, layer_dims(enc)
    m = write_manifest(str(tmp_path / "m.csv"), wavs[:4])
    out = str(tmp_path / "store")
    args = [f"--encoder={encoder_dir}", f"--manifest={m}", f"--out={out}"]

    unknown = str(tmp_path / "unknown.npz")
    np.savez(unknown, layer_99=np.ones(4, np.float32), **{names[0]: np.ones(dims[0] + 1)})
    r = run("experiments.extract", *args, f"--masks={unknown}")
    failed(r, "unknown.npz", "['layer_99']", str(list(names)),
           f"'{names[0]}' has shape ({dims[0] + 1},), the layer has {dims[0]} neurons")
    assert not os.path.exists(os.path.join(out, "meta.json"))

    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    keep = np.ones(dims[-1], np.float32)
    np.savez(a, **{names[-1]: keep})
    keep[::2] = 0
    np.savez(b, **{names[-1]: keep})
    assert run("experiments.extract", *args, f"--masks={a}").returncode == 0
    assert json.load(open(os.path.join(out, "meta.json")))["inputs"]["masks"]
    r = run("experiments.extract", *args, f"--masks={b}")     # other masks: not the same store
    failed(r, "finished store of another inputs (masks)")
    r = run("experiments.extract", *args)                     # no masks: not the same either
    failed(r, "inputs (masks)")
    assert run("experiments.extract", *args, f"--masks={a}").returncode == 0   # the same: kept


# ----------------------------------------------------------------------------- import_corpus
@pytest.fixture
def folder_corpus(tmp_path, wavs):
    import shutil
    root = tmp_path / "corpus"
    for i, w in enumerate(wavs):
        d = root / ("calm" if i % 2 else "angry") / f"spk{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(w, d / f"{i}.wav")
    return str(root)


def test_import_folder_alias_and_no_speaker_warning(folder_corpus, tmp_path):
    out = str(tmp_path / "m.csv")
    r = run("experiments.import_corpus", "--format=folder", f"--root={folder_corpus}",
            f"--out={out}", "--speaker_level=1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8 utterances" in r.stdout and "warning" not in r.stderr
    r = run("experiments.import_corpus", "--format=folders", f"--root={folder_corpus}",
            f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning:" in r.stderr and "split is by utterance" in r.stderr


@pytest.mark.parametrize("flag", ["--fractions=-0.2,0.6,0.6", "--fractions=0,0,0",
                                  "--fractions=0.8,0.2", "--speaker_level=-1"])
def test_import_flags_that_cannot_work(folder_corpus, tmp_path, flag):
    out = str(tmp_path / "m.csv")
    r = run("experiments.import_corpus", "--format=folders", f"--root={folder_corpus}",
            f"--out={out}", flag)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert flag[2:].split("=")[0] in r.stderr
    assert not os.path.exists(out)


@pytest.mark.parametrize("case", ["typo", "partly_empty"])
def test_import_manifest_split_values(tmp_path, wavs, case):
    m = write_manifest(str(tmp_path / "in.csv"), wavs, edit=lambda rows: rows[3].update(
        split="trian" if case == "typo" else ""))
    out = str(tmp_path / "m.csv")
    r = run("experiments.import_corpus", "--format=manifest", f"--root={m}", f"--out={out}")
    failed(r, "in.csv", "line 5: 'trian'" if case == "typo" else "(lines 5)")
    assert not os.path.exists(out)
    r = run("experiments.import_corpus", "--format=manifest", f"--root={m}", f"--out={out}",
            "--resplit")
    assert r.returncode == 0, r.stderr[-2000:]
