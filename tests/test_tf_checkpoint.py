"""TF checkpoint V2 reader (no TensorFlow) and the dialect-CNN converter.

The fixture under tests/fixtures/tf_cnn/ was made with REAL TensorFlow (tensorflow-cpu 2.21.0 in a
throwaway venv, not this project's) by tests/fixtures/tf_cnn/make_fixture.py: two tiny versions of
Shon et al.'s e2e_model graph (filters 8-8-8-16, FC 12-10, 3 classes; ``mean/`` as the original
with mean pooling, ``stats_bn/`` with statistics pooling and batch norm), saved by
``tf.compat.v1.train.Saver`` (V2 format), plus every variable's value and every layer's output on
two fixed waveforms (log-mel features from librosa) in ``outputs.npz``; ``tf2_object/`` holds
the ``mean`` variables written by TF2's object-based ``tf.train.Checkpoint``. Regenerate with
``/tmp/tfvenv/bin/python tests/fixtures/tf_cnn/make_fixture.py`` (then ``... make_fixture.py tf2``).
"""
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from speechinterp import convert
from speechinterp.convert.keys import CheckpointMismatchError
from speechinterp.convert.tf_checkpoint import (TFCheckpoint, TFCheckpointError, crc32c,
                                                mask_crc, parse_fields, read_varint)
from speechinterp.encoders.cnn import features

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "tf_cnn")
CONFIGS = ("mean", "stats_bn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_varint_and_fields():
    assert read_varint(bytes([0xAC, 0x02]), 0) == (300, 2)
    msg = bytes([0x08, 0x01, 0x12, 0x02, 0x10, 0x05, 0x35]) + (0x12345678).to_bytes(4, "little")
    assert list(parse_fields(msg)) == [(1, 0, 1), (2, 2, b"\x10\x05"), (6, 5, 0x12345678)]
    # CRC-32C check value of "123456789"
    assert crc32c(b"123456789") == 0xE3069283
    assert mask_crc(0) == 0xA282EAD8


@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_tensor_matches_tensorflow(cfg):
    ck = TFCheckpoint(os.path.join(FIX, cfg))
    ref = np.load(os.path.join(FIX, cfg, "outputs.npz"))
    names = sorted(k[4:] for k in ref.files if k.startswith("var/"))
    assert ck.names() == names
    for n in names:
        got = ck.read(n)
        assert got.dtype == ref[f"var/{n}"].dtype and got.shape == ref[f"var/{n}"].shape, n
        np.testing.assert_array_equal(got, ref[f"var/{n}"])
    assert int(ck.read("Variable")) == 1234


@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_layer_matches_tensorflow(cfg):
    path = os.path.join(FIX, cfg)
    assert convert.detect_format(path) == "tf_dialect_cnn"
    enc = convert.convert(path)
    ref = np.load(os.path.join(path, "outputs.npz"))
    inputs = np.load(os.path.join(FIX, "inputs.npz"))
    assert enc.config.pooling == ("stats" if cfg == "stats_bn" else "mean")
    assert enc.config.batch_norm == (cfg == "stats_bn")
    for u in range(2):
        w, f = inputs[f"wave{u}"], ref[f"feats{u}"]
        # front end vs the librosa features TF was fed
        feats, nfr = features(enc.config, jnp.asarray(w[None]), jnp.asarray([len(w)]))
        assert int(nfr[0]) == f.shape[0]
        assert np.abs(np.asarray(feats[0, :f.shape[0]]) - f).max() < 1e-4
        # network on TF's features, and end to end from the waveform
        runs = [enc.apply_features(enc.params, f[None], np.array([f.shape[0]])),
                enc.forward(enc.params, jnp.asarray(w[None]), jnp.asarray([len(w)]))]
        for outs, lens, logits in runs:
            for name, o, l in zip(enc.layer_names, outs, lens):
                r = ref[f"{name}_{u}"].reshape(-1, o.shape[-1])
                n = int(l[0])
                assert n == (r.shape[0] if name.startswith("fc") else
                             (f.shape[0] // (2 if name != "cnn1" else 1)))
                assert np.abs(np.asarray(o[0, :n]) - r[:n]).max() < 1e-4, (cfg, u, name)
            assert np.abs(np.asarray(logits[0]) - ref[f"logits_{u}"]).max() < 1e-4


def test_mismatched_checkpoint_lists_keys(tmp_path):
    # rename one variable in a copy of the index: the converter must name it
    src = os.path.join(FIX, "mean")
    dst = tmp_path / "ck"
    shutil.copytree(src, dst)
    with pytest.raises(CheckpointMismatchError) as err:
        convert.convert(str(dst), mapping="fc2b=fc2bias")
    msg = str(err.value)
    assert "missing (1): fc2b" in msg and "unexpected (1): fc2bias" in msg
    # a mis-shaped tensor (declared strides do not change shapes, so force an explicit pooling)
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        convert.convert(str(dst), pooling="stats")


def test_corrupt_data_is_detected(tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(os.path.join(FIX, "mean"), dst)
    data = dst / "model.ckpt-1234.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    ck = TFCheckpoint(str(dst))
    e = ck.entry("conv2W")
    raw[e.offset + 5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match="crc32c"):
        TFCheckpoint(str(dst)).read("conv2W")
    (dst / "model.ckpt-1234.index").write_bytes(b"not a table" * 10)
    with pytest.raises(TFCheckpointError, match="magic"):
        TFCheckpoint(str(dst))


def test_convert_script_roundtrip(tmp_path):
    from speechinterp.encoders import load

    out = tmp_path / "enc"
    subprocess.run([sys.executable, "-m", "experiments.convert",
                    f"--source={os.path.join(FIX, 'mean', 'model.ckpt-1234.index')}", f"--out={out}"],
                   check=True, cwd=ROOT, capture_output=True)
    enc = load(str(out))
    ref = np.load(os.path.join(FIX, "mean", "outputs.npz"))
    w = np.load(os.path.join(FIX, "inputs.npz"))["wave0"]
    hs = enc.hidden_states([w])
    assert [h.shape[-1] for h in hs] == [8, 8, 8, 16, 12, 10]
    np.testing.assert_allclose(np.asarray(hs[4][0, 0]), ref["fc1_0"].reshape(-1), atol=1e-4)


# Names and shapes listed by the index of Shon et al.'s released MGB-3 model
# (github.com/swshon/dialectID_e2e data/pretrained_model/model1284000.ckpt-1284000.index, read
# with TFCheckpoint; the data shard is not public in that repository).
RELEASED_MGB3 = {
    "Variable": (), "conv1W": (5, 40, 500), "conv1b": (500,), "conv2W": (7, 500, 500),
    "conv2b": (500,), "conv3W": (1, 500, 500), "conv3b": (500,), "conv4W": (1, 500, 3000),
    "conv4b": (3000,), "fc1W": (3000, 1500), "fc1b": (1500,), "fc2W": (1500, 600),
    "fc2b": (600,), "fc3W": (600, 5), "fc3b": (5,)}


def test_released_model_naming_gives_mgb3_preset():
    from speechinterp.convert.tf_dialect_cnn import IGNORED, expected_tf_shapes, infer_config
    from speechinterp.convert.keys import check_state_dict
    from speechinterp.encoders.cnn import preset_config

    state = {k: np.zeros(v, np.float32) for k, v in RELEASED_MGB3.items()}
    cfg = infer_config(state, pad_mode="reflect", vad="true", normalize="sliding_meanvar")
    check_state_dict(state, expected_tf_shapes(cfg), ignore=IGNORED)
    ref = preset_config("mgb3")
    for f in ("filters", "kernels", "strides", "pooling", "fc_dims", "n_classes", "n_features",
              "batch_norm"):
        assert getattr(cfg, f) == getattr(ref, f), f
    assert cfg.vad is True and cfg.pad_mode == "reflect"


def test_tf2_object_based_checkpoint():
    """``tf2_object/``: the ``mean`` variables written by TF2's ``tf.train.Checkpoint``."""
    path = os.path.join(FIX, "tf2_object")
    ck = TFCheckpoint(path)
    graph = ck.read("_CHECKPOINTABLE_OBJECT_GRAPH")  # a DT_STRING tensor, crc-checked
    assert graph.shape == () and len(graph.item()) > 100
    assert convert.detect_format(path) == "tf_dialect_cnn"
    ref = np.load(os.path.join(FIX, "mean", "outputs.npz"))
    for opts in ({}, {"prefix": "model/"}):
        enc = convert.convert(path, **opts)
        np.testing.assert_array_equal(enc.params["cnn2"]["kernel"], ref["var/conv2W"])
        np.testing.assert_array_equal(enc.params["classifier"]["bias"], ref["var/fc3b"])
