"""Convert a foreign checkpoint into a speechinterp encoder directory.

    python -m experiments.convert --source=PATH --out=DIR [--format=NAME]

The format is auto-detected where possible (``--list_formats`` shows them). Writes an orbax
checkpoint and ``config.json`` (family, architecture config, source sha256, waveform
normalisation); load the result with ``speechinterp.encoders.load(DIR)``.
"""
from absl import app, flags, logging

from speechinterp import checkpoint, convert

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "Checkpoint file or directory to convert.")
flags.DEFINE_string("out", None, "Output encoder directory.")
flags.DEFINE_string("format", None, "Source format name; auto-detected when omitted.")
flags.DEFINE_multi_string("option", [], "Extra converter option KEY=VALUE (repeatable).")
flags.DEFINE_bool("list_formats", False, "List the known formats and exit.")


def main(argv):
    del argv
    if FLAGS.list_formats:
        for f in sorted(convert.formats().values(), key=lambda f: f.name):
            print(f"{f.name:24s} {f.description}")
        return
    if not FLAGS.source or not FLAGS.out:
        raise app.UsageError("--source and --out are required")
    options = dict(o.split("=", 1) for o in FLAGS.option)
    fmt = FLAGS.format or convert.detect_format(FLAGS.source)
    logging.info("converting %s as %s", FLAGS.source, fmt)
    encoder = convert.convert(FLAGS.source, format=fmt, **options)
    if encoder.source_sha256 is None:
        encoder.source_sha256 = checkpoint.sha256_of(FLAGS.source)
    checkpoint.save_encoder(FLAGS.out, encoder, source_format=fmt)
    print(f"wrote {FLAGS.out}: family={encoder.family} layers={len(encoder.layer_names)} "
          f"sha256={encoder.source_sha256[:12]}")


if __name__ == "__main__":
    app.run(main)
