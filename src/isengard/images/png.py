"""PNG files written by hand, without numpy, so that the server can write one too: the frames that
encode.py encodes (in the image processes), and the placeholder of an image that cannot be decoded."""

import struct
import zlib
from functools import cache

SIGNATURE = b"\x89PNG\r\n\x1a\n"
GREYSCALE, RGB = 0, 2
PLACEHOLDER_SIZE = (160, 120)
LIGHT_GREY, DARK_GREY = 0xE0, 0x70


def png_file(width: int, height: int, bits: int, colour_type: int, scanlines: bytes, level: int) -> bytes:
    """A PNG of `scanlines` (each row led by its filter byte), deflated at `level`."""
    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines, level)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def unsupported_image() -> bytes:
    """Isengard's own placeholder for returnUnsupportedImage: a light grey card, framed and crossed out."""
    width, height = PLACEHOLDER_SIZE
    scanlines = bytearray()
    for y in range(height):
        row = bytearray([DARK_GREY if y < 2 or y >= height - 2 else LIGHT_GREY]) * width
        row[:2] = row[-2:] = bytes([DARK_GREY]) * 2
        diagonal = y * (width - 1) // (height - 1)
        for x in (diagonal - 1, diagonal, diagonal + 1):
            if 0 <= x < width:
                row[x] = row[width - 1 - x] = DARK_GREY
        scanlines += b"\x00" + row  # filter: none
    return png_file(width, height, 8, GREYSCALE, bytes(scanlines), 9)
