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


# ----------------------------------------------------------------------------- study figures
def _grid(n, width=3.6, height=3.0):
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _real(summary):
    return {n: e for n, e in summary["encoders"].items() if not e["random"]}


def study_layerwise_figure(summary, prop):
    """One panel per encoder: test accuracy per layer for ``prop`` against the control task,
    the majority class and the random-weights encoder."""
    encs = {n: e for n, e in _real(summary).items() if prop in e["probes"]}
    if not encs:
        return None
    fig, axes = _grid(len(encs))
    for ax, (name, e) in zip(axes, encs.items()):
        res = e["probes"][prop]
        x = np.arange(len(res["layers"]))
        ax.plot(x, [l["accuracy"] for l in res["layers"]], "o-", label="pretrained / trained")
        ax.plot(x, [l["control_accuracy"] for l in res["layers"]], "s--", label="control task")
        rnd = summary["encoders"].get(f"{name}_random", {}).get("probes", {}).get(prop)
        if rnd:
            ax.plot(x, [l["accuracy"] for l in rnd["layers"]], "^:", label="random weights")
        ax.axhline(res["majority_accuracy"], color="gray", lw=1, label="majority")
        ax.set_xticks(x, [l["name"] for l in res["layers"]], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{prop}: layer-wise probing accuracy")
    fig.tight_layout()
    return fig


def minimal_subset_heatmap(summary):
    """Share of each layer's neurons in the minimal subset, per encoder (rows: properties)."""
    encs = {n: e for n, e in _real(summary).items() if e["probes"]}
    if not encs:
        return None
    fig, axes = _grid(len(encs), 4.2, 3.0)
    for ax, (name, e) in zip(axes, encs.items()):
        props = sorted(e["probes"])
        layers = e["probes"][props[0]]["layers"]
        M = np.array([[100 * e["probes"][p]["minimal_subset"]["per_layer"].get(l["name"], 0)
                       / l["dim"] for l in layers] for p in props])
        im = ax.imshow(M, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(props)), props, fontsize=8)
        ax.set_xticks(range(len(layers)), [l["name"] for l in layers], rotation=60, ha="right",
                      fontsize=7)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        fig.colorbar(im, ax=ax, label="% of layer in minimal subset")
    fig.suptitle("Where the minimal neuron subsets live")
    fig.tight_layout()
    return fig


def study_ablation_figure(summary, pct="20", mode="retrain"):
    """Accuracy keeping the top / random / bottom ``pct``% neurons, per encoder and property."""
    encs = {n: e for n, e in _real(summary).items() if e["probes"]}
    if not encs:
        return None
    fig, axes = _grid(len(encs), 4.0, 3.0)
    for ax, (name, e) in zip(axes, encs.items()):
        props = sorted(e["probes"])
        x = np.arange(len(props))
        for i, how in enumerate(("top", "random", "bottom")):
            ax.bar(x + (i - 1) * 0.27, [e["probes"][p]["ablation"][mode][how][pct] for p in props],
                   0.27, label=f"{how} {pct}%")
        ax.plot(x, [e["probes"][p]["oracle"]["accuracy"] for p in props], "k_", ms=18,
                label="all neurons")
        ax.set_xticks(x, props, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("test accuracy")
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Ablation ({mode}): keep {pct}% of neurons")
    fig.tight_layout()
    return fig


def overlap_figure(summary):
    """Jaccard overlap of the properties' minimal subsets, per encoder (numbers: shared)."""
    ov = summary.get("overlap") or {}
    if not ov:
        return None
    fig, axes = _grid(len(ov), 3.8, 3.4)
    for ax, (name, o) in zip(axes, ov.items()):
        J, S = np.array(o["jaccard"]), np.array(o["shared"])
        im = ax.imshow(J, vmin=0, vmax=1, cmap="magma")
        for i in range(len(S)):
            for j in range(len(S)):
                ax.text(j, i, str(S[i, j]), ha="center", va="center", fontsize=7,
                        color="w" if J[i, j] < 0.5 else "k")
        ax.set_xticks(range(len(o["names"])), o["names"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(o["names"])), o["names"], fontsize=8)
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax, label="Jaccard")
    fig.suptitle("Salient-neuron overlap between properties (numbers: shared neurons)")
    fig.tight_layout()
    return fig


def eer_figure(summary):
    """Speaker-verification EER per layer (cosine scoring), pretrained vs random weights."""
    eer = summary.get("eer") or {}
    if not eer:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4))
    for i, (name, e) in enumerate(sorted(eer.items())):
        depth = np.linspace(0, 1, len(e["eer"]))
        random = summary["encoders"][name]["random"]
        base = name[:-len("_random")] if random else name
        color = f"C{sorted({n.replace('_random', '') for n in eer}).index(base) % 10}"
        ax.plot(depth, 100 * np.array(e["eer"]), ":" if random else "o-", color=color,
                label=name, ms=3)
    ax.set_xlabel("relative depth (first layer = 0, last = 1)")
    ax.set_ylabel("EER (%)")
    ax.set_title("Speaker verification per layer (test speakers, cosine scoring)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def bias_figure(summary):
    """Per-group accuracy of each task CNN: unmasked, protected-salient neurons masked inside
    the encoder, and as many random neurons masked."""
    bias = summary.get("bias") or {}
    if not bias:
        return None
    fig, axes = _grid(len(bias), 4.2, 3.2)
    for ax, (name, b) in zip(axes, bias.items()):
        groups = [k for k in b["accuracy"] if k not in ("all", "gap")]
        x = np.arange(len(groups))
        for i, (key, label) in enumerate((("accuracy", "unmasked"),
                                          ("masked", f"{b['protected']} neurons masked"),
                                          ("random_masked", "random neurons masked"))):
            ax.bar(x + (i - 1) * 0.27, [b[key][g] for g in groups], 0.27, label=label)
        ax.set_xticks(x, groups)
        ax.set_xlabel(b["protected"])
        ax.set_ylabel(f"accuracy on its task ({b['task']})")
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("Bias: masking neurons inside the task model")
    fig.tight_layout()
    return fig


def best_layer_figure(summary):
    """Best-layer accuracy per property and encoder, with the random-weights encoders."""
    encs = {n: e for n, e in summary["encoders"].items() if e.get("probes")}
    props = sorted({p for e in encs.values() for p in e["probes"]})
    if not props:
        return None
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(props) + 4.5), 4))
    names = sorted(encs)
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        vals = [max((l["accuracy"] for l in encs[n]["probes"][p]["layers"]), default=0)
                if p in encs[n]["probes"] else 0 for p in props]
        ax.bar(np.arange(len(props)) + (i - len(names) / 2 + 0.5) * width, vals, width, label=n,
               hatch="//" if encs[n]["random"] else None, alpha=0.6 if encs[n]["random"] else 1)
    ax.set_xticks(np.arange(len(props)), props)
    ax.set_ylabel("best-layer test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Best layer per property and encoder (hatched: random weights)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside the bars
    fig.tight_layout()
    return fig
