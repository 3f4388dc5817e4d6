"""Extract every layer's utterance vectors into a representation store.

    python -m experiments.extract --encoder=DIR --manifest=FILE --out=STORE
        [--batch_size=16] [--chunk_size=256] [--masks=FILE.npz] [--dtype=float32|float16]
        [--distributed [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]]

The manifest is a CSV with ``utt_id``, ``path`` (absolute or relative to the manifest's folder)
and any property columns, which are copied to the store's utterances.csv. Rows are processed in
chunks that are committed atomically; a killed run resumes at the first unfinished chunk and
ends in the same bytes as an uninterrupted one. Unusable audio is skipped, named in a warning and
listed in STORE/skipped.csv; the rest goes on (so is a row whose vector comes out NaN/inf).
The manifest is checked before any work (fields per line, unique utt_ids, split values).
``--masks`` (npz: layer name -> per-neuron multiplier, each layer one of the encoder's) extracts
from an ablated encoder; the masks file's hash is part of the store's digest, so other masks
never reuse a store.

Several hosts: run the same command on every host with ``--distributed``. Each batch is sharded
over the devices of all hosts; every host reads the same chunk of audio, and only process 0
writes the store (the resume point is broadcast from it). Without the three address flags,
``jax.distributed.initialize()`` finds the cluster itself (TPU pods, SLURM, ...); on CPU the
cross-process collectives use gloo.
"""
import contextlib
import os
import time

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

FLAGS = flags.FLAGS
flags.DEFINE_string("encoder", None, "Encoder directory (experiments.convert output).",
                    required=True)
flags.DEFINE_string("manifest", None, "Manifest CSV.", required=True)
flags.DEFINE_string("out", None, "Store directory.", required=True)
flags.DEFINE_integer("batch_size", 16, "Utterances per forward pass.", lower_bound=1)
flags.DEFINE_integer("chunk_size", 256, "Manifest rows per committed chunk.", lower_bound=1)
flags.DEFINE_string("masks", None, "npz of per-neuron multipliers by layer name.")
flags.DEFINE_enum("dtype", "float32", ["float32", "float16"], "Storage dtype.")
flags.DEFINE_float("min_seconds", 0.1, "Shorter audio is skipped.", lower_bound=0.0)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("coordinator_address", None, "With --distributed: process 0's HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "With --distributed: number of processes.",
                     lower_bound=1)
flags.DEFINE_integer("process_id", None, "With --distributed: this process's id.",
                     lower_bound=0)
flags.DEFINE_string("compilation_cache_dir", None, "JAX's persistent compilation cache: later "
                    "runs of the same architecture (its random copy, masked runs) skip jit "
                    "compilation.")


def check_out(out: str, manifest: str, encoder: str) -> None:
    """Refuse an --out that is another kind of artefact or one of this run's own inputs (a
    store, resumed in place, or nothing is fine), and one that cannot be written."""
    from speechinterp import artefacts, cli
    mine = {os.path.realpath(os.path.dirname(os.path.abspath(manifest))): "the manifest's folder",
            os.path.realpath(encoder): "the encoder folder"}
    held = mine.get(os.path.realpath(out))
    if held:
        raise cli.UserError(f"--out={out} is {held} (an input of this extraction); choose "
                            "another --out for the store")
    cli.check_output(out, "out", ("store",), overwrite=False, what="a store")
    artefacts.check_writable(out)


def extract_rows(enc, rows, root, layers, masks, writer, skip_log, start, lead, name):
    """Encode the manifest rows from ``start`` in committed chunks (skips named and logged)."""
    import jax

    from speechinterp import audio
    from speechinterp.extract import length_batches, non_finite_rows, pooled_vectors
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        start = int(multihost_utils.broadcast_one_to_all(np.int64(start)))
    bar = tqdm(total=len(rows), initial=start, unit="utt", desc=f"extract {name}",
               disable=not lead)
    t0, done = time.perf_counter(), 0
    while start < len(rows):
        stop = min(start + FLAGS.chunk_size, len(rows))
        waves, kept, reasons = [], [], {}
        for i in range(start, stop):
            p = rows[i]["path"]
            p = p if os.path.isabs(p) else os.path.join(root, p)
            try:
                waves.append(audio.load_audio(p, enc.sample_rate, FLAGS.min_seconds))
                kept.append(i)
            except audio.AudioError as e:
                reasons[i] = (p, e.reason)
                if lead:
                    logging.warning("skipping %s", e)
                    print(f"skipping {e}", flush=True)
        out = [np.zeros((len(kept), d), np.float32) for _, d in layers]
        for b in length_batches([len(w) for w in waves], FLAGS.batch_size):
            vecs = pooled_vectors(enc, [waves[j] for j in b], masks)
            for k, v in enumerate(vecs):
                out[k][b] = v
        bad = non_finite_rows(out, enc.layer_names)   # never written: a named skip
        for j, why in bad.items():
            p = rows[kept[j]]["path"]
            reasons[kept[j]] = (p if os.path.isabs(p) else os.path.join(root, p), why)
            if lead:
                logging.warning("skipping %s: %s", reasons[kept[j]][0], why)
                print(f"skipping {reasons[kept[j]][0]}: {why}", flush=True)
        if bad:
            good = [j for j in range(len(kept)) if j not in bad]
            out, kept = [o[good] for o in out], [kept[j] for j in good]
        skipped = sorted(reasons)
        if lead:
            skip_log.add([(rows[i]["utt_id"], *reasons[i]) for i in skipped])
        start = writer.write_chunk(start, out, skipped=skipped) if lead else stop
        done += len(kept) + len(skipped)
        bar.update(len(kept) + len(skipped))
        bar.set_postfix(utt_per_s=f"{done / (time.perf_counter() - t0):.1f}")
    bar.close()


def main(argv):
    del argv
    import jax
    if FLAGS.distributed:
        # cross-process collectives for CPU devices (no effect on GPU / TPU ones); must be set
        # before initialize(), i.e. before any backend starts
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes,
                                   process_id=FLAGS.process_id)
    if FLAGS.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    lead = jax.process_index() == 0
    from speechinterp import artefacts, encoders, store
    from speechinterp.corpus.manifest import read_manifest
    from speechinterp.extract import ExtractError, SkipLog, file_sha256, layer_dims, load_masks

    # checked before any work; the store keeps the manifest's own paths and ids
    rows = read_manifest(FLAGS.manifest, required=("utt_id", "path"), resolve_paths=False,
                         make_ids=False, fallback_fmt="csv")
    if lead:
        check_out(FLAGS.out, FLAGS.manifest, FLAGS.encoder)
    enc = encoders.load(FLAGS.encoder)
    root = os.path.dirname(os.path.abspath(FLAGS.manifest))
    name = os.path.basename(os.path.normpath(FLAGS.encoder))
    layers = list(zip(enc.layer_names, layer_dims(enc)))
    lock = artefacts.FolderLock(FLAGS.out) if lead else contextlib.nullcontext()
    with lock:
        try:
            masks = (load_masks(FLAGS.masks, enc.layer_names, [d for _, d in layers])
                     if FLAGS.masks else None)
            writer = (store.StoreWriter(FLAGS.out, name, layers, rows, FLAGS.dtype,
                                        extra_meta={"encoder_dir": os.path.abspath(FLAGS.encoder),
                                                    "masks": FLAGS.masks},
                                        inputs={"masks": file_sha256(FLAGS.masks)} if masks
                                        else None) if lead else None)
        except (ExtractError, store.StoreError) as e:
            raise app.UsageError(str(e)) from None
        start = writer.done_rows() if lead else 0
        skip_log = SkipLog(os.path.join(FLAGS.out, "skipped.csv"), rows, start) if lead else None
        if lead and 0 < start < len(rows):
            print(f"resuming at row {start} of {len(rows)} (rows before it are committed)",
                  flush=True)
        extract_rows(enc, rows, root, layers, masks, writer, skip_log, start, lead, name)
        if not lead:
            return
        s = writer.finalize()
    print(f"store {FLAGS.out}: {len(s)} utterances x {s.num_layers} layers "
          f"({len(rows) - len(s)} skipped); {jax.device_count()} devices over "
          f"{jax.process_count()} processes")
    if len(s) == 0:
        raise store.StoreError(f"store {FLAGS.out} has no utterances: every row of "
                               f"{FLAGS.manifest} was skipped (see {FLAGS.out}/skipped.csv)")


if __name__ == "__main__":
    from speechinterp import cli
    cli.run(main)
