"""Figures of probing results (matplotlib, Agg). Each function returns a Figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def layerwise_figure(results: dict, random_results: dict | None = None, title: str | None = None):
    """Layer-wise test accuracy against the control task and the majority baseline."""
    layers = results["layers"]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(layers) + 2), 3.6))
    ax.plot(x, [l["accuracy"] for l in layers], "o-", label="probe (task)")
    ax.plot(x, [l["control_accuracy"] for l in layers], "s--", label="control task")
    if random_results is not None:
        ax.plot(x, [l["accuracy"] for l in random_results["layers"]], "^:",
                label="random-weights encoder")
    ax.axhline(results["majority_accuracy"], color="gray", lw=1, label="majority class")
    ax.axhline(results["oracle"]["accuracy"], color="k", lw=1, ls="-.", label="all layers (oracle)")
    ax.set_xticks(x, [l["name"] for l in layers], rotation=45, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or f"{results['task']}: layer-wise probing")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def subset_layers_figure(results: dict, title: str | None = None):
    """How the minimal neuron subset spreads over layers (count and share of each layer)."""
    ms = results["minimal_subset"]
    names = [l["name"] for l in results["layers"]]
    dims = np.array([l["dim"] for l in results["layers"]], float)
    counts = np.array([ms["per_layer"].get(n, 0) for n in names], float)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 3.6))
    ax.bar(np.arange(len(names)), counts, color="tab:blue")
    for i, (c, d) in enumerate(zip(counts, dims)):
        if c:
            ax.text(i, c, f"{100 * c / d:.1f}%", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons in minimal subset")
    ax.set_title(title or (f"{results['task']}: minimal subset of {ms['size']} neurons "
                           f"({100 * ms['fraction']:.1f}%), test acc {ms['accuracy']:.2f}"))
    fig.tight_layout()
    return fig


def ablation_figure(results: dict, title: str | None = None):
    """Accuracy when keeping the top / random / bottom k% of neurons, in both modes."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, mode in zip(axes, ("retrain", "zero_out")):
        data = results["ablation"][mode]
        pcts = list(data["top"])
        x = np.arange(len(pcts))
        for i, how in enumerate(("top", "random", "bottom")):
            ax.bar(x + (i - 1) * 0.27, [data[how][p] for p in pcts], 0.27, label=how)
        ax.axhline(results["oracle"]["accuracy"], color="k", lw=1, ls="-.", label="oracle")
        ax.set_xticks(x, [f"{p}%" for p in pcts])
        ax.set_xlabel("neurons kept")
        ax.set_title(mode.replace("_", "-"))
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8)
    fig.suptitle(title or f"{results['task']}: ablation")
    fig.tight_layout()
    return fig
