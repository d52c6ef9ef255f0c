"""Is a file ONNX? Decided by walking the protobuf fields of its first bytes, without importing
onnx, so that detecting a file's format imports no framework."""

from __future__ import annotations

from pathlib import Path

# Magic numbers of formats that are never ONNX, whatever the suffix says.
_FOREIGN_MAGIC = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"PK\x05\x06")
# ModelProto field number -> wire type (0 varint, 2 length-delimited)
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def looks_like_onnx(head: bytes) -> bool:
    """Walk the protobuf fields in ``head``: a ModelProto starts with ir_version (field 1)."""
    pos, seen = 0, 0
    while pos < len(head):
        key, pos = _varint(head, pos)
        if key is None:
            break
        number, wire = key >> 3, key & 7
        if _MODEL_FIELDS.get(number) != wire or (seen == 0 and number != 1):
            return False
        value, pos = _varint(head, pos)
        if value is None:
            break
        if number == 1 and not 1 <= value <= 64:
            return False
        if wire == 2:
            pos += value
        seen += 1
    return seen >= 1


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    result, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None, pos


def sniff(path: Path, head: bytes) -> bool:
    if head.startswith(_FOREIGN_MAGIC) or head[:1] == b"\x80":  # HDF5, zip, pickle
        return False
    return path.suffix.lower() == ".onnx" or looks_like_onnx(head)
