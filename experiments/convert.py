"""Convert a foreign checkpoint into a speechinterp encoder directory.

    python -m experiments.convert --source=PATH --out=DIR [--format=NAME] [--option=KEY=VALUE]
        [--overwrite]          (or: speechinterp convert ...)

The format is auto-detected where possible (``--list_formats`` shows them and their options).
Writes an orbax checkpoint and ``config.json`` (family, architecture config, source sha256,
waveform normalisation); load the result with ``speechinterp.encoders.load(DIR)``. An --out
that holds something else (another source's encoder, a store, a file) is refused unless
--overwrite is given.
"""
import os

from absl import flags, logging

from speechinterp import checkpoint, cli, convert

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "Checkpoint file or directory to convert.")
flags.DEFINE_string("out", None, "Output encoder directory.")
flags.DEFINE_string("format", None, "Source format name; auto-detected when omitted.")
flags.DEFINE_multi_string("option", [], "Extra converter option KEY=VALUE (repeatable).")
flags.DEFINE_bool("list_formats", False, "List the known formats and exit.")
flags.DEFINE_bool("overwrite", False, "Replace whatever --out holds.")


def parse_options(items) -> dict:
    """``KEY=VALUE`` strings -> dict; a malformed one is a UserError naming it."""
    options = {}
    for o in items:
        key, sep, value = o.partition("=")
        if not sep or not key.strip():
            raise cli.UserError(f"--option={o}: expected KEY=VALUE")
        options[key.strip()] = value
    return options


def check_out(out: str, source: str, fmt: str, overwrite: bool):
    """What --out holds, refusing another artefact (or another source's encoder)."""
    held = cli.check_output(out, "out", ("encoder",), overwrite, "an encoder folder")
    if held == "encoder" and not overwrite:
        meta = checkpoint.read_encoder_meta(out)
        same = (meta.get("source") == os.path.abspath(source)
                and meta.get("source_format") == fmt)
        if not same:
            was = meta.get("source") or meta.get("trained_on") or "an unrecorded source"
            raise cli.UserError(
                f"--out={out} holds a {meta.get('family', '?')} encoder from {was}, not from "
                f"{source}; pass --overwrite to replace it, or choose another --out")
    return held


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}: pass flags as --name=value")
    if FLAGS.list_formats:
        for f in sorted(convert.formats().values(), key=lambda f: f.name):
            opts = convert.format_options(f.name)
            print(f"{f.name:24s} {f.description}"
                  + (f"\n{'':24s} options: {', '.join(opts)}" if opts else ""))
        return
    if not FLAGS.source or not FLAGS.out:
        raise cli.UserError("--source and --out are required")
    options = parse_options(FLAGS.option)
    if not os.path.exists(FLAGS.source):
        raise cli.UserError(f"--source={FLAGS.source}: no such file or folder")
    fmt = FLAGS.format or convert.detect_format(FLAGS.source)
    if fmt not in convert.formats():
        raise cli.UserError(f"--format={fmt}: unknown format; known: "
                            f"{', '.join(sorted(convert.formats()))}")
    convert.check_options(fmt, options)
    held = check_out(FLAGS.out, FLAGS.source, fmt, FLAGS.overwrite)
    logging.info("converting %s as %s", FLAGS.source, fmt)
    encoder = convert.convert(FLAGS.source, format=fmt, **options)
    if encoder.source_sha256 is None:
        encoder.source_sha256 = checkpoint.sha256_of(FLAGS.source)
    if held is not None and FLAGS.overwrite:
        cli.remove(FLAGS.out)          # the old artefact goes once the new one is converted
    checkpoint.save_encoder(FLAGS.out, encoder, source_format=fmt,
                            source=os.path.abspath(FLAGS.source))
    print(f"wrote {FLAGS.out}: family={encoder.family} layers={len(encoder.layer_names)} "
          f"sha256={encoder.source_sha256[:12]}")


if __name__ == "__main__":
    cli.run(main)
