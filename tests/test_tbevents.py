"""TensorBoard event files written by hand: framing, checksums, round trip."""

import struct

import pytest

from convscope.tbevents import ScalarWriter, crc32c, encode_event, read_scalars


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0


def test_scalars_round_trip_and_append(tmp_path):
    w = ScalarWriter(tmp_path / "tb")
    w.add(1, {"loss": 0.5, "accuracy": 0.25})
    w.add(2, {"loss": 0.125})
    assert read_scalars(w.path) == [(1, "loss", 0.5), (1, "accuracy", 0.25), (2, "loss", 0.125)]
    assert w.path.name.startswith("events.out.tfevents.")


def test_event_encoding_of_known_fields():
    payload = encode_event(3, 1.5, {"a": 2.0})
    assert payload[:1] == b"\x09" and struct.unpack("<d", payload[1:9])[0] == 1.5  # wall_time, fixed64
    assert payload[9:11] == b"\x10\x03"                                              # step 3, varint
    assert payload[11:12] == b"\x2a"                                                 # summary, field 5


def test_corruption_is_detected(tmp_path):
    w = ScalarWriter(tmp_path)
    w.add(7, {"x": 1.0})
    data = bytearray(w.path.read_bytes())
    data[-6] ^= 0xFF
    w.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        read_scalars(w.path)


def test_a_file_cut_short_keeps_its_records_before_the_cut_when_partial(tmp_path):
    # A kill mid-write cuts the last record; resuming a run reads which epochs were logged, and
    # counting the whole file as empty re-logged all its earlier epochs.
    w = ScalarWriter(tmp_path)
    w.add(1, {"x": 1.0})
    w.add(2, {"x": 2.0})
    data = w.path.read_bytes()
    w.path.write_bytes(data[:-5])
    with pytest.raises(ValueError, match="checksum"):
        read_scalars(w.path)
    assert read_scalars(w.path, partial=True) == [(1, "x", 1.0)]
