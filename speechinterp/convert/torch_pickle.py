"""Read PyTorch checkpoint files (``torch.save``) without torch.

Handles the zip format (torch >= 1.6: ``*/data.pkl`` + ``*/data/<key>`` storages) and the legacy
format (pickled magic number, protocol, sys info, object, storage keys, raw storages), which old
fairseq checkpoints use. Tensors come back as numpy arrays; any other class the pickle names
(argparse.Namespace, omegaconf containers, ...) comes back as a :class:`Opaque` stand-in, so that
reading a checkpoint never executes foreign code.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": "bfloat16", "int64": np.int64,
    "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Opaque:
    """Stand-in for an object of a class we do not import; keeps its state for inspection."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __getattr__(self, name):  # give Namespace-like access to the pickled state
        state = self.__dict__.get("state")
        if isinstance(state, dict) and name in state:
            return state[name]
        raise AttributeError(name)

    def __repr__(self):
        return f"Opaque({self.__dict__.get('qualname', '?')})"


def _np_dtype(d):
    if d == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(d)


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage:
    """A lazily materialised storage: raw bytes + dtype."""

    def __init__(self, raw: bytes, dtype):
        self.array = np.frombuffer(raw, dtype=_np_dtype(dtype))


def _rebuild_tensor(storage: _Storage, offset, size, stride, *_ignored):
    arr = storage.array
    size, stride = tuple(size), tuple(stride)
    if getattr(storage, "deferred", False):
        return None  # legacy first pass: storage bytes not read yet (the pass is redone)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if offset < 0 or last >= arr.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size} at offset {offset} exceeds its storage ({arr.size} items)")
    if not size:
        return arr[offset].copy()
    itemsize = arr.itemsize
    out = np.lib.stride_tricks.as_strided(arr[offset:], shape=size,
                                          strides=tuple(s * itemsize for s in stride))
    return np.array(out)  # own, contiguous copy


def _rebuild_parameter(data, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, load_storage):
        super().__init__(fh)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if module.startswith("torch"):
            if name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return _rebuild_tensor
            if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
                return _rebuild_parameter
            if name.endswith("Storage"):
                return _StorageType(name)
            if module == "torch" and name in _TORCH_DTYPES:
                return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in ("set", "frozenset", "slice", "complex"):
            import builtins
            return getattr(builtins, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            from numpy._core import multiarray
            return multiarray._reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("_codecs",) and name == "encode":
            import _codecs
            return _codecs.encode
        return _opaque(module, name)

    def persistent_load(self, pid):
        # zip:    ('storage', storage_type, key, location, numel)
        # legacy: ('storage', storage_type, key, location, numel, view_metadata)
        kind, storage_type, key = pid[0], pid[1], pid[2]
        assert kind == "storage", pid
        dtype = (_DTYPES[storage_type.name] if isinstance(storage_type, _StorageType)
                 else _TORCH_DTYPES[str(storage_type)])
        return self._load_storage(str(key), dtype)


def _opaque(module, name):
    cls = type(name, (Opaque,), {"qualname": f"{module}.{name}"})
    return cls


def _load_zip(path: str) -> Any:
    zf = zipfile.ZipFile(path)
    names = zf.namelist()
    pkl = next(n for n in names if n.endswith("data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    cache: dict[str, _Storage] = {}

    def load_storage(key, dtype):
        if key not in cache:
            cache[key] = _Storage(zf.read(f"{prefix}data/{key}"), dtype)
        return cache[key]

    with zf.open(pkl) as fh:
        return _Unpickler(io.BytesIO(fh.read()), load_storage).load()


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as fh:
        data = fh.read()
    buf = io.BytesIO(data)
    pending: dict[str, tuple] = {}

    def noop(*_):
        raise pickle.UnpicklingError("unexpected storage in header")

    magic = _Unpickler(buf, noop).load()
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    _Unpickler(buf, noop).load()  # protocol version
    _Unpickler(buf, noop).load()  # sys info

    def defer(key, dtype):
        st = _Storage(b"", dtype)
        st.deferred = True
        pending[key] = (st, dtype)
        return st

    obj = _Unpickler(buf, defer).load()
    keys = _Unpickler(buf, noop).load()
    for key in keys:
        (size,) = struct.unpack("<q", buf.read(8))
        st, dtype = pending[key]
        nbytes = size * _np_dtype(dtype).itemsize
        st.array = np.frombuffer(buf.read(nbytes), dtype=_np_dtype(dtype))
        st.deferred = False
    # tensors were rebuilt against empty storages: redo with the data now present
    buf.seek(0)
    for _ in range(3):
        _Unpickler(buf, noop).load()
    return _Unpickler(buf, lambda key, dtype: pending[key][0]).load()


def load(path: str) -> Any:
    """Load a ``torch.save`` file as nested dicts / lists with numpy arrays for tensors."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    try:
        return _load_legacy(path)
    except (pickle.UnpicklingError, EOFError, struct.error) as e:
        raise ValueError(f"{path}: cannot read as a PyTorch checkpoint ({e})") from e


def pickle_bytes(path: str, limit: int = 16 << 20) -> bytes:
    """The pickled object graph of a torch file (no tensor data): the zip's ``data.pkl``, or the
    first ``limit`` bytes of a legacy file (its object pickle precedes the raw storages)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            return zf.read(name)
    with open(path, "rb") as f:
        return f.read(limit)
