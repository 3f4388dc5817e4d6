"""Read TensorFlow checkpoint V2 files (``PREFIX.index`` + ``PREFIX.data-0000k-of-0000N``) without TF.

Format (tensorflow/core/util/tensor_bundle, tsl/lib/io/table): the ``.index`` file is a
LevelDB-style SSTable. Its 48-byte footer holds two block handles (metaindex, index; each a pair
of varints offset/size) and the magic ``0xdb4775248b80fb57``. The index block maps the last key
of each data block to that block's handle. A block is a run of prefix-compressed entries
``varint shared, varint non_shared, varint value_len, key_delta, value``, then ``uint32``
restart offsets and their ``uint32`` count; on disk each block is followed by a 1-byte
compression type (0 = none) and a masked crc32c. In the data blocks, the empty key holds a
``BundleHeaderProto`` (num_shards = 1, endianness = 2, version = 3) and every other key is a
tensor name whose value is a ``BundleEntryProto`` (dtype = 1, shape = 2 (TensorShapeProto: dim =
2 {size = 1}), shard_id = 3, offset = 4, size = 5, crc32c = 6 (fixed32), slices = 7). A tensor is
``size`` raw little-endian bytes at ``offset`` of shard ``shard_id``; the entry's crc32c is the
masked CRC-32C of those bytes. The protobuf wire format is parsed here by hand.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from typing import Iterator

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57

# tensorflow/core/framework/types.proto
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
          9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32,
          23: np.uint64}
DT_STRING, DT_BFLOAT16 = 7, 14


class TFCheckpointError(ValueError):
    """The file is not a readable TF checkpoint V2 (or is corrupt)."""


# ---- protobuf wire format --------------------------------------------------------------------
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``: (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFCheckpointError("varint too long")


def parse_fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value) of a protobuf message (value: int or bytes)."""
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            val, pos = read_varint(buf, pos)
        elif wire == 1:
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            val = bytes(buf[pos:pos + n])
            pos += n
        elif wire == 5:
            val = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        yield field, wire, val


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclasses.dataclass
class BundleEntry:
    """One tensor's ``BundleEntryProto``."""

    dtype: int = 0
    shape: tuple = ()
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    sliced: bool = False


def parse_shape(buf: bytes) -> tuple:
    dims = []
    for f, _, v in parse_fields(buf):
        if f == 2:  # Dim
            size = 0
            for g, _, w in parse_fields(v):
                if g == 1:
                    size = _signed64(w)
            dims.append(size)
        elif f == 3 and v:
            raise TFCheckpointError("tensor of unknown rank")
    return tuple(dims)


def parse_entry(buf: bytes) -> BundleEntry:
    e = BundleEntry()
    for f, _, v in parse_fields(buf):
        if f == 1:
            e.dtype = v
        elif f == 2:
            e.shape = parse_shape(v)
        elif f == 3:
            e.shard_id = v
        elif f == 4:
            e.offset = _signed64(v)
        elif f == 5:
            e.size = _signed64(v)
        elif f == 6:
            e.crc32c = v
        elif f == 7:
            e.sliced = True
    return e


def parse_header(buf: bytes) -> dict:
    h = {"num_shards": 1, "endianness": 0}
    for f, _, v in parse_fields(buf):
        if f == 1:
            h["num_shards"] = v
        elif f == 2:
            h["endianness"] = v
    return h


# ---- CRC-32C (Castagnoli), as tsl::crc32c with its Mask -------------------------------------
def _crc_table():
    tab = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        tab.append(c)
    return tab


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data``, extending ``crc`` (as ``crc32c::Extend``; pure Python, ~10 MB/s)."""
    crc ^= 0xFFFFFFFF
    tab = _CRC_TABLE
    for b in data:
        crc = tab[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---- SSTable ---------------------------------------------------------------------------------
def _read_block(data: bytes, offset: int, size: int) -> bytes:
    if offset + size + 5 > len(data):
        raise TFCheckpointError("block handle points past the end of the index file")
    block = data[offset:offset + size]
    ctype = data[offset + size]
    if ctype != 0:
        raise TFCheckpointError(f"compressed table block (type {ctype}) is not supported")
    return block


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TFCheckpointError("table block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise TFCheckpointError("corrupt table block (restart array)")
    pos, key = 0, b""
    while pos < end:
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        vlen, pos = read_varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_table(path: str) -> dict[bytes, bytes]:
    """Every (key, value) of an SSTable file, in key order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 48:
        raise TFCheckpointError(f"{path}: too short for a TF table")
    magic = struct.unpack_from("<Q", data, len(data) - 8)[0]
    if magic != TABLE_MAGIC:
        raise TFCheckpointError(f"{path}: bad table magic {magic:#x}")
    footer = data[len(data) - 48:len(data) - 8]
    _, pos = read_varint(footer, 0)          # metaindex handle (unused)
    _, pos = read_varint(footer, pos)
    idx_off, pos = read_varint(footer, pos)  # index handle
    idx_size, pos = read_varint(footer, pos)
    out = {}
    for _, handle in _block_entries(_read_block(data, idx_off, idx_size)):
        off, p = read_varint(handle, 0)
        size, _ = read_varint(handle, p)
        for k, v in _block_entries(_read_block(data, off, size)):
            out[k] = v
    return out


# ---- checkpoint ------------------------------------------------------------------------------
def resolve_prefix(path: str) -> str:
    """Checkpoint prefix from a prefix, an ``.index`` / ``.data-*`` file or a directory.

    A directory uses its ``checkpoint`` state file (``model_checkpoint_path: "..."``) or else its
    single ``*.index`` file.
    """
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if os.path.exists(state):
            with open(state) as f:
                for line in f:
                    if line.startswith("model_checkpoint_path:"):
                        p = line.split(":", 1)[1].strip().strip('"')
                        p = p if os.path.isabs(p) else os.path.join(path, p)
                        if not os.path.exists(p + ".index"):  # directory moved: same basename
                            p = os.path.join(path, os.path.basename(p))
                        return p
        idx = sorted(f for f in os.listdir(path) if f.endswith(".index"))
        if len(idx) != 1:
            raise TFCheckpointError(f"{path}: expected one *.index file, found {idx}")
        return os.path.join(path, idx[0][:-len(".index")])
    if path.endswith(".index"):
        return path[:-len(".index")]
    if ".data-" in os.path.basename(path):
        return path[:path.rindex(".data-")]
    return path


class TFCheckpoint:
    """A TF checkpoint V2 opened without TensorFlow: ``names()``, ``entry(name)``, ``read(name)``."""

    def __init__(self, path: str):
        self.prefix = resolve_prefix(path)
        index = self.prefix + ".index"
        if not os.path.exists(index):
            raise FileNotFoundError(f"TF checkpoint index not found: {index}")
        table = read_table(index)
        if b"" not in table:
            raise TFCheckpointError(f"{index}: no BundleHeaderProto (not a V2 checkpoint)")
        self.header = parse_header(table.pop(b""))
        if self.header["endianness"] != 0:
            raise TFCheckpointError(f"{index}: big-endian checkpoints are not supported")
        self.entries = {k.decode("utf-8"): parse_entry(v) for k, v in table.items()}

    def names(self) -> list[str]:
        return sorted(self.entries)

    def entry(self, name: str) -> BundleEntry:
        return self.entries[name]

    def shard_path(self, shard_id: int) -> str:
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.header['num_shards']:05d}"

    def read_bytes(self, name: str) -> bytes:
        e = self.entries[name]
        path = self.shard_path(e.shard_id)
        if not os.path.exists(path):
            raise FileNotFoundError(f"TF checkpoint shard not found: {path}")
        with open(path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise TFCheckpointError(f"{path}: truncated data for {name!r}")
        return raw

    def read(self, name: str, verify: bool = True):
        """The tensor ``name`` as a numpy array (DT_STRING: an object array of bytes)."""
        e = self.entries[name]
        if e.sliced:
            raise TFCheckpointError(f"{name!r}: partitioned (sliced) variables are not supported")
        raw = self.read_bytes(name)
        n = int(np.prod(e.shape)) if e.shape else 1
        if e.dtype == DT_STRING:
            # varint64 lengths, masked crc32c of the lengths (each as little-endian uint32, or
            # uint64 above 2**32), then the bytes; the entry's crc covers those lengths, the
            # length checksum and the bytes
            lens, pos = [], 0
            for _ in range(n):
                ln, pos = read_varint(raw, pos)
                lens.append(ln)
            crc = crc32c(b"".join(struct.pack("<I" if ln < 1 << 32 else "<Q", ln) for ln in lens))
            length_crc = raw[pos:pos + 4]
            if verify and struct.unpack("<I", length_crc)[0] != mask_crc(crc):
                raise TFCheckpointError(f"{self.prefix}: crc32c mismatch for {name!r} lengths")
            pos += 4
            crc = crc32c(length_crc, crc)
            vals = []
            for ln in lens:
                vals.append(raw[pos:pos + ln])
                crc = crc32c(vals[-1], crc)
                pos += ln
            if verify and mask_crc(crc) != e.crc32c:
                raise TFCheckpointError(f"{self.prefix}: crc32c mismatch for {name!r}")
            return np.array(vals + [None], dtype=object)[:-1].reshape(e.shape)
        if verify and mask_crc(crc32c(raw)) != e.crc32c:
            raise TFCheckpointError(f"{self.prefix}: crc32c mismatch for {name!r} (corrupt data)")
        if e.dtype == DT_BFLOAT16:
            u = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            return u.view(np.float32).reshape(e.shape)
        if e.dtype not in DTYPES:
            raise TFCheckpointError(f"{name!r}: unsupported dtype enum {e.dtype}")
        dt = np.dtype(DTYPES[e.dtype]).newbyteorder("<")
        return np.frombuffer(raw, dt, count=n).astype(DTYPES[e.dtype]).reshape(e.shape)

    def read_all(self, verify: bool = True, skip_strings: bool = True) -> dict[str, np.ndarray]:
        return {k: self.read(k, verify) for k, e in self.entries.items()
                if not (skip_strings and e.dtype == DT_STRING)}


def is_tf_checkpoint(path: str) -> bool:
    try:
        prefix = resolve_prefix(path)
    except (TFCheckpointError, OSError):
        return False
    idx = prefix + ".index"
    if not os.path.isfile(idx):
        return False
    with open(idx, "rb") as f:
        f.seek(0, 2)
        if f.tell() < 48:
            return False
        f.seek(-8, 2)
        return struct.unpack("<Q", f.read(8))[0] == TABLE_MAGIC
