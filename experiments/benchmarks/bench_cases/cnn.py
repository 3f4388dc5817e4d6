"""Benchmark case for the dialect / speaker-ID CNN (MGB-3 preset, 500-500-500-3000, FC 1500-600).

No public PyTorch implementation of Shon et al.'s CNN exists (the original is TensorFlow 1.x), so
the reference is :class:`TorchDialectCNN` below: the same computation in plain PyTorch (torch.stft
log-mel front end, Conv1d layers with TF 'SAME' padding, mean pooling, Linear layers), loaded with
the same random weights as the Flax encoder. Both extract every layer (cnn1..cnn4, fc1, fc2) of
equal-length utterances.
"""
import numpy as np

from experiments.benchmarks.benchmarking import bench_waveforms, flax_extractor


def _torch_model(enc):
    import torch
    import torch.nn.functional as F

    from speechinterp.encoders.cnn import _frontend_constants

    c = enc.config

    class TorchDialectCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            window, mel_t, _ = _frontend_constants(
                (c.sample_rate, c.n_fft, c.win_length, c.mel_bands, c.fmin, c.fmax, c.n_features))
            self.register_buffer("window", torch.from_numpy(window))
            self.register_buffer("mel", torch.from_numpy(np.ascontiguousarray(mel_t.T)))
            self.convs = torch.nn.ModuleList()
            cin = c.n_features
            for f, k, s in zip(c.filters, c.kernels, c.strides):
                self.convs.append(torch.nn.Conv1d(cin, f, k, stride=s))
                cin = f
            dims = (cin * (2 if c.pooling == "stats" else 1),) + tuple(c.fc_dims)
            self.fcs = torch.nn.ModuleList(
                torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

        def forward(self, wav):  # [B, S], all utterances of equal length
            spec = torch.stft(wav, c.n_fft, c.hop_length, window=self.window, center=True,
                              pad_mode="constant", return_complex=True)
            power = spec.real ** 2 + spec.imag ** 2              # [B, F, T]
            h = torch.log(torch.clamp(self.mel @ power, min=c.log_floor))  # [B, 40, T]
            outs = []
            for conv, k, s in zip(self.convs, c.kernels, c.strides):
                t = h.shape[-1]
                out = -(-t // s)
                total = max((out - 1) * s + k - t, 0)           # TF 'SAME'
                h = F.relu(conv(F.pad(h, (total // 2, total - total // 2))))
                h = h[..., : t // s]                            # valid frames (TF mask)
                outs.append(h.transpose(1, 2))
            z = h.mean(-1)
            if c.pooling == "stats":
                z = torch.cat([z, torch.sqrt(h.var(-1, unbiased=False) + c.stats_eps)], -1)
            for fc in self.fcs:
                z = F.relu(fc(z))
                outs.append(z[:, None])
            return outs

    model = TorchDialectCNN().eval()
    p = enc.params
    with torch.no_grad():
        for i, conv in enumerate(model.convs, 1):
            conv.weight.copy_(torch.from_numpy(np.array(np.asarray(p[f"cnn{i}"]["kernel"]).transpose(2, 1, 0))))
            conv.bias.copy_(torch.from_numpy(np.array(p[f"cnn{i}"]["bias"])))
        for j, fc in enumerate(model.fcs, 1):
            fc.weight.copy_(torch.from_numpy(np.array(np.asarray(p[f"fc{j}"]["kernel"]).T)))
            fc.bias.copy_(torch.from_numpy(np.array(p[f"fc{j}"]["bias"])))
    return model


def build_cnn_mgb3(utterances, seconds):
    from speechinterp.encoders.cnn import CNNEncoder

    enc = CNNEncoder.from_preset("mgb3", seed=0)
    wav = bench_waveforms(utterances, seconds, enc.sample_rate)
    state = {}

    def torch_fn():
        import torch

        if "model" not in state:
            state["model"] = _torch_model(enc)
            state["wav"] = torch.from_numpy(wav)
        with torch.no_grad():
            return state["model"](state["wav"])

    return {"flax": flax_extractor(enc, wav), "torch": torch_fn}


CASES = {"cnn_mgb3": build_cnn_mgb3}
