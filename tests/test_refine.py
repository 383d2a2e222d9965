"""Encoder-side latent refinement with the shipped general model: a better file
for the same decoder, deterministic, tiled for large images, and used by rate
control only where it still meets the target."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage import data as skdata

import catcomp
from catcomp import refine
from catcomp.cli import main
from catcomp.metrics import mse, psnr, ssim
from catcomp.ratecontrol import Target
from catcomp.zoo import load_model

SHIPPED = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(autouse=True)
def shipped(monkeypatch):
    monkeypatch.setenv("CATCOMP_MODELS", str(SHIPPED))


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(skdata.astronaut()[40:136, 160:288])  # 128 x 96 of a real photo


def _quality(image, data):
    return psnr(np.asarray(image), np.asarray(catcomp.decompress(data)))


@pytest.mark.parametrize("bf16", [False, True])
def test_refined_file_is_better_for_the_same_decoder(image, bf16, monkeypatch):
    monkeypatch.setattr(refine, "BF16", bf16)  # gradients through the float32 model or its bfloat16 copy
    plain = catcomp.compress(image, "other", level=2.0)
    better = catcomp.compress(image, "other", level=2.0, refine=30)
    assert catcomp.info(better)["model_checksum"] == catcomp.info(plain)["model_checksum"]
    assert catcomp.info(better)["level"] == catcomp.info(plain)["level"]
    assert len(better) < len(plain) and _quality(image, better) > _quality(image, plain)  # fewer bytes and less error
    assert catcomp.compress(image, "other", level=2.0, refine=30) == better  # seeded: same bytes every time


def test_large_images_are_refined_in_tiles(image, monkeypatch):
    whole = catcomp.compress(image, "other", level=2.0, refine=20)
    monkeypatch.setattr(refine, "TILE", 3)  # 8 x 6 latent positions: 3 x 2 tiles with margins
    tiled = catcomp.compress(image, "other", level=2.0, refine=20)
    assert tiled != whole
    plain = catcomp.compress(image, "other", level=2.0)
    assert len(tiled) < len(plain) and _quality(image, tiled) > _quality(image, plain)


def test_rate_control_uses_refinement_only_where_the_target_still_holds(image):
    limit = len(catcomp.compress(image, "other", level=2.5))
    plain = catcomp.compress(image, "other", target=Target.size(limit))
    refined = catcomp.compress(image, "other", target=Target.size(limit), refine=20)
    assert len(refined) <= limit and _quality(image, refined) > _quality(image, plain)

    goal = {"psnr": _quality(image, catcomp.compress(image, "other", level=3.0))}
    plain = catcomp.compress(image, "other", target=Target.quality(goal))
    refined = catcomp.compress(image, "other", target=Target.quality(goal), refine=20)
    assert _quality(image, refined) >= goal["psnr"]
    assert catcomp.info(refined)["level"] < catcomp.info(plain)["level"] and len(refined) < len(plain)


def test_cli_refine_option(tmp_path, image):
    image.save(tmp_path / "a.png")
    r = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--category", "other",
                                  "--level", "2", "--refine", "30"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "a.png.ccz").read_bytes() == catcomp.compress(image, "other", level=2.0, refine=30)
    assert CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "o2"), "--refine", "-1"]).exit_code == 2


def test_evaluate_measures_the_refined_encoder(image):
    from catcomp.evaluate import evaluate

    items = [("crop", "other", np.asarray(image))]
    plain, better = (evaluate(items, ("catcomp",), (1.0, 3.0), refine=r)["groups"]["all"]["curves"]["catcomp"] for r in (0, 20))
    model = load_model("general").model

    def cost(row):  # what refinement lowers: real bits per pixel + lambda(level) * MSE of the decoded file
        return row["bpp"] + float(np.asarray(model.lambdas(np.array([row["setting"]], "float32")))[0]) * row["mse"]

    for p, b in zip(plain, better):  # one of rate and error may rise a little (at level 3, +0.5% bytes for +0.2 dB)
        assert cost(b) < cost(p)


def test_refinement_aimed_at_ssim(image, tmp_path):
    lam = load_model("general").model.lambdas
    rgb = np.asarray(image)
    aimed = catcomp.Refinement.aiming_at(20, "ssim")
    for level in (1.0, 3.0):
        files = {r: catcomp.compress(image, "other", level=level, refine=r) for r in (0, 20, aimed)}
        out = {r: np.asarray(catcomp.decompress(d)) for r, d in files.items()}

        def cost(r):  # what the SSIM-aimed refinement lowers, measured on the real file
            w = float(np.asarray(lam(np.array([level], "float32")))[0])
            return 8 * len(files[r]) / rgb[..., 0].size + w * (mse(rgb, out[r]) + aimed.ssim * (1 - ssim(rgb, out[r])))

        assert cost(aimed) < min(cost(0), cost(20)), level
        assert ssim(rgb, out[aimed]) > ssim(rgb, out[20]) > 0  # more SSIM than the MSE-aimed refinement
    image.save(tmp_path / "a.png")
    ok = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ccz"), "--category", "other", "--level", "1",
                                   "--refine", "20", "--refine-for", "ssim"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "a.ccz").read_bytes() == catcomp.compress(image, "other", level=1.0, refine=aimed)
    alone = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.ccz"), "--refine-for", "ssim"])
    assert alone.exit_code == 2 and "--refine-for needs --refine" in alone.output
    with pytest.raises(ValueError, match="aims at one of"):
        catcomp.Refinement.aiming_at(20, "lpips")
    with pytest.raises(ValueError, match="steps >= 0"):
        catcomp.compress(image, "other", level=1.0, refine=-1)


def test_tuning_measures_the_refined_encoder_without_writing_it(image):
    from catcomp.evaluate import tune_category

    items = [("crop", "other", np.asarray(image))]
    plain = tune_category(items, "other", {"psnr": 31.0}, write=False)
    refined = tune_category(items, "other", {"psnr": 31.0}, write=False, refine=20)
    assert plain["reached"] and refined["reached"] and refined["psnr"] >= 31.0
    assert refined["bpp"] < plain["bpp"]  # refinement buys PSNR, so the goal comes at a lower rate
    with pytest.raises(ValueError, match="plain encoder"):
        tune_category(items, "other", {"psnr": 31.0}, refine=20)
