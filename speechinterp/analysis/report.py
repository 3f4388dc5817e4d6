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
}

LIMITS = (
    "Limits of the built-in corpus: the speech is synthesised by espeak-ng (formant synthesis), "
    "so 'speakers' are voice variants with pitch, rate and formant settings, not people; "
    "'accent' is espeak's English accent rules, a stand-in for dialect; channels are simulated "
    "with real codecs and simple acoustics. Findings on this data are about these encoders' "
    "response to such variation, not a replication of the paper's numbers on VoxCeleb / ADI17. "
    "The task CNNs are trained briefly on about a thousand utterances, far from the paper's "
    "models.")


def make_figures(summary) -> dict:
    """name -> matplotlib Figure for every figure the summary supports."""
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
    return {k: v for k, v in figs.items() if v is not None}


def _verdict(h):
    return {True: "holds", False: "does not hold", None: "undecided"}[h]


def markdown(summary, figure_names, config) -> str:
    L = ["# speechinterp study report", ""]
    encs = summary["encoders"]
    L.append(f"Encoders: {', '.join(sorted(encs))}. Corpus: `{summary.get('corpus_manifest')}`. "
             f"Total time {summary.get('total_time_s', 0):.0f} s.")
    L += ["", "## Findings", "", "| # | finding | on this data | evidence | figure |",
          "| --- | --- | --- | --- | --- |"]
    for i, f in enumerate(summary["findings"], 1):
        fig = f"![](figures/{f['figure']})" if f["figure"] in figure_names else "-"
        L.append(f"| {i} | {f['finding']} | **{_verdict(f['holds'])}** | {f['evidence']} | "
                 f"`{f['figure']}` |")
    L += ["", LIMITS, "", "## Figures", ""]
    for name in figure_names:
        L += [f"### {name[:-4].replace('_', ' ')}", "", f"![{name}](figures/{name})", ""]
    L += ["## Layer-wise results", ""]
    for name in sorted(encs):
        e = encs[name]
        for prop, res in sorted(e.get("probes", {}).items()):
            best = max(res["layers"], key=lambda l: l["accuracy"])
            row = (f"- **{name} / {prop}**: best layer {best['name']} {best['accuracy']:.3f} "
                   f"(control {best['control_accuracy']:.3f}, majority "
                   f"{res['majority_accuracy']:.3f})")
            if "oracle" in res:
                ms = res["minimal_subset"]
                row += (f"; oracle {res['oracle']['accuracy']:.3f}; minimal subset {ms['size']} "
                        f"neurons ({100 * ms['fraction']:.1f}%) at {ms['accuracy']:.3f}")
            L.append(row)
    if summary.get("eer"):
        L += ["", "## Speaker verification (EER %, per layer)", ""]
        for name, e in sorted(summary["eer"].items()):
            L.append(f"- {name}: " + ", ".join(f"{l} {100 * v:.1f}" for l, v in
                                               zip(e["layers"], e["eer"])))
    if summary.get("bias"):
        L += ["", "## Bias", ""]
        for name, b in summary["bias"].items():
            L.append(f"- {name} ({b['task']}, {b['utterances']} test utterances, "
                     f"{b['masked_neurons']} {b['protected']}-salient neurons masked inside the "
                     f"encoder): unmasked {b['accuracy']}, masked {b['masked']}, random-masked "
                     f"{b['random_masked']}")
    if summary.get("stage_times_s"):
        L += ["", "## Stage times (s)", ""]
        L += [f"- {k}: {v:.1f}" for k, v in summary["stage_times_s"].items()]
    return "\n".join(L) + "\n"


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
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)
