"""Markdown tables of probing results."""
from __future__ import annotations


def results_markdown(results: dict) -> str:
    """Layer-wise table, oracle, minimal subset and ablation of one task's results.json."""
    out = [f"## {results['task']}", ""]
    if "classes" in results:
        out.append(f"{len(results['classes'])} classes; majority baseline "
                   f"{results['majority_accuracy']:.3f}; split sizes {results['split_sizes']}")
        out.append("")
    out += ["| layer | dim | accuracy | macro-F1 | control | selectivity |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for l in results["layers"]:
        out.append(f"| {l['name']} | {l['dim']} | {l['accuracy']:.3f} | {l['f1_macro']:.3f} | "
                   f"{l['control_accuracy']:.3f} | {l['selectivity']:+.3f} |")
    if "oracle" in results:
        ms = results["minimal_subset"]
        out += ["", f"Oracle (all layers): accuracy {results['oracle']['accuracy']:.3f}, "
                    f"macro-F1 {results['oracle']['f1_macro']:.3f}.",
                f"Minimal subset (delta {ms['delta']}): {ms['size']} neurons "
                f"({100 * ms['fraction']:.2f}%), test accuracy {ms['accuracy']:.3f}; per layer: "
                + ", ".join(f"{k} {v}" for k, v in ms["per_layer"].items() if v) + ".", "",
                "| mode | kept | " + " | ".join(f"{p}%" for p in results["ablation"]["retrain"]["top"])
                + " |",
                "| --- | --- | " + " | ".join("---:" for _ in results["ablation"]["retrain"]["top"])
                + " |"]
        for mode in ("retrain", "zero_out"):
            for how in ("top", "random", "bottom"):
                vals = results["ablation"][mode][how]
                out.append(f"| {mode} | {how} | " + " | ".join(f"{v:.3f}" for v in vals.values())
                           + " |")
    return "\n".join(out) + "\n"
