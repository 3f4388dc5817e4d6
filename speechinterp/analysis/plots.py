"""Figures of probing results (matplotlib, Agg). Each function returns a Figure."""
from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from speechinterp.study.records import CorpusSummary, EncoderRun, StudySummary  # noqa: E402

CORPORA = ("built-in espeak corpus", "recorded speech")


def _yerr(vals, cis):
    """Asymmetric error bars [2, N] from [low, high] intervals (None: no bars)."""
    if not cis or all(c is None for c in cis):
        return None
    err = np.zeros((2, len(vals)))
    for i, (v, c) in enumerate(zip(vals, cis)):
        if c is not None and v is not None and None not in c:
            err[:, i] = max(0.0, v - c[0]), max(0.0, c[1] - v)
    return err


def _band(ax, x, layers, color, key="accuracy_ci95", alpha=0.2):
    """Shade the 95% intervals of a layer-wise curve, where recorded."""
    cis = [l.get(key) for l in layers]
    if all(c is not None and None not in c for c in cis):
        ax.fill_between(x, [c[0] for c in cis], [c[1] for c in cis], color=color, alpha=alpha,
                        lw=0)


def _style(hue: int, random: bool) -> dict:
    c = np.array(mcolors.to_rgb(f"C{hue % 10}"))
    if random:
        return {"color": tuple(c + 0.55 * (1 - c)), "hatch": "//", "ls": "--", "marker": "^",
                "edge": tuple(c)}
    return {"color": tuple(c), "hatch": None, "ls": "-", "marker": "o", "edge": tuple(c)}


def encoder_styles(encoders: Mapping[str, EncoderRun]) -> dict:
    """name -> {"color", "hatch", "ls", "marker"}: one hue per trained / pretrained encoder, and
    its random-weights copy in the same hue, lighter, hatched and dashed."""
    bases = sorted({e.base or n if e.random else n for n, e in encoders.items()})
    return {n: _style(bases.index(e.base or n if e.random else n), e.random)
            for n, e in encoders.items()}


def paired_order(encoders: Mapping[str, EncoderRun]) -> list:
    """Encoder names sorted, each random-weights copy right after its encoder."""
    real = sorted(n for n, e in encoders.items() if not e.random)
    rnd = {e.base or n: n for n, e in encoders.items() if e.random}
    out = []
    for n in real:
        out += [n] + ([rnd.pop(n)] if n in rnd else [])
    return out + sorted(rnd.values())


def layerwise_figure(results: dict, random_results: dict | None = None, title: str | None = None):
    """Layer-wise test accuracy against the control task and the majority baseline."""
    layers = results["layers"]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(layers) + 2), 3.6))
    ax.plot(x, [l["accuracy"] for l in layers], "o-", color="C0", label="probe (task, 95% CI)")
    _band(ax, x, layers, "C0")
    if all(l.get("control_accuracy") is not None for l in layers):
        ax.plot(x, [l["control_accuracy"] for l in layers], "s--", color="C1",
                label="control task")
    if random_results is not None:
        c = _style(0, random=True)["color"]
        ax.plot(x, [l["accuracy"] for l in random_results["layers"]], "^--", color=c,
                label="random-weights encoder")
        _band(ax, x, random_results["layers"], c)
    ax.axhline(results["majority_accuracy"], color="gray", lw=1, label="majority class")
    if "oracle" in results:
        ax.axhline(results["oracle"]["accuracy"], color="k", lw=1, ls="-.",
                   label="all layers (oracle)")
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
        cis = (results.get("ablation_ci95") or {}).get(mode, {})
        for i, how in enumerate(("top", "random", "bottom")):
            vals = [data[how][p] for p in pcts]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=how, capsize=2,
                   yerr=_yerr(vals, [cis.get(how, {}).get(p) for p in pcts]))
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


def study_layerwise_figure(summary, prop):
    """One panel per encoder: test accuracy per layer for ``prop`` with 95% bands, against the
    control task, the majority class and the random-weights copy (same hue, lighter)."""
    encs = {n: e for n, e in summary.real().items() if prop in e.probes}
    if not encs:
        return None
    styles = encoder_styles(summary.encoders)
    fig, axes = _grid(len(encs))
    for ax, (name, e) in zip(axes, encs.items()):
        res = e.probes[prop]
        x = np.arange(len(res["layers"]))
        st = styles[name]
        ax.plot(x, [l["accuracy"] for l in res["layers"]], "o-", color=st["color"], ms=4,
                label="trained / pretrained (95% CI)")
        _band(ax, x, res["layers"], st["color"])
        if all(l.get("control_accuracy") is not None for l in res["layers"]):
            ax.plot(x, [l["control_accuracy"] for l in res["layers"]], "s:", color="0.35",
                    ms=3, label="control task")
        copy = summary.random_copy(name)
        rnd = copy.probes.get(prop) if copy else None
        if rnd and len(rnd["layers"]) == len(x):
            rs = styles[copy.name]
            ax.plot(x, [l["accuracy"] for l in rnd["layers"]], "^--", color=rs["color"], ms=4,
                    label="random weights")
            _band(ax, x, rnd["layers"], rs["color"], alpha=0.25)
        ax.axhline(res["majority_accuracy"], color="gray", lw=1, label="majority")
        mci = res.get("majority_accuracy_ci95")
        if mci and None not in mci:
            ax.axhspan(mci[0], mci[1], color="gray", alpha=0.12, lw=0)
        ax.set_xticks(x, [l["name"] for l in res["layers"]], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{prop}: layer-wise probing accuracy\n(bands: 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig


def _panels_with(summary, key: str, width: float, height: float):
    """One panel per real encoder whose probe results have ``key``: (figure, [(axes, name,
    {property: results}, properties sorted)]), or None when none has."""
    encs = {n: {p: r for p, r in e.probes.items() if key in r}
            for n, e in summary.real().items()}
    encs = {n: probes for n, probes in encs.items() if probes}
    if not encs:
        return None
    fig, axes = _grid(len(encs), width, height)
    return fig, [(ax, n, e, sorted(e)) for ax, (n, e) in zip(axes, encs.items())]


def minimal_subset_heatmap(summary):
    """Share of each layer's neurons in the minimal subset, per encoder (rows: properties)."""
    panels = _panels_with(summary, "minimal_subset", 4.2, 3.0)
    if panels is None:
        return None
    fig, panels = panels
    for ax, name, e, props in panels:
        layers = e[props[0]]["layers"]
        M = np.array([[100 * e[p]["minimal_subset"]["per_layer"].get(l["name"], 0)
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
    """Accuracy keeping the top / random / bottom ``pct``% neurons, per encoder and property,
    with 95% intervals as error bars."""
    panels = _panels_with(summary, "ablation", 4.0, 3.0)
    if panels is None:
        return None
    fig, panels = panels
    for ax, name, e, props in panels:
        x = np.arange(len(props))
        for i, how in enumerate(("top", "random", "bottom")):
            vals = [e[p]["ablation"][mode][how].get(pct, np.nan) for p in props]
            cis = [((e[p].get("ablation_ci95") or {}).get(mode, {}).get(how, {})
                    .get(pct)) for p in props]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=f"{how} {pct}%", yerr=_yerr(vals, cis),
                   capsize=2, error_kw={"lw": 0.8})
        ovals = [e[p]["oracle"]["accuracy"] for p in props]
        ax.errorbar(x, ovals, yerr=_yerr(ovals, [e[p]["oracle"].get("accuracy_ci95")
                                                 for p in props]),
                    fmt="k_", ms=18, lw=0.8, label="all neurons")
        ax.set_xticks(x, props, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("test accuracy")
        ax.set_title(name, fontsize=10)
    panels[0][0].legend(fontsize=7)
    fig.suptitle(f"Ablation ({mode}): keep {pct}% of neurons\n(error bars: 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig


def overlap_figure(summary):
    """Jaccard overlap of the properties' minimal subsets, per encoder (numbers: shared)."""
    ov = summary.overlap
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


def _eer_axes(ax, summary, styles):
    """Draw one corpus's EER-per-layer curves on ``ax``."""
    eer = summary.eer
    for name in paired_order({n: summary.encoders[n] for n in eer if n in summary.encoders}):
        e, st = eer[name], styles[name]
        depth = np.linspace(0, 1, len(e["eer"]))
        ax.plot(depth, 100 * np.array(e["eer"], float), ls=st["ls"], marker=st["marker"],
                color=st["color"], label=name, ms=3)
    ax.set_xlabel("relative depth (first layer = 0, last = 1)")
    ax.set_ylabel("EER (%)")


def _eer_styles(*summaries):
    encs = {}
    for s in summaries:
        encs.update(s.encoders)
    return encoder_styles(encs)


def eer_figure(summary):
    """Speaker-verification EER per layer (cosine scoring); an encoder and its random-weights
    copy in the same hue (the copy lighter and dashed)."""
    if not summary.eer:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4))
    _eer_axes(ax, summary, _eer_styles(summary))        # same hues as the other figures
    ax.set_title("Speaker verification per layer (test speakers, cosine scoring)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def eer_corpora_figure(summary, recorded):
    """EER per layer on the built-in espeak corpus and on recorded speech, side by side."""
    if not summary.eer or not recorded.eer:
        return None
    styles = _eer_styles(summary, recorded)
    return _two_corpora(summary, recorded, lambda ax, s: _eer_axes(ax, s, styles),
                        "Speaker verification EER per layer, both corpora (cosine scoring)",
                        figsize=(12, 4))


def _two_corpora(summary, recorded, draw, suptitle, **subplots):
    """Two panels, the built-in corpus and recorded speech, drawn by ``draw(ax, summary)``,
    with one legend for both."""
    fig, axes = plt.subplots(1, 2, sharey=True, **subplots)
    for ax, s, title in zip(axes, (summary, recorded), CORPORA):
        draw(ax, s)
        ax.set_title(title, fontsize=10)
    axes[1].set_ylabel("")
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[1].legend(list(handles.values()), list(handles.keys()), fontsize=7, loc="upper left",
                   bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def bias_figure(summary):
    """Per-group accuracy of each task model: unmasked, protected-salient neurons masked inside
    the encoder, and as many random neurons masked; 95% intervals as error bars."""
    bias = summary.bias
    if not bias:
        return None
    fig, axes = _grid(len(bias), 4.2, 3.2)
    for ax, (name, b) in zip(axes, bias.items()):
        groups = [k for k in b["accuracy"] if k not in ("all", "gap")]
        x = np.arange(len(groups))
        for i, (key, label) in enumerate((("accuracy", "unmasked"),
                                          ("masked", f"{b['protected']} neurons masked"),
                                          ("random_masked", "random neurons masked"))):
            vals = [b[key][g] for g in groups]
            cis = [(b.get(f"{key}_ci95") or {}).get(g) for g in groups]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=label, yerr=_yerr(vals, cis),
                   capsize=2, error_kw={"lw": 0.8})
        counts = b.get("counts") or {}

        def tick(g):
            c = counts.get(g) or {}
            if not c:
                return g
            spk = f", {c['speakers']} spk" if c.get("speakers") is not None else ""
            return f"{g}\n(n={c.get('utterances')}{spk})"
        ax.set_xticks(x, [tick(g) for g in groups], fontsize=8)
        ax.set_xlabel(b["protected"])
        ax.set_ylabel(f"accuracy on its task ({b['task']})")
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("Bias: masking neurons inside the task model\n(error bars: 95% CI)", fontsize=10)
    fig.tight_layout()
    return fig


def _best_layer_axes(ax, summary, styles):
    """Draw one corpus's best-layer bars on ``ax``; False when it has no probes."""
    encs = {n: e.probes for n, e in summary.encoders.items() if e.probes}
    props = summary.properties()
    if not props:
        return False
    names = paired_order({n: summary.encoders[n] for n in encs})
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        best = [max(encs[n][p]["layers"], key=lambda l: l["accuracy"])
                if p in encs[n] and encs[n][p]["layers"] else None
                for p in props]
        vals = [b["accuracy"] if b else 0 for b in best]
        cis = [b.get("accuracy_ci95") if b else None for b in best]
        st = styles[n]
        ax.bar(np.arange(len(props)) + (i - len(names) / 2 + 0.5) * width, vals, width,
               label=n, color=st["color"], hatch=st["hatch"], edgecolor=st["edge"], lw=0.5,
               yerr=_yerr(vals, cis), capsize=1.5, error_kw={"lw": 0.7})
    ax.set_xticks(np.arange(len(props)), props)
    ax.set_ylabel("best-layer test accuracy")
    ax.set_ylim(0, 1.02)
    return True


def best_layer_figure(summary):
    """Best-layer accuracy per property and encoder with its 95% interval; each encoder's
    random-weights copy beside it in the same hue, lighter and hatched."""
    props = summary.properties()
    if not props:
        return None
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(props) + 4.5), 4))
    _best_layer_axes(ax, summary, encoder_styles(summary.encoders))
    ax.set_title("Best layer per property and encoder (lighter, hatched: random weights; "
                 "error bars: 95% CI)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside the bars
    fig.tight_layout()
    return fig


def best_layer_corpora_figure(summary, recorded):
    """The best-layer figure for both corpora side by side (same colours per encoder)."""
    count = [len(s.properties()) for s in (summary, recorded)]
    if not all(count):
        return None
    styles = encoder_styles({**summary.encoders, **recorded.encoders})
    return _two_corpora(summary, recorded, lambda ax, s: _best_layer_axes(ax, s, styles),
                        "Best layer per property and encoder, both corpora (lighter, hatched: "
                        "random weights; error bars: 95% CI)",
                        figsize=(max(12, 1.2 * sum(count) + 6), 4),
                        gridspec_kw={"width_ratios": [max(c, 1.5) for c in count]})


def ranking_agreement_figure(summary):
    """Top-5% overlap between the neuron-ranking methods, per encoder and property (the
    numbers), with the chance level in the title; Fan et al. (NeurIPS 2023) compare methods so."""
    panels = [(f"{n} / {p}", r["ranking_agreement"])
              for n, e in summary.encoders.items() for p, r in e.probes.items()
              if r.get("ranking_agreement")]
    if not panels:
        return None
    fig, axes = _grid(len(panels), 3.6, 3.3)
    for ax, (title, ag) in zip(axes, panels):
        ms = ag["methods"]
        M = np.eye(len(ms))
        for pr in ag["pairs"]:
            i, j = ms.index(pr["a"]), ms.index(pr["b"])
            M[i, j] = M[j, i] = pr["top5_overlap"]
        ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(ms)):
            for j in range(len(ms)):
                ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if M[i, j] < 0.5 else "k")
        ax.set_xticks(range(len(ms)), ms, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(ms)), ms, fontsize=7)
        ax.set_title(f"{title}\n(chance {ag['chance']['top5_overlap']:.3f})", fontsize=8)
    fig.suptitle("Top-5% neuron overlap between ranking methods")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


# ----------------------------------------------------------------------------- the study's figures
def corpus_figures(summary: CorpusSummary) -> dict:
    """name -> Figure for every figure one corpus's summary supports."""
    figs = {f"layerwise_{p}.png": study_layerwise_figure(summary, p)
            for p in summary.properties()}
    figs["minimal_subset_heatmap.png"] = minimal_subset_heatmap(summary)
    figs["ablation.png"] = study_ablation_figure(summary)
    figs["overlap.png"] = overlap_figure(summary)
    figs["eer.png"] = eer_figure(summary)
    figs["bias.png"] = bias_figure(summary)
    figs["best_layer.png"] = best_layer_figure(summary)
    figs["ranking_agreement.png"] = ranking_agreement_figure(summary)
    return {k: v for k, v in figs.items() if v is not None}


def study_figures(summary: StudySummary) -> dict:
    """name -> Figure for the whole study: the main corpus's figures, the recorded corpus's
    prefixed ``recorded_``, and ``*_corpora.png`` with both corpora side by side."""
    figs = corpus_figures(summary)
    rec = summary.recorded.studied() if summary.recorded else None
    if rec is not None:
        figs.update({f"recorded_{k}": v for k, v in corpus_figures(rec).items()})
        both = {"best_layer_corpora.png": best_layer_corpora_figure(summary, rec),
                "eer_corpora.png": eer_corpora_figure(summary, rec)}
        figs.update({k: v for k, v in both.items() if v is not None})
    return figs
