"""Probe a representation store for one or more properties.

    python -m experiments.probe --store=DIR --task=gender[,speaker,...] --out=DIR
        [--config=default|neurox] [--delta=0.01] [--seeds=1] [--search_stride=100]
        [--ranking=weight_mass[,per_neuron,...]] [--memory_budget_gb=GB]
        [--distributed [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]]
        (or: speechinterp probe ...)

Probes train on every device JAX sees (``jax.devices()``); with ``--distributed`` each host
of a multi-host job calls ``jax.distributed.initialize()`` first (given the coordinator, or
found by JAX on Cloud TPU or SLURM), trains the probes of its own devices, and process 0
writes the results. With
``--memory_budget_gb`` a store whose features would not fit in that much host memory is
streamed from its layer files through the whole protocol.

For each task writes OUT/TASK/: results.json (docs/formats.md), details.json (chosen lambdas,
seed spread, per-neuron ranking, timings), table.md, layerwise.png, minimal_subset.png,
ablation.png. An --out that is a file or holds another artefact (a store, an encoder, a
corpus) is refused before any work unless --overwrite is given. The console shows each task's
table and the class counts per split beside the majority baseline.
"""
import os
import sys

import numpy as np
from absl import flags, logging
from tqdm import tqdm

from speechinterp import artefacts, cli
from speechinterp import store as store_lib
from speechinterp.analysis import plots, tables
from speechinterp.probes import elastic_net, protocol
from speechinterp.probes.data import SPLIT_NAMES, TaskError, majority_class, prepare_task

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
flags.DEFINE_bool("layerwise_only", False, "Run only the layer-wise probes.")
flags.DEFINE_list("ranking", ["weight_mass"],
                  "Neuron ranking method(s) for ablation and the minimal subset, all trained in "
                  f"the same calls: {', '.join(protocol.RANKINGS)}. The first fills ranking, "
                  "minimal_subset and ablation in results.json; the others go under by_ranking.")
flags.DEFINE_float("memory_budget_gb", None, "Host memory for the store's features; a store "
                   "that needs more is streamed from its files (default: load it).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host).")
flags.DEFINE_string("coordinator_address", None, "With --distributed: process 0's HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "With --distributed: number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's id.")
flags.DEFINE_bool("overwrite", False, "Replace --out when it holds something else.")
cli.positive("seeds", "search_stride", "memory_budget_gb")
cli.fraction("delta", closed=False)


def class_counts(store, task: str, seed: int) -> str:
    """'train: a 120, b 130; dev: ...; test: ...' and the training majority, for the console."""
    td = prepare_task(store, task, seed)
    parts = []
    for i, name in enumerate(SPLIT_NAMES):
        n = np.bincount(td.y[td.split == i], minlength=td.num_classes)
        parts.append(f"{name}: " + ", ".join(f"{c} {k}" for c, k in zip(td.classes, n)))
    maj = td.classes[majority_class(td)]
    return (f"{task}: class counts per split: {'; '.join(parts)} (the majority baseline is "
            f"the share of the training majority {maj!r} in test)")


def check_out(out: str, tasks, overwrite: bool) -> None:
    """Refuse --out (or OUT/TASK) holding something other than probe results, before work."""
    held = cli.check_output(out, "out", ("probe results", "folder"), overwrite,
                            "a probe results folder")
    if held not in (None, "probe results", "folder"):
        cli.remove(out)                  # --overwrite
        return
    for task in tasks:
        sub = os.path.join(out, task)
        held = cli.artefact(sub)
        if held not in (None, "folder") and not os.path.isfile(os.path.join(sub, "results.json")):
            if not overwrite:
                raise cli.UserError(f"--out: {sub} holds {held}, not a task's probe results; "
                                    f"pass --overwrite to replace it, or choose another --out")
            cli.remove(sub)


def check_tasks(tasks) -> None:
    """--task names at least one property, each once."""
    names = [t for t in tasks or [] if t.strip()]
    if not names or len(names) != len(tasks):
        raise cli.UserError(f"--task={','.join(tasks or [])}: name one or more properties, "
                            "comma-separated, with no empty entry")
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise cli.UserError(f"--task: {', '.join(repeated)} given more than once")


def write_task(out_dir, results, details):
    """The task's files, each written atomically; results.json, which marks the folder as a
    task's probe results, goes last."""
    os.makedirs(out_dir, exist_ok=True)
    artefacts.write_json(os.path.join(out_dir, "details.json"), details)
    artefacts.write_text(os.path.join(out_dir, "table.md"), tables.results_markdown(results))
    figs = {"layerwise.png": plots.layerwise_figure(results)}
    if "minimal_subset" in results:
        figs["minimal_subset.png"] = plots.subset_layers_figure(results)
        figs["ablation.png"] = plots.ablation_figure(results)
    for name, fig in figs.items():
        artefacts.save_figure(fig, os.path.join(out_dir, name), dpi=120)
        plots.plt.close(fig)
    artefacts.write_json(os.path.join(out_dir, "results.json"), results, indent=1)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}: pass flags as --name=value")
    check_tasks(FLAGS.task)
    unknown = [m for m in FLAGS.ranking if m not in protocol.RANKINGS]
    if unknown or not FLAGS.ranking:
        raise cli.UserError(f"--ranking: unknown method(s) {unknown}; use one or more of "
                            f"{', '.join(protocol.RANKINGS)}")
    import jax
    if FLAGS.distributed:
        # cross-process collectives for CPU devices (no effect on GPU / TPU ones), set before
        # any backend starts
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes,
                                   process_id=FLAGS.process_id)
    lead = jax.process_index() == 0      # every host trains its share; process 0 writes
    if lead:
        check_out(FLAGS.out, FLAGS.task, FLAGS.overwrite)
    store = store_lib.open_store(FLAGS.store)
    # tasks without a column: named before any work or progress bar; the others still run
    missing = [t for t in FLAGS.task if not store.has_column(t)]
    if missing:
        cols = list(store.utterances[0]) if store.utterances else []
        msg = (f"--task: {store.path} has no column " + ", ".join(repr(t) for t in missing)
               + f"; its columns are {cols}")
        if len(missing) == len(FLAGS.task):
            raise cli.UserError(msg)
        print(f"error: {msg}", file=sys.stderr)
    tasks = [t for t in FLAGS.task if t not in missing]
    if FLAGS.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    cfg = elastic_net.CONFIGS[FLAGS.config]
    failed = list(missing)
    for task in tasks:
        try:
            stages = (["layer-wise probes"] if FLAGS.layerwise_only else
                      ["layer-wise probes", "oracle probe", "ranking", "ablation",
                       "minimal subset"])
            with tqdm(total=len(stages), desc=task, unit="stage") as bar:
                def progress(stage):
                    bar.set_postfix_str(stage)
                    if stage != stages[0]:
                        bar.update(1)
                results, details = protocol.run_probing(
                    store, task, cfg, seed=FLAGS.seed, seeds=FLAGS.seeds, delta=FLAGS.delta,
                    search_stride=FLAGS.search_stride, per_neuron=FLAGS.per_neuron,
                    layerwise_only=FLAGS.layerwise_only, rankings=FLAGS.ranking,
                    memory_budget_gb=FLAGS.memory_budget_gb, progress=progress)
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
        if not lead:
            continue
        write_task(os.path.join(FLAGS.out, task), results, details)
        if "oracle" in results:
            print(tables.results_markdown(results))
        print(class_counts(store, task, FLAGS.seed))
    if failed:
        sys.exit(f"failed tasks: {', '.join(failed)}")


if __name__ == "__main__":
    cli.run(main)
