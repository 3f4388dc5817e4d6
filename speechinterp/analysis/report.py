"""The study report: Markdown text and a self-contained HTML page (figures inlined)."""
from __future__ import annotations

import base64
import html
import os

from speechinterp.analysis import plots

FIGURES = {
    "layerwise_{prop}.png": "layer-wise accuracy per encoder",
    "minimal_subset_heatmap.png": "where the minimal subsets live",
    "ablation.png": "top / random / bottom ablation",
    "overlap.png": "salient-neuron overlap",
    "eer.png": "speaker verification EER per layer",
    "bias.png": "gender bias through in-encoder masking",
    "best_layer.png": "best layer per property and encoder",
    "best_layer_corpora.png": "best layer, espeak and recorded corpus side by side",
    "eer_corpora.png": "speaker verification EER per layer, both corpora",
    "recorded_*.png": "the figures above on the recorded-speech corpus",
}

LIMITS = (
    "Limits of the built-in corpus: the speech is synthesised by espeak-ng (formant synthesis), "
    "so 'speakers' are voice variants with pitch, rate and formant settings, not people; "
    "'accent' is espeak's English accent rules, a stand-in for dialect; channels are simulated "
    "with real codecs and simple acoustics. Findings on this data are about these encoders' "
    "response to such variation, not a replication of the paper's numbers on VoxCeleb / ADI17. "
    "The task CNNs are small and trained on this corpus only, far from the paper's models; "
    "the Task models table shows how well each learned its own task.")


def _corpus_figures(summary) -> dict:
    figs = {}
    props = sorted({p for e in summary["encoders"].values() for p in e.get("probes", {})})
    for p in props:
        figs[f"layerwise_{p}.png"] = plots.study_layerwise_figure(summary, p)
    figs["minimal_subset_heatmap.png"] = plots.minimal_subset_heatmap(summary)
    figs["ablation.png"] = plots.study_ablation_figure(summary)
    figs["overlap.png"] = plots.overlap_figure(summary)
    figs["eer.png"] = plots.eer_figure(summary)
    figs["bias.png"] = plots.bias_figure(summary)
    figs["best_layer.png"] = plots.best_layer_figure(summary)
    figs["ranking_agreement.png"] = plots.ranking_agreement_figure(summary)
    return {k: v for k, v in figs.items() if v is not None}


def make_figures(summary) -> dict:
    """name -> matplotlib Figure for every figure the summary supports; the recorded corpus's
    figures are prefixed ``recorded_``, and ``*_corpora.png`` show both corpora side by side."""
    figs = _corpus_figures(summary)
    rec = _recorded(summary)
    if rec is not None:
        figs.update({f"recorded_{k}": v for k, v in _corpus_figures(rec).items()})
        both = {"best_layer_corpora.png": plots.best_layer_corpora_figure(summary, rec),
                "eer_corpora.png": plots.eer_corpora_figure(summary, rec)}
        figs.update({k: v for k, v in both.items() if v is not None})
    return figs


def _recorded(summary):
    """The recorded corpus's sub-summary when it was studied (status ok), else None."""
    rec = summary.get("recorded")
    if not rec or rec.get("status") != "ok" or not rec.get("encoders"):
        return None
    return {**rec, "encoders": rec["encoders"], "eer": rec.get("eer") or {},
            "overlap": rec.get("overlap") or {}, "bias": rec.get("bias") or {},
            "findings": rec.get("findings") or []}


def _verdict(h):
    return {True: "holds", False: "does not hold", None: "undecided"}[h]


def markdown(summary, figure_names, config) -> str:
    """The report as Markdown; a summary with ``recorded`` also gets the recorded corpus."""
    L = ["# speechinterp study report", ""]
    encs = summary["encoders"]
    has_rec = "recorded" in summary
    rec = _recorded(summary)
    L.append(f"Encoders: {', '.join(sorted(encs))}. Corpus: `{summary.get('corpus_manifest')}`. "
             + (_recorded_line(summary["recorded"]) if has_rec else "")
             + f"Total time {summary.get('total_time_s', 0):.0f} s.")
    L += [""] + HOW_TO_READ[:-1] + [""] + _task_models_section(summary)[:-1]
    if has_rec:
        L += ["", ESPEAK_ONLY]
    from speechinterp.analysis.findings import AGGREGATION, ENCODED, UNDECIDED_WHEN
    L += ["", "## Findings", ""]
    L += _findings_table(summary, figure_names) if has_rec else _findings_table_one(summary)
    L += ["", f"How the verdicts are reached: {ENCODED}. {UNDECIDED_WHEN} {AGGREGATION}"]
    L += ["", LIMITS]
    if has_rec:
        L += [""] + _recorded_section(summary["recorded"])[:-1]
    L += ["", "## Figures", ""]
    for name in figure_names:
        L += [f"### {_figure_heading(name)}", "", f"![{name}](figures/{name})", ""]
    if rec is None:
        L += _layerwise_section(summary)
    else:
        L += _layerwise_section(summary, "## Layer-wise results: built-in espeak corpus")
        L += _layerwise_section(rec, "## Layer-wise results: recorded human speech")
    L += _methods_section(summary) + _amnesic_section(summary)
    L += _eer_section(summary) + _bias_section(summary)
    if summary.get("stage_times_s"):
        L += ["## Stage times (s)", ""]
        L += [f"- {k}: {v:.1f}" for k, v in summary["stage_times_s"].items()]
    return "\n".join(L) + "\n"


CORPORA = plots.CORPORA
ESPEAK_ONLY = ("The task models table and the bias analysis are for the built-in espeak corpus "
               "only: the task CNNs were trained there, and their own tasks are not labelled on "
               "the recorded corpus.")


def _figure_heading(name: str) -> str:
    stem = name[:-4]
    if stem.startswith("recorded_"):
        return "recorded speech: " + stem[len("recorded_"):].replace("_", " ")
    if stem.endswith("_corpora"):
        return stem[:-len("_corpora")].replace("_", " ") + ": both corpora"
    return stem.replace("_", " ")


def _status(status) -> str:
    """``ok``, or ``**unavailable**: reason``."""
    status = str(status or "not recorded")
    head, sep, why = status.partition(":")
    return f"**{head}**: {why.strip()}" if sep and head != "ok" else status


def _reason(status) -> str:
    """The reason of ``unavailable: <reason>`` (the whole status if it has none)."""
    return str(status).partition(":")[2].strip() or str(status)


def _recorded_line(rec) -> str:
    if rec.get("status") == "ok":
        return f"Recorded-speech corpus: `{rec.get('corpus_manifest')}`. "
    return f"Recorded-speech corpus: {_status(rec.get('status'))}. "


def _overall(f) -> str:
    overall = f.get("outcome") or _verdict(f["holds"])
    why = f" ({f['why']})" if overall == "undecided" and f.get("why") else ""
    return f"**{overall}**{why}"


def _per_encoder(f) -> str:
    return "; ".join(f"`{k}`: {v['outcome']} ({v['why']})"
                     for k, v in f.get("per_encoder", {}).items()) or f["evidence"]


def _findings_table_one(summary) -> list:
    L = ["| # | finding (about) | criterion | outcome per encoder | overall | figure |",
         "| --- | --- | --- | --- | --- | --- |"]
    for i, f in enumerate(summary["findings"], 1):
        about = f" ({f['about']})" if f.get("about") else ""
        L.append(f"| {i} | {f['finding']}{about} | {f.get('criterion', '-')} | "
                 f"{_per_encoder(f).replace('|', '/')} | {_overall(f)} | `{f['figure']}` |")
    return L


def _findings_table(summary, figure_names) -> list:
    """One outcome column per corpus: the overall outcome, then the outcome per encoder."""
    rec = _recorded(summary)
    by_name = {f["finding"]: f for f in (rec or {}).get("findings", [])}
    L = [f"| # | finding (about) | criterion | {CORPORA[0]} | {CORPORA[1]} | figure |",
         "| --- | --- | --- | --- | --- | --- |"]
    for i, f in enumerate(summary["findings"], 1):
        about = f" ({f['about']})" if f.get("about") else ""
        g = by_name.get(f["finding"])
        if rec is None:
            other = ("not run (corpus unavailable)" if summary["recorded"].get("status") != "ok"
                     else "not run (no encoder was studied on it)")
        elif g is None:
            other = "not evaluated"
        else:
            other = f"{_overall(g)}. Per encoder: {_per_encoder(g)}"
        figs = f"`{f['figure']}`"
        if f"recorded_{f['figure']}" in figure_names:
            figs += f", `recorded_{f['figure']}`"
        L.append(f"| {i} | {f['finding']}{about} | {f.get('criterion', '-')} | "
                 f"{_overall(f)}. Per encoder: {_per_encoder(f).replace('|', '/')} | "
                 f"{other.replace('|', '/')} | {figs} |")
    return L + ["", "Each corpus's outcome comes from its own probes and intervals by the same "
                "criterion; a property the recorded corpus cannot test (see below) is not "
                "probed there, so findings about it are undecided on that corpus."]


def _speakers(n) -> str:
    return f"{n} speaker{'s' * (n != 1)}"


def _class_counts(prop, counts) -> str:
    """``female 24 speakers, male 28 speakers``; speaker identity: its own counts."""
    if not counts:
        return "no labels"
    if prop == "speaker" and "speakers" in counts:
        out = _speakers(counts["speakers"])
        if "with_enough_utterances" in counts:
            out += (f", {counts['with_enough_utterances']} with enough utterances for all "
                    "three splits")
        return out
    return ", ".join(f"{c} {_speakers(n)}" for c, n in counts.items())


def _not_testable_why(prop, counts) -> str:
    if prop == "speaker":
        return "not testable on this corpus: too few speakers with enough utterances"
    if len(counts or {}) < 2:
        return "not testable on this corpus: fewer than two classes"
    return "not testable on this corpus: confounded with speaker"


def _recorded_section(rec) -> list:
    """What the recorded corpus holds, which properties it can test, and which it cannot."""
    L = ["## Recorded human speech: what this corpus can and cannot show", ""]
    if rec.get("status") == "ok":
        L += [f"Corpus: `{rec.get('corpus_manifest')}`, assembled at run time from packages. "
              "Its encoders: " + (", ".join(sorted(rec.get("encoders") or {})) or "none")
              + ".", ""]
    else:
        L += [f"The recorded corpus could not be built ({_status(rec.get('status'))}); the "
              "findings, tables and figures below are from the built-in espeak corpus only.", ""]
    sources = rec.get("sources") or []
    if sources:
        L += ["| source | status | utterances | speakers (per gender) | languages | licence |",
              "| --- | --- | ---: | ---: | --- | --- |"]
        for src in sources:
            ok = src.get("status") == "ok"
            spg = src.get("speakers_per_gender") or {}
            spk = "-" if src.get("speakers") is None else str(src["speakers"])
            if spg:
                spk += " (" + ", ".join(f"{g} {n}" for g, n in spg.items()) + ")"
            L.append(f"| {src.get('name', '?')} | {_status(src.get('status'))} | "
                     f"{src.get('utterances', '-') if ok else '-'} | {spk if ok else '-'} | "
                     f"{', '.join(src.get('languages') or []) or '-'} | "
                     f"{src.get('licence') or '-'} |".replace("\n", " "))
        missing = [f"{src.get('name', '?')} ({_reason(src.get('status'))})"
                   for src in sources if src.get("status") != "ok"]
        if missing:
            L += ["", "Could not be fetched: " + "; ".join(missing) + "."]
        L.append("")
    testable = rec.get("testable") or {}
    if testable:
        yes = {p: v[1] for p, v in testable.items() if v[0]}
        no = {p: v[1] for p, v in testable.items() if not v[0]}
        L += ["Testable on this corpus (enough distinct speakers per class for a "
              "speaker-disjoint split):", ""]
        L += [f"- {p}: {_class_counts(p, c)}" for p, c in yes.items()] or ["- none"]
        if no:
            L += ["", "Not testable:", ""]
            L += [f"- {p}: **{_not_testable_why(p, c)}** ({_class_counts(p, c)})"
                  for p, c in no.items()]
        L.append("")
        can = [("speaker identity" if p == "speaker" else
                "channel (simulated on the real recordings)" if p == "channel" else p)
               for p in yes]
        can = (", ".join(can[:-1]) + " and " + can[-1] if len(can) > 1 else
               "".join(can) or "nothing this study probes")
        cannot = ", ".join(no) or "none of the probed properties"
        L += [f"What it can show: how the encoders respond to real people rather than espeak's "
              f"voice variants, for {can}, and speaker verification on real voices. What it "
              f"cannot show: {cannot}, where some class is one or a few people, so a probe "
              "would learn their voices rather than the property; nor accent, nor the task "
              "models' own tasks and their bias, which are not labelled here. Its sources "
              "differ in recording conditions and are small, so its intervals are wide.", ""]
    return L


# ----------------------------------------------------------------------------- sections
HOW_TO_READ = [
    "## How to read this report", "",
    "- **Accuracy** is test accuracy of a linear probe (elastic-net logistic regression) on one "
    "layer's utterance vectors, or on all layers together (the *oracle*). The *majority* "
    "baseline always answers the most frequent class; a *random-weights* copy is the same "
    "architecture with fresh random weights, so it shows what the input features and the "
    "architecture alone give.",
    "- **Intervals** `0.812 [0.771, 0.850]` are 95% percentile bootstrap intervals over the "
    "test set, resampling test *speakers* with all their utterances (clustered bootstrap) where "
    "the corpus names speakers, utterances otherwise. Utterances of one speaker are not "
    "independent, so with few test speakers the intervals are wide, as they should be.",
    "- **Seed spread** `± sd` is the standard deviation of the accuracy across the probe "
    "training seeds: the part of the variation that comes from training, not from the test "
    "sample.",
    "- **Control task and selectivity** (Hewitt & Liang 2019): the control task gives each "
    "speaker a fixed random label drawn from the task's label distribution and trains the same "
    "probe on it. A probe that scores well on the control task is memorising voices, not "
    "reading the property. *Selectivity* = task accuracy - control accuracy; high selectivity "
    "means the layer encodes the property itself. For the speaker task the control task would "
    "be a relabelling of the speakers themselves, so control and selectivity are *n/a* there.",
    "- **Verdicts** are evaluated per encoder that a finding is about, from a stated criterion "
    "on the intervals: *holds* when the criterion is met beyond the intervals, *does not hold* "
    "when the intervals rule it out, *undecided* when the intervals overlap, the data lack the "
    "property, or a task model did not learn its task (the reason is given). Undecided is "
    "never turned into a yes or a no: it says this run cannot tell.",
    ""]


def _f(x, signed: bool = False) -> str:
    """A number rounded to 3 digits, or n/a."""
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _acc(x, ci=None, sd=None) -> str:
    """``0.812 [0.771, 0.850]`` (± sd when given)."""
    s = _f(x) + (_ci(ci) if x is not None else "")
    return s + (f" ± {sd:.3f}" if sd is not None else "")


def _count(n, inner=None) -> str:
    """``120 (14)``; ``-`` where not recorded."""
    return ("-" if n is None else str(n)) + (f" ({inner})" if inner is not None else "")


def _task_models_section(summary) -> list:
    rows = [(n, e) for n, e in sorted(summary["encoders"].items())
            if e.get("kind") == "task_cnn" and not e.get("random")]
    if not rows:
        return []
    L = ["## Task models", "",
         "Each task-oriented CNN on the test split of its own task, next to the majority class "
         "and its random-weights copy. A finding that rests on a task model that did not learn "
         "its task is undecided.", "",
         "| task model | task | test utterances (speakers) | epochs (best) | "
         "test accuracy [95% CI] | majority | random copy [95% CI] | learned its task |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for n, e in rows:
        t = e.get("task_model")
        if not t:
            L.append(f"| {n} | {e.get('trained_for', '-')} | - | - | not recorded | - | - | "
                     "unknown |")
            continue
        learned = {True: "yes", False: "**no**"}.get(t.get("learned"), "unknown")
        size = _count(t.get("test_utterances"), t.get("test_speakers"))
        epochs = _count(t.get("epochs_run"), t.get("best_epoch"))
        L.append(f"| {n} | {t.get('property', e.get('trained_for', '-'))} | {size} | {epochs} | "
                 f"{_acc(t.get('test_accuracy'), t.get('test_accuracy_ci95'))} | "
                 f"{_f(t.get('majority_accuracy'))} | "
                 f"{_acc(t.get('random_test_accuracy'), t.get('random_test_accuracy_ci95'))} | "
                 f"{learned} |")
    return L + [""]


def _speakers_table(spc, prop: str) -> list:
    """Speakers per class and split, and a warning where a class has under 3 speakers."""
    from speechinterp.probes.data import SPEAKER_TASKS
    if not spc:
        return []
    classes = sorted({c for per in spc.values() for c in (per or {})})
    if prop in SPEAKER_TASKS:                 # each class is one speaker
        return [f"Speakers per class: one ({len(classes)} classes); per split: "
                + ", ".join(f"{s} {len(per or {})}" for s, per in spc.items()) + ".", ""]
    splits = [s for s in ("train", "dev", "test") if s in spc] + \
        [s for s in spc if s not in ("train", "dev", "test")]
    L = ["| speakers per class | " + " | ".join(classes) + " |",
         "| --- | " + " | ".join("---:" for _ in classes) + " |"]
    for s in splits:
        L.append(f"| {s} | " + " | ".join(str((spc[s] or {}).get(c, 0)) for c in classes)
                 + " |")
    few = [f"{c} ({s}: {(spc[s] or {}).get(c, 0)})" for s in ("dev", "test") if s in spc
           for c in classes if (spc[s] or {}).get(c, 0) < 3]
    if few:
        L += ["", "**Confounded with speaker identity**: fewer than 3 speakers in "
              + ", ".join(few) + "; these accuracies say more about the few voices than "
              "about the property."]
    return L + [""]


def _convergence(c) -> str:
    if not c:
        return "not recorded"
    sig = c.get("below_majority_significant")
    below = c.get("below_majority") or []
    within = [n for n in below if sig is not None and n not in sig]
    flags = []
    if sig:
        flags.append("below the majority beyond the interval: " + ", ".join(sig))
    elif below and sig is None:
        flags.append("below the majority: " + ", ".join(below))
    if c.get("oracle_below_best_layer"):
        flags.append("oracle below the best single layer by more than its interval")
    note = (f" (below the majority within the interval: {', '.join(within)})"
            if within else "")
    if c.get("ok"):
        return "ok" + note
    return "**flagged**: " + "; ".join(flags or ["not converged"]) + note


def _stability(r) -> str:
    if not r:
        return "not measured (one seed)"
    return (f"top-1% overlap {_f(r.get('top1_overlap'))}, top-5% overlap "
            f"{_f(r.get('top5_overlap'))} across {r.get('seeds', '?')} seeds")


def _interval_note(iv) -> str:
    if not iv:
        return ""
    return (f" Intervals: {round(100 * iv.get('level', 0.95))}% {iv.get('method', 'bootstrap')}"
            f" over {iv.get('num_resampled', '?')} {iv.get('resampled', 'test units')}, "
            f"{iv.get('resamples', '?')} resamples.")


def _layer_table(res, rnd) -> tuple[list, bool]:
    """The layer table of one encoder and property; also whether a n/a footnote is due."""
    rl = {l["name"]: l for l in (rnd or {}).get("layers", [])}
    L = ["| layer | dim | accuracy [95% CI] ± seed sd | random weights [95% CI] | macro-F1 | "
         "control [95% CI] | selectivity |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    na = False
    for l in res["layers"]:
        r = rl.get(l["name"])
        na |= l.get("selectivity") is None
        L.append(f"| {l['name']} | {l.get('dim', '-')} | "
                 f"{_acc(l['accuracy'], l.get('accuracy_ci95'), l.get('accuracy_seed_sd'))} | "
                 f"{_acc(r['accuracy'], r.get('accuracy_ci95')) if r else '-'} | "
                 f"{_f(l.get('f1_macro'))} | "
                 f"{_acc(l.get('control_accuracy'), l.get('control_accuracy_ci95'))} | "
                 f"{_f(l.get('selectivity'), signed=True)} |")
    return L, na


def _layerwise_section(summary, title: str = "## Layer-wise results") -> list:
    encs = summary["encoders"]
    props = sorted({p for e in encs.values() for p in e.get("probes", {})})
    L = [title, ""]
    for prop in props:
        have = [(n, e) for n, e in sorted(encs.items())
                if prop in e.get("probes", {}) and not e.get("random")]
        if not have:
            continue
        first = have[0][1]["probes"][prop]
        sizes = first.get("split_sizes") or {}
        L += [f"### {prop}", "",
              f"{len(first.get('classes', []))} classes; majority "
              f"{_acc(first['majority_accuracy'], first.get('majority_accuracy_ci95'))}; "
              f"probe setting `{first.get('probe_setting', 'not recorded')}`; split sizes "
              + (", ".join(f"{k} {v}" for k, v in sizes.items()) or "not recorded") + "."
              + _interval_note(first.get("interval")), ""]
        L += _speakers_table(first.get("speakers_per_class"), prop)
        footnote = False
        for name, e in have:
            res = e["probes"][prop]
            rnd = next((r["probes"].get(prop) for r in encs.values()
                        if r.get("random") and r.get("base") == name), None)
            if rnd is None:
                rnd = encs.get(f"{name}_random", {}).get("probes", {}).get(prop)
            table, na = _layer_table(res, rnd)
            footnote |= na
            L += [f"#### {name} / {prop}", ""] + table + [""]
            notes = []
            if res.get("probe_setting") and res.get("probe_setting") != first.get("probe_setting"):
                notes.append(f"probe setting `{res['probe_setting']}`")
            if "oracle" in res:
                o = res["oracle"]
                notes.append("oracle (all layers) "
                             + _acc(o["accuracy"], o.get("accuracy_ci95"), o.get("accuracy_seed_sd")))
            ms = res.get("minimal_subset")
            if ms:
                notes.append(f"minimal subset {ms['size']} neuron{'s' * (ms['size'] != 1)} "
                             f"({100 * ms['fraction']:.1f}%) at "
                             f"{_acc(ms['accuracy'], ms.get('accuracy_ci95'))}")
            if "oracle" in res or "ranking_stability" in res:
                notes.append("ranking stability: " + _stability(res.get("ranking_stability")))
            notes.append("convergence: " + _convergence(res.get("convergence")))
            L += ["- " + n for n in notes] + [""]
        if footnote:
            L += ["n/a: the control task of the speaker task is a relabelling of the speakers "
                  "themselves, so control accuracy and selectivity are not applicable.", ""]
    return L


def _eer_lines(eer) -> list:
    return [f"- {name}: " + ", ".join(f"{l} {100 * v:.1f}" for l, v in zip(e["layers"], e["eer"]))
            for name, e in sorted(eer.items())]


def _best_eer(e):
    """(EER, layer) of the best layer, or None."""
    pairs = [(v, l) for l, v in zip(e.get("layers", []), e.get("eer", [])) if v is not None]
    return min(pairs) if pairs else None


def _eer_section(summary) -> list:
    rec = _recorded(summary)
    reer = (rec or {}).get("eer") or {}
    if not reer:
        if not summary.get("eer"):
            return []
        return ["## Speaker verification (EER %, per layer)", ""] + _eer_lines(summary["eer"]) \
            + [""]
    eer = summary.get("eer") or {}
    L = ["## Speaker verification (EER %, per layer)", "",
         "Equal error rate of cosine scoring on test speakers, lower is better: the best layer "
         "per encoder on each corpus (layer in brackets), then every layer.", "",
         f"| encoder | {CORPORA[0]}: best layer EER % | {CORPORA[1]}: best layer EER % | "
         "recorded - espeak (points) |", "| --- | ---: | ---: | ---: |"]
    lower = []
    names = plots.paired_order({n: {**rec["encoders"], **summary["encoders"]}.get(n, {})
                                for n in {**eer, **reer}})
    for n in names:
        a = _best_eer(eer[n]) if n in eer else None
        b = _best_eer(reer[n]) if n in reer else None
        cell = lambda x: f"{100 * x[0]:.1f} ({x[1]})" if x else "-"
        diff = f"{100 * (b[0] - a[0]):+.1f}" if a and b else "-"
        if a and b:
            lower.append(b[0] < a[0])
        L.append(f"| {n} | {cell(a)} | {cell(b)} | {diff} |")
    if lower:
        L += ["", f"On recorded speech the best-layer EER is lower than on the espeak corpus for "
              f"{sum(lower)} of {len(lower)} encoders measured on both."]
    L += ["", f"{CORPORA[0].capitalize()}, per layer:", ""] + _eer_lines(eer)
    L += ["", f"{CORPORA[1].capitalize()}, per layer:", ""] + _eer_lines(reer)
    return L + [""]


def _clustering(bias) -> str:
    by = {b.get("clustered_by") for b in bias.values()}
    if by == {"speaker"}:
        return "resampling test speakers with their utterances"
    if by == {"utterance"}:
        return "resampling utterances (no speaker column)"
    return "resampling test speakers where the store names them"


def _bias_section(summary) -> list:
    bias = summary.get("bias") or {}
    if not bias:
        return []
    L = ["## Bias", "",
         "Each task model on its own task, per group of the protected property (test split): "
         "unmasked, with the neurons most salient for the protected property masked inside the "
         "encoder, and with as many random neurons masked. Intervals: 95% bootstrap, "
         + _clustering(bias) + ". The gap is the best group minus the worst group.", "",
         "| task model | task | group | utterances | speakers | accuracy [95% CI] | "
         "salient neurons masked | random neurons masked | drop when masked |",
         "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for name, b in sorted(bias.items()):
        counts = b.get("counts") or {}
        groups = [k for k in b["accuracy"] if k not in ("all", "gap")]

        def cell(key, g, b=b):
            v = (b.get(key) or {}).get(g)
            return _acc(v, (b.get(f"{key}_ci95") or {}).get(g)) if v is not None else "-"
        for g in groups + ["all"]:
            c = counts.get(g, {})
            n_utt = c.get("utterances", b.get("utterances") if g == "all" else None)
            if g == "all" and counts:
                n_utt = sum(x.get("utterances", 0) for x in counts.values())
            spk = c.get("speakers")
            if g == "all" and counts and all(x.get("speakers") is not None
                                             for x in counts.values()):
                spk = sum(x["speakers"] for x in counts.values())
            L.append(f"| {name} | {b['task']} | {g} | {n_utt if n_utt is not None else '-'} | "
                     f"{spk if spk is not None else '-'} | {cell('accuracy', g)} | "
                     f"{cell('masked', g)} | {cell('random_masked', g)} | "
                     f"{cell('masked_drop', g)} |")
        drop_gap = (b.get("masked_drop") or {}).get("gap")
        L.append(f"| {name} | {b['task']} | gap | | | "
                 f"{_acc(b['accuracy'].get('gap'), b.get('gap_ci95'))} | "
                 f"{_f(b.get('masked', {}).get('gap'))} | "
                 f"{_f(b.get('random_masked', {}).get('gap'))} | "
                 f"{_acc(drop_gap, b.get('masked_drop_gap_ci95'))} |")
        frac = b.get("salient_fraction")
        notes.append(f"{name}: {b['masked_neurons']} {b['protected']}-salient neurons masked"
                     + (f" ({100 * frac:.1f}% of all neurons)" if frac else "") + ".")
    return L + [""] + notes + [""]


def html_page(md_text: str, figure_dir: str) -> str:
    """A self-contained HTML page: the Markdown shown with figures inlined as base64."""
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>speechinterp study</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;"
           "font-size:13px;vertical-align:top}img{max-width:100%}</style></head><body>"]
    in_table = False
    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<td>{_inline(c, figure_dir)}</td>" for c in cells)
                       + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            out.append(f"<h{n}>{html.escape(line[n:].strip())}</h{n}>")
        elif line.startswith("!["):
            out.append(_inline(line, figure_dir))
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:], figure_dir)}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line, figure_dir)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _inline(text: str, figure_dir: str) -> str:
    import re
    m = re.fullmatch(r"!\[[^\]]*\]\(figures/([^)]+)\)", text.strip())
    if m:
        path = os.path.join(figure_dir, m.group(1))
        if os.path.exists(path):
            data = base64.b64encode(open(path, "rb").read()).decode()
            return f"<img src='data:image/png;base64,{data}' alt='{html.escape(m.group(1))}'>"
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


METHODS_NOTE = (
    "Neurons ranked five ways, each method's top / random / bottom ablation and minimal subset "
    "trained in the same call: `weight_mass` (NeuroX, the oracle probe's weights), "
    "`per_neuron` (the dev accuracy of each neuron's own probe), `probeless` (Antverg & "
    "Belinkov 2022: class-mean differences), `iou` (Na et al. 2019: overlap of a neuron's top "
    "5% activations with a class), `gaussian` (Torroba Hennigen et al. 2020: greedy "
    "selection under a Gaussian intrinsic probe). Agreement is the share of one method's top "
    "1% / 5% that is in the other's, and the Spearman correlation of the ranks (Fan et al. "
    "2023); chance is what two random rankings give. `weight_mass`'s own seed-to-seed "
    "stability is shown beside it: the data-only methods and `per_neuron` are deterministic "
    "given the split, so their seed stability is 1 by construction.")


def _methods_section(summary) -> list:
    """Agreement between ranking methods and which finds the smallest minimal subset."""
    rows = [(n, p, r) for n, e in summary["encoders"].items()
            for p, r in e.get("probes", {}).items() if r.get("ranking_agreement")]
    if not rows:
        return []
    L = ["## Methods: how far neuron rankings agree", "", METHODS_NOTE, "",
         "| encoder | property | pair | top-1% overlap | top-5% overlap | Spearman |",
         "| --- | --- | --- | --- | --- | --- |"]
    for n, p, r in rows:
        ag = r["ranking_agreement"]
        for pr in ag["pairs"]:
            L.append(f"| {n} | {p} | {pr['a']} ~ {pr['b']} | {pr['top1_overlap']:.2f} | "
                     f"{pr['top5_overlap']:.2f} | {pr['spearman']:.2f} |")
        ch = ag["chance"]
        L.append(f"| {n} | {p} | chance | {ch['top1_overlap']:.3f} | {ch['top5_overlap']:.3f} "
                 f"| 0 |")
        st = r.get("ranking_stability")
        if st:
            L.append(f"| {n} | {p} | weight_mass seed ~ seed | {st['top1_overlap']:.2f} | "
                     f"{st['top5_overlap']:.2f} | {st['spearman']:.2f} |")
    methods = rows[0][2]["ranking_agreement"]["methods"]
    L += ["", "### Which ranking finds the smallest minimal subset", "",
          "The smallest top-n prefix of each ranking whose retrained probe reaches the oracle's "
          "dev accuracy (less 1%), with its test accuracy and interval. A smaller subset at an "
          "overlapping accuracy interval means a ranking that puts the property's neurons "
          "first.", "",
          "| encoder | property | " + " | ".join(methods) + " | smallest |",
          "| --- | --- | " + " | ".join("---" for _ in methods) + " | --- |"]
    for n, p, r in rows:
        subs = {m: (r if m == methods[0] else r["by_ranking"][m])["minimal_subset"]
                for m in methods if m == methods[0] or m in r.get("by_ranking", {})}
        cells = [f"{s['size']} ({_acc(s['accuracy'], s.get('accuracy_ci95'))})"
                 for s in subs.values()]
        best = min(subs.values(), key=lambda s: s["size"])["size"]
        smallest = ", ".join(m for m, s in subs.items() if s["size"] == best)
        L.append(f"| {n} | {p} | " + " | ".join(cells) + f" | {smallest} |")
    return L + [""]


AMNESIC_NOTE = (
    "Amnesic probing (Elazar et al. 2021): the property is erased at one layer inside the "
    "encoder with LEACE (Belrose et al. 2023, fitted on the stored train vectors of that "
    "layer), and every later layer is recomputed from the erased representation. Each task is "
    "then probed at that layer and after it: *original* (no erasure), *erased*, and *random* "
    "(a random subspace of the same rank erased: the control). A later layer *uses* what was "
    "erased only if the erased accuracy falls below the random control's, interval to "
    "interval; if the erased accuracy recovers at later layers, the property is recomputed "
    "non-linearly. The check row says whether the erasure worked where it was applied: a fresh "
    "probe on the erased layer at the majority baseline within its interval.")


def _variant(v) -> str:
    return _acc(v["accuracy"], v.get("accuracy_ci95"))


def _amnesic_section(summary) -> list:
    am = summary.get("amnesic") or {}
    if not any(am.values()):
        return []
    L = ["## What later layers use: amnesic probing", "", AMNESIC_NOTE, ""]
    for enc, by_prop in am.items():
        for prop, r in by_prop.items():
            ch = r["eraser_check"]
            worked = ("the erased layer's probe falls to the majority baseline"
                      if ch.get("after_covers_majority") else
                      "the erased layer's probe stays above the majority baseline: the "
                      "erasure is incomplete")
            L += [f"### {enc}: {prop} erased at {r['layer']} (rank {r['rank']}, "
                  f"{r.get('num_utterances', '?')} utterances)", "",
                  f"Check at {r['layer']}: {prop} accuracy "
                  f"{_acc(ch['accuracy_before'], ch.get('accuracy_before_ci95'))} before, "
                  f"{_acc(ch['accuracy_after'], ch.get('accuracy_after_ci95'))} after, "
                  f"majority {_f(ch['majority_accuracy'])}: {worked}.", "",
                  "| task | layer | original | erased | random | erased below random |",
                  "| --- | --- | --- | --- | --- | --- |"]
            for task, t in r["tasks"].items():
                for row in t["layers"]:
                    e_hi = (row["erased"].get("accuracy_ci95") or [None, None])[1]
                    r_lo = (row["random"].get("accuracy_ci95") or [None, None])[0]
                    below = ("yes" if e_hi is not None and r_lo is not None and e_hi < r_lo
                             else "no" if e_hi is not None and r_lo is not None else "n/a")
                    L.append(f"| {task} | {row['name']} | {_variant(row['original'])} | "
                             f"{_variant(row['erased'])} | {_variant(row['random'])} | "
                             f"{below} |")
            L.append("")
    return L
