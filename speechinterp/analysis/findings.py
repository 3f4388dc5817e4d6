"""The paper's nine findings (docs/method.md), each a stated criterion over 95% intervals.

Each finding is evaluated per encoder (or encoder/property pair) it is *about*, with one of
three outcomes, ``holds``, ``does not hold`` or ``undecided`` (always with the reason), and the
outcomes are combined by :data:`AGGREGATION`. Input is the study summary of
``experiments/run_study.py``::

    {"encoders": {name: {"kind", "random", "base", "family", "architecture", "trained_for",
                         "task_model": {...}, "probes": {prop: results.json}}},
     "overlap": {name: {"names", "shared", "jaccard"}}, "redundancy": {name: {...}},
     "bias": {name: {..., "gap_ci95", "masked_drop_gap_ci95", "counts"}}}

Results of older runs without intervals are never decided on (undecided, "no interval").
"""
from __future__ import annotations

import math

from speechinterp.analysis.numbers import accuracy_text

HOLDS, NOT, UNDECIDED = "holds", "does not hold", "undecided"
_AS_BOOL = {HOLDS: True, NOT: False, UNDECIDED: None}

from speechinterp.corpus.splits import MIN_SPEAKERS  # noqa: E402 (one owner: the splits)
STABLE_TOP5 = 0.5     # a neuron-level claim needs at least this top-5% ranking overlap over seeds
ENCODED_LAYERS = 0.5  # "distributed": encoded in at least this fraction of layers (and two)
REDUNDANT_KEEP = 0.9  # "redundant": random 20% keeps this fraction of the oracle's gain
SUBSET_FRACTION = 0.10  # "minimal subset exists": at most this fraction of all neurons
ALPHA = 0.05          # shared neurons: hypergeometric test level (Bonferroni over pairs)
BIAS_MARGIN = 0.05    # "no gender bias": both gap intervals inside +-this margin
CNN_TOLERANCE = 0.05  # "competitive": the CNN is at most this far below the Transformer
NO_GAIN = 0.05        # "not encoded": the gain over the majority is at most this

ENCODED = ("a layer *encodes* a property when the 95% interval of its gain over the majority "
           "baseline (accuracy - majority, paired: both on the same bootstrap resamples of the "
           "test speakers) lies above 0; it *does not encode* it when that interval's upper "
           f"bound is at most {NO_GAIN}; otherwise that layer is undecided. (Results without a "
           "gain interval compare the accuracy interval with the majority's instead.)")

AGGREGATION = ("Across the encoders (or encoder/property pairs) a finding is about: it holds if "
               "at least one holds and none does not hold; it does not hold if at least one does "
               "not hold and none holds; otherwise it is undecided (\"mixed\" when some hold and "
               "some do not, \"no encoder decided\" when all are undecided, \"nothing to test\" "
               "when the run has no encoder the finding is about). Undecided is never counted as "
               "a yes or a no.")

UNDECIDED_WHEN = (
    "An encoder's outcome is undecided, with the reason, when: the property was not probed; "
    "its probes are flagged by the convergence diagnostic; a class has fewer than "
    f"{MIN_SPEAKERS} test speakers (not testable: confounded with speaker identity); a needed "
    "interval is missing; the finding rests on a task model that did not learn its task; a "
    f"neuron-level claim rests on a ranking whose top-5% overlap across seeds is below "
    f"{STABLE_TOP5}; or the intervals overlap the threshold.")

CRITERIA = {
    "distributed": (
        "Per trained encoder probed for {prop}: holds when {prop} is encoded in at least "
        f"{ENCODED_LAYERS:.0%} of its layers and in at least two; does not hold when, even "
        "counting its undecided layers as encoded, it is encoded in fewer; else undecided."),
    "redundant": (
        "Per trained encoder and property whose oracle (all neurons) encodes it: holds when a "
        "random 20% of the neurons, retrained, keeps at least "
        f"{REDUNDANT_KEEP:.0%} of the oracle's gain over the majority at its interval's lower "
        "bound; does not hold when its interval's upper bound falls short of that; else "
        "undecided."),
    "dialect": (
        "Per network trained for accent, against every other trained encoder probed for "
        "accent: holds when its best layer is in its upper half and encodes accent, and each "
        "other encoder encodes accent in no layer or has its best layer's interval entirely "
        "below the task network's; does not hold when no layer of the task network encodes "
        "accent, its best layer is in the lower half with an interval above every upper "
        "layer's, or another encoder's best interval is entirely above its; else undecided."),
    "minimal": (
        "Per trained encoder and encoded property (the oracle encodes it, see above), with "
        f"a stable ranking: holds when the minimal subset is at most {SUBSET_FRACTION:.0%} of "
        "the neurons, its test interval reaches oracle x (1 - delta) and lies above the "
        f"majority's; does not hold when it needs more than {SUBSET_FRACTION:.0%} or its "
        "interval's upper bound stays below oracle x (1 - delta); else undecided."),
    "shared": (
        "Per trained encoder, over pairs of properties both encoded by the oracle (see above), "
        "with stable rankings: holds when a pair's minimal subsets share more "
        f"neurons than chance (hypergeometric p < {ALPHA} / number of pairs); does not hold "
        "when no pair shares a neuron; else undecided (sharing at chance level)."),
    "bias": (
        "Per task model that learned its task, with at least "
        f"{MIN_SPEAKERS} test speakers per gender: holds when the interval of the per-gender "
        "accuracy gap, or of the gap in the accuracy drop when the gender-salient neurons are "
        "masked inside the encoder, excludes 0; does not hold when both intervals lie inside "
        f"+-{BIAS_MARGIN}; else undecided."),
    "invariant": (
        "Per pretrained Transformer encoder (registry architecture), on {prop} decoded on "
        "unseen (speaker-disjoint) test speakers: holds when its best layer encodes {prop} and "
        "the interval's lower bound is also above the control task's accuracy; does not hold "
        "when no layer encodes it; else undecided."),
    "competitive": (
        "Per task CNN that learned its task and property also probed in a Transformer "
        "(registry architecture): d = best Transformer layer's accuracy - the CNN's best "
        "layer's, with a 95% interval whose half-width combines the two intervals' half-widths "
        f"in quadrature; holds when d's upper bound <= {CNN_TOLERANCE}; does not hold when d's "
        f"lower bound > {CNN_TOLERANCE}; else undecided."),
}


# ----------------------------------------------------------------------------- small helpers
def _pair(v):
    """(low, high) from a stored interval, or None when missing or malformed."""
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _acc_ci(d):
    return _pair((d or {}).get("accuracy_ci95"))


def _num(a, ci=None) -> str:
    return accuracy_text(a, ci, no_interval=" [no interval]")


def _fmt(d) -> str:
    return _num(d["accuracy"], _acc_ci(d))


def _maj(res):
    return _pair(res.get("majority_accuracy_ci95"))


def _maj_text(res) -> str:
    return f"majority {_num(res.get('majority_accuracy', float('nan')), _maj(res))}"


def _n(k, word) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _out(outcome, why):
    return {"outcome": outcome, "why": why}


def _real(summary, kind=None):
    return {n: e for n, e in summary.get("encoders", {}).items()
            if not e.get("random") and (kind is None or e.get("kind") == kind)}


def _best(res):
    i = max(range(len(res["layers"])), key=lambda k: res["layers"][k]["accuracy"])
    return i, res["layers"][i]


def architecture(e) -> str | None:
    """An encoder's architecture, from the encoder registry (by family)."""
    from speechinterp import encoders
    try:
        return encoders.architecture(e["family"])
    except (KeyError, TypeError):
        return e.get("architecture")


def layer_state(layer, res) -> str | None:
    """"encoded", "not encoded" or "undecided" (see :data:`ENCODED`); None without intervals."""
    gain = _pair(layer.get("gain_ci95"))
    if gain is not None:
        return "encoded" if gain[0] > 0 else "not encoded" if gain[1] <= NO_GAIN else "undecided"
    ci, maj = _acc_ci(layer), _maj(res)
    if ci is None or maj is None:
        return None
    return "encoded" if ci[0] > maj[1] else "not encoded" if ci[1] <= maj[1] else "undecided"


def probe_problem(res, prop, intervals=True) -> str | None:
    """Why one probe result cannot decide anything (None when it can)."""
    if res is None:
        return f"{prop} not probed"
    conv = res.get("convergence") or {}
    if conv.get("ok") is False:
        below = conv.get("below_majority_significant", conv.get("below_majority"))
        flags = [f"below majority at {', '.join(below)}"] if below else []
        flags += ["oracle below its best layer"] if conv.get("oracle_below_best_layer") else []
        return (f"{prop} probes flagged by the convergence diagnostic "
                f"({'; '.join(flags) or 'ok false'})")
    from speechinterp.probes.data import SPEAKER_TASKS   # classes are speakers: no confound
    spc = {} if res.get("task", prop) in SPEAKER_TASKS else res.get("speakers_per_class") or {}
    few = {c: n for c, n in (spc.get("test") or {}).items() if n < MIN_SPEAKERS}
    if few:
        return (f"{prop} not testable: " + ", ".join(f"{c} has {n}" for c, n in sorted(few.items()))
                + f" test speaker(s) (< {MIN_SPEAKERS})")
    if intervals and (_maj(res) is None or any(_acc_ci(l) is None for l in res["layers"])):
        return f"{prop}: no interval in these results"
    return None


def task_model_problem(name, e) -> str | None:
    """Why a task model cannot carry a finding (it did not learn its task), or None."""
    tm = (e or {}).get("task_model")
    if tm and tm.get("learned") is True:
        return None
    if not tm or "test_accuracy" not in tm:
        return f"task model {name} did not learn its task (no task accuracy recorded)"
    return (f"task model {name} did not learn its task (test acc "
            f"{_num(tm['test_accuracy'], _pair(tm.get('test_accuracy_ci95')))} vs majority "
            f"{tm.get('majority_accuracy', float('nan')):.3f})")


def stability(res) -> tuple[bool | None, str]:
    """(unstable?, text) of the neuron ranking's top-1% / top-5% overlap across seeds."""
    st = res.get("ranking_stability")
    if not st or st.get("top5_overlap") is None:
        return None, "ranking stability not measured"
    return (st["top5_overlap"] < STABLE_TOP5,
            f"ranking top-1% overlap {st.get('top1_overlap', float('nan')):.3f}, top-5% "
            f"{st['top5_overlap']:.3f} across {st.get('seeds', '?')} seeds")


def difference(a, b) -> tuple[float, float]:
    """(a - b, half-width of its 95% interval): the two intervals' half-widths in quadrature."""
    (alo, ahi), (blo, bhi) = _acc_ci(a), _acc_ci(b)
    return a["accuracy"] - b["accuracy"], math.hypot((ahi - alo) / 2, (bhi - blo) / 2)


def _oracle_encoded(res) -> str | None:
    """None when the oracle interval is above the majority's, else why not."""
    o, maj = _acc_ci(res.get("oracle")), _maj(res)
    if o is None or maj is None:
        return "no oracle interval"
    if layer_state(res["oracle"], res) != "encoded":
        return f"not encoded (oracle {_fmt(res['oracle'])} vs {_maj_text(res)})"
    return None


# ----------------------------------------------------------------------------- the findings
def distributed(summary, prop):
    """Encoded in most layers of each trained encoder (layer-wise)."""
    per = {}
    probed = [e for e in _real(summary).values() if prop in e.get("probes", {})]
    if not probed:
        return per, f"{prop} probed in no encoder"
    for name, e in _real(summary).items():
        res = e.get("probes", {}).get(prop)
        bad = probe_problem(res, prop)
        if bad:
            per[name] = _out(UNDECIDED, bad)
            continue
        states = [layer_state(l, res) for l in res["layers"]]
        n, enc, und = len(states), states.count("encoded"), states.count("undecided")
        need = max(2, math.ceil(ENCODED_LAYERS * n))
        _, best = _best(res)
        spread = sum(1 for v in res.get("minimal_subset", {}).get("per_layer", {}).values() if v)
        why = (f"encoded in {enc}/{n} layers ({und} undecided; needs {need}); best {best['name']} "
               f"{_fmt(best)} vs {_maj_text(res)}"
               + (f"; minimal subset spans {_n(spread, 'layer')}" if "minimal_subset" in res
                  else ""))
        per[name] = _out(HOLDS if enc >= need else NOT if enc + und < need else UNDECIDED, why)
    return per, None


def redundant(summary):
    """A random 20% of neurons keeps most of the oracle's gain."""
    per = {}
    for name, e in _real(summary).items():
        for prop, res in sorted(e.get("probes", {}).items()):
            if "oracle" not in res or "ablation" not in res:
                continue
            key = f"{name}/{prop}"
            bad = probe_problem(res, prop) or _oracle_encoded(res)
            r20 = res["ablation"].get("retrain", {}).get("random", {}).get("20")
            ci = _pair(((res.get("ablation_ci95") or {}).get("retrain", {}).get("random", {})
                        .get("20")))
            if bad or r20 is None or ci is None:
                per[key] = _out(UNDECIDED, bad or "no interval on the random-20% ablation")
                continue
            maj, orc = res["majority_accuracy"], res["oracle"]["accuracy"]
            target = maj + REDUNDANT_KEEP * (orc - maj)
            why = (f"random 20% {_num(r20, ci)} vs {REDUNDANT_KEEP:.0%}-of-gain target "
                   f"{target:.3f} (oracle {_fmt(res['oracle'])}, majority {maj:.3f})")
            per[key] = _out(HOLDS if ci[0] >= target else NOT if ci[1] < target else UNDECIDED,
                            why)
    extra = [f"{n}: {r['clusters']} correlation clusters for {r['neurons']} neurons"
             for n, r in sorted((summary.get("redundancy") or {}).items())
             if isinstance(r, dict) and "clusters" in r]
    return per, None if per else "no ablation results", extra


def _compare_other(name, res, prop, ref):
    """("below" | "above" | "overlap" | "undecided", text): another encoder's best layer for
    `prop` against the task network's best layer ``ref``."""
    bad = probe_problem(res, prop)
    if bad:
        return UNDECIDED, f"{name}: {bad}"
    _, best = _best(res)
    c, r = _acc_ci(best), _acc_ci(ref)
    text = f"{name} best {best['name']} {_fmt(best)}"
    if all(layer_state(l, res) == "not encoded" for l in res["layers"]):
        return "below", text + " (no layer encodes it)"
    return ("below" if c[1] < r[0] else "above" if c[0] > r[1] else "overlap"), text


def dialect_task_oriented(summary, prop="accent"):
    """Accent best in the network trained for it, in its upper layers, weaker elsewhere."""
    per = {}
    cnns = {n: e for n, e in _real(summary, "task_cnn").items() if e.get("trained_for") == prop}
    if not cnns:
        return per, f"no task network trained for {prop}"
    others = {n: e["probes"][prop] for n, e in _real(summary).items()
              if n not in cnns and prop in e.get("probes", {})}
    for name, e in sorted(cnns.items()):
        res = e.get("probes", {}).get(prop)
        bad = task_model_problem(name, e) or probe_problem(res, prop)
        if bad:
            per[name] = _out(UNDECIDED, bad)
            continue
        i, best = _best(res)
        n = len(res["layers"])
        upper = i >= n / 2
        states = [layer_state(l, res) for l in res["layers"]]
        ups = [_acc_ci(l) for l in res["layers"][math.ceil(n / 2):]]
        own = (HOLDS if upper and states[i] == "encoded"
               else NOT if all(s == "not encoded" for s in states)
               or (not upper and ups and all(_acc_ci(best)[0] > u[1] for u in ups))
               else UNDECIDED)
        cmp = [_compare_other(o, r, prop, best) for o, r in sorted(others.items())]
        why = (f"best layer {best['name']} {_fmt(best)} ({'upper' if upper else 'lower'} half "
               f"of {n}) vs {_maj_text(res)}"
               + ("" if own != NOT else f"; {prop} not encoded in its upper layers")
               + "; others: " + ("; ".join(f"{t} ({c})" for c, t in cmp) or "none probed"))
        if own == NOT or any(c == "above" for c, _ in cmp):
            per[name] = _out(NOT, why)
        elif own == HOLDS and cmp and all(c == "below" for c, _ in cmp):
            per[name] = _out(HOLDS, why)
        else:
            per[name] = _out(UNDECIDED, why + ("; no other encoder to compare with" if not cmp
                                               else "; intervals overlap"))
    return per, None


def minimal_subsets_exist(summary):
    """A small subset of neurons reaches the oracle within delta on test."""
    per = {}
    for name, e in _real(summary).items():
        for prop, res in sorted(e.get("probes", {}).items()):
            ms = res.get("minimal_subset")
            if not ms or "oracle" not in res:
                continue
            key = f"{name}/{prop}"
            unstable, stab = stability(res)
            ci = _acc_ci(ms)
            bad = (probe_problem(res, prop) or _oracle_encoded(res)
                   or ("no interval on the minimal subset" if ci is None else None)
                   or (f"ranking unstable ({stab})" if unstable else None))
            if bad:
                per[key] = _out(UNDECIDED, bad)
                continue
            target = res["oracle"]["accuracy"] * (1 - ms.get("delta", 0.01))
            why = (f"{_n(ms['size'], 'neuron')} ({100 * ms['fraction']:.1f}%) at {_fmt(ms)} vs "
                   f"oracle "
                   f"x (1 - {ms.get('delta', 0.01)}) = {target:.3f}, {_maj_text(res)}; {stab}")
            if ms["fraction"] > SUBSET_FRACTION or ci[1] < target:
                per[key] = _out(NOT, why)
            elif ci[0] > _maj(res)[1]:
                per[key] = _out(HOLDS, why)
            else:
                per[key] = _out(UNDECIDED, why + "; subset interval overlaps the majority's")
    return per, None if per else "no minimal subsets in this run"


def _hypergeom_sf(k, total, a, b):
    from scipy.stats import hypergeom
    return float(hypergeom.sf(k - 1, total, a, b))


def shared_neurons(summary):
    """Two encoded properties share more salient neurons than chance."""
    per = {}
    for name, ov in sorted((summary.get("overlap") or {}).items()):
        e = summary.get("encoders", {}).get(name, {})
        if e.get("random"):
            continue
        probes = e.get("probes", {})
        ok, notes = [], []
        for i, p in enumerate(ov["names"]):
            res = probes.get(p)
            unstable, stab = stability(res) if res else (None, "")
            bad = (probe_problem(res, p) or _oracle_encoded(res)
                   or (f"{p} ranking unstable ({stab})" if unstable else None))
            (notes.append(f"{p} left out: {bad}") if bad else ok.append(i))
        stabs = "; ".join(f"{ov['names'][i]} {stability(probes[ov['names'][i]])[1]}" for i in ok)
        if len(ok) < 2:
            per[name] = _out(UNDECIDED, "fewer than two encoded properties with stable rankings"
                             + (f" ({'; '.join(notes)})" if notes else ""))
            continue
        total = sum(l["dim"] for l in probes[ov["names"][ok[0]]]["layers"])
        sh = ov["shared"]
        pairs = [(i, j) for a, i in enumerate(ok) for j in ok[a + 1:]]
        tests = sorted(((_hypergeom_sf(sh[i][j], total, sh[i][i], sh[j][j]) if sh[i][j] else 1.0,
                         i, j) for i, j in pairs))
        p, i, j = tests[0]
        why = (f"{ov['names'][i]} & {ov['names'][j]} share {sh[i][j]} of {sh[i][i]} and "
               f"{sh[j][j]} neurons (chance {sh[i][i] * sh[j][j] / total:.2f} of {total}, "
               f"p = {p:.2g}, level {ALPHA / len(pairs):.2g}); {stabs}")
        per[name] = _out(HOLDS if p < ALPHA / len(pairs)
                         else NOT if all(sh[i][j] == 0 for i, j in pairs) else UNDECIDED,
                         why if any(sh[i][j] for i, j in pairs)
                         else f"no pair of encoded properties shares a neuron; {stabs}")
    return per, None if per else "no overlap computed"


def gender_bias(summary):
    """A task model's per-gender accuracy gap, or its masked-drop gap, excludes 0."""
    per = {}
    for name, b in sorted((summary.get("bias") or {}).items()):
        e = summary.get("encoders", {}).get(name, {})
        prot = b.get("protected", "gender")
        res = e.get("probes", {}).get(prot)
        bad = task_model_problem(name, e) or (probe_problem(res, prot, intervals=False)
                                              if res else None)
        counts = {g: c if isinstance(c, dict) else {"utterances": c}
                  for g, c in (b.get("counts") or {}).items()}
        few = {g: c["speakers"] for g, c in counts.items()
               if c.get("speakers") is not None and c["speakers"] < MIN_SPEAKERS}
        if not bad and few:
            bad = (f"{prot} not testable: " + ", ".join(f"{g} has {k}" for g, k in sorted(
                few.items())) + f" test speaker(s) (< {MIN_SPEAKERS})")
        if not bad and any(not c.get("utterances") for c in counts.values()):
            bad = f"a {prot} group has no test utterance"

        def n_of(g):
            c = counts.get(g)
            return "" if not c else f" (n={c.get('utterances')}" + (
                f", {c['speakers']} speakers)" if c.get("speakers") is not None else ")")
        gap, drop = _pair(b.get("gap_ci95")), _pair(b.get("masked_drop_gap_ci95"))
        acc = b.get("accuracy", {})
        why = ", ".join(f"{g} {acc[g]:.3f}{n_of(g)}" for g in sorted(acc)
                        if g not in ("all", "gap"))
        why += (f"; gap {_num(acc.get('gap', float('nan')), gap)}; masked-drop gap "
                f"{_num(b.get('masked_drop', {}).get('gap', float('nan')), drop)}")
        if bad:
            per[name] = _out(UNDECIDED, bad)
            continue
        excl = [c for c in (gap, drop) if c and (c[0] > 0 or c[1] < 0)]
        inside = [c for c in (gap, drop) if c and -BIAS_MARGIN <= c[0] and c[1] <= BIAS_MARGIN]
        per[name] = _out(HOLDS if excl else NOT if len(inside) == 2 else UNDECIDED,
                         why if (gap or drop) else why + "; no interval")
    return per, None if per else "no bias analysis (needs a task CNN and gender labels)"


def speaker_invariant(summary, prop="language"):
    """Pretrained Transformers decode `prop` on unseen speakers, above majority and control."""
    per = {}
    trans = {n: e for n, e in _real(summary, "pretrained").items()
             if architecture(e) == "transformer"}
    if not trans:
        return per, "no pretrained Transformer encoder in this run"
    if not any(prop in e.get("probes", {}) for e in trans.values()):
        return per, f"{prop} probed in no pretrained Transformer encoder"
    for name, e in trans.items():
        res = e.get("probes", {}).get(prop)
        bad = probe_problem(res, prop)
        if bad:
            per[name] = _out(UNDECIDED, bad)
            continue
        _, best = _best(res)
        ctrl = best.get("control_accuracy")
        why = (f"best {best['name']} {_fmt(best)} vs {_maj_text(res)}, control "
               + (f"{ctrl:.3f}" if ctrl is not None else "n/a"))
        state = layer_state(best, res)
        if state == "encoded" and (ctrl is None or _acc_ci(best)[0] > ctrl):
            per[name] = _out(HOLDS, why)
        elif all(layer_state(l, res) == "not encoded" for l in res["layers"]):
            per[name] = _out(NOT, why + f"; no layer encodes {prop}")
        else:
            per[name] = _out(UNDECIDED, why + "; interval overlaps the majority or the control")
    return per, None


def cnn_competitive(summary, tolerance=CNN_TOLERANCE):
    """Task CNNs' best layers are not worse than the best Transformer layer by > tolerance."""
    per = {}
    cnns = _real(summary, "task_cnn")
    trans = {n: e for n, e in _real(summary).items()
             if n not in cnns and architecture(e) == "transformer"}
    if not cnns or not trans:
        return per, (f"needs a task CNN and a Transformer encoder (task CNNs: "
                     f"{', '.join(sorted(cnns)) or 'none'}; Transformers: "
                     f"{', '.join(sorted(trans)) or 'none'})")
    for cname, ce in sorted(cnns.items()):
        for prop in sorted(ce.get("probes", {})):
            cand = [(n, e["probes"][prop]) for n, e in sorted(trans.items())
                    if prop in e.get("probes", {})]
            if not cand:
                continue
            key = f"{cname}/{prop}"
            good = [(n, r) for n, r in cand if not probe_problem(r, prop)]
            bad = (task_model_problem(cname, ce) or probe_problem(ce["probes"][prop], prop)
                   or (None if good else "; ".join(f"{n}: {probe_problem(r, prop)}"
                                                   for n, r in cand)))
            if bad:
                per[key] = _out(UNDECIDED, bad)
                continue
            tname, tres = max(good, key=lambda nr: _best(nr[1])[1]["accuracy"])
            _, cb = _best(ce["probes"][prop])
            _, tb = _best(tres)
            d, hw = difference(tb, cb)
            why = (f"{cname} {cb['name']} {_fmt(cb)} vs Transformer {tname} {tb['name']} "
                   f"{_fmt(tb)}: difference {_num(d, (d - hw, d + hw))}")
            per[key] = _out(HOLDS if d + hw <= tolerance
                            else NOT if d - hw > tolerance else UNDECIDED, why)
    return per, None if per else "no property probed in both a task CNN and a Transformer"


_ABOUT_DIST = "every trained encoder probed for {prop}, not the random-weights copies"
FINDINGS = [
    ("Channel information is distributed across the network",
     lambda s: distributed(s, "channel"), CRITERIA["distributed"].format(prop="channel"),
     _ABOUT_DIST.format(prop="channel"), "layerwise_channel.png"),
    ("Gender information is distributed across the network",
     lambda s: distributed(s, "gender"), CRITERIA["distributed"].format(prop="gender"),
     _ABOUT_DIST.format(prop="gender"), "layerwise_gender.png"),
    ("Information is redundant in neurons", redundant, CRITERIA["redundant"],
     "every trained encoder and property with ablation results", "ablation.png"),
    ("Dialect (accent) information is encoded only in the task-oriented network, in its upper "
     "layers", dialect_task_oriented, CRITERIA["dialect"],
     "the task network trained for accent, compared with every other trained encoder probed "
     "for accent", "layerwise_accent.png"),
    ("Minimal neuron subsets exist", minimal_subsets_exist, CRITERIA["minimal"],
     "every trained encoder and property with a minimal subset", "minimal_subset_heatmap.png"),
    ("Salient neurons are sometimes shared between properties", shared_neurons,
     CRITERIA["shared"], "every trained encoder probed for two or more properties",
     "overlap.png"),
    ("Gender bias is visible in task models", gender_bias, CRITERIA["bias"],
     "the task models with a bias analysis", "bias.png"),
    ("Pretrained models capture speaker-invariant information", speaker_invariant,
     CRITERIA["invariant"].format(prop="language"),
     "pretrained Transformer encoders, not pitch trackers or speaker encoders",
     "layerwise_language.png"),
    ("CNNs are competitive with Transformers on these properties", cnn_competitive,
     CRITERIA["competitive"], "task CNNs, each against the best Transformer-architecture "
     "encoder", "best_layer.png"),
]


def aggregate(per: dict, none_reason: str | None = None) -> tuple[str, str]:
    """(outcome, reason) over per-encoder outcomes, by :data:`AGGREGATION`."""
    got = [v["outcome"] for v in per.values()]
    h, n = got.count(HOLDS), got.count(NOT)
    if not got:
        return UNDECIDED, f"nothing to test: {none_reason or 'no encoder this finding is about'}"
    if h and not n:
        return HOLDS, f"{h} of {len(got)} hold, none does not hold"
    if n and not h:
        return NOT, f"{n} of {len(got)} do not hold, none holds"
    if h and n:
        return UNDECIDED, f"mixed: {h} hold, {n} do not hold"
    return UNDECIDED, "no encoder decided"


def evaluate(summary) -> list[dict]:
    """The nine findings with per-encoder outcomes, the overall outcome and the evidence."""
    out = []
    for title, check, criterion, about, fig in FINDINGS:
        per, none_reason, *extra = check(summary)
        outcome, why = aggregate(per, none_reason)
        evidence = "; ".join([f"{k}: {v['outcome']} ({v['why']})" for k, v in per.items()]
                             + (extra[0] if extra else [])) or why
        out.append({"finding": title, "criterion": criterion, "about": about,
                    "per_encoder": per, "outcome": outcome, "why": why,
                    "holds": _AS_BOOL[outcome], "evidence": evidence, "figure": fig})
    return out
