"""What original_tags.txt says about each face, under English names.

Upstream writes one line per image, `NNNNNNNN.jpg:key=value;key=value;...`, with
Japanese keys, some of them repeated (three 制作年 values: from, to and the era;
one タグ per free tag). The keys changed between versions (1.3 split 原典ID into
DOI and two holders' own record ids), so they are read by meaning, not position.

Closed sets (orientation, holder, fine status) get English names, and a value
outside them is a metadata error like any other: it would otherwise become a
silently wrong class. Free text (the work's title, the era, the tags) is kept as
upstream wrote it, only stripped of surrounding blanks.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

from ..errors import MetadataError

FILENAME = "original_tags.txt"
LINE = re.compile(r"([0-9]{8})\.jpg:(.*)")
YEAR = re.compile(r"[0-9]{3,4}")
DOI = re.compile(r"10\.[0-9]{4,9}/\S+")
KYOTO_RECORD = re.compile(r"RB[0-9]+")
# A IIIF Image API region: full, square, x,y,w,h in pixels, or pct:x,y,w,h. Upstream has a few
# crops reaching past the page's top or left edge ("-6,1446,234,234"), so x and y may be negative.
IIIF_REGION = re.compile(r"full|square|(pct:)?-?[0-9.]+,-?[0-9.]+,[0-9.]+,[0-9.]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's category Cc, all of it

ORIENTATIONS = MappingProxyType({
    "四分の三": "three-quarter", "横": "side", "後": "back", "正面": "front", "不明": "unknown",
})
# The three holders, as CONTENT_PROVIDERS.txt names them and the collection each image comes from.
HOLDERS = MappingProxyType({
    "国文学研究資料館": ("National Institute of Japanese Literature", "Dataset of Pre-Modern Japanese Text"),
    "慶應義塾大学": ("Keio University", "Digital Collection of Keio University Libraries"),
    "慶応義塾大学": ("Keio University", "Digital Collection of Keio University Libraries"),
    "京都大学": ("Kyoto University", "Kyoto University Rare Materials Digital Archive"),
})
# Upstream's eight statuses; labels.csv keeps the first four (its `status`).
FINE_STATUSES = MappingProxyType({"貴族": "noble", "武士": "warrior", "化身": "incarnation", "庶民": "commoner",
                 "僧侶": "monk", "神職": "priest", "動物": "animal", "不明": "unknown"})
GENDERS = MappingProxyType({"男": "male", "女": "female", "不明": "unknown"})
UNKNOWN = "unknown"

# The class lists of the closed sets, in a fixed order (a label's int indexes it).
CLASSES: Mapping[str, tuple[str, ...]] = {
    "orientation": ("three-quarter", "side", "back", "front", UNKNOWN),
    "holder": ("National Institute of Japanese Literature", "Keio University", "Kyoto University", UNKNOWN),
    "fine_status": ("noble", "warrior", "incarnation", "commoner", "monk", "priest", "animal", UNKNOWN),
}

# Keys naming the source book: one per line (1.0-1.2 used 原典ID for all three kinds).
SOURCE_ID_KEYS = MappingProxyType({
    "原典ID": None,  # the kind is told by the value
    "DOI": "doi",
    "慶応義塾大学請求記号": "keio-call-number",
    "京都大学貴重資料デジタルアーカイブレコードID": "kyoto-record-id",
})
SINGLE_KEYS = ("原典", "所蔵", "向き", "身分", "性別", *SOURCE_ID_KEYS)


@dataclass(frozen=True)
class Attributes:
    """One face's attributes from original_tags.txt, and where its pixels come from.

    Attributes
    ----------
    work : str
        原典: the source work, as upstream wrote its title.
    holder : str
        所蔵: the institution holding the work, in English (one of ``CLASSES["holder"]``).
    collection : str
        The content provider's collection the image is served from.
    orientation : str
        向き: "three-quarter", "side", "back", "front" or "unknown".
    period : str
        制作年: the era as upstream wrote it (e.g. 江戸前期, 不明), without the years.
    year_from, year_to : int or None
        制作年's first and last year (a single year is both); None when not recorded.
    tags : tuple of str
        タグ: free tags as upstream wrote them (外国, 中国, 山伏, 鬼 ...).
    fine_status : str
        身分 in upstream's eight classes (one of ``CLASSES["fine_status"]``).
    source_id : str
        The source book's DOI, Keio call number or Kyoto record id.
    source_id_type : str
        "doi", "keio-call-number", "kyoto-record-id", or "" when there is no id.
    iiif_service : str
        The IIIF Image API URL of the page the face is cut from.
    iiif_region : str
        The region of that page, as in the image URL (x,y,w,h).
    """

    work: str = ""
    holder: str = UNKNOWN
    collection: str = ""
    orientation: str = UNKNOWN
    period: str = ""
    year_from: int | None = None
    year_to: int | None = None
    tags: tuple[str, ...] = ()
    fine_status: str = UNKNOWN
    source_id: str = ""
    source_id_type: str = ""
    iiif_service: str = ""
    iiif_region: str = ""

    def as_dict(self) -> dict:
        """Plain values (tags as a list) for JSON, CSV and the loaders."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


ATTRIBUTE_NAMES = tuple(f.name for f in fields(Attributes))
TAG_SEPARATOR = ";"  # upstream's own separator, so no tag can contain it
_VALUES = attrgetter(*ATTRIBUTE_NAMES)
_TAGS, _YEAR_FROM, _YEAR_TO = (ATTRIBUTE_NAMES.index(n) for n in ("tags", "year_from", "year_to"))
_NONE = Attributes()


def export_values(attributes: Attributes | None) -> list:
    """`export_row`'s values, in `ATTRIBUTE_NAMES` order."""
    return export_fields(_VALUES(attributes or _NONE))


def field_values(attributes: Attributes) -> tuple:
    """The fields of `attributes`, in `ATTRIBUTE_NAMES` order (what `field_rows` gives)."""
    return _VALUES(attributes)


def export_fields(fields: Sequence) -> list:
    """`export_values` of an image's fields in `ATTRIBUTE_NAMES` order (from `field_rows`)."""
    values = list(fields)
    values[_TAGS] = TAG_SEPARATOR.join(values[_TAGS])
    values[_YEAR_FROM] = values[_YEAR_FROM] or 0
    values[_YEAR_TO] = values[_YEAR_TO] or 0
    return values


def export_row(attributes: Attributes | None) -> dict:
    """The attributes as flat columns for files other tools read (attributes.csv, metadata.jsonl).

    Tags are joined by ";" and unknown years are 0, so every column has one type in
    every file (a split whose images all lack years would otherwise make `datasets`
    see two schemas).

    Parameters
    ----------
    attributes : Attributes or None
        None: an image original_tags.txt does not list (every column its default).

    Returns
    -------
    dict
        Column name -> str or int, one entry per field of `Attributes`.
    """
    return dict(zip(ATTRIBUTE_NAMES, export_values(attributes)))


def parse_attributes(lines: Sequence[str], urls: Sequence[str | None] = ()) -> dict[int, Attributes]:
    """original_tags.txt lines -> {image index: Attributes}; a bad line raises MetadataError.

    Parameters
    ----------
    lines : sequence of str
        The file's lines, already decoded and split (only "\\n" ends a line).
    urls : sequence of str or None
        urls.txt by image index, for the IIIF page and region of each image.

    Returns
    -------
    dict
        Attributes by image index, for every image the file lists.

    Raises
    ------
    MetadataError
        A malformed or duplicate line, or a closed-set value (holder, orientation,
        status, gender) outside its set.
    """
    return {index: Attributes(*fields) for index, fields in field_rows(lines, urls)}


def field_rows(lines: Sequence[str], urls: Sequence[str | None] = ()) -> Iterator[tuple[int, tuple]]:
    """(image index, the fields `parse_attributes` makes its Attributes of, in order) for every line:
    for a caller that reads each image's attributes once, without ~10,000 objects."""
    count = len(urls)
    for index, values in _read_lines(lines):
        yield index, (*values, *iiif_source(urls[index] if index < count else None))


def check_attributes(lines: Sequence[str]) -> None:
    """`parse_attributes`' checks alone: the same MetadataError for a bad line, and nothing kept."""
    for _ in _read_lines(lines, keep=False):
        pass


def _read_lines(lines: Sequence[str], keep: bool = True) -> Iterator[tuple[int, tuple | None]]:
    """(image index, `_attributes` of its line) for every line, checked in order; without `keep`,
    only checked (None for the fields)."""
    first_seen: dict[int, int] = {}
    # Most lines say what another line says (a work's faces share its title, holder and ids): each
    # text after the colon is read once. A text that is bad raises at its first line, as it would alone.
    read: dict[str, tuple | None] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        match = LINE.fullmatch(stripped)
        if match is None:
            raise MetadataError(FILENAME, number, f"expected 'NNNNNNNN.jpg:key=value;...', found {line[:60]!r}")
        if CONTROL.search(line):
            raise MetadataError(FILENAME, number, "line contains control characters")
        index = int(match.group(1))
        if index in first_seen:
            raise MetadataError(FILENAME, number, f"duplicate line for {match.group(1)}.jpg "
                                                  f"(first on line {first_seen[index]})")
        text = match.group(2)
        if text in read:
            values = read[text]
        else:
            values = _attributes(_pairs(text, number), number)
            read[text] = values if keep else None
        first_seen[index] = number
        yield index, values


def _pairs(text: str, number: int) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise MetadataError(FILENAME, number, f"expected key=value, found {part[:40]!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _attributes(pairs: list[tuple[str, str]], number: int) -> tuple:
    """The fields of `Attributes` a line gives, in order, up to (not including) the IIIF ones."""
    single: dict[str, str] = {}
    tags, period, years_from, years_to = [], [], [], []
    for key, value in pairs:
        if key == "タグ":
            if value:
                tags.append(value)
        elif key == "制作年":
            _period(value, period, years_from, years_to, number)
        elif key in SINGLE_KEYS:
            if key in single and single[key] != value:
                raise MetadataError(FILENAME, number, f"{key} given twice ({single[key]!r}, {value!r})")
            single[key] = value
        # Other keys (upstream writes a stray empty "=" on a few lines) carry nothing kaokore reads.
    holder, collection = _closed(HOLDERS, "所蔵", single.get("所蔵", ""), number, (UNKNOWN, ""))
    orientation = _closed(ORIENTATIONS, "向き", single.get("向き", ""), number, UNKNOWN)
    fine_status = _closed(FINE_STATUSES, "身分", single.get("身分", ""), number, UNKNOWN)
    _closed(GENDERS, "性別", single.get("性別", ""), number, UNKNOWN)  # checked; labels.csv has the gender
    source_id, source_id_type = _source_id(single, number)
    # In the order of Attributes' fields.
    return (single.get("原典", ""), holder, collection, orientation, "; ".join(period),
            min(years_from, default=None), max(years_to, default=None), tuple(tags), fine_status,
            source_id, source_id_type)


def _closed(names: Mapping[str, object], key: str, value: str, number: int, missing):
    if not value:
        return missing
    try:
        return names[value]
    except KeyError:
        raise MetadataError(FILENAME, number, f"{key} {value[:20]!r} is not one of {', '.join(names)}") from None


def _period(value: str, text: list[str], years_from: list[int], years_to: list[int], number: int) -> None:
    if not value:
        return
    head, _, year = value.partition(" ")
    if head in ("from", "to"):
        if not YEAR.fullmatch(year):
            raise MetadataError(FILENAME, number, f"制作年 {value[:20]!r}: expected a year after {head!r}")
        (years_from if head == "from" else years_to).append(int(year))
    elif YEAR.fullmatch(value):
        years_from.append(int(value))
        years_to.append(int(value))
    else:
        text.append(value)


def _source_id(single: Mapping[str, str], number: int) -> tuple[str, str]:
    found = [(key, single[key]) for key in SOURCE_ID_KEYS if single.get(key)]
    if len(found) > 1:
        raise MetadataError(FILENAME, number, f"two source ids ({found[0][0]}, {found[1][0]})")
    if not found:
        return "", ""
    key, value = found[0]
    kind = SOURCE_ID_KEYS[key]
    if kind is None:
        kind = ("doi" if DOI.fullmatch(value) else "kyoto-record-id" if KYOTO_RECORD.fullmatch(value)
                else "keio-call-number")
    return value, kind


def iiif_source(url: str | None) -> tuple[str, str]:
    """(image service URL, region) of a IIIF Image API URL; ("", "") for any other URL.

    `{service}/{region}/{size}/{rotation}/{quality}.{format}` is the Image API's
    own grammar, so the page is whatever precedes the last four path segments.

    Parameters
    ----------
    url : str or None
        An image URL of urls.txt.

    Returns
    -------
    tuple of (str, str)
        The page's image service URL and the region, e.g. ``"10,20,300,300"``.
    """
    if not url:
        return "", ""
    if url.startswith(("https://", "http://")) and url.isprintable() and " " not in url and "?" not in url \
            and "#" not in url:
        # What urlsplit and urlunsplit make of such a URL, by slicing: the path is all from the first
        # "/" after the host, and the service is all before the last four segments, if that still
        # holds a segment of the path.
        path_at = url.find("/", url.index("://") + 3)
        parts = url.rsplit("/", 4)
        if path_at < 0 or len(parts) < 5 or len(parts[0]) <= path_at:
            return "", ""
        service, region, _, _, last = parts
        return (service, region) if IIIF_REGION.fullmatch(region) and "." in last else ("", "")
    split = urlsplit(url)
    segments = split.path.split("/")
    if len(segments) < 6 or not IIIF_REGION.fullmatch(segments[-4]) or "." not in segments[-1]:
        return "", ""
    service = urlunsplit((split.scheme, split.netloc, "/".join(segments[:-4]), "", ""))
    return service, segments[-4]
