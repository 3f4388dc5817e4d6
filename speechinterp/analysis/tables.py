"""Markdown tables of probing results."""
from __future__ import annotations

from speechinterp.analysis.numbers import accuracy_text


def fmt_acc(acc, ci=None, sd=None) -> str:
    """:func:`accuracy_text`; a seed sd of 0 (one seed) is not shown."""
    return accuracy_text(acc, ci, sd or None)


def results_markdown(results: dict) -> str:
    """Layer-wise table, oracle, minimal subset and ablation of one task's results.json, with
    95% intervals (clustered bootstrap) where the results have them."""
    out = [f"## {results['task']}", ""]
    if "classes" in results:
        out.append(f"{len(results['classes'])} classes; majority baseline "
                   f"{fmt_acc(results['majority_accuracy'], results.get('majority_accuracy_ci95'))}"
                   f"; split sizes {', '.join(f'{k} {v}' for k, v in results['split_sizes'].items())}"
                   f"; probe setting `{results.get('probe_setting', '?')}`")
        iv = results.get("interval")
        if iv:
            out.append(f"Intervals: 95% {iv['method']} over {iv['num_resampled']} "
                       f"{iv['resampled']} ({iv['resamples']} resamples).")
        out.append("")
    no_control = any(l.get("control_accuracy", 0) is None for l in results["layers"])
    out += ["| layer | dim | accuracy [95% CI] ± seed sd | macro-F1 | control | selectivity |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for l in results["layers"]:
        sel = "n/a" if l.get("selectivity") is None else f"{l['selectivity']:+.3f}"
        out.append(f"| {l['name']} | {l['dim']} | "
                   f"{fmt_acc(l['accuracy'], l.get('accuracy_ci95'), l.get('accuracy_seed_sd'))}"
                   f" | {l['f1_macro']:.3f} | {fmt_acc(l.get('control_accuracy'))} | {sel} |")
    if no_control:
        out += ["", "Control task and selectivity: not applicable (n/a). The control task "
                "relabels each speaker at random, and here the classes are the speakers "
                "themselves, so the control is learnable from the task."]
    if "oracle" in results:
        ms = results["minimal_subset"]
        ci = results.get("ablation_ci95", {})
        o = results["oracle"]
        out += ["", f"Oracle (all layers): accuracy "
                    f"{fmt_acc(o['accuracy'], o.get('accuracy_ci95'), o.get('accuracy_seed_sd'))}"
                    f", macro-F1 {o['f1_macro']:.3f}.",
                f"Minimal subset (delta {ms['delta']}): {ms['size']} neurons "
                f"({100 * ms['fraction']:.2f}%), test accuracy "
                f"{fmt_acc(ms['accuracy'], ms.get('accuracy_ci95'))}; per layer: "
                + ", ".join(f"{k} {v}" for k, v in ms["per_layer"].items() if v) + "."]
        stab = results.get("ranking_stability")
        if stab:
            out.append(f"Ranking stability over {stab['seeds']} seeds: top-1% overlap "
                       f"{stab['top1_overlap']:.2f}, top-5% overlap {stab['top5_overlap']:.2f}, "
                       f"Spearman {stab['spearman']:.2f}.")
        conv = results.get("convergence")
        if conv and not conv["ok"]:
            out.append(f"Convergence flags: layers below the majority "
                       f"{conv['below_majority_significant']}; oracle below the best layer: "
                       f"{conv['oracle_below_best_layer']}.")
        pcts = list(results["ablation"]["retrain"]["top"])
        out += ["", "| mode | kept | " + " | ".join(f"{p}%" for p in pcts) + " |",
                "| --- | --- | " + " | ".join("---:" for _ in pcts) + " |"]
        for mode in ("retrain", "zero_out"):
            for how in ("top", "random", "bottom"):
                vals = results["ablation"][mode][how]
                cis = ci.get(mode, {}).get(how, {})
                out.append(f"| {mode} | {how} | " + " | ".join(
                    fmt_acc(v, cis.get(p)) for p, v in vals.items()) + " |")
    return "\n".join(out) + "\n"
