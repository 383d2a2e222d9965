"""Evaluation layer: per-image rows from real file bytes, curves and BD tables,
tuning to the lowest level meeting a target on val, and the comparison table."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import catcomp
from catcomp.cli import main
from catcomp.evaluate import bd_table, curves, evaluate, summary_stat
from catcomp.metrics import psnr, rate_at_quality

from .conftest import photo

STEP = 0.05


def _tree(root, category="flower", n=3, size=(176, 168)):
    for split in ("val", "test"):
        d = root / category / split
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(photo(*size, seed=100 * (split == "test") + i)).save(d / f"{i}.png")
    return root


def _mean_psnr(files, level):
    out = []
    for f in files:
        im = Image.open(f)
        out.append(psnr(np.asarray(im), np.asarray(catcomp.decompress(catcomp.compress(im, "flower", level=level)))))
    return float(np.mean(out))


def test_rate_at_quality_and_bd_table_known_answers():
    assert rate_at_quality([0.25, 1.0], [30.0, 34.0], 32.0) == pytest.approx(0.5)
    assert np.isnan(rate_at_quality([0.25, 1.0], [30.0, 34.0], 35.0))
    pts = [{"bpp": r, "psnr": q} for r, q in ((0.25, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.0))]
    cheaper = [{**p, "bpp": p["bpp"] * 0.8} for p in pts]
    t = bd_table({"a": pts, "b": cheaper}, keys=("psnr", "ms_ssim"))
    assert t["psnr"]["b"]["a"] == pytest.approx(-20.0) and t["psnr"]["a"]["b"] == pytest.approx(25.0)
    assert np.isnan(t["ms_ssim"]["b"]["a"])  # no MS-SSIM in these curves


def test_summary_statistics():
    per = [{"psnr": 30.0}, {"psnr": 31.0}, {"psnr": 35.0}, {"psnr": 36.0}]
    assert summary_stat(per, {"psnr": 33.0}, "mean")[0]
    assert not summary_stat(per, {"psnr": 33.0}, "p75")[0] and summary_stat(per, {"psnr": 33.0}, "p50")[0]
    assert summary_stat(per, {"psnr": 33.0}, "mean")[1]["share_meeting"] == 0.5
    with pytest.raises(catcomp.CatcompError, match="bad statistic"):
        summary_stat(per, {"psnr": 33.0}, "median")


def test_evaluate_rows_are_real_file_bytes(tmp_path):
    ims = [photo(176, 168, seed=s) for s in range(2)] + [photo(64, 48, seed=9)]
    items = [(f"im{i}", cat, a) for i, (a, cat) in enumerate(zip(ims, ("flower", "anime", "flower")))]
    rep = evaluate(items, ("catcomp", "general", "jpeg"), levels=(1.0, 3.0), out_dir=tmp_path)
    rows = list(__import__("csv").DictReader(open(tmp_path / "evaluate.csv")))
    assert len(rows) == 3 * (2 + 2 + len(catcomp.baselines.BASELINES["jpeg"][2]))
    r = next(r for r in rows if r["image"] == "im1" and r["codec"] == "catcomp" and float(r["setting"]) == 3.0)
    data = catcomp.compress(Image.fromarray(ims[1]), "anime", level=3.0)
    assert int(r["bytes"]) == len(data) and float(r["bpp"]) == pytest.approx(8 * len(data) / (176 * 168))
    assert float(r["psnr"]) == pytest.approx(psnr(ims[1], np.asarray(catcomp.decompress(data))))
    assert r["ms_ssim"] and not next(x for x in rows if x["image"] == "im2")["ms_ssim"]  # too small for MS-SSIM
    assert set(rep["groups"]) == {"all", "flower", "anime"} and rep["groups"]["flower"]["images"] == 2
    assert rep["groups"]["all"]["bd_rate_pct"]["psnr"]["catcomp"].keys() == {"general", "jpeg"}
    assert json.loads((tmp_path / "evaluate.json").read_text())["images"] == 3
    assert all((tmp_path / f"rd_{g}.{e}").stat().st_size > 1000 for g in ("all", "flower") for e in ("png", "svg"))
    assert curves([]) == {}


def test_evaluate_cli_with_a_bad_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(80, 64)).save(src / "a.png")
    (src / "bad.png").write_text("not an image")
    r = CliRunner().invoke(main, ["evaluate", str(src), "--category", "flower", "--codecs", "catcomp,webp", "--levels", "2", "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "bad.png" in r.output and "BD-rate" in r.output
    assert json.loads((tmp_path / "o" / "evaluate.json").read_text())["images"] == 1
    r = CliRunner().invoke(main, ["evaluate", str(src), "--codecs", "catcomp,gif", "-o", str(tmp_path / "o2")])
    assert r.exit_code != 0 and "unknown codec" in str(r.output) + str(r.exception)


def test_tune_picks_the_lowest_level_meeting_the_target(tmp_path, tiny_models, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    monkeypatch.setenv("CATCOMP_MODELS", str(models))
    data = _tree(tmp_path / "data")
    val = sorted((data / "flower" / "val").glob("*.png"))
    goal = _mean_psnr(val, 5.0)  # reachable at the top level by construction
    r = CliRunner().invoke(main, ["tune", "flower", "--data", str(data), "--target", f"psnr={goal}"])
    assert r.exit_code == 0, r.output
    card = json.loads((models / "general" / "card.json").read_text())
    level = card["tuned_levels"]["flower"]
    assert card["tuning"]["flower"]["target"] == {"psnr": goal} and card["tuning"]["flower"]["split"] == "val"
    assert _mean_psnr(val, level) >= goal
    assert level == 0 or _mean_psnr(val, round(level - STEP, 2)) < goal
    assert card["tuned_level"] == 2.0  # other categories keep the model's default
    assert catcomp.info(catcomp.compress(Image.open(val[0]), "flower"))["level"] == level  # used by default
    assert catcomp.info(catcomp.compress(Image.open(val[0]), "anime"))["level"] == 2.0

    r = CliRunner().invoke(main, ["compare", "flower", "--data", str(data), "-o", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "cmp" / "compare.json").read_text())["results"][0]
    test_files = sorted((data / "flower" / "test").glob("*.png"))
    sizes = [len(catcomp.compress(Image.open(f), "flower")) for f in test_files]
    assert res["tuned_level"] == level and res["images"] == 3
    assert res["bpp"] == pytest.approx(np.mean([8 * s / (176 * 168) for s in sizes]))
    assert res["pct_of_raw"] == pytest.approx(100 * sum(sizes) / (3 * 176 * 168 * 3))
    assert res["psnr"] == pytest.approx(_mean_psnr(test_files, level))
    assert res["target"]["met_on_test"] == (res["psnr"] >= goal)
    for b in ("jpeg", "webp", "avif"):  # NaN only when catcomp's PSNR is outside the baseline's curve
        qs = [p["psnr"] for p in res["baseline_curves"][b]]
        assert np.isnan(res[f"{b}_bpp"]) == (not min(qs) <= res["psnr"] <= max(qs))
    assert "flower" in r.output and (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert res["checksum"] == card["checksum"] and "warning" not in r.output

    # --update measures only the named category and keeps the other rows, each naming
    # its model, so a row measured with another model is flagged as stale.
    _tree(data, "anime", n=2)
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    report["results"][0]["checksum"] = "0" * 16
    (tmp_path / "cmp" / "compare.json").write_text(json.dumps(report))
    r = CliRunner().invoke(main, ["compare", "anime", "--data", str(data), "-o", str(tmp_path / "cmp"), "--update"])
    assert r.exit_code == 0, r.output
    updated = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [x["category"] for x in updated["results"]] == ["flower", "anime"] and updated["measured_now"] == ["anime"]
    assert updated["results"][0] == report["results"][0] and updated["results"][1]["checksum"] == card["checksum"]
    assert "the flower row was measured with another model" in r.output and "anime row" not in r.output
    r = CliRunner().invoke(main, ["compare", "anime", "--data", str(data), "-o", str(tmp_path / "cmp"), "--update", "--split", "val"])
    assert r.exit_code != 0 and "not val" in r.output

    before = (models / "general" / "card.json").read_text()
    r = CliRunner().invoke(main, ["tune", "flower", "--data", str(data), "--target", "psnr=99"])
    assert r.exit_code == 1 and "NOT reached" in r.output
    assert (models / "general" / "card.json").read_text() == before
