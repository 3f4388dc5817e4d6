"""Dev tool: feed bad input to the CLIs and classify what each does.

    python -m tools.bad_input_sweep [--only=SUBSTRING] [--timeout=90] [--keep] [--json=FILE]

Makes tiny artefacts in a temp folder (a random tiny CNN encoder, a few wavs, manifests, a
planted store, a tiny Hugging Face wav2vec2 directory), runs each case as a subprocess, and
classifies the outcome:

  clear      the expected outcome: for bad input a non-zero exit with at most 3 stderr lines,
             no 'Traceback', naming the culprit; for input that should work (or be a named skip)
             exit 0 and the culprit named in the output
  unclear    non-zero exit without a traceback, but longer or not naming the culprit
  traceback  a Python traceback on stderr
  silent     exit 0 on bad input (or a wrong exit / no mention where a success was expected)
  hang       ran past the timeout

A case that leaves a finished-looking output behind (``meta.json``, ``results.json``, ...) on
an error is marked ``left``. Not a test: it prints the counts and a table.
"""
from __future__ import annotations

import csv
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

FLAGS = flags.FLAGS
flags.DEFINE_string("only", "", "Run only the cases whose name contains this.")
flags.DEFINE_float("timeout", 90, "Seconds a case may run (a case may set its own).")
flags.DEFINE_bool("keep", False, "Keep the temp folder of artefacts.")
flags.DEFINE_string("json", None, "Also write the results here.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Case:
    name: str
    module: str
    args: list
    culprit: tuple            # all of these must appear (case-insensitive)
    expect: str = "error"     # error | ok (exit 0, culprit named in the output)
    prepare: object = None    # callable run before the case
    leaves: tuple = ()        # paths that must not exist after an error
    timeout: float | None = None


# ----------------------------------------------------------------------------- artefacts
def _wav(path, seconds=0.6, sr=16000, seed=0, freq=220.0):
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), sr)


def _write_csv(path, rows, cols=None):
    cols = cols or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, "") for c in cols] if isinstance(r, dict) else r)


def _edit_meta(store_dir, fn):
    p = os.path.join(store_dir, "meta.json")
    m = json.load(open(p))
    fn(m)
    json.dump(m, open(p, "w"))


def make_artefacts(d):
    from speechinterp import checkpoint, synthetic
    from speechinterp.encoders.cnn import CNNEncoder

    a = {"dir": d}
    enc = CNNEncoder.from_preset("tiny", seed=0)
    a["enc"] = os.path.join(d, "cnn_tiny")
    checkpoint.save_encoder(a["enc"], enc)
    a["layers"] = list(enc.layer_names)
    wavs = os.path.join(d, "wavs")
    os.makedirs(wavs)
    rows = []
    for i in range(12):
        p = os.path.join(wavs, f"w{i:02d}.wav")
        _wav(p, seed=i, freq=150 + 20 * i)
        rows.append({"utt_id": f"u{i:02d}", "path": p, "speaker": f"s{i % 4}",
                     "gender": "f" if i % 2 else "m", "split": ["train", "dev", "test"][i % 3]})
    a["rows"] = rows
    a["manifest"] = os.path.join(d, "good.csv")
    _write_csv(a["manifest"], rows)
    # folder corpus: root/<label>/<speaker>/*.wav
    a["folders"] = os.path.join(d, "folders")
    for lab in ("calm", "angry"):
        for s in range(3):
            sd = os.path.join(a["folders"], lab, f"spk{s}")
            os.makedirs(sd)
            for j in range(2):
                _wav(os.path.join(sd, f"{j}.wav"), seconds=0.2, seed=s * 7 + j)
    a["store"] = os.path.join(d, "planted")
    synthetic.planted_store(a["store"], num_utterances=120, num_speakers=12, dims=(8, 12),
                            signal_layer=1, signal_neurons=(1, 2), num_classes=2)
    # masks npz
    keep = np.ones(64, np.float32)
    np.savez(os.path.join(d, "mask_unknown.npz"), layer_99=keep)
    a["mask_unknown"] = os.path.join(d, "mask_unknown.npz")
    return a


def make_hf_source(d):
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = T.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2),
                           conv_stride=(5, 2, 2), num_conv_pos_embedding_groups=4,
                           num_conv_pos_embeddings=8)
    p = os.path.join(d, "hf_w2v")
    T.Wav2Vec2Model(cfg).eval().save_pretrained(p)
    return p


def copy_store(a, name, edit=None):
    dst = os.path.join(a["dir"], name)
    shutil.copytree(a["store"], dst)
    if edit:
        edit(dst)
    return dst


# ----------------------------------------------------------------------------- cases
def cases(a) -> list[Case]:
    d, enc, man = a["dir"], a["enc"], a["manifest"]
    P = "experiments.probe"
    X = "experiments.extract"
    I = "experiments.import_corpus"
    C = "experiments.convert"
    out = lambda n: os.path.join(d, "out", n)
    ext = lambda n, *more, m=man: [f"--encoder={enc}", f"--manifest={m}", f"--out={out(n)}",
                                   "--chunk_size=4", *more]
    cs: list[Case] = []

    # -- non-finite values in a store
    def nan_store(n, value, row, layer=1):
        def f():
            s = copy_store(a, n)
            arr = np.load(os.path.join(s, f"layer_{layer}.npy"))
            arr[row, 3] = value
            np.save(os.path.join(s, f"layer_{layer}.npy"), arr)
        return f
    for n, v, row in [("nan", np.nan, 57), ("inf", np.inf, 3)]:
        cs.append(Case(f"probe: {n} cell in a store layer", P,
                       [f"--store={os.path.join(d, n)}", "--task=prop", f"--out={out(n)}"],
                       ("layer_1", str(row)), prepare=nan_store(n, v, row),
                       leaves=(os.path.join(out(n), "prop", "results.json"),)))

    # -- utterances.csv contents
    def csv_edit(n, fn):
        def f():
            s = copy_store(a, n)
            p = os.path.join(s, "utterances.csv")
            lines = open(p).read().splitlines()
            fn(lines)
            open(p, "w").write("\n".join(lines) + "\n")
        return f

    def add_split(lines, typo_at=None):
        lines[0] += ",split"
        for i in range(1, len(lines)):
            lines[i] += "," + ("tset" if i == typo_at else ["train", "dev", "test"][i % 3])
    cs.append(Case("probe: one split typo in utterances.csv", P,
                   [f"--store={os.path.join(d, 'split_typo')}", "--task=prop",
                    f"--out={out('split_typo')}"], ("utterances.csv", "tset", "42"),
                   prepare=csv_edit("split_typo", lambda L: add_split(L, typo_at=41)),
                   leaves=(os.path.join(out("split_typo"), "prop", "results.json"),)))

    def extra_field(lines):
        lines[10] += ",c9"
    cs.append(Case("probe: a row with an extra field", P,
                   [f"--store={os.path.join(d, 'extra_field')}", "--task=prop",
                    f"--out={out('extra_field')}"], ("utterances.csv", "11"),
                   prepare=csv_edit("extra_field", extra_field),
                   leaves=(os.path.join(out("extra_field"), "prop", "results.json"),)))
    cs.append(Case("probe: repeated utt_id in utterances.csv", P,
                   [f"--store={os.path.join(d, 'dup_store')}", "--task=prop",
                    f"--out={out('dup_store')}"], ("u00001",),
                   prepare=csv_edit("dup_store", lambda L: L.__setitem__(
                       3, L[3].replace("u00002", "u00001"))),
                   leaves=(os.path.join(out("dup_store"), "prop", "results.json"),)))

    # -- store corruptions
    def meta_edit(n, fn):
        return lambda: copy_store(a, n, lambda s: _edit_meta(s, fn))
    cs.append(Case("probe: meta layer without dim", P,
                   [f"--store={os.path.join(d, 'nodim')}", "--task=prop", f"--out={out('nodim')}"],
                   ("dim",), prepare=meta_edit("nodim", lambda m: m["layers"][0].pop("dim"))))
    cs.append(Case("probe: meta dtype disagrees with files", P,
                   [f"--store={os.path.join(d, 'dtype')}", "--task=prop", f"--out={out('dtype')}"],
                   ("float16",), prepare=meta_edit("dtype", lambda m: m.update(dtype="float16"))))
    cs.append(Case("probe: missing store", P,
                   [f"--store={os.path.join(d, 'nostore')}", "--task=prop", f"--out={out('x')}"],
                   ("nostore",)))
    cs.append(Case("probe: unknown task column", P,
                   [f"--store={a['store']}", "--task=gendr", f"--out={out('gendr')}"],
                   ("gendr",)))
    # -- output folders (other agent's class)
    def make_file():
        open(os.path.join(d, "afile"), "w").write("x")
    cs.append(Case("probe: --out is a file", P,
                   [f"--store={a['store']}", "--task=prop", f"--out={os.path.join(d, 'afile')}"],
                   ("afile",), prepare=make_file))
    # -- flag values
    for flag in ("--seeds=0", "--search_stride=0", "--delta=-1"):
        cs.append(Case(f"probe: {flag}", P, [f"--store={a['store']}", "--task=prop",
                                            f"--out={out('flag')}", flag],
                       (flag[2:].split("=")[0],)))
    for flag in ("--chunk_size=0", "--chunk_size=-3", "--batch_size=0"):
        n = "x" + flag.strip("-").replace("=", "").replace("-", "m")
        cs.append(Case(f"extract: {flag}", X, ext(n, flag), (flag[2:].split("=")[0],),
                       timeout=60, leaves=(os.path.join(out(n), "meta.json"),)))

    # -- manifests given to extract
    def bad_manifest(n, fn):
        p = os.path.join(d, f"{n}.csv")

        def f():
            rows = [dict(r) for r in a["rows"]]
            lines = fn(rows)
            if lines is None:
                _write_csv(p, rows)
            else:
                open(p, "w").write("\n".join(lines) + "\n")
        return p, f

    p, f = bad_manifest("dup_ids", lambda rows: rows[9].update(utt_id="u02"))
    cs.append(Case("extract: repeated utt_id in the manifest", X, ext("dup", m=p),
                   ("u02", "dup_ids.csv"), prepare=f,
                   leaves=(os.path.join(out("dup"), "meta.json"),)))
    p, f = bad_manifest("split_typo_m", lambda rows: rows[7].update(split="tets"))
    cs.append(Case("extract: split typo in the manifest", X, ext("styp", m=p),
                   ("tets", "split_typo_m.csv"), prepare=f,
                   leaves=(os.path.join(out("styp"), "meta.json"),)))

    def extra(rows):
        cols = list(rows[0])
        lines = [",".join(cols)] + [",".join(r[c] for c in cols) for r in rows]
        lines[5] += ",extra"
        return lines
    p, f = bad_manifest("extra_m", extra)
    cs.append(Case("extract: manifest row with an extra field", X, ext("xtra", m=p),
                   ("extra_m.csv", "6"), prepare=f,
                   leaves=(os.path.join(out("xtra"), "meta.json"),)))
    cs.append(Case("extract: missing manifest", X, ext("nom", m=os.path.join(d, "nope.csv")),
                   ("nope.csv",)))
    cs.append(Case("extract: missing encoder", X,
                   [f"--encoder={os.path.join(d, 'noenc')}", f"--manifest={man}",
                    f"--out={out('noenc')}"], ("noenc",)))

    # -- absurd audio header: a named skip, the other rows kept
    def four_hz():
        import soundfile as sf
        rows = [dict(r) for r in a["rows"]]
        bad = os.path.join(d, "four_hz.wav")
        sf.write(bad, 0.1 * np.random.default_rng(0).standard_normal(20000), 4,
                 subtype="PCM_16")   # 40 KB that say 4 Hz: 5,000 s
        rows[4]["path"] = bad
        _write_csv(os.path.join(d, "four_hz.csv"), rows)
    cs.append(Case("extract: wav header says 4 Hz (a named skip)", X,
                   ext("fourhz", m=os.path.join(d, "four_hz.csv")), ("four_hz.wav",),
                   expect="ok", prepare=four_hz, timeout=120))

    # -- masks
    cs.append(Case("extract: mask for an unknown layer", X,
                   ext("mask_unknown", f"--masks={a['mask_unknown']}"), ("layer_99", "cnn"),
                   leaves=(os.path.join(out("mask_unknown"), "meta.json"),)))

    def masks_then_other():
        from speechinterp import encoders
        e = encoders.load(enc)
        name = e.layer_names[-1]
        from speechinterp.extract import layer_dims
        dim = layer_dims(e)[-1]
        np.savez(os.path.join(d, "mask_a.npz"), **{name: np.ones(dim, np.float32)})
        z = np.ones(dim, np.float32)
        z[: dim // 2] = 0
        np.savez(os.path.join(d, "mask_b.npz"), **{name: z})
        r = subprocess.run([sys.executable, "-m", X, *ext("masks_ab",
                            f"--masks={os.path.join(d, 'mask_a.npz')}")], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    cs.append(Case("extract: other masks into an existing store", X,
                   ext("masks_ab", f"--masks={os.path.join(d, 'mask_b.npz')}"), ("mask",),
                   prepare=masks_then_other, timeout=180))

    # -- import_corpus
    io = lambda n: os.path.join(d, "imp", f"{n}.csv")
    cs.append(Case("import_corpus: --format=folder (singular)", I,
                   ["--format=folder", f"--root={a['folders']}", f"--out={io('folder')}",
                    "--speaker_level=1"], ("utterances",), expect="ok"))
    cs.append(Case("import_corpus: folders without speakers (says so)", I,
                   ["--format=folders", f"--root={a['folders']}", f"--out={io('nospk')}"],
                   ("split is by utterance",), expect="ok"))
    for fr in ("-0.2,0.6,0.6", "0,0,0", "0.8,0.1"):
        cs.append(Case(f"import_corpus: --fractions={fr}", I,
                       ["--format=folders", f"--root={a['folders']}", f"--out={io('fr')}",
                        f"--fractions={fr}"], ("fractions",), leaves=(io("fr"),)))
    cs.append(Case("import_corpus: --speaker_level=-1", I,
                   ["--format=folders", f"--root={a['folders']}", f"--out={io('sl')}",
                    "--speaker_level=-1"], ("speaker_level",), leaves=(io("sl"),)))
    p, f = bad_manifest("imp_typo", lambda rows: rows[3].update(split="trian"))
    cs.append(Case("import_corpus: manifest split typo", I,
                   ["--format=manifest", f"--root={p}", f"--out={io('typo')}"],
                   ("trian", "imp_typo.csv"), prepare=f, leaves=(io("typo"),)))
    p2, f2 = bad_manifest("imp_dup", lambda rows: rows[5].update(utt_id="u01"))
    cs.append(Case("import_corpus: manifest repeated utt_id", I,
                   ["--format=manifest", f"--root={p2}", f"--out={io('dup')}"],
                   ("u01",), prepare=f2, leaves=(io("dup"),)))
    p3, f3 = bad_manifest("imp_extra", extra)
    cs.append(Case("import_corpus: manifest extra field", I,
                   ["--format=manifest", f"--root={p3}", f"--out={io('extra')}"],
                   ("imp_extra.csv", "6"), prepare=f3, leaves=(io("extra"),)))

    # -- convert (other agent's classes)
    hf = lambda: a.setdefault("hf", make_hf_source(d))
    cs.append(Case("convert: misspelt --option", C,
                   ["--source=HF", f"--out={out('conv_opt')}", "--option=normalise=true"],
                   ("normalise",), prepare=hf, leaves=(os.path.join(out("conv_opt"), "config.json"),)))

    def other_encoder():
        hf()
        shutil.copytree(enc, os.path.join(d, "enc_copy"))
    cs.append(Case("convert: --out is another model's encoder", C,
                   ["--source=HF", f"--out={os.path.join(d, 'enc_copy')}"], ("enc_copy",),
                   prepare=other_encoder))
    cs.append(Case("convert: --out is a store", C,
                   ["--source=HF", f"--out={os.path.join(d, 'conv_store')}"], ("conv_store",),
                   prepare=lambda: (hf(), copy_store(a, "conv_store"))))
    cs.append(Case("convert: missing source", C,
                   [f"--source={os.path.join(d, 'nosrc')}", f"--out={out('nosrc')}"], ("nosrc",)))
    cs.append(Case("train_encoder: --batch_size=0", "experiments.train_encoder",
                   [f"--manifest={man}", "--property=gender", f"--out={out('te')}",
                    "--preset=tiny", "--batch_size=0", "--epochs=1"], ("batch_size",),
                   timeout=120))
    return cs


# ----------------------------------------------------------------------------- running
def classify(case: Case, rc, stdout, stderr, timed_out, left) -> str:
    if timed_out:
        return "hang"
    text = (stdout + "\n" + stderr).lower()
    named = all(c.lower() in text for c in case.culprit)
    if case.expect == "ok":
        if rc == 0 and named:
            return "clear"
        if "Traceback" in stderr:
            return "traceback"
        return "silent" if rc == 0 else "unclear"
    if "Traceback" in stderr:
        return "traceback"
    if rc == 0:
        return "silent"
    lines = [l for l in stderr.splitlines() if l.strip()]
    err_named = all(c.lower() in stderr.lower() for c in case.culprit)
    return "clear" if len(lines) <= 3 and err_named and not left else "unclear"


def run_case(case: Case, a, timeout) -> dict:
    args = [x.replace("--source=HF", f"--source={a.get('hf', '')}") for x in case.args]
    t0 = time.time()
    try:
        if case.prepare:
            case.prepare()
        args = [x.replace("--source=HF", f"--source={a.get('hf', '')}") for x in case.args]
    except Exception as e:  # a broken case, not a finding
        return dict(name=case.name, outcome="setup-failed", rc=None, seconds=0,
                    first=f"{type(e).__name__}: {e}"[:200], left=False)
    try:
        r = subprocess.run([sys.executable, "-m", case.module, *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=case.timeout or timeout)
        rc, so, se, to = r.returncode, r.stdout, r.stderr, False
    except subprocess.TimeoutExpired as e:
        rc, to = None, True
        so = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        se = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    left = case.expect == "error" and any(os.path.exists(p) for p in case.leaves)
    outcome = classify(case, rc, so, se, to, left)
    lines = [l for l in se.splitlines() if l.strip()]
    first = (lines[-1] if lines else (so.strip().splitlines() or [""])[-1])[:160]
    return dict(name=case.name, outcome=outcome, rc=rc, seconds=round(time.time() - t0, 1),
                first=first, left=left, stderr_lines=len(lines))


def main(argv):
    del argv
    d = tempfile.mkdtemp(prefix="bad_input_sweep_")
    try:
        a = make_artefacts(d)
        todo = [c for c in cases(a) if FLAGS.only in c.name]
        results = []
        for c in todo:
            res = run_case(c, a, FLAGS.timeout)
            results.append(res)
            print(f"{res['outcome']:10s} {res['seconds']:6.1f}s  {c.name}", flush=True)
    finally:
        if not FLAGS.keep:
            shutil.rmtree(d, ignore_errors=True)
    kinds = ["clear", "unclear", "traceback", "silent", "hang", "setup-failed"]
    counts = {k: sum(r["outcome"] == k for r in results) for k in kinds}
    print(f"\n{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    print("\n| case | outcome | exit | stderr lines | last line |\n| --- | --- | --- | --- | --- |")
    for r in results:
        last = r["first"].replace("|", "\\|")
        print(f"| {r['name']} | {r['outcome']}{' (left output)' if r['left'] else ''} | "
              f"{r['rc']} | {r.get('stderr_lines', '')} | {last} |")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"counts": counts, "results": results}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
