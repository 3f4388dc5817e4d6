"""Probe a representation store for one or more properties.

    python -m experiments.probe --store=DIR --task=gender[,speaker,...] --out=DIR
        [--config=default|neurox] [--delta=0.01] [--seeds=1] [--search_stride=100]

For each task writes OUT/TASK/: results.json (the DESIGN.md keys), details.json (chosen lambdas,
seed spread, per-neuron ranking, timings), table.md, layerwise.png, minimal_subset.png,
ablation.png.
"""
import json
import os
import sys

from absl import app, flags, logging
from tqdm import tqdm

from speechinterp import store as store_lib
from speechinterp.analysis import plots, tables
from speechinterp.probes import elastic_net, protocol
from speechinterp.probes.data import TaskError

FLAGS = flags.FLAGS
flags.DEFINE_string("store", None, "Representation store directory.", required=True)
flags.DEFINE_list("task", None, "Property column(s) to probe.", required=True)
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_enum("config", "default", list(elastic_net.CONFIGS), "Probe training settings.")
flags.DEFINE_float("delta", 0.01, "Minimal subset: reach oracle * (1 - delta) on dev.")
flags.DEFINE_integer("seed", 0, "Seed for splits, control labels and training.")
flags.DEFINE_integer("seeds", 1, "Seeds trained side by side for error bars.")
flags.DEFINE_integer("search_stride", 100, "NeuroX ranking search stride.")
flags.DEFINE_bool("per_neuron", True, "Also rank by per-neuron probe accuracy.")
flags.DEFINE_string("compilation_cache_dir", None, "JAX's persistent compilation cache: a "
                    "later run on a store of the same shape skips compiling the probe calls.")
flags.DEFINE_bool("layerwise_only", False,
                  "Stream mini-batches from the memory maps and run only layer-wise probes "
                  "(for stores larger than memory).")


def write_task(out_dir, results, details):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "details.json"), "w") as f:
        json.dump(details, f)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(tables.results_markdown(results))
    figs = {"layerwise.png": plots.layerwise_figure(results)}
    if "minimal_subset" in results:
        figs["minimal_subset.png"] = plots.subset_layers_figure(results)
        figs["ablation.png"] = plots.ablation_figure(results)
    for name, fig in figs.items():
        fig.savefig(os.path.join(out_dir, name), dpi=120)
        plots.plt.close(fig)


def main(argv):
    del argv
    try:
        store = store_lib.open_store(FLAGS.store)
    except store_lib.StoreError as e:
        sys.exit(f"error: {e}")
    if FLAGS.compilation_cache_dir:
        import jax
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    cfg = elastic_net.CONFIGS[FLAGS.config]
    failed = []
    for task in FLAGS.task:
        try:
            if FLAGS.layerwise_only:
                rows = protocol.layerwise_streaming(store, task, cfg, seed=FLAGS.seed)
                results = {"task": task, "probe_setting": FLAGS.config, "layers": rows}
                details = {"probe_setting": FLAGS.config}
            else:
                stages = ["layer-wise probes", "oracle probe", "ranking", "ablation",
                          "minimal subset"]
                with tqdm(total=len(stages), desc=task, unit="stage") as bar:
                    def progress(stage):
                        bar.set_postfix_str(stage)
                        if stage != stages[0]:
                            bar.update(1)
                    results, details = protocol.run_probing(
                        store, task, cfg, seed=FLAGS.seed, seeds=FLAGS.seeds, delta=FLAGS.delta,
                        search_stride=FLAGS.search_stride, per_neuron=FLAGS.per_neuron,
                        progress=progress)
                    bar.update(1)
                if details["num_missing_labels"]:
                    logging.warning("%s: skipped %d utterances with no label",
                                    task, details["num_missing_labels"])
                    print(f"{task}: skipped {details['num_missing_labels']} utterances "
                          f"with an empty label")
        except (TaskError, store_lib.StoreError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed.append(task)
            continue
        write_task(os.path.join(FLAGS.out, task), results, details)
        if "oracle" in results:
            print(tables.results_markdown(results))
    if failed:
        sys.exit(f"failed tasks: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
