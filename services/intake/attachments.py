"""Photos citizens attach to a post: the type told by the bytes, metadata stripped, kept in a store.

:class:`AttachmentStore` is the adapter; :class:`FilesystemAttachmentStore` keeps the bytes under a
directory (``WENZHENG_INTAKE_ATTACHMENTS_DIR``). Production can put an object-storage implementation (S3,
OSS, MinIO) behind the same three methods. The metadata (type, size, digest, the case it belongs to) is in
intake's database, collection ``attachments``.

Metadata that can identify the citizen (EXIF with GPS position, camera serial, XMP, text chunks) is removed
before the bytes are stored, by rewriting the container without those segments: JPEG APPn segments other
than JFIF and the ICC profile, PNG ``eXIf``/``tEXt``/``zTXt``/``iTXt``/``tIME`` chunks, WebP ``EXIF``/``XMP``
chunks (and their flags in ``VP8X``). Pixels are never decoded, so nothing new is needed to do it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import struct
from pathlib import Path
from typing import Protocol

JPEG, PNG, WEBP = "image/jpeg", "image/png", "image/webp"
EXTENSIONS = {JPEG: "jpg", PNG: "png", WEBP: "webp"}


class BadImage(ValueError):
    """The bytes are not a JPEG, PNG or WebP image we can read the structure of."""


def sniff_image_type(data: bytes) -> str | None:
    """The image type from the magic bytes, whatever the client declared."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def new_attachment_id() -> str:
    return f"a-{secrets.token_hex(12)}"


# --------------------------------------------------------------------------------------------------
# Stripping metadata (pure)
# --------------------------------------------------------------------------------------------------

_JPEG_KEEP_APP = {0xE0, 0xE2, 0xEE}  # JFIF, ICC profile, Adobe (colour transform): no personal data
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
_WEBP_DROP = {b"EXIF", b"XMP "}


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(data[:2])
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise BadImage("JPEG segment does not start with a marker")
        marker = data[i + 1] if i + 1 < len(data) else None
        if marker is None:
            raise BadImage("JPEG ends inside a marker")
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:  # start of scan: the rest is image data
            out += data[i:]
            return bytes(out)
        if i + 4 > len(data):
            raise BadImage("JPEG segment is cut off")
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        end = i + 2 + length
        if length < 2 or end > len(data):
            raise BadImage("JPEG segment length is wrong")
        drop = (0xE1 <= marker <= 0xEF and marker not in _JPEG_KEEP_APP) or marker == 0xFE  # APPn, comment
        if not drop:
            out += data[i:end]
        i = end
    raise BadImage("JPEG has no image data")


def _strip_png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    i = 8
    while i < len(data):
        if i + 8 > len(data):
            raise BadImage("PNG chunk is cut off")
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = data[i + 4:i + 8]
        end = i + 12 + length
        if end > len(data):
            raise BadImage("PNG chunk length is wrong")
        if kind not in _PNG_DROP:
            out += data[i:end]
        i = end
        if kind == b"IEND":
            return bytes(out)
    raise BadImage("PNG has no IEND chunk")


def _strip_webp(data: bytes) -> bytes:
    chunks = bytearray()
    i = 12
    while i < len(data):
        if i + 8 > len(data):
            raise BadImage("WebP chunk is cut off")
        kind = data[i:i + 4]
        (length,) = struct.unpack("<I", data[i + 4:i + 8])
        end = i + 8 + length + (length & 1)
        if i + 8 + length > len(data):
            raise BadImage("WebP chunk length is wrong")
        chunk = bytearray(data[i:min(end, len(data))])
        if kind == b"VP8X" and length >= 1:
            chunk[8] &= ~0x0C & 0xFF  # clear the EXIF (0x08) and XMP (0x04) flags
        if kind not in _WEBP_DROP:
            chunks += chunk
        i = end
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WEBP" + bytes(chunks)


def strip_metadata(data: bytes, content_type: str) -> bytes:
    """The same image without the segments that can carry position, device or text metadata."""
    match content_type:
        case "image/jpeg":
            return _strip_jpeg(data)
        case "image/png":
            return _strip_png(data)
        case "image/webp":
            return _strip_webp(data)
    raise BadImage(f"unsupported type {content_type}")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


class AttachmentStore(Protocol):
    async def put(self, attachment_id: str, data: bytes, content_type: str) -> None: ...

    async def get(self, attachment_id: str) -> bytes | None: ...

    async def delete(self, attachment_id: str) -> None: ...


class FilesystemAttachmentStore:
    """Bytes as files under ``root``, two levels of fan-out, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, attachment_id: str) -> Path:
        if not attachment_id.replace("-", "").isalnum():
            raise ValueError("bad attachment id")
        return self.root / attachment_id[-2:] / attachment_id

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def put(self, attachment_id: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(attachment_id), data)

    async def get(self, attachment_id: str) -> bytes | None:
        path = self._path(attachment_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, attachment_id: str) -> None:
        self._path(attachment_id).unlink(missing_ok=True)
