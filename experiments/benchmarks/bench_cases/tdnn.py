"""Benchmark cases ``xvector`` and ``ecapa``: the Flax ports vs SpeechBrain's PyTorch modules.

Same random weights in the published shapes (spkrec-xvect-voxceleb: 24 mels, TDNN
512-512-512-512-1500, 512-d x-vector; spkrec-ecapa-voxceleb: 80 mels, C = 1024, MFA 3072,
192-d embedding), converted through ``speechinterp.convert.speechbrain_tdnn``. Both sides
extract every layer of equal-length utterances from the waveform: torch side = SpeechBrain's
``Fbank`` -> ``InputNormalization(sentence)`` -> the model, with forward hooks collecting each
probed layer (as ``EncoderClassifier.encode_batch`` runs it, batched, relative lengths 1).

The SpeechBrain reference is the equivalence tests' own (``tests/references.py``:
``build_reference``, ``torch_layers``; imported without torchaudio, see tests/test_tdnn.py).
"""
from references import build_reference, torch_layers

from experiments.benchmarks.benchmarking import bench_waveforms, flax_extractor


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
