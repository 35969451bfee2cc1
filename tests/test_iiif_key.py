"""One key for "the same image": the canonical IIIF request of a URL, on the real URL forms of
every version (the URLs below are copied from upstream's urls.txt files, one per form)."""
from __future__ import annotations

import pytest

from kaokore.dataset.iiif import _parse_any, page_key, parse, request_key

# The same Keio face in four versions: 1.0 (http, "256,"), 1.1 (http, "256,256"),
# 1.2 (https, "256,256") and 1.3 (https, "!200,200": a 200x200 rendering, another image).
KEIO_10 = "http://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/583,812,222,222/256,/0/default.jpg"
KEIO_11 = "http://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/583,812,222,222/256,256/0/default.jpg"
KEIO_12 = "https://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/583,812,222,222/256,256/0/default.jpg"
KEIO_13 = "https://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/583,812,222,222/!200,200/0/default.jpg"
# A CODH face in 1.0 and in 1.1-1.3 (always http).
CODH_10 = "http://codh.rois.ac.jp/pmjt/iiif/200016476/200016476_00010.tif/3134,961,296,296/256,/0/default.jpg"
CODH_11 = "http://codh.rois.ac.jp/pmjt/iiif/200016476/200016476_00010.tif/3134,961,296,296/256,256/0/default.jpg"
# A Kyoto face in 1.0 and in 1.1-1.3 (always https).
KYOTO_10 = ("https://rmda.kulib.kyoto-u.ac.jp/iiif/RB00013190/RB00013190_00005_0.ptif/"
            "907,628,108,108/256,/0/default.jpg")
KYOTO_13 = ("https://rmda.kulib.kyoto-u.ac.jp/iiif/RB00013190/RB00013190_00005_0.ptif/"
            "907,628,108,108/256,256/0/default.jpg")
# Within 1.2, images 47 and 8799 are one face, once over http and once over https.
DUP_12_HTTP = "http://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/1770,958,188,188/256,256/0/default.jpg"
DUP_12_HTTPS = "https://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/1770,958,188,188/256,256/0/default.jpg"


def test_the_real_forms_of_one_face_share_a_key_across_versions():
    assert request_key(KEIO_10) == request_key(KEIO_11) == request_key(KEIO_12)
    assert request_key(CODH_10) == request_key(CODH_11)
    assert request_key(KYOTO_10) == request_key(KYOTO_13)
    assert request_key(DUP_12_HTTP) == request_key(DUP_12_HTTPS)


def test_a_200x200_rendering_is_another_image():
    assert request_key(KEIO_13) != request_key(KEIO_12)
    # "!200,200" on a square region is exactly a 200x200 rendering, as "200,200" or "200," would be.
    assert request_key(KEIO_13) == request_key(KEIO_13.replace("!200,200", "200,200"))
    assert request_key(KEIO_13) == request_key(KEIO_13.replace("!200,200", "200,"))


def test_the_key_spells_out_the_canonical_request():
    assert request_key(KEIO_10) == (
        "iiif://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/583,812,222,222/256,256/0/default.jpg")
    assert request_key(KYOTO_10).startswith("iiif://rmda.kulib.kyoto-u.ac.jp/iiif/RB00013190/")


@pytest.mark.parametrize("other", [
    KEIO_12.replace("583,812,222,222", "583,812,222,223"),  # another region
    KEIO_12.replace("583,812", "584,812"),
    KEIO_12.replace("/0/default", "/90/default"),  # rotated
    KEIO_12.replace("/0/default", "/!0/default"),  # mirrored
    KEIO_12.replace("default.jpg", "gray.jpg"),
    KEIO_12.replace("default.jpg", "default.png"),
    KEIO_12.replace("iiif.lib.keio.ac.jp", "iiif.lib.keio.ac.jp:8443"),  # another server
    KEIO_12.replace("2_004.tif", "2_005.tif"),  # another page
    KEIO_12.replace("256,256", "full"),
    KEIO_12.replace("256,256", "max"),
    KEIO_12.replace("256,256", "pct:50"),
    KEIO_12.replace("256,256", "256,255"),
])
def test_different_pixels_never_share_a_key(other):
    assert request_key(other) != request_key(KEIO_12)


def test_a_non_square_region_keeps_its_size_spelling():
    """'256,' on a 300x200 region is 256x171 (or 170, as the server rounds), not 256x256."""
    wide = "https://h.example/iiif/page.tif/0,0,300,200/256,/0/default.jpg"
    assert request_key(wide) != request_key(wide.replace("/256,/", "/256,256/"))
    assert request_key(wide) != request_key(wide.replace("/256,/", "/!256,256/"))


def test_numbers_are_compared_as_numbers_and_hosts_without_case_or_default_port():
    a = "https://Example.ORG:443/iiif/p.tif/010,020,030,030/,64/0/default.jpg"
    b = "http://example.org/iiif/p.tif/10,20,30,30/64,64/0/default.jpg"
    assert request_key(a) == request_key(b)


@pytest.mark.parametrize("url", [
    "https://example.org/a/b.jpg",  # too few segments for a IIIF request
    "https://example.org/iiif/p.tif/0,0,10,10/10,10/0/default.jpg?token=1",  # a query: not a IIIF request
    "https://example.org/iiif/p.tif/0,0,10,10/10,10/0/default",  # no format
])
def test_anything_else_keys_by_its_exact_url_less_the_scheme(url):
    assert parse(url) is None
    assert request_key(url) == "url:" + url.partition(":")[2]
    assert request_key(url) == request_key("http" + url[5:])
    assert request_key(url) != request_key(url + "x")


def test_page_key_is_the_iiif_image_a_face_is_cut_from():
    assert page_key(KEIO_10) == page_key(KEIO_13) == "iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif"
    assert page_key(KEIO_10) != page_key(KEIO_10.replace("2_004", "2_005"))
    assert page_key("https://example.org/x") == "https://example.org/x"


def test_the_quick_reading_of_a_plain_url_agrees_with_the_standard_librarys_on_every_variant():
    # `parse` cuts a URL of plain characters with str methods; any other goes through urlsplit.
    # Every variant below of each real form must be read the same both ways (or refused both ways).
    edits = [
        ("", ""), ("http://", "HTTP://"), ("https://", "http://"), ("http://", "https://"),
        (".jp/", ".JP/"), (".jp/", ".jp:80/"), (".jp/", ".jp:443/"), (".jp/", ".jp:8080/"), (".jp/", ".jp:99999/"),
        (".jp/", ".jp:/"), (".jp/", ".jp:0080/"), ("://", "://user@"), ("://", "://["), (".jp/", ".jp//"),
        ("/0/default.jpg", "/0/default"), ("/0/default.jpg", "/0/.jpg"), ("/0/default.jpg", "/0/default."),
        ("/0/default.jpg", "/0/default.jpg?x=1"), ("/0/default.jpg", "/0/default.jpg#f"),
        ("/0/default.jpg", "/0/gray.png"), ("/0/default.jpg", "/0/default.jpg/"), ("/0/", "//"),
        ("/0/", "/0 /"), ("/0/", "/0\t/"), ("/0/", "/%30/"), ("tif/", "tif\\"), ("tif/", "t;i@f:/"),
        ("/256,", "/pct:50"), ("/0/default.jpg", ""), ("://", ":/"), ("://", ":///"),
    ]
    reals = [KEIO_10, KEIO_13, CODH_11, KYOTO_13, DUP_12_HTTP]
    checked = 0
    for url in reals:
        for old, new in edits:
            if old in url:
                variant = url.replace(old, new, 1)
                assert parse(variant) == _parse_any(variant), variant
                checked += 1
    assert checked >= 100
    assert parse(KEIO_12.replace(".jp/", ".jp:8080/")).server == "iiif.lib.keio.ac.jp:8080"
