"""IIIF Image API URLs: which image a URL asks for, and when two URLs ask for the same pixels.

A KaoKore URL is a IIIF Image API 2.x request,
``{scheme}://{server}/{prefix}/{identifier}/{region}/{size}/{rotation}/{quality}.{format}``.
The versions spell the same face differently (http or https; size ``256,`` in 1.0,
``256,256`` later), so comparing URLs as text misses most of what they share. Two
URLs get the same `request_key` only where the API says the server renders the
same pixels for both; anything else, or anything that is not a IIIF request, keys
by its exact URL. A key that is too strict costs one request; one that is too loose
would store another face under this one's labels.

Pure functions, no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Digits are ASCII only: str.isdigit() also takes "²", which int() refuses.
_REGION = re.compile(r"([0-9]{1,9}),([0-9]{1,9}),([0-9]{1,9}),([0-9]{1,9})")
_SIZE = re.compile(r"(!?)([0-9]{1,9})?,([0-9]{1,9})?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# `parse` keys each of 9,683 URLs before the first request, and urlsplit's general parse of a URL
# costs more than the rest of that work: a URL made only of characters on which urlsplit does
# nothing special (no whitespace, "?", "#", "[", "\\"...) is cut with str methods instead. On every
# URL both read, the two agree (tests/test_iiif_key.py holds them to it).
_PLAIN = re.compile(r"https?://[A-Za-z0-9._~%!$&'()*+,;=:@/-]+")
_NETLOC = re.compile(r"([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?")


@dataclass(frozen=True)
class ImageRequest:
    """A IIIF Image API request, each parameter as the URL spells it.

    Attributes
    ----------
    server : str
        ``host`` or ``host:port`` (lower case; a scheme's default port left out),
        so that http and https to one server compare equal.
    base : str
        The path up to and including the identifier (identifiers hold slashes:
        Keio's are ``NRE/110X-445-3-2/tif/2_004.tif``).
    region, size, rotation, quality, format : str
        The four parameters; `quality` and `format` come from ``{quality}.{format}``.
    """

    server: str
    base: str
    region: str
    size: str
    rotation: str
    quality: str
    format: str

    @property
    def page(self) -> str:
        """The IIIF image (a page of a scroll or book) the request cuts its region from."""
        return f"{self.server}{self.base}"


def parse(url: str) -> ImageRequest | None:
    """The IIIF request `url` makes, or None when it is not one (a query, too few path segments...)."""
    if _PLAIN.fullmatch(url) is None:
        return _parse_any(url)
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    address = _NETLOC.fullmatch(netloc)
    if address is None:
        return _parse_any(url)  # user info, an empty host...
    host, port = address.groups()
    server = host.lower()
    if port is not None:
        number = int(port)
        if number > 65535:
            return None
        if number != _DEFAULT_PORTS[scheme]:
            server = f"{server}:{number}"
    return _request(server, (slash + path).split("/"))


def _request(server: str, segments: list[str]) -> ImageRequest | None:
    """The request of a URL's path, cut at its slashes ("" first), on `server`."""
    # "", at least one segment of prefix or identifier, then the four parameters.
    if len(segments) < 6 or not all(segments[1:]):
        return None
    region, size, rotation, last = segments[-4:]
    quality, dot, fmt = last.rpartition(".")
    if not dot or not quality or not fmt:
        return None
    return ImageRequest(server, "/".join(segments[:-4]), region, size, rotation, quality, fmt)


def _parse_any(url: str) -> ImageRequest | None:
    """`parse` for a URL of any shape, by the standard library's reading of URLs."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        return None
    server = parts.hostname.lower()
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        server = f"{server}:{port}"
    return _request(server, parts.path.split("/"))


def request_key(url: str) -> str:
    """One key for every URL that asks a server for the same pixels.

    Equal keys, by the IIIF Image API 2.x: the same server (the scheme aside), path
    and identifier, the same region, rotation, quality and format, and sizes that
    name the same width and height for that region. On a square pixel region
    ``x,y,s,s`` the sizes ``w,``, ``,w``, ``w,w`` and ``!w,w`` all name a w x w
    rendering (``!w,h`` with w != h names min(w,h) square). Nothing else is
    assumed equal: ``full``, ``max`` and ``pct:`` sizes, percentage regions and
    a non-square region's ``w,`` (whose height the server rounds) keep their own
    spelling. A URL that is not a IIIF request keys by itself, less its scheme.

    Parameters
    ----------
    url : str
        An image URL from urls.txt.

    Returns
    -------
    str
        ``iiif://server/base/region/size/rotation/quality.format`` with region and
        size in canonical form, or ``url://`` followed by the URL less its scheme.
    """
    return key_of(parse(url), url)


def key_of(request: ImageRequest | None, url: str) -> str:
    """`request_key(url)` from the request `parse(url)` gave (for a caller that needs both)."""
    if request is None:
        return "url:" + url.partition(":")[2]
    region = _canonical_region(request.region)
    size = _canonical_size(request.size, region)
    return (f"iiif://{request.page}/{region}/{size}/{request.rotation}/"
            f"{request.quality}.{request.format}")


def page_key(url: str) -> str:
    """The IIIF image (page) a URL cuts its face from; the URL itself when it is not a IIIF request.

    The faces of one page follow each other in urls.txt: a page the server cannot
    read fails them all, which says nothing about the server's other pages.
    """
    request = parse(url)
    return url if request is None else request.page


def _canonical_region(region: str) -> str:
    """``x,y,w,h`` with its numbers in plain form; any other region as spelled."""
    match = _REGION.fullmatch(region)
    if match is None:
        return region
    return ",".join(str(int(n)) for n in match.groups())


def _canonical_size(size: str, region: str) -> str:
    """The size as ``w,h`` where the region fixes both (a square pixel region); else as spelled."""
    match = _SIZE.fullmatch(size)
    square = _REGION.fullmatch(region)
    if match is None or square is None:
        return size
    side = int(square.group(3))
    if side == 0 or side != int(square.group(4)):
        return size  # a non-square region's "w," has a height the server rounds: not assumed
    best_fit, w, h = match.groups()
    w = int(w) if w is not None else None
    h = int(h) if h is not None else None
    if best_fit:
        if w is None or h is None:
            return size  # "!w," is no IIIF size
        w = h = min(w, h)
    elif w is None and h is None:
        return size
    elif w is None:
        w = h
    elif h is None:
        h = w
    if not w or not h:
        return size  # a zero size is an error the server reports, not a rendering
    return f"{w},{h}"
