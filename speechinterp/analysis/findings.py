"""The paper's nine qualitative findings (METHOD.md), each checked against this run's numbers.

Each check takes the study summary (see ``experiments/run_study.py``):

    summary = {"encoders": {name: {"kind": "task_cnn"|"pretrained", "random": bool,
                                   "base": name, "probes": {prop: results.json}}},
               "eer": {name: [eer per layer]}, "overlap": {name: {...}},
               "redundancy": {name: {prop: {...}}}, "bias": {...}}

and returns ``{"finding", "holds": True|False|None, "evidence": str, "figure": str}``; ``None``
means this run cannot decide it (the property or encoder kind is missing).
"""
from __future__ import annotations

import numpy as np

MARGIN = 0.10  # accuracy above the majority baseline that counts as "encodes the property"


def _real(summary, kind=None):
    return {n: e for n, e in summary["encoders"].items()
            if not e["random"] and (kind is None or e["kind"] == kind)}


def _best(res):
    return max(l["accuracy"] for l in res["layers"])


def _encoded_layers(res, margin=MARGIN):
    return [l["accuracy"] - res["majority_accuracy"] >= margin for l in res["layers"]]


def distributed(summary, prop):
    """`prop` is encoded in most layers of every real encoder, and its minimal subset spans
    several layers."""
    rows, verdicts = [], []
    for name, e in _real(summary).items():
        res = e["probes"].get(prop)
        if res is None:
            continue
        enc = _encoded_layers(res)
        spread = sum(1 for v in res["minimal_subset"]["per_layer"].values() if v > 0)
        ok = np.mean(enc) >= 0.6 and (spread >= 2 or len(enc) <= 2)
        verdicts.append(ok)
        rows.append(f"{name}: {sum(enc)}/{len(enc)} layers above majority+{MARGIN:.2f}, "
                    f"minimal subset in {spread} layers")
    if not verdicts:
        return None, f"no {prop} probes in this run"
    return bool(np.mean(verdicts) >= 0.5), "; ".join(rows)


def redundant(summary):
    """Random neurons retain most of the oracle accuracy at 20% and correlation clusters are
    fewer than neurons."""
    rows, verdicts = [], []
    for name, e in _real(summary).items():
        for prop, res in e["probes"].items():
            rnd = res["ablation"]["retrain"]["random"].get("20")
            if rnd is None:
                continue
            keep = rnd / max(res["oracle"]["accuracy"], 1e-9)
            red = summary.get("redundancy", {}).get(name, {}).get("clusters")
            verdicts.append(keep >= 0.9)
            rows.append(f"{name}/{prop}: random 20% keeps {100 * keep:.0f}% of oracle")
        red = summary.get("redundancy", {}).get(name)
        if red:
            rows.append(f"{name}: {red['clusters']} correlation clusters for {red['neurons']} "
                        f"neurons")
    if not verdicts:
        return None, "no ablation results"
    return bool(np.mean(verdicts) >= 0.5), "; ".join(rows)


def dialect_task_oriented(summary, prop="accent"):
    """Accent is best encoded by the network trained for it, in its upper layers."""
    cnn = [n for n, e in _real(summary, "task_cnn").items() if e.get("trained_for") == prop]
    others = [n for n, e in _real(summary).items() if n not in cnn and prop in e["probes"]]
    if not cnn or not others or prop not in summary["encoders"][cnn[0]]["probes"]:
        return None, f"needs a CNN trained for {prop} and other encoders probed for it"
    res = summary["encoders"][cnn[0]]["probes"][prop]
    best_cnn = _best(res)
    best_other = max(_best(summary["encoders"][n]["probes"][prop]) for n in others)
    acc = [l["accuracy"] for l in res["layers"]]
    top_layer = int(np.argmax(acc))
    upper = top_layer >= len(acc) / 2
    holds = best_cnn > best_other and upper
    return holds, (f"{cnn[0]} best layer {res['layers'][top_layer]['name']} "
                   f"({best_cnn:.3f}, {'upper' if upper else 'lower'} half) vs best other "
                   f"encoder {best_other:.3f}")


def minimal_subsets_exist(summary):
    """Minimal subsets of at most 10% of the neurons reach oracle accuracy within delta."""
    fr = [(f"{n}/{p}", r["minimal_subset"]["fraction"]) for n, e in _real(summary).items()
          for p, r in e["probes"].items()]
    if not fr:
        return None, "no probes"
    small = [f for _, f in fr if f <= 0.10]
    return bool(len(small) >= len(fr) / 2), (
        f"{len(small)}/{len(fr)} encoder-property pairs need <= 10% of neurons; median "
        f"{100 * float(np.median([f for _, f in fr])):.1f}%")


def shared_neurons(summary):
    """Some salient neurons are shared between properties."""
    rows, any_shared = [], False
    for name, ov in summary.get("overlap", {}).items():
        shared = np.array(ov["shared"])
        np.fill_diagonal(shared, 0)
        if shared.size and shared.max() > 0:
            any_shared = True
            i, j = np.unravel_index(shared.argmax(), shared.shape)
            rows.append(f"{name}: {ov['names'][i]} & {ov['names'][j]} share {shared[i, j]}")
    if not summary.get("overlap"):
        return None, "no overlap computed"
    return any_shared, "; ".join(rows) or "no pair of properties shares a salient neuron"


def gender_bias(summary):
    """A task model's accuracy differs between genders, or masking gender neurons inside it
    hurts one gender more."""
    bias = summary.get("bias") or {}
    if not bias:
        return None, "no bias analysis (needs a task CNN and gender labels)"
    rows, found = [], False
    for name, b in bias.items():
        gap = abs(b["accuracy"].get("gap", 0.0))
        dm = b.get("masked_drop", {})
        drop_gap = abs(dm.get("gap", 0.0))
        found |= gap >= 0.05 or drop_gap >= 0.05
        rows.append(f"{name}: per-gender accuracy gap {gap:.3f}, gap in the drop when gender "
                    f"neurons are masked {drop_gap:.3f}")
    return found, "; ".join(rows)


def speaker_invariant(summary, prop="language"):
    """Pretrained encoders carry speaker-invariant information: `prop` is decoded on unseen
    speakers well above the majority baseline, with positive selectivity."""
    rows, verdicts = [], []
    for name, e in _real(summary, "pretrained").items():
        res = e["probes"].get(prop)
        if res is None:
            continue
        best = max(res["layers"], key=lambda l: l["accuracy"])
        ok = best["accuracy"] - res["majority_accuracy"] >= MARGIN and best["selectivity"] > 0.05
        verdicts.append(ok)
        rows.append(f"{name}: {prop} {best['accuracy']:.3f} at {best['name']} (majority "
                    f"{res['majority_accuracy']:.3f}, selectivity {best['selectivity']:+.3f})")
    if not verdicts:
        return None, f"no pretrained encoder probed for {prop}"
    return bool(all(verdicts)), "; ".join(rows)


def cnn_competitive(summary, tolerance=0.05):
    """The task CNNs reach, per property, within `tolerance` of the best Transformer layer."""
    cnns = _real(summary, "task_cnn")
    trans = {n: e for n, e in _real(summary, "pretrained").items() if e.get("family") == "whisper"
             or e.get("architecture") == "transformer"}
    if not cnns or not trans:
        return None, "needs both task CNNs and a Transformer"
    rows, verdicts = [], []
    props = set.intersection(*[set(e["probes"]) for e in list(cnns.values()) + list(trans.values())])
    for p in sorted(props):
        c = max(_best(e["probes"][p]) for e in cnns.values())
        t = max(_best(e["probes"][p]) for e in trans.values())
        verdicts.append(c >= t - tolerance)
        rows.append(f"{p}: CNN {c:.3f} vs Transformer {t:.3f}")
    return bool(np.mean(verdicts) >= 0.5), "; ".join(rows)


FINDINGS = [
    ("Channel information is distributed across the network", lambda s: distributed(s, "channel"),
     "layerwise_channel.png"),
    ("Gender information is distributed across the network", lambda s: distributed(s, "gender"),
     "layerwise_gender.png"),
    ("Information is redundant in neurons", redundant, "ablation.png"),
    ("Dialect (accent) information is encoded only in the task-oriented network, in its upper "
     "layers", dialect_task_oriented, "layerwise_accent.png"),
    ("Minimal neuron subsets exist", minimal_subsets_exist, "minimal_subset_heatmap.png"),
    ("Salient neurons are sometimes shared between properties", shared_neurons, "overlap.png"),
    ("Gender bias is visible in task models", gender_bias, "bias.png"),
    ("Pretrained models capture speaker-invariant information", speaker_invariant,
     "layerwise_language.png"),
    ("CNNs are competitive with Transformers on these properties", cnn_competitive,
     "best_layer.png"),
]


def evaluate(summary) -> list[dict]:
    out = []
    for title, check, fig in FINDINGS:
        holds, evidence = check(summary)
        out.append({"finding": title, "holds": holds, "evidence": evidence, "figure": fig})
    return out
