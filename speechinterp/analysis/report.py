"""The study report: section functions over the typed :class:`StudySummary`, joined as Markdown,
and an HTML page rendered from it by Python-Markdown with the figures inlined.

Figures are built in :mod:`speechinterp.analysis.plots` (``study_figures``); numbers are
written by :mod:`speechinterp.analysis.numbers`.
"""
from __future__ import annotations

import base64
import os
import re

from speechinterp.analysis.numbers import accuracy_text as _acc
from speechinterp.analysis.numbers import number_text as _f
from speechinterp.analysis.plots import CORPORA, paired_order
from speechinterp.study.records import CorpusSummary, RecordedCorpus, StudySummary

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

ESPEAK_ONLY = ("The task models table and the bias analysis are for the built-in espeak corpus "
               "only: the task CNNs were trained there, and their own tasks are not labelled on "
               "the recorded corpus.")


def markdown(summary: StudySummary, figure_names) -> str:
    """The report as Markdown: every section in reading order."""
    rec = summary.recorded
    studied = rec.studied() if rec else None
    L = header_section(summary) + HOW_TO_READ[:-1] + [""] + task_models_section(summary)
    if rec is not None:
        L += [ESPEAK_ONLY, ""]
    L += findings_section(summary, figure_names) + [LIMITS, ""]
    if rec is not None:
        L += recorded_section(rec)
    L += figures_section(figure_names)
    if studied is None:
        L += layerwise_section(summary)
    else:
        L += layerwise_section(summary, f"## Layer-wise results: {CORPORA[0]}")
        L += layerwise_section(studied, "## Layer-wise results: recorded human speech")
    L += methods_section(summary) + amnesic_section(summary)
    L += eer_section(summary) + bias_section(summary) + stage_times_section(summary)
    return "\n".join(L).rstrip("\n") + "\n"


def html_page(md_text: str, figure_dir: str) -> str:
    """A self-contained HTML page: the Markdown rendered by Python-Markdown (tables extension),
    each ``figures/NAME`` image inlined as base64 when the file exists."""
    import markdown as md

    body = md.markdown(md_text, extensions=["tables"], output_format="html")

    def inline(m):
        path = os.path.join(figure_dir, m.group(1))
        if not os.path.exists(path):
            return m.group(0)
        with open(path, "rb") as f:
            return f'src="data:image/png;base64,{base64.b64encode(f.read()).decode()}"'
    body = re.sub(r'src="figures/([^"]+)"', inline, body)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>speechinterp study</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;"
            "font-size:13px;vertical-align:top}img{max-width:100%}</style></head><body>\n"
            + body + "\n</body></html>")


# ----------------------------------------------------------------------------- small helpers
def _status(status) -> str:
    """``ok``, or ``**unavailable**: reason``."""
    status = str(status or "not recorded")
    head, sep, why = status.partition(":")
    return f"**{head}**: {why.strip()}" if sep and head != "ok" else status


def _reason(status) -> str:
    """The reason of ``unavailable: <reason>`` (the whole status if it has none)."""
    return str(status).partition(":")[2].strip() or str(status)


def _verdict(h):
    return {True: "holds", False: "does not hold", None: "undecided"}[h]


def _cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return str(text).replace("|", "/").replace("\n", " ")


def _count(n, inner=None) -> str:
    """``120 (14)``; ``-`` where not recorded."""
    return ("-" if n is None else str(n)) + (f" ({inner})" if inner is not None else "")


def _speakers(n) -> str:
    return f"{n} speaker{'s' * (n != 1)}"


# ----------------------------------------------------------------------------- header, findings
def header_section(summary: StudySummary) -> list:
    rec = summary.recorded
    rec_line = ""
    if rec is not None:
        rec_line = (f"Recorded-speech corpus: `{rec.corpus_manifest}`. " if rec.ok
                    else f"Recorded-speech corpus: {_status(rec.status)}. ")
    return ["# speechinterp study report", "",
            f"Encoders: {', '.join(sorted(summary.encoders))}. Corpus: "
            f"`{summary.corpus_manifest}`. {rec_line}Total time {summary.total_time_s:.0f} s.", ""]


def _overall(f) -> str:
    overall = f.get("outcome") or _verdict(f["holds"])
    why = f" ({f['why']})" if overall == "undecided" and f.get("why") else ""
    return f"**{overall}**{why}"


def _per_encoder(f) -> str:
    return "; ".join(f"`{k}`: {v['outcome']} ({v['why']})"
                     for k, v in f.get("per_encoder", {}).items()) or f["evidence"]


def _finding_cell(f) -> str:
    return _cell(f"{_overall(f)}. Per encoder: {_per_encoder(f)}")


def findings_section(summary: StudySummary, figure_names) -> list:
    """One findings table: one outcome column per corpus (the overall outcome, then the outcome
    per encoder), and how the verdicts are reached."""
    from speechinterp.analysis.findings import AGGREGATION, ENCODED, UNDECIDED_WHEN
    rec = summary.recorded
    studied = rec.studied() if rec else None
    corpora = CORPORA[:2] if rec is not None else CORPORA[:1]
    by_name = {f["finding"]: f for f in (studied.findings if studied else ())}
    L = ["## Findings", "",
         "| # | finding (about) | criterion | " + " | ".join(corpora) + " | figure |",
         "| --- | --- | --- | " + " | ".join("---" for _ in corpora) + " | --- |"]
    for i, f in enumerate(summary.findings, 1):
        about = f" ({f['about']})" if f.get("about") else ""
        cells = [_finding_cell(f)]
        figs = f"`{f['figure']}`"
        if rec is not None:
            g = by_name.get(f["finding"])
            cells.append("not run (corpus unavailable)" if not rec.ok else
                         "not run (no encoder was studied on it)" if studied is None else
                         "not evaluated" if g is None else _finding_cell(g))
            if f"recorded_{f['figure']}" in figure_names:
                figs += f", `recorded_{f['figure']}`"
        L.append(f"| {i} | {f['finding']}{about} | {f.get('criterion', '-')} | "
                 + " | ".join(cells) + f" | {figs} |")
    if rec is not None:
        L += ["", "Each corpus's outcome comes from its own probes and intervals by the same "
              "criterion; a property the recorded corpus cannot test (see below) is not "
              "probed there, so findings about it are undecided on that corpus."]
    return L + ["", f"How the verdicts are reached: {ENCODED}. {UNDECIDED_WHEN} {AGGREGATION}",
                ""]


def figures_section(figure_names) -> list:
    L = ["## Figures", ""]
    for name in figure_names:
        L += [f"### {_figure_heading(name)}", "", f"![{name}](figures/{name})", ""]
    return L


def _figure_heading(name: str) -> str:
    stem = name[:-4]
    if stem.startswith("recorded_"):
        return "recorded speech: " + stem[len("recorded_"):].replace("_", " ")
    if stem.endswith("_corpora"):
        return stem[:-len("_corpora")].replace("_", " ") + ": both corpora"
    return stem.replace("_", " ")


def stage_times_section(summary: StudySummary) -> list:
    if not summary.stage_times_s:
        return []
    return ["## Stage times (s)", ""] + [f"- {k}: {v:.1f}"
                                         for k, v in summary.stage_times_s.items()]


# ----------------------------------------------------------------------------- recorded corpus
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


def _sources_table(sources) -> list:
    L = ["| source | status | utterances | speakers (per gender) | languages | licence |",
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
    return L + [""]


def _testable_lines(testable) -> list:
    yes = {p: v[1] for p, v in testable.items() if v[0]}
    no = {p: v[1] for p, v in testable.items() if not v[0]}
    L = ["Testable on this corpus (enough distinct speakers per class for a speaker-disjoint "
         "split):", ""]
    L += [f"- {p}: {_class_counts(p, c)}" for p, c in yes.items()] or ["- none"]
    if no:
        L += ["", "Not testable:", ""]
        L += [f"- {p}: **{_not_testable_why(p, c)}** ({_class_counts(p, c)})"
              for p, c in no.items()]
    can = [("speaker identity" if p == "speaker" else
            "channel (simulated on the real recordings)" if p == "channel" else p) for p in yes]
    can = (", ".join(can[:-1]) + " and " + can[-1] if len(can) > 1 else
           "".join(can) or "nothing this study probes")
    cannot = ", ".join(no) or "none of the probed properties"
    return L + ["", f"What it can show: how the encoders respond to real people rather than "
                f"espeak's voice variants, for {can}, and speaker verification on real voices. "
                f"What it cannot show: {cannot}, where some class is one or a few people, so a "
                "probe would learn their voices rather than the property; nor accent, nor the "
                "task models' own tasks and their bias, which are not labelled here. Its "
                "sources differ in recording conditions and are small, so its intervals are "
                "wide.", ""]


def recorded_section(rec: RecordedCorpus) -> list:
    """What the recorded corpus holds, which properties it can test, and which it cannot."""
    L = ["## Recorded human speech: what this corpus can and cannot show", ""]
    if rec.ok:
        names = sorted(rec.summary.encoders) if rec.summary else []
        L += [f"Corpus: `{rec.corpus_manifest}`, assembled at run time from packages. "
              "Its encoders: " + (", ".join(names) or "none") + ".", ""]
    else:
        L += [f"The recorded corpus could not be built ({_status(rec.status)}); the "
              "findings, tables and figures below are from the built-in espeak corpus only.", ""]
    if rec.sources:
        L += _sources_table(rec.sources)
    if rec.testable:
        L += _testable_lines(rec.testable)
    return L


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


# ----------------------------------------------------------------------------- task models
def task_models_section(summary: CorpusSummary) -> list:
    rows = sorted(summary.task_cnns().items())
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
        t = e.task_model
        if not t:
            L.append(f"| {n} | {e.trained_for or '-'} | - | - | not recorded | - | - | "
                     "unknown |")
            continue
        learned = {True: "yes", False: "**no**"}.get(t.get("learned"), "unknown")
        size = _count(t.get("test_utterances"), t.get("test_speakers"))
        epochs = _count(t.get("epochs_run"), t.get("best_epoch"))
        L.append(f"| {n} | {t.get('property', e.trained_for or '-')} | {size} | {epochs} | "
                 f"{_acc(t.get('test_accuracy'), t.get('test_accuracy_ci95'))} | "
                 f"{_f(t.get('majority_accuracy'))} | "
                 f"{_acc(t.get('random_test_accuracy'), t.get('random_test_accuracy_ci95'))} | "
                 f"{learned} |")
    return L + [""]


# ----------------------------------------------------------------------------- layer-wise
def _speakers_table(spc, prop: str) -> list:
    """Speakers per class and split, and a warning where a class has under 3 speakers."""
    from speechinterp.analysis.findings import MIN_SPEAKERS
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
           for c in classes if (spc[s] or {}).get(c, 0) < MIN_SPEAKERS]
    if few:
        L += ["", f"**Confounded with speaker identity**: fewer than {MIN_SPEAKERS} speakers in "
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


def _probe_notes(res, setting) -> list:
    """Oracle, minimal subset, ranking stability and convergence of one probe result."""
    notes = []
    if res.get("probe_setting") and res.get("probe_setting") != setting:
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
    return ["- " + n for n in notes] + [""]


def _property_header(prop, first) -> list:
    sizes = first.get("split_sizes") or {}
    return [f"### {prop}", "",
            f"{len(first.get('classes', []))} classes; majority "
            f"{_acc(first['majority_accuracy'], first.get('majority_accuracy_ci95'))}; "
            f"probe setting `{first.get('probe_setting', 'not recorded')}`; split sizes "
            + (", ".join(f"{k} {v}" for k, v in sizes.items()) or "not recorded") + "."
            + _interval_note(first.get("interval")), ""] + _speakers_table(
                first.get("speakers_per_class"), prop)


def layerwise_section(summary: CorpusSummary, title: str = "## Layer-wise results") -> list:
    """Per property: the split, then each real encoder's layer table beside its random copy."""
    L = [title, ""]
    for prop in summary.properties():
        have = [(n, e) for n, e in sorted(summary.real().items()) if prop in e.probes]
        if not have:
            continue
        first = have[0][1].probes[prop]
        L += _property_header(prop, first)
        footnote = False
        for name, e in have:
            copy = summary.random_copy(name)
            table, na = _layer_table(e.probes[prop], copy.probes.get(prop) if copy else None)
            footnote |= na
            L += [f"#### {name} / {prop}", ""] + table + [""]
            L += _probe_notes(e.probes[prop], first.get("probe_setting"))
        if footnote:
            L += ["n/a: the control task of the speaker task is a relabelling of the speakers "
                  "themselves, so control accuracy and selectivity are not applicable.", ""]
    return L


# ----------------------------------------------------------------------------- verification
def _eer_lines(eer) -> list:
    return [f"- {name}: " + ", ".join(f"{l} {100 * v:.1f}" for l, v in zip(e["layers"], e["eer"]))
            for name, e in sorted(eer.items())]


def _best_eer(e):
    """(EER, layer) of the best layer, or None."""
    pairs = [(v, l) for l, v in zip(e.get("layers", []), e.get("eer", [])) if v is not None]
    return min(pairs) if pairs else None


def eer_section(summary: StudySummary) -> list:
    """EER per layer; with the recorded corpus, the best layer on each corpus side by side."""
    rec = summary.recorded.studied() if summary.recorded else None
    eer, reer = summary.eer, (rec.eer if rec else {})
    if not reer:
        return (["## Speaker verification (EER %, per layer)", ""] + _eer_lines(eer) + [""]
                if eer else [])
    L = ["## Speaker verification (EER %, per layer)", "",
         "Equal error rate of cosine scoring on test speakers, lower is better: the best layer "
         "per encoder on each corpus (layer in brackets), then every layer.", "",
         f"| encoder | {CORPORA[0]}: best layer EER % | {CORPORA[1]}: best layer EER % | "
         "recorded - espeak (points) |", "| --- | ---: | ---: | ---: |"]
    lower = []
    encs = {**rec.encoders, **summary.encoders}
    for n in paired_order({n: encs[n] for n in {**eer, **reer} if n in encs}):
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


# ----------------------------------------------------------------------------- bias
def _clustering(bias) -> str:
    by = {b.get("clustered_by") for b in bias.values()}
    if by == {"speaker"}:
        return "resampling test speakers with their utterances"
    if by == {"utterance"}:
        return "resampling utterances (no speaker column)"
    return "resampling test speakers where the store names them"


def _group_counts(b, g) -> tuple:
    """(utterances, speakers) of group ``g`` of one bias result (``all``: their sums)."""
    counts = b.get("counts") or {}
    c = counts.get(g, {})
    n_utt = c.get("utterances", b.get("utterances") if g == "all" else None)
    spk = c.get("speakers")
    if g == "all" and counts:
        n_utt = sum(x.get("utterances", 0) for x in counts.values())
        if all(x.get("speakers") is not None for x in counts.values()):
            spk = sum(x["speakers"] for x in counts.values())
    return ("-" if n_utt is None else n_utt), ("-" if spk is None else spk)


def _bias_rows(name, b) -> list:
    def cell(key, g):
        v = (b.get(key) or {}).get(g)
        return _acc(v, (b.get(f"{key}_ci95") or {}).get(g)) if v is not None else "-"
    groups = [k for k in b["accuracy"] if k not in ("all", "gap")]
    L = []
    for g in groups + ["all"]:
        n_utt, spk = _group_counts(b, g)
        L.append(f"| {name} | {b['task']} | {g} | {n_utt} | {spk} | {cell('accuracy', g)} | "
                 f"{cell('masked', g)} | {cell('random_masked', g)} | {cell('masked_drop', g)} |")
    drop_gap = (b.get("masked_drop") or {}).get("gap")
    L.append(f"| {name} | {b['task']} | gap | | | "
             f"{_acc(b['accuracy'].get('gap'), b.get('gap_ci95'))} | "
             f"{_f(b.get('masked', {}).get('gap'))} | "
             f"{_f(b.get('random_masked', {}).get('gap'))} | "
             f"{_acc(drop_gap, b.get('masked_drop_gap_ci95'))} |")
    return L


def bias_section(summary: CorpusSummary) -> list:
    bias = summary.bias
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
        L += _bias_rows(name, b)
        frac = b.get("salient_fraction")
        notes.append(f"{name}: {b['masked_neurons']} {b['protected']}-salient neurons masked"
                     + (f" ({100 * frac:.1f}% of all neurons)" if frac else "") + ".")
    return L + [""] + notes + [""]


# ----------------------------------------------------------------------------- methods
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


def _agreement_rows(n, p, r) -> list:
    ag = r["ranking_agreement"]
    L = [f"| {n} | {p} | {pr['a']} ~ {pr['b']} | {pr['top1_overlap']:.2f} | "
         f"{pr['top5_overlap']:.2f} | {pr['spearman']:.2f} |" for pr in ag["pairs"]]
    ch = ag["chance"]
    L.append(f"| {n} | {p} | chance | {ch['top1_overlap']:.3f} | {ch['top5_overlap']:.3f} | 0 |")
    st = r.get("ranking_stability")
    if st:
        L.append(f"| {n} | {p} | weight_mass seed ~ seed | {st['top1_overlap']:.2f} | "
                 f"{st['top5_overlap']:.2f} | {st['spearman']:.2f} |")
    return L


def _smallest_subset_row(n, p, r, methods) -> str:
    subs = {m: (r if m == methods[0] else r["by_ranking"][m])["minimal_subset"]
            for m in methods if m == methods[0] or m in r.get("by_ranking", {})}
    cells = [f"{s['size']} ({_acc(s['accuracy'], s.get('accuracy_ci95'))})"
             for s in subs.values()]
    best = min(s["size"] for s in subs.values())
    smallest = ", ".join(m for m, s in subs.items() if s["size"] == best)
    return f"| {n} | {p} | " + " | ".join(cells) + f" | {smallest} |"


def methods_section(summary: CorpusSummary) -> list:
    """Agreement between ranking methods and which finds the smallest minimal subset."""
    rows = [(n, p, r) for n, e in summary.encoders.items()
            for p, r in e.probes.items() if r.get("ranking_agreement")]
    if not rows:
        return []
    L = ["## Methods: how far neuron rankings agree", "", METHODS_NOTE, "",
         "| encoder | property | pair | top-1% overlap | top-5% overlap | Spearman |",
         "| --- | --- | --- | --- | --- | --- |"]
    for n, p, r in rows:
        L += _agreement_rows(n, p, r)
    methods = rows[0][2]["ranking_agreement"]["methods"]
    L += ["", "### Which ranking finds the smallest minimal subset", "",
          "The smallest top-n prefix of each ranking whose retrained probe reaches the oracle's "
          "dev accuracy (less 1%), with its test accuracy and interval. A smaller subset at an "
          "overlapping accuracy interval means a ranking that puts the property's neurons "
          "first.", "",
          "| encoder | property | " + " | ".join(methods) + " | smallest |",
          "| --- | --- | " + " | ".join("---" for _ in methods) + " | --- |"]
    L += [_smallest_subset_row(n, p, r, methods) for n, p, r in rows]
    return L + [""]


# ----------------------------------------------------------------------------- amnesic
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


def _erased_below_random(row) -> str:
    e_hi = (row["erased"].get("accuracy_ci95") or [None, None])[1]
    r_lo = (row["random"].get("accuracy_ci95") or [None, None])[0]
    if e_hi is None or r_lo is None:
        return "n/a"
    return "yes" if e_hi < r_lo else "no"


def _amnesic_block(enc, prop, r) -> list:
    ch = r["eraser_check"]
    worked = ("the erased layer's probe falls to the majority baseline"
              if ch.get("after_covers_majority") else
              "the erased layer's probe stays above the majority baseline: the erasure is "
              "incomplete")
    L = [f"### {enc}: {prop} erased at {r['layer']} (rank {r['rank']}, "
         f"{r.get('num_utterances', '?')} utterances)", "",
         f"Check at {r['layer']}: {prop} accuracy "
         f"{_acc(ch['accuracy_before'], ch.get('accuracy_before_ci95'))} before, "
         f"{_acc(ch['accuracy_after'], ch.get('accuracy_after_ci95'))} after, "
         f"majority {_f(ch['majority_accuracy'])}: {worked}.", "",
         "| task | layer | original | erased | random | erased below random |",
         "| --- | --- | --- | --- | --- | --- |"]
    for task, t in r["tasks"].items():
        L += [f"| {task} | {row['name']} | {_variant(row['original'])} | "
              f"{_variant(row['erased'])} | {_variant(row['random'])} | "
              f"{_erased_below_random(row)} |" for row in t["layers"]]
    return L + [""]


def amnesic_section(summary: StudySummary) -> list:
    if not any(summary.amnesic.values()):
        return []
    L = ["## What later layers use: amnesic probing", "", AMNESIC_NOTE, ""]
    for enc, by_prop in summary.amnesic.items():
        for prop, r in by_prop.items():
            L += _amnesic_block(enc, prop, r)
    return L
