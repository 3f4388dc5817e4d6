"""Shared helpers of the wav2vec 2.0 family tests: tiny random transformers models of every
variant, their reference layer outputs, and a fairseq-named copy of their weights."""
import numpy as np
import torch
import transformers as T

from speechinterp.convert.huggingface_wav2vec2 import (config_from_hf, make_encoder,
                                                       params_from_hf_state)

TOL = 1e-4

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
            num_conv_pos_embedding_groups=4)

# name -> (HF model class, config overrides); together they cover every variant of the issue
VARIANTS = {
    # wav2vec 2.0 base: group-norm feature encoder, post-LN, no conv bias, even pos kernel
    "w2v_base": ("Wav2Vec2Model", dict(num_conv_pos_embeddings=8)),
    # group norm with conv bias, odd pos kernel, a first conv whose kernel is not a stride multiple
    "w2v_base_bias_odd": ("Wav2Vec2Model", dict(num_conv_pos_embeddings=5, conv_bias=True,
                                                conv_kernel=(9, 3, 3), conv_stride=(4, 2, 2))),
    # large-lv60 / XLSR / XLS-R: layer-norm feature encoder, stable LN, conv bias, odd kernel
    "w2v_large": ("Wav2Vec2Model", dict(num_conv_pos_embeddings=7, conv_bias=True,
                                        feat_extract_norm="layer", do_stable_layer_norm=True)),
    "w2v_large_nobias_even": ("Wav2Vec2Model", dict(num_conv_pos_embeddings=6,
                                                    feat_extract_norm="layer",
                                                    do_stable_layer_norm=True)),
    # HuBERT without the feature-projection LayerNorm (DistilHuBERT style)
    "hubert_no_proj_ln": ("HubertModel", dict(num_conv_pos_embeddings=8,
                                              feat_proj_layer_norm=False)),
    # HuBERT with the batch-norm positional conv (no weight norm)
    "hubert_bn": ("HubertModel", dict(num_conv_pos_embeddings=5, conv_pos_batch_norm=True)),
    "hubert_bn_large": ("HubertModel", dict(num_conv_pos_embeddings=6, conv_pos_batch_norm=True,
                                            feat_extract_norm="layer", do_stable_layer_norm=True,
                                            conv_bias=True)),
    # data2vec-audio: stack of positional convs (odd and even kernels)
    "data2vec": ("Data2VecAudioModel", dict(conv_pos_kernel_size=5, num_conv_pos_embeddings=3)),
    "data2vec_even": ("Data2VecAudioModel", dict(conv_pos_kernel_size=4,
                                                 num_conv_pos_embeddings=2, conv_bias=True)),
    # WavLM: gated relative position bias (small bucket table so that the log buckets and the
    # clipping at max_bucket_distance are reached by a few hundred frames)
    "wavlm_base": ("WavLMModel", dict(num_conv_pos_embeddings=8, num_buckets=32,
                                      max_bucket_distance=50)),
    "wavlm_large": ("WavLMModel", dict(num_conv_pos_embeddings=7, num_buckets=32,
                                       max_bucket_distance=50, feat_extract_norm="layer",
                                       do_stable_layer_norm=True, conv_bias=True)),
}

CONFIGS = {"Wav2Vec2Model": T.Wav2Vec2Config, "HubertModel": T.HubertConfig,
           "Data2VecAudioModel": T.Data2VecAudioConfig, "WavLMModel": T.WavLMConfig}


def hf_config(name, **extra):
    cls, over = VARIANTS[name]
    return CONFIGS[cls](**{**TINY, **over, **extra})


def perturb(model, seed=0):
    """Move the parameters HF initialises to constants (norms, biases, BN statistics, WavLM gate
    constants) off those constants, and give WavLM's bucket table and gate projection unit scale
    (HF's std 0.02 would make the position bias negligible), so that every parameter's mapping
    is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ("norm" in n or n.endswith("bias") or "gru_rel_pos_const" in n
                    or "original0" in n):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
            if "rel_attn_embed" in n or "gru_rel_pos_linear" in n:   # HF init: std 0.02
                p.add_(torch.randn(p.shape, generator=g))
        for n, b in model.named_buffers():
            if n.endswith("running_mean"):
                b.add_(0.3 * torch.randn(b.shape, generator=g))
            elif n.endswith("running_var"):
                b.mul_(1 + 0.5 * torch.rand(b.shape, generator=g))
    return model


def make_hf(name, seed=0, model_cls=None, **extra):
    """A tiny random HF model of variant ``name`` (eval mode, constants perturbed)."""
    torch.manual_seed(seed)
    cls = model_cls or getattr(T, VARIANTS[name][0])
    return perturb(cls(hf_config(name, **extra)).eval(), seed)


def state_numpy(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def to_encoder(model, dtype="float32"):
    cfg = config_from_hf(model.config.to_dict())
    cfg.dtype = dtype
    return make_encoder(cfg, params_from_hf_state(state_numpy(model), cfg), False, None)


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for n in lengths]


def hf_layers(model, wave):
    """[cnn, hidden_states[0], ..., hidden_states[L]] of one unpadded utterance, numpy [T, D]."""
    base = getattr(model, "base_model", model)
    x = torch.from_numpy(np.asarray(wave, np.float32))[None]
    with torch.no_grad():
        cnn = base.feature_extractor(x).transpose(1, 2)
        out = base(x, output_hidden_states=True)
    return [cnn[0].numpy()] + [h[0].numpy() for h in out.hidden_states]


def max_layer_diffs(ours, ref, row=0):
    """Per-layer max |ours[row, :T] - ref| over the reference's T valid frames."""
    assert len(ours) == len(ref), (len(ours), len(ref))
    diffs = []
    for h, r in zip(ours, ref):
        h = np.asarray(h)[row]
        assert h.shape[0] >= r.shape[0] and h.shape[1] == r.shape[1], (h.shape, r.shape)
        diffs.append(float(np.abs(h[:r.shape[0]] - r).max()))
    return diffs


VARIANT_LENGTHS = (2500, 4111, 3201)


def check_variant(name):
    model = make_hf(name)
    enc = to_encoder(model)
    L = model.config.num_hidden_layers
    assert enc.layer_names == ["cnn"] + [f"layer_{i}" for i in range(L + 1)]
    ws = waves(VARIANT_LENGTHS)
    refs = [hf_layers(model, w) for w in ws]
    assert len(refs[0]) == L + 2
    # one utterance alone (bucketed: padded inside the encoder, masked)
    single = max_layer_diffs(enc.hidden_states([ws[0]]), refs[0])
    assert max(single) < TOL, (name, single)
    # a padded batch of different lengths: every row equals its utterance run alone in HF
    outs, out_lens = enc.layer_outputs(ws)
    hf_lens = model._get_feat_extract_output_lengths(torch.tensor(VARIANT_LENGTHS)).numpy()
    for lens in out_lens:
        np.testing.assert_array_equal(np.asarray(lens), hf_lens)
    worst = 0.0
    for b in range(len(ws)):
        diffs = max_layer_diffs(outs, refs[b], row=b)
        assert max(diffs) < TOL, (name, b, diffs)
        worst = max(worst, max(diffs))
    print(f"{name}: max |ours - HF| single {max(single):.2e}, padded batch {worst:.2e}")
    return max(single), worst


# ---- fairseq naming ----------------------------------------------------------------------
def fairseq_state(hf_state, cfg):
    """HF base-model state dict -> the same weights under fairseq names (+ pretraining keys)."""
    out = {}
    for k, v in hf_state.items():
        if k == "masked_spec_embed":
            out["mask_emb"] = v
            continue
        n = k
        if k.startswith("feature_extractor.conv_layers."):
            i = k.split(".")[2]
            rest = k.split(".", 3)[3]
            if rest.startswith("conv."):
                n = f"feature_extractor.conv_layers.{i}.0.{rest[5:]}"
            else:
                norm = "2.1" if cfg.feat_extract_norm == "layer" else "2"
                n = f"feature_extractor.conv_layers.{i}.{norm}.{rest.split('.', 1)[1]}"
        elif k.startswith("feature_projection.projection."):
            n = "post_extract_proj." + k.rsplit(".", 1)[1]
        elif k.startswith("feature_projection.layer_norm."):
            n = "layer_norm." + k.rsplit(".", 1)[1]
        elif k.startswith("encoder.pos_conv_embed.layers."):          # data2vec-style stack
            i, rest = k.split(".")[3], k.split(".", 5)[5]
            n = f"encoder.pos_conv.{i}.0.{rest}"
        elif k.startswith("encoder.pos_conv_embed.batch_norm."):
            n = "encoder.pos_conv.0." + k.rsplit(".", 1)[1]
        elif k.startswith("encoder.pos_conv_embed.conv."):
            rest = k[len("encoder.pos_conv_embed.conv."):]
            rest = {"parametrizations.weight.original0": "weight_g",
                    "parametrizations.weight.original1": "weight_v"}.get(rest, rest)
            n = f"encoder.pos_conv.{1 if cfg.pos_conv_batch_norm else 0}." + rest
        elif k.startswith("encoder.layers."):
            n = (k.replace(".attention.", ".self_attn.")
                  .replace(".layer_norm.", ".self_attn_layer_norm.")
                  .replace(".feed_forward.intermediate_dense.", ".fc1.")
                  .replace(".feed_forward.output_dense.", ".fc2."))
        out[n] = v
    d = cfg.hidden_size
    out["final_proj.weight"] = np.zeros((8, d), np.float32)     # pretraining heads: ignored
    out["final_proj.bias"] = np.zeros(8, np.float32)
    return out


def fairseq_model_cfg(cfg, name="wav2vec2"):
    """A fairseq ``cfg["model"]`` dict describing ``cfg``."""
    layers = " + ".join(f"[({c}, {k}, {s})]" for c, k, s in
                        zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride))
    return {"_name": name, "extractor_mode": "layer_norm" if cfg.feat_extract_norm == "layer"
            else "default", "conv_feature_layers": layers, "conv_bias": cfg.conv_bias,
            "encoder_layers": cfg.num_hidden_layers, "encoder_embed_dim": cfg.hidden_size,
            "encoder_ffn_embed_dim": cfg.intermediate_size,
            "encoder_attention_heads": cfg.num_attention_heads, "activation_fn": "gelu",
            "layer_norm_first": cfg.do_stable_layer_norm, "conv_pos": cfg.pos_conv_kernel,
            "conv_pos_groups": cfg.pos_conv_groups, "dropout": 0.1, "mask_prob": 0.65}


def tree_allclose(a, b, atol=0.0):
    import jax
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(np.allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)
                            for x, y in zip(la, lb))
