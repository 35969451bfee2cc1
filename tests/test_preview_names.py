"""`preview --names`: every face's number stays on its own tile, at every tile size."""
from __future__ import annotations

import pytest

from helpers import make_synthetic

import kaokore
from kaokore.offline.preview import BACKGROUND, render
from kaokore.offline.sheet import geometry, plan_sheet


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from iiif_server import FakeIIIF

    base = tmp_path_factory.mktemp("names")
    with FakeIIIF(hosts=2) as srv:
        synth = make_synthetic(srv, base, n=40, blank=(), unlabeled=())
        kaokore.download(base / "data", metadata_dir=synth.meta_dir, quiet=True)
    return base / "data"


@pytest.mark.parametrize("tile", [32, 48, 64, 128])
def test_names_stay_on_their_tiles(root, tile):
    plan = plan_sheet(root, None, rows=2, cols=5, tile=tile, seed=3)
    named, plain = render(plan, names=True), render(plan)
    g = geometry(tile, labelled=False)
    for row in range(2):
        top = g.title + row * (tile + g.gap)
        for col in range(5):
            left = g.gap + col * (tile + g.gap)
            tile_box = (left, top, left + tile, top + tile)
            # The tag is drawn: the tile's bottom-left corner changed.
            assert named.crop(tile_box).tobytes() != plain.crop(tile_box).tobytes(), (row, col)
            # ...and nothing spilled into the gap to its right, where the next tile's tag used to overlap.
            gap = named.crop((left + tile, top, left + tile + g.gap, top + tile))
            assert gap.tobytes() == bytes(BACKGROUND) * (gap.width * gap.height), (row, col)


def changed_width(named, plain, tile: int) -> int:
    """Pixels that differ along the first tile's bottom edge, where its tag sits."""
    g = geometry(tile, labelled=False)
    box = (g.gap, g.title + tile - 2, g.gap + tile, g.title + tile - 1)
    a, b = named.crop(box).tobytes(), plain.crop(box).tobytes()
    return sum(a[i:i + 3] != b[i:i + 3] for i in range(0, len(a), 3))


def test_a_tile_too_small_for_eight_digits_shows_the_number_without_leading_zeros(root):
    wide = plan_sheet(root, None, rows=1, cols=3, tile=128, seed=0)
    narrow = plan_sheet(root, None, rows=1, cols=3, tile=32, seed=0)
    assert [p.name for p in wide.rows[0].picks] == [p.name for p in narrow.rows[0].picks]
    assert changed_width(render(wide, names=True), render(wide), 128) > 40  # all eight digits
    assert 0 < changed_width(render(narrow, names=True), render(narrow), 32) <= 26  # two at most: n=40
