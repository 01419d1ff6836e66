"""An image's width and height from its header, for every format OpenCV's ``imdecode`` reads.

A size limit only holds if it is checked before the pixels are decoded, and for every
format the decoder accepts: a 1 kB run-length-encoded BMP or a PNG header can claim
30000x30000. ``image_format`` recognises a file by the same signatures OpenCV checks;
``image_size`` reads the size from that format's header without decoding. A format
OpenCV might decode but whose size we cannot read from the header (AVIF/HEIF, whose
size sits in item properties and grids) is refused, so ``imdecode`` never sees it.
"""

from __future__ import annotations

import re
import struct

from .errors import MediaDecodeError, UnsupportedMedia

#: Brands of ISO-BMFF (``ftyp``) files that are still images, not videos.
IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1")
#: Formats recognised but refused: OpenCV may decode them, their size is not in a plain header.
UNCHECKED_FORMATS = ("avif",)
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SIGNATURE = b"\xff\x4f\xff\x51"
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_SUN_MAGIC = b"\x59\xa6\x6a\x95"
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_HEADER_SCAN = 64 * 1024  #: text headers (PNM, PAM, HDR) and EXR attributes must end within this
_PNM_RE = re.compile(rb"^P[1-6](?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)")
_PFM_RE = re.compile(rb"^P[Ff]\s+(\d+)\s+(\d+)")
_HDR_RES_RE = re.compile(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)")


def image_format(data: bytes) -> str | None:
    """Name of the image format ``data`` is in, by OpenCV's signatures; None if none."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(_JP2_SIGNATURE) or head.startswith(_J2K_SIGNATURE):
        return "jpeg2000"
    if head.startswith(_EXR_MAGIC):
        return "exr"
    if head.startswith((b"#?RGBE", b"#?RADIANCE")):
        return "hdr"
    if head.startswith(_SUN_MAGIC):
        return "sunraster"
    if len(head) > 2 and head[0:1] == b"P" and head[2:3].isspace():
        kind = head[1:2]
        if kind in b"123456":
            return "pnm"
        if kind == b"7":
            return "pam"
        if kind in (b"F", b"f"):
            return "pfm"
    if head[4:8] == b"ftyp" and head[8:12] in IMAGE_BRANDS:
        return "avif"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of an image ``image_format`` recognises.

    ``UnsupportedMedia`` for a format whose size cannot be read without decoding;
    ``MediaDecodeError`` for a header that is cut short or says zero pixels.
    """
    fmt = image_format(data)
    if fmt is None or fmt in UNCHECKED_FORMATS:
        raise UnsupportedMedia(
            f"{fmt.upper() + ' images are' if fmt else 'the file is'} not accepted as an avatar image; "
            "use PNG, JPEG, WebP, BMP, GIF or TIFF"
        )
    try:
        size = _READERS[fmt](bytes(data))
    except (struct.error, IndexError, ValueError):
        size = None
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise MediaDecodeError(f"the avatar image's {fmt.upper()} header is truncated or invalid")
    return size


def _png(d: bytes):
    if d[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", d[16:24])


def _jpeg(d: bytes):
    i = 2
    while i + 9 < len(d):
        if d[i] != 0xFF:  # stray bytes between segments: skipped, as libjpeg does
            i += 1
            continue
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", d[i + 5 : i + 9])
            return width, height
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        i += 2 + struct.unpack(">H", d[i + 2 : i + 4])[0]
    return None


def _webp(d: bytes):
    chunk = d[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
    if chunk == b"VP8L" and d[20] == 0x2F:
        bits = int.from_bytes(d[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and d[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", d[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _bmp(d: bytes):
    header = struct.unpack("<I", d[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", d[18:22])
    width, height = struct.unpack("<ii", d[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


def _gif(d: bytes):
    return struct.unpack("<HH", d[6:10])


def _tiff(d: bytes):
    """Size of the first image (the page ``imdecode`` reads), classic or BigTIFF."""
    end = "<" if d[:2] == b"II" else ">"
    big = struct.unpack(end + "H", d[2:4])[0] == 43
    if big:
        offset = struct.unpack(end + "Q", d[8:16])[0]
        count = struct.unpack(end + "Q", d[offset : offset + 8])[0]
        entry, start = 20, offset + 8
    else:
        offset = struct.unpack(end + "I", d[4:8])[0]
        count = struct.unpack(end + "H", d[offset : offset + 2])[0]
        entry, start = 12, offset + 2
    found = {}
    for k in range(min(count, 4096)):
        e = start + k * entry
        tag, kind = struct.unpack(end + "HH", d[e : e + 4])
        if tag not in (256, 257):
            continue
        value = d[e + (12 if big else 8) : e + entry]
        if kind == 3:  # SHORT
            found[tag] = struct.unpack(end + "H", value[:2])[0]
        elif kind == 4:  # LONG
            found[tag] = struct.unpack(end + "I", value[:4])[0]
        elif kind == 16:  # LONG8 (BigTIFF)
            found[tag] = struct.unpack(end + "Q", value[:8])[0]
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


def _j2k_siz(d: bytes, at: int = 0):
    if d[at : at + 4] != _J2K_SIGNATURE:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", d[at + 8 : at + 24])
    return xsiz - xosiz, ysiz - yosiz


def _jpeg2000(d: bytes):
    """Codestream SIZ (what the decoder allocates) and the JP2 ``ihdr``; the larger of both."""
    if d.startswith(_J2K_SIGNATURE):
        return _j2k_siz(d)
    sizes, pos = [], 0
    while pos + 8 <= len(d):
        length, kind = struct.unpack(">I4s", d[pos : pos + 8])
        body = pos + 8
        if length == 1:
            length, body = struct.unpack(">Q", d[pos + 8 : pos + 16])[0], pos + 16
        elif length == 0:
            length = len(d) - pos
        if kind == b"jp2h":
            i = d.find(b"ihdr", body, pos + length)
            if i >= 0:
                height, width = struct.unpack(">II", d[i + 4 : i + 12])
                sizes.append((width, height))
        elif kind == b"jp2c":
            sizes.append(_j2k_siz(d, body))
            break
        if length < 8:
            return None
        pos += length
    if not sizes or None in sizes:
        return None
    return max(s[0] for s in sizes), max(s[1] for s in sizes)


def _exr(d: bytes):
    pos = 8  # magic + version
    while pos < min(len(d), _HEADER_SCAN) and d[pos] != 0:
        name_end = d.index(b"\x00", pos)
        type_end = d.index(b"\x00", name_end + 1)
        size = struct.unpack("<i", d[type_end + 1 : type_end + 5])[0]
        value = type_end + 5
        if d[pos:name_end] == b"dataWindow":
            x_min, y_min, x_max, y_max = struct.unpack("<iiii", d[value : value + 16])
            return x_max - x_min + 1, y_max - y_min + 1
        if size < 0:
            return None
        pos = value + size
    return None


def _hdr(d: bytes):
    match = _HDR_RES_RE.search(d[:_HEADER_SCAN])
    if not match:
        return None
    _, first_axis, first, _, _, second = match.groups()
    first, second = int(first), int(second)
    return (second, first) if first_axis == b"Y" else (first, second)


def _sunraster(d: bytes):
    return struct.unpack(">II", d[4:12])


def _pnm(d: bytes):
    match = _PNM_RE.match(d[:_HEADER_SCAN])
    return (int(match.group(1)), int(match.group(2))) if match else None


def _pam(d: bytes):
    header = d[:_HEADER_SCAN]
    if b"ENDHDR" not in header:
        return None
    fields = dict(re.findall(rb"^(WIDTH|HEIGHT)\s+(\d+)", header[: header.index(b"ENDHDR")], re.M))
    if b"WIDTH" not in fields or b"HEIGHT" not in fields:
        return None
    return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])


def _pfm(d: bytes):
    match = _PFM_RE.match(d[:_HEADER_SCAN])
    return (int(match.group(1)), int(match.group(2))) if match else None


_READERS = {
    "png": _png, "jpeg": _jpeg, "webp": _webp, "bmp": _bmp, "gif": _gif, "tiff": _tiff, "jpeg2000": _jpeg2000,
    "exr": _exr, "hdr": _hdr, "sunraster": _sunraster, "pnm": _pnm, "pam": _pam, "pfm": _pfm,
}  # fmt: skip
