"""WavLM port vs transformers 5.24's PyTorch ``WavLMModel`` (tiny random models, float32).

Both variants (group-norm feature encoder + post-LN; layer-norm + stable LN), every layer within
1e-4, single utterances and padded batches (against HF single runs); the relative-position
buckets against HF's own ``_relative_positions_bucket``; the bucket embedding living in layer 0
and feeding every layer.
"""
import os
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, os.path.dirname(__file__))
import w2v_helpers as H  # noqa: E402

from speechinterp.encoders.wavlm import WavLMEncoder, relative_position_buckets  # noqa: E402


@pytest.mark.parametrize("name", ["wavlm_base", "wavlm_large"])
def test_matches_transformers_single_and_batched(name):
    H.check_variant(name)


@pytest.mark.parametrize("num_buckets,max_distance", [(320, 800), (32, 50), (64, 100)])
def test_relative_position_buckets_match_transformers(num_buckets, max_distance):
    attn = transformers.models.wavlm.modeling_wavlm.WavLMAttention(
        32, 4, num_buckets=num_buckets, max_distance=max_distance)
    t = 1500
    rel = torch.arange(t)[None, :] - torch.arange(t)[:, None]
    ref = attn._relative_positions_bucket(rel).numpy()
    np.testing.assert_array_equal(relative_position_buckets(t, num_buckets, max_distance), ref)


def test_bucket_embedding_in_layer_zero_feeds_every_layer():
    model = H.make_hf("wavlm_base")
    enc = H.to_encoder(model)
    assert isinstance(enc, WavLMEncoder) and enc.family == "wavlm"
    layers = enc.params["layers"]
    assert "rel_attn_embed" in layers["layer_0"]
    assert all("rel_attn_embed" not in layers[k] for k in layers if k != "layer_0")
    ws = H.waves((3000,), seed=2)
    base = enc.hidden_states(ws)
    # a different layer-0 bucket table changes the last layer's attention too; HF agrees
    table = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    params = jax.tree.map(np.array, enc.params)
    params["layers"]["layer_0"]["rel_attn_embed"] = table
    changed = enc.__class__(config=enc.config, params=params, family="wavlm").hidden_states(ws)
    with torch.no_grad():
        model.encoder.layers[0].attention.rel_attn_embed.weight.copy_(torch.from_numpy(table))
    ref = H.hf_layers(model, ws[0])
    assert max(H.max_layer_diffs(changed, ref)) < H.TOL
    assert np.abs(np.asarray(changed[-1]) - np.asarray(base[-1])).max() > 1e-2


def test_masks_and_init_random():
    enc = H.to_encoder(H.make_hf("wavlm_large"))
    ws = H.waves((2600, 3300), seed=4)
    base = enc.hidden_states(ws)
    keep = np.ones(32, np.float32)
    keep[[0, 5]] = 0.0
    masked = enc.hidden_states(ws, masks={"layer_1": keep})
    np.testing.assert_array_equal(np.asarray(base[1]), np.asarray(masked[1]))
    assert np.all(np.asarray(masked[2])[..., [0, 5]] == 0)
    assert np.abs(np.asarray(masked[3]) - np.asarray(base[3])).max() > 1e-3
    rnd = enc.init_random(0)
    assert jax.tree.map(np.shape, rnd.params) == jax.tree.map(np.shape, enc.params)
    assert not np.allclose(rnd.params["layers"]["layer_0"]["rel_attn_embed"],
                           enc.params["layers"]["layer_0"]["rel_attn_embed"])
