"""The Ray engine: a local Ray instance compresses a mixed folder with a corrupt
file; outputs are byte-identical to the local engine's, the failure is
reported, the exit code is 1, and a rerun skips the finished files."""

import json

import pytest
import ray
from click.testing import CliRunner
from PIL import Image

from catcomp.cli import main

from .conftest import photo

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray(tiny_models):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATCOMP_MODELS", str(tiny_models))  # the workers are handed the driver's model folder
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield
        ray.shutdown()


def _folder(root):
    (root / "a" / "b").mkdir(parents=True)
    for i, rel in enumerate(["1.png", "a/2.jpg", "a/b/3.png", "a/b/4.webp"]):
        Image.fromarray(photo(96 + 16 * i, 64 + 8 * i, seed=i)).save(root / rel)
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return root


def test_ray_engine_matches_local_engine(tmp_path, local_ray):
    src = _folder(tmp_path / "in")
    run = CliRunner().invoke
    local = run(main, ["compress", str(src), "-o", str(tmp_path / "local"), "--report", str(tmp_path / "local.json")])
    remote = run(main, ["compress", str(src), "-o", str(tmp_path / "ray"), "--engine", "ray", "--num-workers", "2", "--report", str(tmp_path / "ray.json")])
    assert local.exit_code == remote.exit_code == 1, remote.output
    assert "corrupt.jpg" in remote.output and "4/5 files ok, 1 failed" in remote.output
    outs = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.ccz"))
    assert len(outs) == 4 and outs == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.ccz"))
    assert all((tmp_path / "local" / p).read_bytes() == (tmp_path / "ray" / p).read_bytes() for p in outs)
    rows = {(r["path"], r["ok"], r["out_bytes"], r["category"]) for r in json.loads((tmp_path / "ray.json").read_text())}
    assert rows == {(r["path"], r["ok"], r["out_bytes"], r["category"]) for r in json.loads((tmp_path / "local.json").read_text())}

    again = run(main, ["compress", str(src), "-o", str(tmp_path / "ray"), "--engine", "ray", "--report", str(tmp_path / "again.json")])
    assert again.exit_code == 1 and "(4 already done)" in again.output
    assert sum(r["skipped"] for r in json.loads((tmp_path / "again.json").read_text())) == 4


def test_ray_engine_reads_filesystem_uris(tmp_path, local_ray):
    src = _folder(tmp_path / "in")
    r = CliRunner().invoke(main, ["compress", f"file://{src}", "-o", str(tmp_path / "out"), "--engine", "ray", "--category", "flower"])
    assert r.exit_code == 1 and "corrupt.jpg" in r.output
    assert len(list((tmp_path / "out").rglob("*.ccz"))) == 4
    r = CliRunner().invoke(main, ["compress", f"file://{tmp_path}/missing", "-o", str(tmp_path / "o2"), "--engine", "ray"])
    assert r.exit_code == 1 and "no such file or folder" in r.output
