"""Per-image rate control: size targets never exceed the limit and take the
largest level that fits; quality targets take the smallest level that meets
them; impossible targets and bad specs are clear errors."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import catcomp
from catcomp.cli import main
from catcomp.metrics import psnr
from catcomp.ratecontrol import Target, bisect_first, parse_quality, parse_size

from .conftest import photo

STEP = 0.05


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(photo(160, 120, seed=5))


@pytest.fixture(scope="module")
def ladder(image, tiny_models):
    """File size and PSNR at every grid position of the knob (tiny model)."""
    out = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATCOMP_MODELS", str(tiny_models))
        for j in range(101):
            data = catcomp.compress(image, "other", level=j * STEP)
            out.append((len(data), psnr(np.asarray(image), np.asarray(catcomp.decompress(data)))))
    return out


def _index(data):
    return round(catcomp.info(data)["level"] / STEP)


def test_parse_size_and_quality():
    assert parse_size("50KB") == 50_000 and parse_size("48KiB") == 49_152 and parse_size("1.5MB") == 1_500_000
    assert parse_size("800") == 800 and parse_size(" 2 k ") == 2000
    for bad in ("", "-5", "5 parsecs", "0", "KB"):
        with pytest.raises(catcomp.CatcompError, match="bad size"):
            parse_size(bad)
    assert parse_quality("psnr=32, ssim=0.95") == {"psnr": 32.0, "ssim": 0.95}
    assert parse_quality("MS-SSIM=0.9") == {"ms_ssim": 0.9}
    for bad in ("psnr", "foo=3", "psnr=abc", "l1=2"):
        with pytest.raises(catcomp.CatcompError, match="bad quality target"):
            parse_quality(bad)


def test_bisect_finds_a_transition_even_if_not_monotone():
    values = [0, 0, 1, 0, 1, 1, 1]
    j = bisect_first(0, len(values) - 1, lambda i: bool(values[i]))
    assert values[j] and not values[j - 1]
    assert bisect_first(0, 3, lambda i: False) is None and bisect_first(0, 3, lambda i: True) == 0


def test_target_size_is_never_exceeded_and_is_the_largest_fit(image, ladder):
    sizes = [s for s, _ in ladder]
    assert sizes[-1] > sizes[0]
    for limit in (sizes[0], (sizes[20] + sizes[60]) // 2, sizes[-1] - 1, sizes[-1] + 10_000):
        data = catcomp.compress(image, "other", target=Target.size(limit))
        j = _index(data)
        assert len(data) == sizes[j] <= limit
        assert j == 100 or sizes[j + 1] > limit
    with pytest.raises(catcomp.CatcompError, match="lowest rate level already needs"):
        catcomp.compress(image, "other", target=Target.size(sizes[0] - 1))


def test_bpp_and_ratio_targets(image, ladder):
    w, h = image.size
    bpp = 8 * ladder[50][0] / (w * h)
    data = catcomp.compress(image, "other", target=Target.bpp(bpp))
    assert 8 * len(data) / (w * h) <= bpp and _index(data) >= 50
    ratio = w * h * 3 / (ladder[40][0] + 0.5)  # a limit of ladder[40] bytes and a half, whatever the float rounding
    data = catcomp.compress(image, "other", target=Target.ratio(ratio))
    assert w * h * 3 / len(data) >= ratio and _index(data) >= 40
    with pytest.raises(catcomp.CatcompError):
        Target.ratio(0.5)


def test_quality_target_is_the_smallest_level_meeting_it(image, ladder):
    goal = ladder[-1][1]  # reachable by construction
    data = catcomp.compress(image, "other", target=Target.quality({"psnr": goal}))
    j = _index(data)
    got = psnr(np.asarray(image), np.asarray(catcomp.decompress(data)))
    assert got >= goal and got == pytest.approx(ladder[j][1])
    assert j == 0 or ladder[j - 1][1] < goal
    with pytest.raises(catcomp.CatcompError, match="highest rate level gives psnr"):
        catcomp.compress(image, "other", target=Target.quality("psnr=99"))
    with pytest.raises(catcomp.CatcompError, match="not both"):
        catcomp.compress(image, "other", level=1.0, target=Target.size(10_000))


def test_cli_target_size_on_a_folder(tmp_path, ladder):
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo(160, 120, seed=10 + i)).save(src / f"{i}.png")
    limit = ladder[60][0]
    r = CliRunner().invoke(main, ["compress", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--category", "other", "--target-size", str(limit)])
    assert r.exit_code == 0, r.output
    outs = sorted((tmp_path / "out").rglob("*.ccz"))
    assert len(outs) == 3 and all(0 < p.stat().st_size <= limit for p in outs)
    r = CliRunner().invoke(main, ["compress", str(src), "-o", str(tmp_path / "o2"), "--level", "1", "--target-bpp", "0.5"])
    assert r.exit_code == 2 and "at most one of" in r.output
    r = CliRunner().invoke(main, ["compress", str(src), "-o", str(tmp_path / "o3"), "--target-size", "5 parsecs"])
    assert r.exit_code == 2 and "bad size" in r.output
    r = CliRunner().invoke(main, ["compress", str(src), "-o", str(tmp_path / "o4"), "--category", "other", "--target-size", "10"])
    assert r.exit_code == 1 and "lowest rate level already needs" in r.output and not list((tmp_path / "o4").rglob("*.ccz"))
