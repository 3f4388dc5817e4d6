"""Amnesic probing: erase a property at one layer inside the encoder, probe the later layers.

    python -m experiments.amnesic --store=STORE --property=gender --layer=layer_2
        [--tasks=gender,language,...] [--encoder=DIR] [--audio_root=DIR] --out=FILE.json
        [--config=default] [--seed=0] [--batch_size=16]

Fits LEACE (Belrose et al. 2023) for ``--property`` on the train rows of ``--layer``'s vectors in
the store, re-extracts every layer with that eraser applied to the layer's frames inside the
forward pass (and once more with a random subspace of the same rank removed, the control), and
for each of ``--tasks`` (``--property`` is always included) at ``--layer`` and every later layer
reports test accuracy with 95-percent speaker-clustered intervals: original vs erased vs random
(speechinterp.analysis.amnesic; Elazar et al., TACL 2021). Writes the JSON of
``amnesic_probing`` and prints one table per task.

The encoder is the store's own (``meta.json``'s ``encoder_dir``) unless ``--encoder`` is given;
the audio is the store's ``utterances.csv`` ``path`` column, relative paths resolved against
``--audio_root`` (the folder of the manifest the store was extracted from). Cost: two
extractions of the store's audio (the erased and the control encoder) plus 3 x (layers after
``--layer`` + 1) probes per task.
"""
import json
import os
import sys

import numpy as np
from absl import flags

from speechinterp import cli
from speechinterp.analysis.numbers import accuracy_text
from speechinterp.probes import elastic_net

FLAGS = flags.FLAGS
flags.DEFINE_string("store", None, "Representation store directory.", required=True)
flags.DEFINE_string("property", None, "Property (store column) to erase.", required=True)
flags.DEFINE_string("layer", None, "Layer to erase it at: a name or an index.", required=True)
flags.DEFINE_list("tasks", [], "Other properties to probe after erasure (the erased one is "
                  "always probed).")
flags.DEFINE_string("out", None, "Output JSON file.", required=True)
flags.DEFINE_string("encoder", None, "Encoder directory (default: the store's encoder_dir).")
flags.DEFINE_string("audio_root", None, "Folder that relative audio paths in the store's "
                    "utterances.csv are relative to (the extraction manifest's folder).")
flags.DEFINE_enum("config", "default", list(elastic_net.CONFIGS), "Probe training settings.")
flags.DEFINE_integer("seed", 0, "Seed for splits, probes, the control subspace, bootstrap.")
flags.DEFINE_integer("batch_size", 16, "Utterances per forward pass.", lower_bound=1)


def resolve_layer(layer: str, names) -> str:
    """A layer name from a name or an index; a UserError listing the layers otherwise."""
    if layer in names:
        return layer
    if layer.lstrip("-").isdigit() and -len(names) <= int(layer) < len(names):
        return names[int(layer)]
    raise cli.UserError(f"--layer={layer}: not a layer of the store; its layers are {names}")


def audio_paths(store, root) -> list[str]:
    """Absolute audio path of every store row; every missing file named before any work."""
    paths, missing = [], []
    for i, r in enumerate(store.utterances):
        p = r["path"]
        if not os.path.isabs(p):
            p = os.path.join(root or "", p)
        paths.append(p)
        if not os.path.isfile(p):
            missing.append(f"row {i} ({r['utt_id']}): {p}")
    if missing:
        hint = "" if root else "; pass --audio_root (the extraction manifest's folder)"
        raise cli.UserError(f"{len(missing)} audio file(s) of {store.path}/utterances.csv not "
                            f"found, e.g. {missing[:3]}{hint}")
    return paths


def table(task: str, result: dict) -> str:
    """One task's rows as markdown: accuracy [interval] per variant."""
    def fmt(a):
        return accuracy_text(a["accuracy"], a.get("accuracy_ci95"))
    lines = [f"{task} (majority {result['majority_accuracy']:.3f}, {result['num_test']} test)",
             "| layer | original | erased | random |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['name']} | {fmt(r['original'])} | {fmt(r['erased'])} | {fmt(r['random'])} |"
              for r in result["layers"]]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}: pass flags as --name=value")
    from speechinterp import audio, encoders
    from speechinterp import store as store_lib
    from speechinterp.analysis.amnesic import amnesic_probing
    from speechinterp.probes.data import TaskError, prepare_task

    store = store_lib.open_store(FLAGS.store)
    if store.meta.get("masks"):
        raise cli.UserError(f"{store.path} was extracted with --masks={store.meta['masks']}; "
                            f"amnesic probing needs a store of the unmasked encoder")
    layer = resolve_layer(FLAGS.layer, store.layer_names)
    tasks = [FLAGS.property] + [t for t in FLAGS.tasks if t != FLAGS.property]
    missing = [t for t in tasks if not store.has_column(t)]
    if missing:
        raise cli.UserError(f"{store.path} has no column(s) {missing}; its columns are "
                            f"{list(store.utterances[0]) if store.utterances else []}")
    try:
        data = {t: prepare_task(store, t, FLAGS.seed) for t in tasks}
    except TaskError as e:
        raise cli.UserError(str(e)) from None
    enc_dir = FLAGS.encoder or store.meta.get("encoder_dir")
    if not enc_dir or not os.path.isdir(enc_dir):
        raise cli.UserError(f"encoder directory {enc_dir!r} not found; pass --encoder")
    enc = encoders.load(enc_dir)
    if list(enc.layer_names) != store.layer_names:
        raise cli.UserError(f"{enc_dir}'s layers {enc.layer_names} are not the store's "
                            f"{store.layer_names}")
    paths = audio_paths(store, FLAGS.audio_root)
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    os.makedirs(out_dir, exist_ok=True)
    waves = [audio.load_audio(p, enc.sample_rate, 0.0) for p in paths]
    original = [np.asarray(store.layer(k), np.float32) for k in range(store.num_layers)]
    result = amnesic_probing(enc, waves, data, FLAGS.property, layer, original=original,
                             cfg=elastic_net.CONFIGS[FLAGS.config], seed=FLAGS.seed,
                             batch_size=FLAGS.batch_size)
    result.update({"store": os.path.abspath(FLAGS.store), "encoder_dir": os.path.abspath(enc_dir),
                   "probe_setting": FLAGS.config, "seed": FLAGS.seed})
    with open(FLAGS.out, "w") as f:
        json.dump(result, f, indent=1)
    c = result["eraser_check"]
    print(f"LEACE for {FLAGS.property!r} at {layer} removes {result['rank']} direction(s); on "
          f"the stored vectors a fresh probe goes {c['accuracy_before']:.3f} -> "
          f"{c['accuracy_after']:.3f} (majority {c['majority_accuracy']:.3f})")
    for task in tasks:
        print(table(task, result["tasks"][task]))
    print(f"wrote {FLAGS.out}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
