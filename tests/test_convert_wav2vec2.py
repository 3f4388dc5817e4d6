"""Conversion of Hugging Face directories and fairseq checkpoints of the wav2vec 2.0 family.

Sources are written here from tiny random transformers models: ``save_pretrained`` (safetensors,
sharded), a ``pytorch_model.bin`` with the older ``weight_g/weight_v`` naming, task models
(``*ForCTC``, ``*ForPreTraining``), and fairseq ``.pt`` files made with ``torch.save`` from the
same weights under fairseq's key names with a ``cfg`` dict, a pickled omegaconf ``DictConfig``,
an ``argparse.Namespace`` (old ``args``) or a fine-tuned ``w2v_args`` layout. Every conversion
must give the parameters of the direct conversion (hence the outputs verified against
transformers in test_wav2vec2.py); the command-line round trip and one fairseq file are also
compared with transformers' outputs layer by layer.
"""
import argparse
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _required(name):
    """A required reference (installed by .ci/install): missing, the tests fail, never skip."""
    from references import required
    return required(name, os.path.basename(__file__))


torch = _required("torch")
transformers = _required("transformers")

import w2v_helpers as H  # noqa: E402

from speechinterp import encoders  # noqa: E402
from speechinterp.checkpoint import sha256_of  # noqa: E402
from speechinterp.convert import convert, detect_format  # noqa: E402
from speechinterp.convert.huggingface_wav2vec2 import config_from_hf  # noqa: E402
from speechinterp.convert.keys import CheckpointMismatchError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def direct_params(model):
    return H.to_encoder(model.base_model if hasattr(model, "base_model") else model).params


def save_fairseq(path, model, name="wav2vec2", task=None, layout="cfg", extra_cfg=None):
    """``torch.save`` a fairseq-named checkpoint of ``model``'s weights."""
    cfg = config_from_hf(model.config.to_dict())
    state = {k: torch.from_numpy(v) for k, v in H.fairseq_state(H.state_numpy(model), cfg).items()}
    model_cfg = {**H.fairseq_model_cfg(cfg, name), **(extra_cfg or {})}
    task = task or {"normalize": False}
    if layout == "cfg":
        ckpt = {"cfg": {"model": model_cfg, "task": task}, "model": state}
    elif layout == "omegaconf":
        omegaconf = _required("omegaconf")
        ckpt = {"cfg": omegaconf.OmegaConf.create({"model": model_cfg, "task": task}),
                "model": state}
    elif layout == "args":
        fields = {k: v for k, v in model_cfg.items() if k != "_name"}
        ckpt = {"args": argparse.Namespace(arch=name, **fields, **task), "model": state}
    elif layout == "finetuned":
        state = {"w2v_encoder.w2v_model." + k: v for k, v in state.items()}
        state["w2v_encoder.proj.weight"] = torch.zeros(5, cfg.hidden_size)
        state["w2v_encoder.proj.bias"] = torch.zeros(5)
        ckpt = {"cfg": {"model": {"_name": "wav2vec_ctc",
                                  "w2v_args": {"model": model_cfg, "task": task}},
                        "task": {"normalize": task.get("normalize", False)}},
                "model": state, "optimizer_history": []}
    # the old-args layout is written in torch's legacy (pre-zip) format, as old fairseq files are
    torch.save(ckpt, path, _use_new_zipfile_serialization=layout != "args")
    return path


def test_cli_round_trip_matches_transformers(tmp_path):
    """``python -m experiments.convert`` on a save_pretrained directory with a feature extractor
    that normalises: config.json records it, and the loaded encoder, fed raw audio, matches HF
    fed the feature extractor's output, layer by layer."""
    model = H.make_hf("w2v_base")
    src = tmp_path / "hf"
    model.save_pretrained(src)
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    fe.save_pretrained(src)
    out = tmp_path / "enc"
    res = subprocess.run([sys.executable, "-m", "experiments.convert", f"--source={src}",
                          f"--out={out}"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.load(open(out / "config.json"))
    assert meta["family"] == "wav2vec2" and meta["normalize_waveform"] is True
    assert meta["source_sha256"] == sha256_of(str(src))
    assert meta["config"]["model_type"] == "wav2vec2" and meta["config"]["pos_conv_kernel"] == 8
    assert meta["layer_names"] == ["cnn", "layer_0", "layer_1", "layer_2"]
    enc = encoders.load(str(out))
    assert H.tree_allclose(enc.params, direct_params(model))
    ws = [3.0 * w + 0.5 for w in H.waves((3000, 2300), seed=1)]
    outs = enc.hidden_states(ws)
    for b, w in enumerate(ws):
        x = fe(w, sampling_rate=16000, return_tensors="np").input_values[0]
        diffs = H.max_layer_diffs(outs, H.hf_layers(model, x), row=b)
        assert max(diffs) < H.TOL, diffs


def test_sharded_safetensors_and_legacy_bin(tmp_path):
    model = H.make_hf("w2v_large")
    want = direct_params(model)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert os.path.exists(sharded / "model.safetensors.index.json")
    assert detect_format(str(sharded)) == "huggingface_wav2vec2"
    enc = convert(str(sharded))
    assert H.tree_allclose(enc.params, want)
    assert enc.normalize_waveform is True           # layer-norm extractor, no preprocessor config
    ws = H.waves((2900,), seed=2)
    x = (ws[0] - ws[0].mean()) / np.sqrt(ws[0].var() + 1e-7)   # HF zero_mean_unit_var_norm
    assert max(H.max_layer_diffs(enc.hidden_states(ws), H.hf_layers(model, x))) < H.TOL
    # pytorch_model.bin with the older weight_g / weight_v naming of the positional conv
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    model.config.to_json_file(legacy / "config.json")
    state = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v
             for k, v in model.state_dict().items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in state
    torch.save(state, legacy / "pytorch_model.bin")
    enc = convert(str(legacy), normalize="false")
    assert H.tree_allclose(enc.params, want) and enc.normalize_waveform is False


@pytest.mark.parametrize("name,head", [("w2v_base", "Wav2Vec2ForCTC"),
                                       ("w2v_large", "Wav2Vec2ForPreTraining"),
                                       ("hubert_bn", "HubertForCTC"),
                                       ("data2vec", "Data2VecAudioForCTC"),
                                       ("wavlm_large", "WavLMForCTC")])
def test_task_models_and_every_model_type(tmp_path, name, head):
    """Task-model directories: the base-model prefix is stripped and the heads ignored."""
    model = H.make_hf(name, model_cls=getattr(transformers, head), vocab_size=11)
    model.save_pretrained(tmp_path)
    assert detect_format(str(tmp_path)) == "huggingface_wav2vec2"
    enc = convert(str(tmp_path))
    assert H.tree_allclose(enc.params, direct_params(model))
    assert enc.family == ("wavlm" if name.startswith("wavlm") else "wav2vec2")
    assert enc.config.model_type == model.config.model_type


@pytest.mark.parametrize("name,layout,extra", [
    ("w2v_base", "cfg", {}),
    ("w2v_large", "omegaconf", {}),
    ("w2v_base_bias_odd", "args", {}),
    ("hubert_bn", "cfg", {"conv_pos_batch_norm": True}),
    ("w2v_large_nobias_even", "finetuned", {}),
    ("data2vec", "cfg", {"pos_conv_depth": 3, "conv_pos": 15}),   # kernel max(3, 15 // 3)
])
def test_fairseq_checkpoints(tmp_path, name, layout, extra):
    model = H.make_hf(name)
    fs_name = "hubert" if name.startswith("hubert") else "wav2vec2"
    normalize = name.startswith("w2v_large")
    path = save_fairseq(str(tmp_path / "model.pt"), model, fs_name,
                        {"normalize": normalize}, layout, extra)
    assert detect_format(path) == "fairseq_wav2vec2"
    enc = convert(path)
    assert enc.config.model_type == ("hubert" if fs_name == "hubert" else "wav2vec2")
    assert enc.normalize_waveform is normalize
    assert H.tree_allclose(enc.params, direct_params(model), atol=1e-7)
    if layout == "cfg" and name == "w2v_base":       # the fairseq check, end to end
        ws = H.waves((3100, 2500), seed=3)
        outs = enc.hidden_states(ws)
        for b, w in enumerate(ws):
            assert max(H.max_layer_diffs(outs, H.hf_layers(model, w), row=b)) < H.TOL


def test_conv_layers_expression_with_repeats(tmp_path):
    model = H.make_hf("w2v_large", conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3),
                      conv_stride=(5, 2, 2))
    path = save_fairseq(str(tmp_path / "m.pt"), model, extra_cfg={
        "conv_feature_layers": "[(16, 10, 5)] + [(16, 3, 2)] * 2"})
    enc = convert(path, format="fairseq_wav2vec2")
    assert enc.config.conv_kernel == (10, 3, 3)
    assert H.tree_allclose(enc.params, direct_params(model), atol=1e-7)


def test_mismatched_checkpoints_list_their_keys(tmp_path):
    model = H.make_hf("w2v_base")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["encoder.layers.1.final_layer_norm.bias"]
    state["encoder.layers.7.attention.q_proj.weight"] = torch.zeros(32, 32)
    state["feature_projection.projection.weight"] = torch.zeros(32, 17)
    model.config.to_json_file(tmp_path / "config.json")
    from safetensors.torch import save_file
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        convert(str(tmp_path))
    msg = str(err.value)
    for key in ("missing (1): encoder.layers.1.final_layer_norm.bias",
                "unexpected (1): encoder.layers.7.attention.q_proj.weight",
                "feature_projection.projection.weight: file (32, 17) vs expected (32, 16)"):
        assert key in msg, msg
    # fairseq: a missing and an unknown key
    fs = str(tmp_path / "bad.pt")
    save_fairseq(fs, model)
    ckpt = torch.load(fs, weights_only=False)
    del ckpt["model"]["encoder.layers.0.fc1.weight"]
    ckpt["model"]["encoder.extra.weight"] = torch.zeros(3)
    torch.save(ckpt, fs)
    with pytest.raises(CheckpointMismatchError) as err:
        convert(fs)
    assert "encoder.layers.0.fc1.weight" in str(err.value)
    assert "encoder.extra.weight" in str(err.value)


def test_unsupported_configs_are_refused(tmp_path):
    model = H.make_hf("w2v_base")
    model.config.add_adapter = True
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="add_adapter"):
        convert(str(tmp_path))
