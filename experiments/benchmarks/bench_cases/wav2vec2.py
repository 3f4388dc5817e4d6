"""Benchmark case ``wav2vec2_base``: the Flax wav2vec 2.0 encoder vs transformers' ``Wav2Vec2Model``.

The real wav2vec2-base architecture (HF ``Wav2Vec2Config()`` defaults: 7 group-norm conv layers
of 512 channels, 768 hidden, 12 post-LN layers, positional conv 128 / 16 groups) with random
weights: ``torch.manual_seed(0)``, ``Wav2Vec2Model(config)`` saved once with ``save_pretrained``
to a cache directory (by a separate process, so that neither timed process pays for the other
library's memory). The Flax side converts that directory with the ``huggingface_wav2vec2``
converter; the PyTorch side loads it with ``from_pretrained``. Both extract every layer: the CNN
feature-encoder output (a forward hook on the torch side, no recomputation) and all 13
``hidden_states``, for ``utterances`` equal-length utterances of ``seconds`` s in one batch.
"""
import os
import subprocess
import sys
import tempfile


from experiments.benchmarks.benchmarking import bench_waveforms, built_on_first_call

CACHE = os.path.join(tempfile.gettempdir(), "speechinterp_bench_wav2vec2_base_v1")

_MAKE = """
import sys, torch, transformers
torch.manual_seed(0)
model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).eval()
model.save_pretrained(sys.argv[1])
"""


def model_dir() -> str:
    """The cached random-weight wav2vec2-base directory (created on first use)."""
    if not os.path.exists(os.path.join(CACHE, "config.json")):
        tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(CACHE))
        subprocess.run([sys.executable, "-c", _MAKE, tmp], check=True,
                       capture_output=True)
        try:
            os.replace(tmp, CACHE)
        except OSError:          # another process made it first
            pass
    return CACHE


def _release_freed_memory():
    """Return the heap freed by the conversion's temporary numpy copies to the OS (glibc).

    Without it, the converted numpy weights, freed once on the device, stay in the process's
    resident set as fragmented heap, and peak RSS would count the weights twice.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):      # not glibc
        pass


def build(utterances, seconds, dtype="float32"):
    wav = bench_waveforms(utterances, seconds)
    path = model_dir()

    def make_flax():
        import jax
        import jax.numpy as jnp

        from speechinterp.convert.huggingface_wav2vec2 import convert

        enc = convert(path, dtype=dtype)
        apply = jax.jit(enc.apply)
        params = jax.tree.map(jnp.asarray, enc.params)
        enc.params = None                     # keep one copy of the weights
        _release_freed_memory()
        wav_j = jnp.asarray(wav)
        lens_j = jnp.full((wav.shape[0],), wav.shape[1], jnp.int32)

        def flax_fn():
            outs, _ = apply(params, wav_j, lens_j)
            jax.block_until_ready(outs)
            return outs
        return flax_fn

    def make_torch():
        import torch
        import transformers

        model = transformers.Wav2Vec2Model.from_pretrained(path).eval()
        captured = {}
        model.feature_extractor.register_forward_hook(
            lambda mod, inp, out: captured.__setitem__("cnn", out))
        x = torch.from_numpy(wav)

        def torch_fn():
            with torch.inference_mode():
                out = model(x, output_hidden_states=True)
            return [captured["cnn"].transpose(1, 2)] + list(out.hidden_states)
        return torch_fn

    return built_on_first_call(flax=make_flax, torch=make_torch)


CASES = {"wav2vec2_base": build}
