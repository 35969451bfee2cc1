"""DIR/croissant.json: the tree described in MLCommons Croissant 1.0, for `mlcroissant` and the hubs.

    >>> import mlcroissant as mlc
    >>> faces = mlc.Dataset("kaokore/croissant.json").records("faces")

Two record sets, because a Croissant record set joins exactly two sources:
`annotations` joins labels.csv (split, gender, status: the dataset's labels, read
from upstream's own file) with attributes.csv (original_tags.txt in English), and
`faces` joins the image files of this layout with `annotations` by image name.
`faces` is the one to read: image, name, split, gender, status and the attributes.
Unlabeled images have no labels.csv row: outside the flat layout their folder is
not in the file set; in images_256/ they are records with only their image and name
(the join finds no labels.csv row, so labels and attributes are empty).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from .._version import __version__
from ..dataset import citation
from ..dataset import metadata as md
from ..dataset.attributes import CLASSES as ATTRIBUTE_CLASSES
from ..dataset.layout import croissant_globs
from .listing import ATTRIBUTES_CSV, Present, attributes_csv

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

CONTEXT = MappingProxyType({
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
})

# (column, Croissant type, description) of attributes.csv, after its `image` column.
ATTRIBUTE_FIELDS = (
    ("work", "sc:Text", "The source work (原典), as upstream wrote its title."),
    ("holder", "sc:Text", "The institution holding the work (所蔵): "
                          + ", ".join(ATTRIBUTE_CLASSES["holder"]) + "."),
    ("collection", "sc:Text", "The content provider's collection the image is served from."),
    ("orientation", "sc:Text", "The face's orientation (向き): " + ", ".join(ATTRIBUTE_CLASSES["orientation"]) + "."),
    ("period", "sc:Text", "The era the work was made in (制作年), as upstream wrote it."),
    ("year_from", "sc:Integer", "First year of the period (0 or empty: not recorded)."),
    ("year_to", "sc:Integer", "Last year of the period (0 or empty: not recorded)."),
    ("tags", "sc:Text", "Free tags (タグ) as upstream wrote them, joined by ';'."),
    ("fine_status", "sc:Text", "Status in upstream's eight classes (身分): "
                               + ", ".join(ATTRIBUTE_CLASSES["fine_status"]) + "."),
    ("source_id", "sc:Text", "The source book's DOI, Keio call number or Kyoto record id."),
    ("source_id_type", "sc:Text", "doi, keio-call-number or kyoto-record-id."),
    ("iiif_service", "sc:URL", "IIIF Image API URL of the page the face is cut from."),
    ("iiif_region", "sc:Text", "The region of that page (x,y,w,h in pixels), as in the image URL."),
)
# The labels.csv column of each label field.
LABEL_COLUMNS = MappingProxyType({"split": "set", "gender": "gender", "status": "status"})


def croissant(meta: md.Metadata, layout: str, present: Sequence[Present], version: str | None = None,
              attributes_sha256: str | None = None) -> dict:
    """The Croissant document for DIR (see the module docstring).

    Parameters
    ----------
    meta : Metadata
        The parsed metadata of the version DIR holds.
    layout : str
        DIR's layout.
    present : sequence of Present
        The images on disk; only their number is used, in the description.
    version : str, optional
        The dataset version's name; None gives the document version "0.0.0".
    attributes_sha256 : str, optional
        The SHA-256 of attributes.csv, if known already (else it is made from `meta`).

    Returns
    -------
    dict
        The JSON-LD document.
    """
    label_fields = _label_fields(meta.classes)
    return {
        "@context": dict(CONTEXT),
        "@type": "sc:Dataset",
        "name": f"KaoKore {version}" if version else "KaoKore",
        "description": f"{citation.DESCRIPTION} This copy was downloaded by kaokore {__version__} "
                       f"in its {layout} layout; {len(present)} images are on disk.",
        "conformsTo": CONFORMS_TO,
        "citeAs": citation.BIBTEX,
        "license": citation.LICENSE_URL,
        "url": citation.HOMEPAGE,
        "sameAs": [citation.DOI_URL, citation.REPOSITORY],
        "identifier": f"doi:{citation.DOI}",
        "version": _semver(version),
        "creator": {"@type": "sc:Organization", "name": "ROIS-DS Center for Open Data in the Humanities (CODH)",
                    "url": "http://codh.rois.ac.jp/"},
        "provider": [{"@type": "sc:Organization", "name": f"{collection} ({organisation})", "url": url}
                     for collection, organisation, url in citation.CONTENT_PROVIDERS],
        "creditText": citation.ATTRIBUTION,
        "keywords": ["faces", "Japanese art", "art history", "image classification", "IIIF"],
        "datePublished": "2020-02-20",  # the paper's arXiv submission, where 1.0 was announced
        "isAccessibleForFree": True,
        "distribution": _distribution(meta, layout, attributes_sha256),
        "recordSet": [_annotations(label_fields), _faces(label_fields)],
    }


def _label_fields(classes: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """(field, Croissant type, description) of the labels.csv fields (`LABEL_COLUMNS`)."""
    return [
        ("split", "sc:Text", "The upstream split: train, dev or test (labels.csv `set`)."),
        ("gender", "sc:Integer", "Gender label, an index into " + _names(classes["gender"]) + "."),
        ("status", "sc:Integer", "Status label, an index into " + _names(classes["status"]) + "."),
    ]


def _distribution(meta: md.Metadata, layout: str, attributes_sha256: str | None) -> list[dict]:
    """The files: labels.csv, attributes.csv and the images of `layout`."""
    return [
        {"@type": "cr:FileObject", "@id": "labels.csv", "name": "labels.csv", "contentUrl": "labels.csv",
         "encodingFormat": "text/csv", "sha256": md.sha256(meta.files["labels.csv"]),
         "description": "Upstream's labels: image, gender, status, set."},
        {"@type": "cr:FileObject", "@id": ATTRIBUTES_CSV, "name": ATTRIBUTES_CSV, "contentUrl": ATTRIBUTES_CSV,
         "encodingFormat": "text/csv", "sha256": attributes_sha256 or md.sha256(attributes_csv(meta)),
         "description": "original_tags.txt under English names, written by kaokore."},
        {"@type": "cr:FileSet", "@id": "images", "name": "images", "encodingFormat": "image/jpeg",
         "includes": croissant_globs(layout),
         "description": f"The labelled images of the {layout} layout."},
    ]


def _annotations(label_fields: Sequence[tuple[str, str, str]]) -> dict:
    """The record set joining labels.csv and attributes.csv by image name."""
    return {
        "@type": "cr:RecordSet", "@id": "annotations", "name": "annotations",
        "description": "labels.csv joined with attributes.csv by image name: one record per labelled image.",
        "key": {"@id": "annotations/image"},
        "field": [
            {"@type": "cr:Field", "@id": "annotations/image", "name": "image", "dataType": "sc:Text",
             "description": "Image file name, NNNNNNNN.jpg.",
             "source": _column("labels.csv", "image"),
             "references": _column(ATTRIBUTES_CSV, "image")},
            *({"@type": "cr:Field", "@id": f"annotations/{f}", "name": f, "dataType": t, "description": d,
               "source": _column("labels.csv", LABEL_COLUMNS[f])} for f, t, d in label_fields),
            *({"@type": "cr:Field", "@id": f"annotations/{f}", "name": f, "dataType": t, "description": d,
               "source": _column(ATTRIBUTES_CSV, f)} for f, t, d in ATTRIBUTE_FIELDS),
        ],
    }


def _faces(label_fields: Sequence[tuple[str, str, str]]) -> dict:
    """The record set to read: the image files joined with `annotations` by image name."""
    return {
        "@type": "cr:RecordSet", "@id": "faces", "name": "faces",
        "description": "One record per labelled image on disk: the 256x256 image, its name, split, "
                       "gender, status and attributes.",
        "key": {"@id": "faces/name"},
        "field": [
            {"@type": "cr:Field", "@id": "faces/image", "name": "image", "dataType": "sc:ImageObject",
             "description": "The face, a 256x256 RGB JPEG.",
             "source": {"fileSet": {"@id": "images"}, "extract": {"fileProperty": "content"}}},
            {"@type": "cr:Field", "@id": "faces/name", "name": "name", "dataType": "sc:Text",
             "description": "Image file name, NNNNNNNN.jpg.",
             "source": {"fileSet": {"@id": "images"}, "extract": {"fileProperty": "filename"}},
             "references": _from_annotations("image")},
            *({"@type": "cr:Field", "@id": f"faces/{f}", "name": f, "dataType": t, "description": d,
               "source": _from_annotations(f)} for f, t, d in (*label_fields, *ATTRIBUTE_FIELDS)),
        ],
    }


def _column(file: str, col: str) -> dict:
    return {"fileObject": {"@id": file}, "extract": {"column": col}}


def _from_annotations(field: str) -> dict:
    return {"field": {"@id": f"annotations/{field}"}}


def croissant_json(meta: md.Metadata, layout: str, present: Sequence[Present], version: str | None = None,
                   attributes_sha256: str | None = None) -> bytes:
    """croissant.json's bytes (arguments as for `croissant`)."""
    doc = croissant(meta, layout, present, version, attributes_sha256)
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _names(names: Sequence[str]) -> str:
    return "[" + ", ".join(f"{i}={n}" for i, n in enumerate(names)) + "]"


def _semver(version: str | None) -> str:
    # Croissant wants MAJOR.MINOR.PATCH; KaoKore's versions are MAJOR.MINOR.
    if not version:
        return "0.0.0"
    return version if version.count(".") == 2 else f"{version}.0"
