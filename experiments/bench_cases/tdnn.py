"""Benchmark cases ``xvector`` and ``ecapa``: the Flax ports vs SpeechBrain's PyTorch modules.

Same random weights in the published shapes (spkrec-xvect-voxceleb: 24 mels, TDNN
512-512-512-512-1500, 512-d x-vector; spkrec-ecapa-voxceleb: 80 mels, C = 1024, MFA 3072,
192-d embedding), converted through ``speechinterp.convert.speechbrain_tdnn``. Both sides
extract every layer of equal-length utterances from the waveform: torch side = SpeechBrain's
``Fbank`` -> ``InputNormalization(sentence)`` -> the model, with forward hooks collecting each
probed layer (as ``EncoderClassifier.encode_batch`` runs it, batched, relative lengths 1).

:func:`speechbrain_modules` imports the SpeechBrain modules without torchaudio (see
tests/test_tdnn.py for why and why that is safe).
"""
import sys
import types

import numpy as np

from experiments.benchmarking import bench_waveforms, flax_extractor


def speechbrain_modules():
    """(Xvector, ECAPA_TDNN, Fbank, InputNormalization) from speechbrain, torchaudio-free.

    speechbrain 1.1.2 imports torchaudio at module level in ``nnet/CNN.py``,
    ``processing/vocal_features.py`` and ``utils/torch_audio_backend.py`` (run by
    ``dataio/dataio.py``), and no torchaudio wheel loads with this torch. Those files use it
    only in code the x-vector / ECAPA / Fbank path never runs (``GaborConv1d``'s mel init,
    vocal-feature resampling / lfilter, the audio-backend check, which only reads attributes).
    A bare stand-in module, whose every attribute access raises ``AttributeError``, is put in
    ``sys.modules["torchaudio"]`` for the import only and removed afterwards, so any use of
    torchaudio on the tested path would fail loudly.
    """
    had = "torchaudio" in sys.modules
    if not had:
        stub = types.ModuleType("torchaudio")

        def _missing(name):
            raise AttributeError(f"torchaudio stand-in (not installed): no attribute {name!r}")

        stub.__getattr__ = _missing
        sys.modules["torchaudio"] = stub
    try:
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
        from speechbrain.lobes.models.Xvector import Xvector
        from speechbrain.processing.features import InputNormalization
    finally:
        if not had:
            sys.modules.pop("torchaudio", None)
    return Xvector, ECAPA_TDNN, Fbank, InputNormalization


def randomize_(model, seed=0):
    """Random weights everywhere, BatchNorm running statistics included (mean ~ N(0, 0.5),
    var ~ U(0.5, 2), affine weight ~ U(0.5, 1.5), bias ~ N(0, 0.2))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                c = mod.num_features
                mod.running_mean.copy_(0.5 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                mod.weight.copy_(0.5 + torch.rand(c, generator=g))
                mod.bias.copy_(0.2 * torch.randn(c, generator=g))
            elif isinstance(mod, (torch.nn.Conv1d, torch.nn.Linear)):
                bound = 1.0 / np.sqrt(mod.weight[0].numel())
                mod.weight.copy_((2 * torch.rand(mod.weight.shape, generator=g) - 1) * bound)
                if mod.bias is not None:
                    mod.bias.copy_((2 * torch.rand(mod.bias.shape, generator=g) - 1) * bound)
    model.eval()
    return model


def no_pooling_noise_(model):
    """Make ``StatisticsPooling`` deterministic (it adds noise in [1e-5, 9e-5] to the mean)."""
    import torch
    from speechbrain.nnet.pooling import StatisticsPooling

    for mod in model.modules():
        if isinstance(mod, StatisticsPooling):
            mod._get_gauss_noise = lambda shape, device="cpu": torch.zeros(shape, device=device)
    return model


def build_reference(family, seed=0, **kwargs):
    """(torch model with random weights, front end, normaliser, probed torch modules)."""
    Xvector, ECAPA_TDNN, Fbank, InputNormalization = speechbrain_modules()
    import torch

    if family == "xvector":
        n_mels = kwargs.pop("n_mels", 24)
        kwargs.setdefault("activation", torch.nn.LeakyReLU)
        model = Xvector(in_channels=n_mels, **kwargs)
        nb = sum(isinstance(b, torch.nn.Module) and type(b).__name__ == "Conv1d"
                 for b in model.blocks)
        probes = [model.blocks[3 * i + 2] for i in range(nb)] + list(model.blocks[-2:])
    else:
        n_mels = kwargs.pop("n_mels", 80)
        model = ECAPA_TDNN(input_size=n_mels, **kwargs)
        probes = list(model.blocks) + [model.mfa, model.asp, model.fc]
    randomize_(model, seed)
    no_pooling_noise_(model)
    return model, Fbank(n_mels=n_mels), InputNormalization(norm_type="sentence",
                                                            std_norm=False), probes


def torch_layers(family, model, probes, feats, rel_lens):
    """Every probed layer's output, channels last [B, T, C], from normalised features."""
    import torch

    got = []
    hooks = [m.register_forward_hook(lambda m, i, o: got.append(o)) for m in probes]
    try:
        with torch.no_grad():
            model(feats, rel_lens)
    finally:
        for h in hooks:
            h.remove()
    if family == "ecapa":
        got = [g.transpose(1, 2) for g in got]
    return got


_PUBLISHED = {"xvector": {}, "ecapa": {"channels": [1024, 1024, 1024, 1024, 3072]}}


def _build(family, utterances, seconds):
    import torch

    from speechinterp.convert.speechbrain_tdnn import FAMILIES, params_from_state

    model, fbank, norm, probes = build_reference(family, 0, **_PUBLISHED[family])
    cfg_cls, enc_cls = FAMILIES[family]
    cfg = cfg_cls()
    enc = enc_cls(config=cfg, params=params_from_state(
        {k: v.numpy() for k, v in model.state_dict().items()}, family, cfg), family=family)
    wav = bench_waveforms(utterances, seconds)
    flax_fn = flax_extractor(enc, wav)

    wav_t, rel = torch.from_numpy(wav), torch.ones(utterances)

    def torch_fn():
        with torch.no_grad():
            feats = norm(fbank(wav_t), rel)
        return torch_layers(family, model, probes, feats, rel)

    return {"flax": flax_fn, "torch": torch_fn}


CASES = {"xvector": lambda u, s: _build("xvector", u, s),
         "ecapa": lambda u, s: _build("ecapa", u, s)}
