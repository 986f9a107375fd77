"""TensorBoard scalar logs without TensorBoard: the event-file format written directly.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, payload, masked
CRC-32C of the payload), each payload an `Event` protocol buffer. Scalars need only a handful of
fields, encoded here by hand:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

`tensorboard --logdir RUN_DIR` reads the result. `read_scalars` parses it back (tests, scripts).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # two's complement for negative int64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(step: int, wall_time: float, scalars: dict[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    out = bytearray(_varint(1 << 3 | 1) + struct.pack("<d", wall_time))
    out += _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items())
        out += _field_bytes(5, summary)
    return bytes(out)


def _record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + _masked(length) + payload + _masked(payload)


class ScalarWriter:
    """Appends scalars to one event file in `logdir` (created on first use), flushing every call.

    A resumed run opens a new file in the same folder; TensorBoard merges the files of a folder."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.path: Path | None = None

    def add(self, step: int, scalars: dict[str, float]) -> None:
        if self.path is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
            self.path = self.logdir / name
            with open(self.path, "ab") as f:
                f.write(_record(encode_event(0, time.time(), file_version="brain.Event:2")))
        with open(self.path, "ab") as f:
            f.write(_record(encode_event(step, time.time(), scalars)))
            f.flush()


# ---- reading back ------------------------------------------------------------------------------
def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            length, i = _read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def read_scalars(path: str | Path, partial: bool = False) -> list[tuple[int, str, float]]:
    """(step, tag, value) for every scalar in an event file; checks every CRC. A bad record raises
    ValueError, or with `partial` ends the list there (a file cut short by a kill keeps the records
    before the cut, as TensorBoard reads it)."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        length_bytes = data[i:i + 8]
        bad = None
        if data[i + 8:i + 12] != _masked(length_bytes):
            bad = f"{path}: bad length checksum at byte {i}"
        else:
            (length,) = struct.unpack("<Q", length_bytes)
            payload = data[i + 12:i + 12 + length]
            if data[i + 12 + length:i + 16 + length] != _masked(payload):
                bad = f"{path}: bad payload checksum at byte {i}"
        if bad is not None:
            if partial:
                break
            raise ValueError(bad)
        i += 16 + length
        step = 0
        for number, value in _fields(payload):
            if number == 2:
                step = value
            elif number == 5:
                for _, v in _fields(value):
                    tag, simple = "", 0.0
                    for n2, v2 in _fields(v):
                        if n2 == 1:
                            tag = v2.decode()
                        elif n2 == 2:
                            (simple,) = struct.unpack("<f", v2)
                    out.append((step, tag, simple))
    return out
