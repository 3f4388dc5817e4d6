"""One way to write an artefact (speechinterp/artefacts.py) and what the commands do with it:
atomic files, a lock per output folder, outputs that are not the run's own inputs, interrupts
that end in one line, and task lists that cannot be empty or repeat themselves."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechinterp import artefacts, checkpoint, cli
from speechinterp.encoders.cnn import CNNEncoder

from test_cli import ROOT, one_line_error, run  # noqa: E402  (the scripts as a user meets them)


def fails_naming(r, *names):
    """Non-zero exit, no traceback, every one of ``names`` on stderr (the skip lines of the
    files before the error may come first)."""
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in names:
        assert n in r.stderr, (n, r.stderr)


def test_a_failed_write_leaves_neither_the_file_nor_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    artefacts.write_json(str(path), {"a": 1})
    assert path.read_text() == '{"a": 1}'

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        artefacts.write_json(str(path), {"a": 2})
    assert path.read_text() == '{"a": 1}'                   # the old file, whole
    assert sorted(os.listdir(tmp_path)) == ["results.json"]  # no temporary left


def test_figures_are_written_whole(tmp_path):
    from speechinterp.analysis import plots
    fig = plots.plt.figure()
    path = artefacts.save_figure(fig, str(tmp_path / "f" / "x.png"), dpi=20)
    plots.plt.close(fig)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    d = str(tmp_path / "store")
    with artefacts.FolderLock(d):
        with pytest.raises(artefacts.ArtefactError, match=f"pid {os.getpid()}"):
            with artefacts.FolderLock(d):
                pass
    with artefacts.FolderLock(d):                           # released: a rerun may write
        pass
    assert cli.artefact(d) is None                          # the lock file is no artefact


def test_out_that_is_a_file_is_refused_before_work(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(artefacts.ArtefactError, match="is a file"):
        artefacts.check_writable(str(f))
    artefacts.check_writable(str(tmp_path / "new" / "deeper"))   # created later: fine


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_ends_in_one_line(sig):
    script = ("import os, signal, time\nfrom speechinterp import cli\n"
              f"def main(_):\n    os.kill(os.getpid(), {int(sig)}); time.sleep(5)\n"
              "cli.run(main)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == cli.INTERRUPTED


@pytest.mark.parametrize("tasks, what", [("gender,gender", "gender given more than once"),
                                         ("", "name one or more properties"),
                                         ("gender,", "no empty entry")])
def test_probe_task_lists_that_cannot_be_meant(tmp_path, tasks, what):
    r = run("probe", f"--store={tmp_path}", f"--task={tasks}", f"--out={tmp_path / 'p'}")
    one_line_error(r, what)
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = ["utt_id,path,speaker"]
    for i in range(3):
        sf.write(d / f"u{i}.wav", 0.1 * rng.standard_normal(8000), 16000)
        rows.append(f"u{i},u{i}.wav,s{i}")
    (d / "utterances.csv").write_text("\n".join(rows) + "\n")
    enc = str(d / "encoder")
    checkpoint.save_encoder(enc, CNNEncoder.from_preset("tiny", seed=0, n_classes=2,
                                                        classes=("a", "b")))
    return d, enc


def test_extract_never_writes_into_its_own_inputs(corpus):
    d, enc = corpus
    before = (d / "utterances.csv").read_text()
    for out, what in ((d, "the manifest's folder"), (enc, "the encoder folder")):
        r = run("extract", f"--encoder={enc}", f"--manifest={d / 'utterances.csv'}",
                f"--out={out}")
        one_line_error(r, what)
    assert (d / "utterances.csv").read_text() == before


def test_extract_into_a_folder_another_extraction_holds(corpus, tmp_path):
    d, enc = corpus
    out = str(tmp_path / "store")
    with artefacts.FolderLock(out):
        r = run("extract", f"--encoder={enc}", f"--manifest={d / 'utterances.csv'}",
                f"--out={out}")
    one_line_error(r, "being written by another process", f"pid {os.getpid()}")
    assert not os.path.exists(os.path.join(out, "meta.json"))
    r = run("extract", f"--encoder={enc}", f"--manifest={d / 'utterances.csv'}", f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.exists(os.path.join(out, "meta.json"))


def test_extract_where_every_file_is_unusable_fails(corpus, tmp_path):
    d, enc = corpus
    (tmp_path / "m.csv").write_text("utt_id,path\nx,missing1.wav\ny,missing2.wav\n")
    r = run("extract", f"--encoder={enc}", f"--manifest={tmp_path / 'm.csv'}",
            f"--out={tmp_path / 'store'}")
    fails_naming(r, "has no utterances", "skipped.csv")
