"""The ``.ccz`` container: a fixed header, then CRC-checked sections.

``docs/FORMAT.md`` mirrors this module; change both together. All integers
are little-endian. The header carries its own CRC32 and the CRC32 of the
body, so truncation, bit flips and splices are detected before any byte of
the payload is decoded.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

from .categories import CATEGORIES
from .errors import FormatError

MAGIC = b"\x89CCZ"
VERSION = 5
#: magic, version, header size, model id, checksum, category, level index,
#: width, height, mode, pad right, pad bottom, body length, body CRC32.
_HEAD = struct.Struct("<4sBH16s8sBHII8sBBII")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size
_SECTION = struct.Struct("<cI")
NO_CATEGORY = 255
#: A model id: it names the model's directory and fits the header's 16 bytes.
MODEL_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}")

#: Section tags.
LATENT, ALPHA, PALETTE = b"Y", b"A", b"P"


def model_id(name: str) -> str:
    """``name`` as a valid model id: lower case, other characters as ``-``, at most 16."""
    return re.sub(r"[^a-z0-9_-]", "-", name.lower()).lstrip("_-")[:16] or "model"


@dataclass
class Container:
    model_id: str
    checksum: bytes  # 8 bytes: the model's weights + tables
    category: str | None
    level_index: int
    width: int
    height: int
    mode: str  # PIL mode of the original image
    pad: tuple = (0, 0)  # (right, bottom) pixels of edge padding
    sections: dict = field(default_factory=dict)  # tag -> bytes

    def to_bytes(self) -> bytes:
        if not MODEL_ID.fullmatch(self.model_id):  # the header would truncate it or decoders refuse it
            raise ValueError(f"model id {self.model_id!r} is not 1-16 of a-z, 0-9, _ and - (rename the model in its card.json)")
        body = b"".join(_SECTION.pack(tag, len(data)) + data for tag, data in self.sections.items())
        cat = NO_CATEGORY if self.category is None else CATEGORIES.index(self.category)
        head = _HEAD.pack(
            MAGIC, VERSION, HEADER_SIZE, self.model_id.encode("ascii"), self.checksum, cat, self.level_index,
            self.width, self.height, self.mode.encode("ascii"), *self.pad, len(body), zlib.crc32(body),
        )  # fmt: skip
        return head + _CRC.pack(zlib.crc32(head)) + body

    @classmethod
    def from_bytes(cls, data: bytes, name: object = None) -> "Container":
        """Parse and verify; every inconsistency raises :class:`FormatError`."""
        if len(data) < 4 or data[:4] != MAGIC:
            raise FormatError("not a .ccz file (wrong magic bytes)", name)
        if len(data) < HEADER_SIZE:
            raise FormatError(f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header", name)
        head = data[: _HEAD.size]
        (magic, version, hsize, model_id, checksum, cat, level, w, h, mode, pr, pb, blen, bcrc) = _HEAD.unpack(head)
        if version != VERSION:
            raise FormatError(f"format version {version} is not supported (this catcomp reads version {VERSION})", name)
        if _CRC.unpack_from(data, _HEAD.size)[0] != zlib.crc32(head):
            raise FormatError("corrupt header (CRC32 mismatch)", name)
        if hsize != HEADER_SIZE:
            raise FormatError(f"corrupt header (size {hsize}, expected {HEADER_SIZE})", name)
        body = data[HEADER_SIZE:]
        if len(body) < blen:
            raise FormatError(f"truncated: body has {len(body)} of {blen} bytes", name)
        if len(body) > blen:
            raise FormatError(f"{len(body) - blen} unexpected bytes after the end of the body", name)
        if zlib.crc32(body) != bcrc:
            raise FormatError("corrupt payload (CRC32 mismatch)", name)
        if cat != NO_CATEGORY and cat >= len(CATEGORIES):
            raise FormatError(f"unknown category index {cat}", name)
        if w == 0 or h == 0 or pr != -w % 16 or pb != -h % 16:  # the padding is always up to a multiple of 16
            raise FormatError(f"invalid geometry {w}x{h} with padding {pr},{pb}", name)
        try:
            model_id = model_id.rstrip(b"\0").decode("ascii")
            mode = mode.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise FormatError("corrupt header (non-ASCII model id or mode)", name) from None
        return cls(model_id, checksum, None if cat == NO_CATEGORY else CATEGORIES[cat], level, w, h, mode, (pr, pb), _sections(body, name))


def _sections(body: bytes, name) -> dict:
    sections, pos = {}, 0
    while pos < len(body):
        if pos + _SECTION.size > len(body):
            raise FormatError("corrupt body (section header cut off)", name)
        tag, n = _SECTION.unpack_from(body, pos)
        pos += _SECTION.size
        if pos + n > len(body) or tag in sections:
            raise FormatError("corrupt body (bad section length or duplicate section)", name)
        sections[tag] = body[pos : pos + n]
        pos += n
    if LATENT not in sections:
        raise FormatError("corrupt body (no latent section)", name)
    return sections
