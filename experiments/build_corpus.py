"""Build the built-in corpus: real espeak-ng speech, five labelled properties, real codecs.

    python -m experiments.build_corpus --out=DIR [--size=tiny|small|medium|large] [--seed=0]

Writes DIR/wav/*.wav (16 kHz) and DIR/utterances.csv with utt_id, path, split (speaker-disjoint,
stratified by accent), speaker, gender, language, accent (English utterances only), channel,
text and the voice settings. The same seed gives byte-identical output.
"""
import csv
import os

import numpy as np
from absl import app, flags
from tqdm import tqdm

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_enum("size", "small", ["tiny", "small", "medium", "large"], "Corpus size.")
flags.DEFINE_integer("seed", 0, "Seed for speakers, sentences, channels and splits.")
flags.DEFINE_list("voices", ["espeak"], "Voice sources (espeak; flite/festival not built in).")


def main(argv):
    del argv
    import librosa
    import soundfile as sf

    from speechinterp.corpus import builtin, channels, espeak
    from speechinterp.probes.data import SPLIT_NAMES, speaker_disjoint_split

    extra = [v for v in FLAGS.voices if v != "espeak"]
    if extra:
        raise app.UsageError(f"voice sources {extra} are not supported by this builder")
    rows = builtin.plan(FLAGS.size, FLAGS.seed)
    os.makedirs(os.path.join(FLAGS.out, "wav"), exist_ok=True)
    spk = np.array([r["speaker"] for r in rows])
    home = {r["speaker"]: r["accent"] for r in rows if r["accent"]}
    acc = np.array([home[s] for s in spk])
    split = speaker_disjoint_split(acc, spk, FLAGS.seed)
    sr_in = espeak.sample_rate()
    for i, r in enumerate(tqdm(rows, desc="synthesising", unit="utt")):
        rng = np.random.default_rng([FLAGS.seed, i])
        wav = espeak.synthesize(r["text"], r["voice"], r["rate"], r["pitch"], r["pitch_range"],
                                seed=FLAGS.seed * 100003 + i)
        x = librosa.resample(wav.astype(np.float32) / 32768.0, orig_sr=sr_in, target_sr=16000)
        y = channels.apply_channel(x, 16000, r["channel"], rng)
        r["path"] = f"wav/{r['utt_id']}.wav"
        r["split"] = SPLIT_NAMES[split[i]]
        sf.write(os.path.join(FLAGS.out, r["path"]), y, 16000, subtype="PCM_16")
    cols = ["utt_id", "path", "split", "speaker", "gender", "language", "accent", "channel",
            "text", "voice", "pitch", "pitch_range", "rate"]
    tmp = os.path.join(FLAGS.out, "utterances.csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows({c: r[c] for c in cols} for r in rows)
    os.replace(tmp, os.path.join(FLAGS.out, "utterances.csv"))
    print(f"{len(rows)} utterances, {len(set(spk))} speakers -> {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
