"""wav2vec 2.0 / XLS-R / HuBERT / data2vec-audio port vs transformers 5.24's PyTorch models.

Tiny random models of every variant (tests/w2v_helpers.py ``VARIANTS``), float32, every layer
(``cnn`` = the feature encoder's output, then HF ``hidden_states`` entry by entry) within 1e-4:
each utterance alone, and the same utterances as one padded batch (our batch vs HF run on each
utterance alone: HF's own batched forward lets padding into the group-norm statistics, which we
deliberately do not; ``test_group_norm_statistics_exclude_padding`` shows the difference).
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

from speechinterp.encoders.wav2vec2 import conv_output_lengths  # noqa: E402

W2V_VARIANTS = [v for v in H.VARIANTS if not v.startswith("wavlm")]


@pytest.mark.parametrize("name", W2V_VARIANTS)
def test_matches_transformers_single_and_batched(name):
    H.check_variant(name)


def test_group_norm_statistics_exclude_padding():
    """Group-norm variant: our batched rows equal HF single runs, while HF's own batched forward
    (attention mask given) differs from its single runs, because its GroupNorm statistics include
    the padding: the intended, documented difference."""
    model = H.make_hf("w2v_base")
    enc = H.to_encoder(model)
    ws = H.waves((2000, 4000), seed=3)
    ref_short = H.hf_layers(model, ws[0])
    batch = np.zeros((2, 4000), np.float32)
    batch[0, :2000], batch[1] = ws[0], ws[1]
    mask = torch.tensor([[1] * 2000 + [0] * 2000, [1] * 4000])
    with torch.no_grad():
        cnn_hf_batched = model.feature_extractor(torch.from_numpy(batch)).transpose(1, 2)[0]
        hf_batched = model(torch.from_numpy(batch), attention_mask=mask,
                           output_hidden_states=True).hidden_states
    t = ref_short[0].shape[0]
    assert np.abs(cnn_hf_batched[:t].numpy() - ref_short[0]).max() > 1e-2
    assert np.abs(hf_batched[-1][0, :t].numpy() - ref_short[-1]).max() > 1e-2
    outs, _ = enc.layer_outputs(batch, lengths=[2000, 4000])
    assert max(H.max_layer_diffs(outs, ref_short, row=0)) < H.TOL
    # the padding's content does not matter either
    noisy = batch.copy()
    noisy[0, 2000:] = 5.0
    outs2, _ = enc.layer_outputs(noisy, lengths=[2000, 4000])
    for a, b in zip(outs, outs2):
        np.testing.assert_array_equal(np.asarray(a)[0, :t], np.asarray(b)[0, :t])


def test_lengths_and_min_samples():
    model = H.make_hf("w2v_base_bias_odd")
    enc = H.to_encoder(model)
    n = enc.min_samples()
    lens = [n - 1, n, n + 7, 5000]
    ours = conv_output_lengths(np.array(lens), enc.config.conv_kernel, enc.config.conv_stride)[-1]
    hf = model._get_feat_extract_output_lengths(torch.tensor(lens)).numpy()
    np.testing.assert_array_equal(np.asarray(ours), np.maximum(hf, 0))
    assert list(np.asarray(ours)[:2]) == [0, 1]


def test_masks_act_inside_the_forward_pass():
    """Zeroing a neuron of a middle layer changes that neuron and the later layers only."""
    enc = H.to_encoder(H.make_hf("w2v_base"))
    ws = H.waves((3000, 2200), seed=5)
    base = enc.hidden_states(ws)
    keep = np.ones(32, np.float32)
    keep[7] = 0.0
    masked = enc.hidden_states(ws, masks={"layer_1": keep})
    names = enc.layer_names
    for name, a, b in zip(names, base, masked):
        a, b = np.asarray(a), np.asarray(b)
        if name in ("cnn", "layer_0"):
            np.testing.assert_array_equal(a, b)
        elif name == "layer_1":
            assert np.all(b[..., 7] == 0) and np.abs(a[..., 7]).max() > 0.1
            np.testing.assert_array_equal(np.delete(a, 7, -1), np.delete(b, 7, -1))
        else:
            assert np.abs(a - b).max() > 1e-3, name
    # a cnn mask (feature-encoder width) reaches every Transformer layer
    keep_cnn = np.ones(16, np.float32)
    keep_cnn[:4] = 0.0
    masked = enc.hidden_states(ws, masks={"cnn": keep_cnn})
    assert np.all(np.asarray(masked[0])[..., :4] == 0)
    assert all(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
               for a, b in zip(base[1:], masked[1:]))


def test_init_random_fresh_weights_same_shapes():
    enc = H.to_encoder(H.make_hf("hubert_bn_large"))
    rnd = enc.init_random(1)
    shapes = jax.tree.map(np.shape, enc.params)
    assert jax.tree.map(np.shape, rnd.params) == shapes
    assert jax.tree.map(np.shape, enc.init_random(2).params) == shapes
    leaves, rleaves = jax.tree.leaves(enc.params), jax.tree.leaves(rnd.params)
    assert not any(np.array_equal(a, b) for a, b in zip(leaves, rleaves) if np.size(a) > 64)
    assert not H.tree_allclose(rnd.params, enc.init_random(2).params)
    outs = rnd.hidden_states(H.waves((3000,)))
    assert all(np.isfinite(np.asarray(h)).all() for h in outs)
    t = int(conv_output_lengths(np.array([3000]), enc.config.conv_kernel,
                                enc.config.conv_stride)[-1][0])
    assert [np.shape(h) for h in outs] == [(1, t, 16)] + [(1, t, 32)] * 3


def test_bfloat16_error_against_float32():
    """The bfloat16 option: matmul/conv operands in bfloat16. Its error against float32 is
    reported (run with -s) and bounded: nonzero, below 10% of each layer's largest value."""
    model = H.make_hf("w2v_large")
    f32, bf16 = H.to_encoder(model), H.to_encoder(model, dtype="bfloat16")
    ws = H.waves((4000, 3000), seed=7)
    a, b = f32.hidden_states(ws), bf16.hidden_states(ws)
    rel = [float(np.abs(np.asarray(x) - np.asarray(y)).max() / np.abs(np.asarray(x)).max())
           for x, y in zip(a, b)]
    print("bfloat16 vs float32 max relative error per layer:",
          dict(zip(f32.layer_names, np.round(rel, 5))))
    assert all(0 < r < 0.1 for r in rel), rel
