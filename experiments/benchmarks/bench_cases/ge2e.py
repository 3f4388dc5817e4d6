"""Benchmark case ``ge2e``: the Flax GE2E encoder vs resemblyzer's VoiceEncoder (PyTorch).

Same real weights (the installed resemblyzer wheel's ``pretrained.pt``). Both extract every
layer (lstm1..3 on all partial windows, linear, embedding) of equal-length utterances, following
``VoiceEncoder.embed_utterance``: torch side = resemblyzer's librosa mel per utterance, then the
partials of all utterances in one batch through single-layer copies of ``VoiceEncoder.lstm``
(so each layer's output is available), ``linear`` + ReLU, L2, mean, L2.
"""
import importlib.util
import os

import numpy as np

from experiments.benchmarks.benchmarking import bench_waveforms, flax_extractor


def build_ge2e(utterances, seconds):
    from speechinterp.convert.resemblyzer_ge2e import convert

    pt = os.path.join(os.path.dirname(importlib.util.find_spec("resemblyzer").origin),
                      "pretrained.pt")
    enc = convert(pt)
    wav = bench_waveforms(utterances, seconds, enc.sample_rate)
    flax_fn = flax_extractor(enc, wav)

    state = {}

    def torch_fn():
        import torch
        from resemblyzer import VoiceEncoder, audio

        if "ve" not in state:
            ve = state["ve"] = VoiceEncoder(device="cpu", verbose=False)
            layers = []
            for i in range(3):
                layer = torch.nn.LSTM(40 if i == 0 else 256, 256, 1, batch_first=True)
                with torch.no_grad():
                    for nm in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        getattr(layer, f"{nm}_l0").copy_(getattr(ve.lstm, f"{nm}_l{i}"))
                layers.append(layer)
            state["layers"] = layers
        ve, layers = state["ve"], state["layers"]
        mels = []
        for w in wav:
            wav_slices, mel_slices = ve.compute_partial_slices(len(w), 1.3, 0.75)
            if wav_slices[-1].stop >= len(w):
                w = np.pad(w, (0, wav_slices[-1].stop - len(w)), "constant")
            mel = audio.wav_to_mel_spectrogram(w)
            mels.append(np.array([mel[s] for s in mel_slices]))
        p = mels[0].shape[0]
        h = torch.from_numpy(np.concatenate(mels))
        outs = []
        with torch.no_grad():
            for layer in layers:
                h, _ = layer(h)
                outs.append(h.reshape(len(wav), -1, 256))
            lin = ve.relu(ve.linear(h[:, -1]))
            part = (lin / torch.norm(lin, dim=1, keepdim=True)).reshape(len(wav), p, -1)
            emb = part.mean(1)
            outs += [lin.reshape(len(wav), p, -1).mean(1), emb / torch.norm(emb, dim=1,
                                                                             keepdim=True)]
        return outs

    return {"flax": flax_fn, "torch": torch_fn}


CASES = {"ge2e": build_ge2e}
