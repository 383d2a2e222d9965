"""Folder jobs: mirrored trees, bad files listed and skipped, nothing overwritten,
interrupted runs resumed without redoing finished files, symlinks kept inside."""

import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from catcomp.cli import main

from .conftest import photo


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    good = {
        "top.png": photo(48, 40, seed=1),
        "a/photo.jpg": photo(64, 48, seed=2),
        "a/b/deep.webp": photo(33, 17, seed=3),
    }
    for rel, arr in good.items():
        Image.fromarray(arr).save(root / rel, quality=95)
    jpg = (root / "a" / "photo.jpg").read_bytes()
    (root / "a" / "corrupt.jpg").write_bytes(jpg[: len(jpg) // 3])
    (root / "a" / "b" / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("this is not a picture")
    (root / "notes.txt").write_text("not an image suffix, not picked up")
    return root, good


def test_mixed_tree_is_mirrored_bad_files_listed(tmp_path, mixed):
    root, good = mixed
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "corrupt.jpg.ccz").write_bytes(b"someone else's file")
    r = run("compress", root, "-o", out, "--level", "1", "--report", tmp_path / "report.csv")
    assert r.exit_code == 1
    for bad in ("corrupt.jpg", "empty.png", "text.png"):
        assert bad in r.output
    assert "notes.txt" not in r.output
    assert (out / "a" / "corrupt.jpg.ccz").read_bytes() == b"someone else's file"  # not overwritten
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*.ccz"))
    assert made == sorted([rel + ".ccz" for rel in good] + ["a/corrupt.jpg.ccz"])
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert len(rows) == 6 and sum(row["ok"] == "True" for row in rows) == 3
    assert {row["category"] for row in rows if row["ok"] == "True"} == {"other"}
    assert all(float(row["bpp"]) > 0 for row in rows if row["ok"] == "True")

    back = tmp_path / "back"
    r = run("decompress", out, "-o", back)
    assert r.exit_code == 1 and "corrupt.jpg.ccz" in r.output  # the foreign file is not a .ccz
    for rel, arr in good.items():
        img = np.asarray(Image.open(back / (rel if rel.endswith(".png") else rel + ".png")).convert("RGB"))
        assert img.shape == arr.shape


def test_resume_after_interrupted_run_redoes_nothing_finished(tmp_path, mixed):
    root, good = mixed
    for bad in ("a/corrupt.jpg", "a/b/empty.png", "text.png"):
        os.remove(root / bad)
    out = tmp_path / "out"
    assert run("compress", root, "-o", out).exit_code == 0
    # A killed run: one output never written, one only as a temporary file.
    (out / "top.png.ccz").unlink()
    (out / "a" / "b" / ".deep.webp.ccz.tmp123.part").write_bytes(b"partial")
    (out / "a" / "b" / "deep.webp.ccz").unlink()
    kept = (out / "a" / "photo.jpg.ccz").stat().st_mtime_ns
    r = run("compress", root, "-o", out, "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    rows = {row["path"]: row for row in json.loads((tmp_path / "r.json").read_text())}
    assert rows[str(root / "a" / "photo.jpg")]["skipped"] is True
    assert rows[str(root / "top.png")]["skipped"] is False and rows[str(root / "top.png")]["ok"] is True
    assert (out / "a" / "photo.jpg.ccz").stat().st_mtime_ns == kept
    assert (out / "a" / "b" / "deep.webp.ccz").read_bytes()[:4] == b"\x89CCZ"


def test_truncated_existing_output_is_not_taken_as_done(tmp_path, mixed):
    root, _ = mixed
    out = tmp_path / "out"
    run("compress", root / "top.png", "-o", out)
    data = (out / "top.png.ccz").read_bytes()
    (out / "top.png.ccz").write_bytes(data[:-5])
    r = run("compress", root / "top.png", "-o", out)
    assert r.exit_code == 1 and "not a complete output" in r.output
    assert run("compress", root / "top.png", "-o", out, "--overwrite").exit_code == 0
    assert (out / "top.png.ccz").read_bytes() == data


def test_symlinks_leaving_the_tree_are_not_followed(tmp_path, mixed):
    root, _ = mixed
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.fromarray(photo(32, 32)).save(secret / "private.png")
    os.symlink(secret, root / "link_out")
    os.symlink(secret / "private.png", root / "file_out.png")
    os.symlink(root / "top.png", root / "inside.png")
    out = tmp_path / "out"
    r = run("compress", root, "-o", out)
    assert "file_out.png" in r.output and "leaves the input folder" in r.output
    assert not (out / "link_out").exists() and not (out / "file_out.png.ccz").exists()
    assert (out / "inside.png.ccz").is_file()
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_parallel_workers_give_the_same_bytes(tmp_path, mixed):
    root, _ = mixed
    run("compress", root, "-o", tmp_path / "one", "-j", "1")
    run("compress", root, "-o", tmp_path / "two", "-j", "2")
    a = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*.ccz")}
    b = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*.ccz")}
    assert a == b and len(a) == 3


def test_filesystem_uri_inputs_match_local_paths(tmp_path, mixed):
    root, good = mixed
    r_local = run("compress", root, "-o", tmp_path / "local")
    r_uri = run("compress", f"file://{root}", "-o", tmp_path / "uri")
    assert r_local.exit_code == r_uri.exit_code == 1 and "corrupt.jpg" in r_uri.output
    outs = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.ccz"))
    assert len(outs) == len(good)
    assert outs == sorted(p.relative_to(tmp_path / "uri") for p in (tmp_path / "uri").rglob("*.ccz"))
    assert all((tmp_path / "local" / p).read_bytes() == (tmp_path / "uri" / p).read_bytes() for p in outs)
    r = run("compress", f"file://{tmp_path}/nowhere", "-o", tmp_path / "o2")
    assert r.exit_code == 1 and "no such file or folder" in r.output
