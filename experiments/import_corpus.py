"""Import a corpus layout into a manifest that ``experiments.extract --manifest`` reads.

    python -m experiments.import_corpus --format=voxceleb1|common_voice|adi17|folders|manifest
        --root=DIR_OR_FILE --out=FILE.csv [--label=NAME] [--columns=our=theirs,...] [--seed=0]
        [--fractions=0.8,0.1,0.1] [--speaker_level=0] [--table_format=csv|tsv|jsonl]
        [--resplit]

Formats (speechinterp/corpus/):
  voxceleb1     ROOT/vox1_meta.csv + ROOT/wav/idXXXXX/<video>/NNNNN.wav (--meta to point
                elsewhere): speaker, gender, accent (nationality); test = the release's test set
  common_voice  ROOT/<lang>/validated.tsv + clips/ (or ROOT = one language folder): speaker
                (client_id), gender, accent, age, locale, language
  adi17         ROOT/[<split>/]<DIALECT>/*.wav: dialect, region, video
  folders       ROOT/<label>/**/*.wav: the folder name in column --label (default "label");
                --speaker_level=1 reads the speaker from the next folder level
  manifest      ROOT = a CSV / TSV / JSONL file; --columns maps our names to the file's, e.g.
                --columns=path=wav_file,speaker=spk; --label stratifies the split

Splits are speaker-disjoint (the corpus' own split where it has one). Listed files missing on
disk are skipped and named. Prints the counts per split and label.
"""
import os
import sys

from absl import app, flags

FORMATS = ("voxceleb1", "common_voice", "adi17", "folders", "manifest")
ALIASES = {"folder": "folders"}
DEFAULT_LABEL = {"voxceleb1": "gender", "common_voice": "gender", "adi17": "dialect",
                 "folders": "label", "manifest": None}

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", None, FORMATS + tuple(ALIASES), "Corpus layout (folder = folders).",
                  required=True)
flags.DEFINE_string("root", None, "Corpus folder (a file for --format=manifest).",
                    required=True)
flags.DEFINE_string("out", None, "Manifest CSV to write.", required=True)
flags.DEFINE_string("label", None, "folders: label column name; manifest: column to "
                    "stratify the split by; all: the label counted in the summary.")
flags.DEFINE_list("columns", [], "manifest: our=theirs column mapping.")
flags.DEFINE_string("table_format", None, "manifest: csv, tsv or jsonl (default: from the "
                    "extension).")
flags.DEFINE_string("meta", None, "voxceleb1: path of vox1_meta.csv (default ROOT/).")
flags.DEFINE_integer("speaker_level", 0, "folders: folder depth below the label naming the "
                     "speaker (0: none, a split by utterance).", lower_bound=0)
flags.DEFINE_list("fractions", ["0.8", "0.1", "0.1"], "train,dev,test shares of speakers.")
flags.DEFINE_integer("seed", 0, "Seed of the speaker-disjoint split.")
flags.DEFINE_bool("resplit", False, "manifest: ignore the file's own split column.")


def _fractions_ok(values):
    try:
        fr = [float(v) for v in values]
    except ValueError:
        return False
    return len(fr) == 3 and all(f >= 0 and f == f for f in fr) and sum(fr) > 0 and fr[0] > 0


flags.register_validator("fractions", _fractions_ok, "--fractions needs three non-negative "
                         "numbers train,dev,test with a positive train share, e.g. 0.8,0.1,0.1")


def run(fmt, root, out, label=None, columns=(), table_format=None, meta=None, speaker_level=0,
        fractions=(0.8, 0.1, 0.1), seed=0, resplit=False):
    """Import and write the manifest; returns the importer's ``manifest.Imported``."""
    from speechinterp.corpus import adi17, common_voice, folders, manifest, voxceleb

    fmt = ALIASES.get(fmt, fmt)
    if fmt == "voxceleb1":
        res = voxceleb.import_voxceleb1(root, meta, fractions, seed)
    elif fmt == "common_voice":
        res = common_voice.import_common_voice(root, fractions, seed)
    elif fmt == "adi17":
        res = adi17.import_adi17(root, fractions, seed)
    elif fmt == "folders":
        res = folders.import_folders(root, label or "label", speaker_level, fractions, seed)
    else:
        res = manifest.import_manifest(root, manifest.parse_columns(list(columns)), table_format,
                                       fractions, seed, label, resplit)
    manifest.check_speaker_disjoint(res.rows, out)
    manifest.write_manifest(res.rows, out)
    return res


def main(argv):
    del argv
    from speechinterp.corpus import manifest

    try:
        fractions = tuple(float(f) for f in FLAGS.fractions)
    except ValueError as e:
        raise app.UsageError(f"--fractions={FLAGS.fractions}: {e}")
    if len(fractions) != 3:
        raise app.UsageError(f"--fractions needs three numbers (train,dev,test), got "
                             f"{FLAGS.fractions}")
    if ALIASES.get(FLAGS.format, FLAGS.format) != "manifest" and (FLAGS.columns or
                                                                  FLAGS.table_format):
        raise app.UsageError("--columns and --table_format apply to --format=manifest only")
    try:
        res = run(FLAGS.format, FLAGS.root, FLAGS.out, FLAGS.label, FLAGS.columns,
                  FLAGS.table_format, FLAGS.meta, FLAGS.speaker_level, fractions, FLAGS.seed,
                  FLAGS.resplit)
    except manifest.ManifestError as e:
        raise app.UsageError(str(e))
    for w in res.warnings():
        print(f"skipped {w}")
    for note in res.notes:
        print(f"warning: {note}", file=sys.stderr)
    fmt = ALIASES.get(FLAGS.format, FLAGS.format)
    label = (FLAGS.label if fmt != "folders" else FLAGS.label or "label") or DEFAULT_LABEL[fmt]
    counts = manifest.split_counts(res.rows, label)
    speakers = {s: len({r.get("speaker") for r in res.rows if r["split"] == s and
                        r.get("speaker")}) for s in counts}
    print(f"{len(res.rows)} utterances -> {os.path.abspath(FLAGS.out)} "
          f"({len(res.skipped)} skipped)")
    for s in manifest.SPLITS:
        if s in counts:
            by = ", ".join(f"{k or '(none)'}: {v}" for k, v in sorted(counts[s].items()))
            print(f"  {s:5s} {sum(counts[s].values()):7d} utterances, {speakers[s]} speakers"
                  + (f"; {label}: {by}" if label else ""))


if __name__ == "__main__":
    from speechinterp import cli
    cli.run(main)
