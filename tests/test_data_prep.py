"""data_prep: every source into per-category/split HDF5, deterministic and safe."""

import hashlib
import pickle

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from catcomp.cli import main
from data_prep.extract import Options, extract
from data_prep.patches import downscale
from data_prep.pipeline import hdf5_dataset
from data_prep.stats import stats

from .conftest import photo


def _write(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)


@pytest.fixture
def tree(tmp_path):
    """airplane/ with explicit splits and nested dirs, flower/ without splits, bad files."""
    root = tmp_path / "tree"
    for i in range(6):
        _write(root / "airplane" / "train" / "deep" / f"a{i}.png", photo(300, 260, seed=i))
    _write(root / "airplane" / "val" / "v.jpg", photo(300, 260, seed=50), "JPEG")
    _write(root / "airplane" / "test" / "t.webp", photo(300, 260, seed=51), "WEBP")
    for i in range(10):
        _write(root / "flower" / f"f{i}.bmp", photo(280, 270, seed=100 + i), "BMP")
    _write(root / "flower" / "tiny.png", photo(40, 30))
    (root / "flower" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    (root / "flower" / "empty.jpg").write_bytes(b"")
    (root / "notacategory").mkdir()
    _write(root / "notacategory" / "x.png", photo(300, 300))
    return root


def _h5(out, name):
    with h5py.File(out / name, "r") as f:
        return f["images"][...], [s.decode() for s in f["source"][...]], f["box"][...]


def test_folder_tree_counts_shapes_and_bad_files(tree, tmp_path):
    out = tmp_path / "h5"
    s = extract([tree], out, Options(patch=128, per_image=4), progress=False)
    imgs, sources, boxes = _h5(out, "airplane_train.h5")
    assert imgs.dtype == np.uint8 and imgs.shape[1:] == (128, 128, 3)
    assert imgs.shape[0] == len(sources) == len(boxes) == 6 * 4
    assert all("/airplane/train/" in src for src in sources)
    assert np.array_equal(imgs[0], np.asarray(Image.open(sources[0]).convert("RGB"))[boxes[0][1] : boxes[0][3], boxes[0][0] : boxes[0][2]])
    assert {p.name for p in out.glob("*.h5")} >= {"airplane_val.h5", "airplane_test.h5"}
    assert not list(out.glob("notacategory*"))
    t = s.table()
    flower = {k: v for k, v in t.items() if k.startswith("flower/")}
    assert sum(v.get("bad_files", 0) for v in flower.values()) == 2
    assert sum(v.get("too_small", 0) for v in flower.values()) == 1
    assert sum(v.get("images", 0) for v in flower.values()) == 11  # 10 good + tiny
    assert any("broken.png" in b for b in s.bad) and any("empty.jpg" in b for b in s.bad)


def test_splits_are_by_source_image_never_mixed(tree, tmp_path):
    out = tmp_path / "h5"
    extract([tree], out, Options(patch=64, per_image=8), progress=False)
    seen = {}
    for f in out.glob("*.h5"):
        for src in set(_h5(out, f.name)[1]):
            assert seen.setdefault(src, f.name) == f.name  # each source in exactly one file


def test_same_input_same_seed_gives_identical_bytes(tree, tmp_path):
    digests = []
    for run in ("a", "b"):
        extract([tree], tmp_path / run, Options(patch=64, mode="random", per_image=3, seed=7), progress=False)
        digests.append({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in (tmp_path / run).glob("*.h5")})
    assert digests[0] == digests[1] and digests[0]
    extract([tree], tmp_path / "c", Options(patch=64, mode="random", per_image=3, seed=8), progress=False)
    assert hashlib.sha256((tmp_path / "c" / "airplane_train.h5").read_bytes()).hexdigest() != digests[0]["airplane_train.h5"]


def _cifar10(folder, n=20):
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    for name in ("data_batch_1", "test_batch"):
        labels = [i % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels}, f)


def test_cifar10_batches_map_classes_and_keep_the_test_split(tmp_path):
    _cifar10(tmp_path / "c10")
    out = tmp_path / "h5"
    extract([tmp_path / "c10"], out, Options(patch=32, dedup_bits=-1, min_std=0), progress=False)
    n_test = _h5(out, "airplane_test.h5")[0].shape[0]
    n_train = sum(_h5(out, f"airplane_{s}.h5")[0].shape[0] for s in ("train", "val") if (out / f"airplane_{s}.h5").exists())
    assert n_test == 2 and n_train == 2  # labels 0 appear at indices 0 and 10 of each batch
    assert (out / "automobile_test.h5").exists() and not list(out.glob("other_*"))
    imgs = _h5(out, "airplane_test.h5")[0]
    assert imgs.shape == (2, 32, 32, 3)
    extract([tmp_path / "c10"], tmp_path / "h5b", Options(patch=32, dedup_bits=-1, min_std=0, unmapped="other"), progress=False)
    assert (tmp_path / "h5b" / "other_test.h5").exists()


def test_cifar100_flowers_superclass(tmp_path):
    folder = tmp_path / "c100"
    folder.mkdir()
    coarse = [b"aquatic_mammals", b"fish", b"flowers"]
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"coarse_label_names": coarse, b"fine_label_names": []}, f)
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.full((3, 3072), 128, np.uint8) + np.arange(3)[:, None].astype(np.uint8), b"coarse_labels": [0, 2, 1]}, f)
    extract([folder], tmp_path / "h5", Options(patch=32, dedup_bits=-1, min_std=0), progress=False)
    assert _h5(tmp_path / "h5", "flower_test.h5")[0].shape[0] == 1


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(Evil(), f)
    s = extract([folder], tmp_path / "h5", Options(patch=32), progress=False)
    assert s.bad and "refusing" in s.bad[0]


def test_npz_pack_in_a_category_folder(tmp_path):
    root = tmp_path / "tree"
    (root / "anime").mkdir(parents=True)
    np.savez(root / "anime" / "pack.npz", images=np.stack([photo(64, 64, seed=i) for i in range(30)]))
    np.savez(root / "anime" / "bad.npz", images=np.zeros((3, 8, 8), np.uint8))
    s = extract([root], tmp_path / "h5", Options(patch=64, dedup_bits=-1), progress=False)
    total = sum(_h5(tmp_path / "h5", f.name)[0].shape[0] for f in (tmp_path / "h5").glob("anime_*.h5"))
    assert total == 30
    assert any("bad.npz" in b and "N x H x W x 3" in b for b in s.bad)


def test_flat_and_duplicate_patches_are_skipped(tmp_path):
    root = tmp_path / "tree"
    _write(root / "astronomy" / "train" / "black.png", np.zeros((128, 128, 3), np.uint8))
    _write(root / "astronomy" / "train" / "a.png", photo(128, 128, seed=3))
    _write(root / "astronomy" / "train" / "a_copy.png", photo(128, 128, seed=3))
    s = extract([root], tmp_path / "h5", Options(patch=128), progress=False)
    row = s.table()["astronomy/train"]
    assert (row["patches"], row["flat"], row["duplicates"]) == (1, 1, 1)


def test_downscale_never_enlarges_and_hits_the_long_side():
    img = photo(1000, 600)
    small, scale = downscale(img, long_side=500)
    assert small.shape == (300, 500, 3) and scale == pytest.approx(0.5)
    same, scale = downscale(photo(100, 80), long_side=500)
    assert same.shape == (80, 100, 3) and scale == 1.0
    quarter, _ = downscale(img, factor=4)
    assert quarter.shape == (150, 250, 3)


def test_cli_extract_downscale_stats(tree, tmp_path):
    r = CliRunner().invoke(main, ["data", "downscale", str(tree), "-o", str(tmp_path / "ds"), "--long-side", "150", "--patch", "128"])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "ds" / "airplane_train.h5") as f:
        assert f["images"].shape[0] == 6 and float(f["scale"][0]) == pytest.approx(150 / 300)
    r = CliRunner().invoke(main, ["data", "downscale", str(tree), "-o", str(tmp_path / "png"), "--images", "--long-side", "100"])
    assert r.exit_code == 0 and max(Image.open(tmp_path / "png" / "airplane" / "val" / "v.png").size) == 100
    r = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "ds"), "--json"])
    assert r.exit_code == 0
    import json

    st = json.loads(r.output)["categories"]
    assert st["airplane"]["count"] > 0 and 0 <= st["flower"]["edge_density"] <= 1


def test_stats_dark_fraction_and_edges(tmp_path):
    root = tmp_path / "tree"
    _write(root / "astronomy" / "s.png", np.zeros((64, 64, 3), np.uint8))
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, (np.arange(64) // 2) % 2 == 0] = 255
    _write(root / "anime" / "e.png", stripes)
    st = stats(root)["categories"]
    assert st["astronomy"]["dark_fraction"] == 1.0 and st["astronomy"]["edge_density"] == 0.0
    assert st["anime"]["edge_density"] > 0.5


def test_pipeline_gives_random_float_crops(tree, tmp_path):
    extract([tree], tmp_path / "h5", Options(patch=128), progress=False)
    batch = next(iter(hdf5_dataset(tmp_path / "h5", crop=64, batch=4)))
    assert batch.shape == (4, 64, 64, 3) and batch.dtype.name == "float32"
    assert 0.0 <= float(batch.numpy().min()) and float(batch.numpy().max()) <= 1.0
