"""The command line: thin over the API, safe with files, exit 1 on any failure."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from catcomp.cli import main

from .conftest import photo


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, size in enumerate([(64, 48), (17, 33)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(photo(*size, seed=i)).save(p)
        paths.append(p)
    return paths


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_compress_decompress_info(tmp_path, images):
    r = run("compress", *images, "-o", tmp_path / "c", "--level", "2")
    assert r.exit_code == 0, r.output
    cczs = sorted((tmp_path / "c").glob("*.ccz"))
    assert [p.name for p in cczs] == ["img0.png.ccz", "img1.png.ccz"]
    r = run("decompress", *cczs, "-o", tmp_path / "d")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "d" / "img1.png").size == (17, 33)
    r = run("info", cczs[0], "--json")
    h = json.loads(r.output)
    assert h["width"] == 64 and h["level"] == 2.0 and h["bytes"] == cczs[0].stat().st_size


def test_single_output_file(tmp_path, images):
    r = run("compress", images[0], "-o", tmp_path / "one.ccz")
    assert r.exit_code == 0 and (tmp_path / "one.ccz").is_file()
    r = run("decompress", tmp_path / "one.ccz", "-o", tmp_path / "one.png")
    assert r.exit_code == 0 and Image.open(tmp_path / "one.png").size == (64, 48)


def test_existing_output_is_not_overwritten_without_flag(tmp_path, images):
    out = tmp_path / "o.ccz"
    out.write_bytes(b"precious")
    r = run("compress", images[0], "-o", out)
    assert r.exit_code == 1 and "exists" in r.output
    assert out.read_bytes() == b"precious"
    assert run("compress", images[0], "-o", out, "--overwrite").exit_code == 0
    assert out.read_bytes()[:4] == b"\x89CCZ"


def test_input_is_never_overwritten(tmp_path, images):
    r = run("decompress", images[0], "-o", images[0], "--overwrite")
    assert r.exit_code == 1
    assert Image.open(images[0]).size == (64, 48)


def test_bad_file_is_reported_others_still_done(tmp_path, images):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = run("compress", images[0], bad, images[1], "-o", tmp_path / "c")
    assert r.exit_code == 1
    assert "bad.png" in r.output and "not an image" in r.output
    assert len(list((tmp_path / "c").glob("*.ccz"))) == 2
    assert not list((tmp_path / "c").glob(".*"))  # no temporary files left behind


def test_corrupt_ccz_gives_message_not_traceback(tmp_path, images):
    run("compress", images[0], "-o", tmp_path / "x.ccz")
    data = (tmp_path / "x.ccz").read_bytes()
    (tmp_path / "x.ccz").write_bytes(data[:-10])
    r = run("decompress", tmp_path / "x.ccz", "-o", tmp_path / "x.png")
    assert r.exit_code == 1 and "truncated" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.png").exists()
    r = run("info", tmp_path / "x.ccz")
    assert r.exit_code == 1 and "truncated" in r.output


def test_demo_runs_on_bundled_photos(tmp_path):
    r = run("demo", "-o", tmp_path / "demo")
    assert r.exit_code == 0, r.output
    assert "hubble_deep_field.jpg" in r.output
    assert len(list((tmp_path / "demo" / "restored").glob("*.png"))) == len(list((tmp_path / "demo" / "samples").iterdir()))
