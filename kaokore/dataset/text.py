"""The metadata files as text: UTF-8 (a BOM allowed) cut into lines, the one way every parser reads them."""
from __future__ import annotations

from ..errors import MetadataError


def decode(data: bytes, filename: str) -> str:
    """The file as text; bytes that are not UTF-8 are an error naming the line they are on."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MetadataError(filename, line, "not valid UTF-8") from None
    return text


def split_lines(text: str) -> list[str]:
    """The lines of a file, without their ends."""
    # Only "\n" (and "\r\n") end a line. str.splitlines() also splits at "\x85",
    # "\u2028" and friends, and one of those in urls.txt would silently shift
    # every later image onto the next image's URL and labels.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
