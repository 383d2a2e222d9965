"""The router: threshold calibration, evaluation, a tiny trained router used by
`catcomp route` and by folder compression, and a tampered router refused."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from catcomp.categories import CATEGORIES
from catcomp.cli import main
from catcomp.errors import ModelError
from catcomp.router import Router, calibrate_threshold, evaluate, load_router, thumbnail, train_router

from .conftest import photo

OTHER = CATEGORIES.index("other")


def test_calibrated_threshold_sends_unsure_predictions_to_other():
    probs = np.array([[0.9, 0.1, 0, 0, 0, 0], [0.4, 0.35, 0, 0, 0, 0.25], [0.1, 0.8, 0, 0, 0, 0.1], [0.45, 0.3, 0, 0, 0, 0.25]])
    labels = np.array([0, OTHER, 1, OTHER])
    t = calibrate_threshold(probs, labels)
    assert 0.45 < t <= 0.8  # both unsure rows become `other`, the sure ones stay
    r = Router(None, {"classes": CATEGORIES, "threshold": t, "size": 8})
    assert [x.category for x in r.decide(probs)] == ["airplane", "other", "automobile", "other"]
    assert r.decide(probs)[1].predicted == "airplane"


def test_evaluate_counts_a_confusion_matrix():
    r = Router(None, {"classes": CATEGORIES, "threshold": 0.5, "size": 8})
    r.probabilities = lambda x: np.eye(6)[[0, 1, 1, 5]]
    res = evaluate(r, np.zeros((4, 8, 8, 3)), np.array([0, 1, 2, 5]))
    cm = np.array(res["confusion_matrix"])
    assert res["accuracy"] == 0.75 and cm[2, 1] == 1 and cm.sum() == 4
    assert res["per_class"]["automobile"] == {"precision": 0.5, "recall": 1.0, "support": 1}


def test_thumbnail_of_any_mode_is_rgb_at_size():
    for mode in ("L", "RGBA", "P", "CMYK"):
        t = thumbnail(Image.fromarray(photo(300, 120)).convert(mode), 32)
        assert t.shape == (32, 32, 3) and t.dtype == np.uint8


@pytest.fixture(scope="module")
def tiny_router(tmp_path_factory):
    """A router trained for a few epochs on six visually distinct synthetic classes."""
    root = tmp_path_factory.mktemp("routerdata")
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40), (10, 10, 10), (128, 128, 128)]
    for k, c in enumerate(CATEGORIES):
        for split, n in (("train", 12), ("val", 4), ("test", 4)):
            d = root / c / split
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colours[k]) + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    out = tmp_path_factory.mktemp("models") / "router"
    card = train_router(root, out, epochs=25, size=32, batch=16, width=8, label_smoothing=0.05, mixup=0.2, log=lambda *a: None)
    return out, card, root


def test_tiny_router_learns_and_its_card_reports_test(tiny_router):
    _, card, _ = tiny_router
    assert card["training"]["split_sizes"] == {"train": 72, "val": 24, "test": 24}
    assert card["test"]["images"] == 24 and np.array(card["test"]["confusion_matrix"]).sum() == 24
    assert card["val"]["accuracy"] >= 0.8  # far above the 1/6 of chance, with MixUp and label smoothing on
    assert (card["training"]["mixup"], card["training"]["label_smoothing"]) == (0.2, 0.05)


def test_refit_router_trains_on_val_and_keeps_the_given_threshold(tiny_router, tmp_path):
    _, _, data = tiny_router
    card = train_router(data, tmp_path / "router", epochs=10, size=32, batch=16, width=8, refit_threshold=0.3, log=lambda *a: None)
    assert card["training"]["fit_splits"] == ["train", "val"] and card["training"]["best_epoch"] == 10
    assert card["threshold"] == 0.3 and card["val"] is None  # val was trained on, so it is not reported
    assert card["test"]["images"] == 24 and card["test"]["accuracy"] >= 0.8
    assert load_router(tmp_path / "router").threshold == 0.3


@pytest.fixture
def installed_router(tiny_router, tiny_models, tmp_path, monkeypatch):
    """A models/ folder (in use) with the tiny general model and the tiny router; its path and the router's data."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    shutil.copytree(tiny_router[0], models / "router")
    monkeypatch.setenv("CATCOMP_MODELS", str(models))
    return models, tiny_router[2]


def test_route_command_and_routed_compression(installed_router, tmp_path):
    models, data = installed_router
    files = [data / "flower" / "test" / "0.png", data / "anime" / "test" / "1.png"]
    r = CliRunner().invoke(main, ["route", "--json", *map(str, files)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["path"] for row in rows] == [str(f) for f in files]
    assert all({"category", "confidence", "predicted"} <= set(row) and 0 <= row["confidence"] <= 1 for row in rows)
    r = CliRunner().invoke(main, ["compress", str(files[0]), "-o", str(tmp_path / "c"), "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "r.json").read_text())[0]
    assert row["category"] == rows[0]["category"] and row["confidence"] == rows[0]["confidence"]

    (models / "router" / "router.weights.h5").write_bytes(b"tampered")
    r = CliRunner().invoke(main, ["route", str(files[0])])
    assert r.exit_code == 1 and "router.weights.h5" in r.output and "SHA-256" in r.output
    with pytest.raises(ModelError, match="router.weights.h5"):
        load_router()


def test_codec_head_mixes_with_the_cnn_and_is_tied_to_the_general_model(installed_router):
    from catcomp.router import train_codec_head
    from catcomp.zoo import load_model

    models, data = installed_router
    cnn_only = load_router()
    card = train_codec_head(data, models / "router", views=(16, 32), epochs=30, log=lambda *a: None)
    head = dict(card["codec_head"])
    assert head["model_weights_sha256"] == load_model("general").card["files"]["model.weights.h5"] and head["features"] == 2 * 2 * (3 * 8 + 8)  # two views, |mean| and std of 3 GDN taps and the latent
    assert set(card["files"]) == {"router.weights.h5", "codec_head.weights.h5"}
    assert card["test"]["accuracy"] >= 0.8 and set(card["cnn_only"]) == {"val", "test"}

    router = load_router()
    assert router.head is not None and router.sizes == (32, 16) and router is not cnn_only
    images = [Image.open(data / c / "test" / "0.png") for c in CATEGORIES]
    views = router.views(images)
    mixed = router.probabilities(views)
    assert np.allclose(mixed, 0.5 * cnn_only.probabilities(views[32]) + 0.5 * router.head_probabilities(views), atol=1e-5)
    assert np.allclose(mixed.sum(1), 1, atol=1e-4)
    assert [r.category for r in router.route(images)] == [r.category for r in router.decide(mixed)]

    # a head trained on another general model is not used: the CNN routes alone, with its own threshold
    card["codec_head"]["model_weights_sha256"] = "0" * 64
    (models / "router" / "card.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="codec head was trained on general model weights 0000"):
        stale = load_router()
    assert stale.head is None and stale.threshold == head["cnn_threshold"]
    assert np.allclose(stale.probabilities(views[32]), cnn_only.probabilities(views[32]))

    card["codec_head"]["model_weights_sha256"] = head["model_weights_sha256"]
    (models / "router" / "card.json").write_text(json.dumps(card))
    (models / "router" / "codec_head.weights.h5").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="codec_head.weights.h5"):
        load_router()
