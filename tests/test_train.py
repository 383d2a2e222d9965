"""Training: a tiny model trains (RD then GAN) on generated data, its losses fall,
resume continues exactly, the saved model round-trips through .ccz, and the
tf.distribute path runs on two logical CPU devices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import catcomp
from catcomp.train import train
from catcomp.transforms import ModelConfig

from .conftest import photo

TINY = ModelConfig(N=8, M=8, density_filters=(3, 3), disc_channels=(8, 8), disc_latent_channels=2)


def _folder(root, n=4, size=(80, 72)):
    for i in range(n):
        d = root / ("flower" if i % 2 else "anime") / "train"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(*size, seed=i)).save(d / f"{i}.png")
    return root


def _mean_losses(trainer, x, n=8):
    import keras

    keras.utils.set_random_seed(7)  # the same random levels before and after
    return np.mean([float(trainer.losses_of(x, training=False)[0]) for _ in range(n)])


def test_rd_and_gan_losses_fall():
    import keras

    from catcomp.train import Trainer
    from catcomp.transforms import CompressionModel, build_discriminator

    keras.utils.set_random_seed(3)
    x = np.stack([photo(32, 32, seed=s) for s in range(4)]).astype("float32") / 255.0
    model = CompressionModel(TINY)
    rd = Trainer(model)
    rd.compile(keras.optimizers.Adam(3e-3))
    before = _mean_losses(rd, x)
    rd.fit(x, batch_size=4, epochs=60, verbose=0)
    after = _mean_losses(rd, x)
    assert after < 0.7 * before, (before, after)

    disc = build_discriminator(TINY)
    gan = Trainer(model, disc, beta=0.01)
    gan.compile(keras.optimizers.Adam(1e-4), d_optimizer=keras.optimizers.Adam(1e-3))
    d_before = [w.copy() for w in disc.get_weights()]
    hist = gan.fit(x, batch_size=4, epochs=40, verbose=0).history
    assert {"adv", "d_loss", "bpp", "psnr"} <= set(hist)
    assert all(np.isfinite(hist["loss"])) and hist["d_loss"][-1] < hist["d_loss"][0]  # D learns to tell them apart
    assert any(not np.allclose(a, b) for a, b in zip(d_before, disc.get_weights()))
    assert _mean_losses(gan, x) < 0.7 * before  # the adversarial phase keeps the RD quality


def test_discriminator_warmup_trains_the_discriminator_alone():
    import keras

    from catcomp.train import Trainer
    from catcomp.transforms import CompressionModel, build_discriminator

    keras.utils.set_random_seed(5)
    x = np.stack([photo(32, 32, seed=s) for s in range(4)]).astype("float32") / 255.0
    model, disc = CompressionModel(TINY), build_discriminator(TINY)
    with pytest.raises(ValueError, match="beta > 0"):
        Trainer(model, disc, beta=0.0, d_only=True)
    warm = Trainer(model, disc, beta=0.01, d_only=True)
    warm.compile(keras.optimizers.Adam(1e-3, beta_1=0.5))
    m_before, d_before = [w.copy() for w in model.get_weights()], [w.copy() for w in disc.get_weights()]
    hist = warm.fit(x, batch_size=4, epochs=30, verbose=0).history
    for a, b in zip(m_before, model.get_weights()):  # the model is frozen
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(d_before, disc.get_weights()))
    assert np.mean(hist["d_loss"][-5:]) < 0.8 * np.mean(hist["d_loss"][:5]), hist["d_loss"]  # it learns to tell them apart
    assert set(warm.optimizers) == {"g"} and int(warm.optimizer.iterations) == 30


@pytest.mark.parametrize("term", ["ms_ssim", "ssim"])
def test_structural_term_adds_to_the_distortion_and_trains(term):
    import keras
    import tensorflow as tf

    from catcomp.metrics import differentiable_ms_ssim, differentiable_ssim, psnr
    from catcomp.train import Trainer
    from catcomp.transforms import CompressionModel

    x = np.stack([photo(176, 176, seed=s) for s in range(2)]).astype("float32") / 255.0
    if term == "ms_ssim":
        noisy = np.clip(x + np.random.default_rng(0).normal(0, [[[[0.03]]], [[[0.1]]]], x.shape), 0, 1).astype("float32")
        expected = tf.image.ssim_multiscale(x, noisy, max_val=1.0).numpy()
        assert np.allclose(differentiable_ms_ssim(x, noisy), expected, atol=1e-4) and expected[0] > expected[1]  # the loss's MS-SSIM is the metric's
    keras.utils.set_random_seed(5)
    model = CompressionModel(TINY)
    losses = {}
    for w in (0.0, 1000.0):
        keras.utils.set_random_seed(6)  # the same random levels for both
        loss, _, _, _, extra = Trainer(model, **{term: w}).losses_of(x, training=False)
        losses[w] = float(loss)
    assert set(extra) == {term} and 0.0 < float(extra[term]) < 1.0 and losses[1000.0] > losses[0.0]  # the 1-(MS-)SSIM term is there and positive

    # The same start and draws with and without the term: the term buys its metric at an equal rate, losing PSNR.
    metric, weight = {"ms_ssim": (differentiable_ms_ssim, 1000.0), "ssim": (differentiable_ssim, 10000.0)}[term]
    trained = {}
    for w in (0.0, weight):
        keras.utils.set_random_seed(5)
        m = CompressionModel(TINY)
        t = Trainer(m, **{term: w})
        t.compile(keras.optimizers.Adam(3e-3, global_clipnorm=1.0))
        hist = t.fit(x, batch_size=2, epochs=30, verbose=0).history
        assert all(np.isfinite(hist["loss"])) and np.mean(hist["loss"][-5:]) < 0.7 * np.mean(hist["loss"][:5])
        x_hat, _, lik = m(x, np.full((2,), TINY.num_levels - 1.0, "float32"), training=False)
        x_hat = np.clip(np.asarray(x_hat), 0.0, 1.0)
        trained[w] = (float(np.mean(metric(x, x_hat))), -float(np.sum(np.log2(lik))), psnr(x * 255, x_hat * 255))
    (q0, bits0, p0), (q1, bits1, p1) = trained[0.0], trained[weight]
    assert q1 > q0 + 0.02 and abs(bits1 / bits0 - 1) < 0.1 and p1 < p0, trained


def test_two_phases_checkpoint_resume_and_roundtrip(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data")
    out = tmp_path / "models" / "general"
    card = train(data, out, TINY, steps=6, gan_steps=4, beta=0.01, crop=32, batch=2, ckpt_every_s=0, strategy="default", disc_warmup=3, verbose=0)
    t = card["training"]["runs"][-1]
    assert (t["rd_steps"], t["gan_steps"], t["train_sources"], t["disc_warmup"]) == (6, 4, 4, 3) and t["disc_warmup_d_loss"] > 0
    assert card["training"]["steps"] == 10 and len(card["training"]["runs"]) == 1 and t["init"] == "scratch"
    assert json.loads((out / "checkpoint" / "rd" / "state.json").read_text())["step"] == 6
    assert json.loads((out / "checkpoint" / "gan" / "state.json").read_text())["step"] == 4
    assert json.loads((out / "checkpoint" / "disc" / "state.json").read_text())["step"] == 3
    beta0 = json.loads((out / "beta0" / "card.json").read_text())
    assert beta0["training"]["runs"][-1]["beta"] == 0.0 and beta0["training"]["steps"] == 6 and beta0["checksum"] != card["checksum"]

    # The checkpoint holds exactly what was saved: weights and optimizer state.
    import keras

    from catcomp.train import PlateauCosine, Trainer, restore
    from catcomp.transforms import CompressionModel, build_discriminator
    from catcomp.zoo import load_model

    g = Trainer(CompressionModel(TINY), build_discriminator(TINY), beta=0.01)
    g.compile(keras.optimizers.Adam(PlateauCosine(4)), d_optimizer=keras.optimizers.Adam(1e-4))
    assert restore(g, out / "checkpoint" / "gan")["step"] == 4
    assert int(g.optimizer.iterations) == 4 and int(g.d_optimizer.iterations) == 4
    for a, b in zip(g.model.get_weights(), load_model(out).model.get_weights()):
        np.testing.assert_array_equal(a, b)

    # The adversarial phase started from the warmed-up discriminator.
    w = Trainer(CompressionModel(TINY), build_discriminator(TINY), beta=0.01, d_only=True)
    w.compile(keras.optimizers.Adam(1e-4))
    assert restore(w, out / "checkpoint" / "disc")["step"] == 3
    for a, b in zip(w.discriminator.get_weights(), g.discriminator.get_weights()):  # 4 Adam steps of 3e-4 apart, not a fresh draw
        np.testing.assert_allclose(a, b, atol=0.01)

    # Resume: phase 1 and the warm-up are done and are not redone (nor is beta0 saved again); phase 2 goes on from step 4.
    beta0_written = (out / "beta0" / "entropy_tables.npz").stat().st_mtime_ns
    card = train(data, out, TINY, steps=6, gan_steps=7, beta=0.01, crop=32, batch=2, resume=True, strategy="default", disc_warmup=3, verbose=0)
    assert json.loads((out / "checkpoint" / "rd" / "state.json").read_text())["step"] == 6
    assert json.loads((out / "checkpoint" / "disc" / "state.json").read_text())["step"] == 3
    assert json.loads((out / "checkpoint" / "gan" / "state.json").read_text())["step"] == 7
    assert (out / "beta0" / "entropy_tables.npz").stat().st_mtime_ns == beta0_written
    monkeypatch.setenv("CATCOMP_MODELS", str(tmp_path / "models"))
    img = photo(40, 30)
    back = np.asarray(catcomp.decompress(catcomp.compress(Image.fromarray(img), level=1)))
    assert back.shape == (30, 40, 3)


def test_decoder_only_adversarial_phase_keeps_the_rate(tmp_path):
    from catcomp.zoo import load_weights

    out = tmp_path / "m"
    card = train(_folder(tmp_path / "data"), out, TINY, steps=3, gan_steps=3, beta=0.5, gan_lr=1e-3, crop=32, batch=2, strategy="default", gan_decoder_only=True, verbose=0)
    assert card["training"]["runs"][-1]["gan_decoder_only"] is True
    before, after = load_weights(out / "beta0"), load_weights(out)
    for part in ("analysis", "density"):
        for a, b in zip(getattr(before, part).get_weights(), getattr(after, part).get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before.log_gain.numpy(), after.log_gain.numpy())
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before.synthesis.get_weights(), after.synthesis.get_weights()))
    # Same latents and density, so the rebuilt coding tables (and every file's bytes) are phase 1's.
    t0, t1 = np.load(out / "beta0" / "entropy_tables.npz"), np.load(out / "entropy_tables.npz")
    assert sorted(t0.files) == sorted(t1.files)
    for k in t0.files:
        np.testing.assert_array_equal(t0[k], t1[k])


def test_cli_fine_tunes_one_category(tmp_path, tiny_models, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from catcomp.cli import main

    models = tmp_path / "models"
    shutil.copytree(tiny_models / "general", models / "general")
    monkeypatch.setenv("CATCOMP_MODELS", str(models))
    before = (models / "general" / "card.json").read_text()
    data = _folder(tmp_path / "data")
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--ms-ssim", "1000", "--crop", "32"])
    assert r.exit_code == 2 and "--crop" in r.output and "161" in r.output and not (models / "flower").exists(), r.output
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--gan-steps", "0", "--disc-warmup", "10"])
    assert r.exit_code == 2 and "--disc-warmup" in r.output and "adversarial phase" in r.output and not (models / "flower").exists(), r.output
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--gan-steps", "0", "--gan-decoder-only"])
    assert r.exit_code == 2 and "--gan-decoder-only" in r.output and "adversarial phase" in r.output and not (models / "flower").exists(), r.output
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--steps", "3", "--gan-steps", "2", "--gan-lr", "5e-5", "--crop", "32", "--batch", "2", "--fp32"])
    assert r.exit_code == 0, r.output
    card = json.loads((models / "flower" / "card.json").read_text())
    run = card["training"]["runs"][-1]
    assert card["category"] == "flower" and run["categories"] == ["flower"] and run["gan_lr_peak"] == 5e-5
    assert run["train_sources"] == 2 and run["init"] == "models/general" and run["init_checksum"] == json.loads(before)["checksum"]
    assert (models / "general" / "card.json").read_text() == before  # the other models are untouched
    assert card["tables"]["fitted_on_images"] == 2  # the context choice was fitted on the flower images
    assert catcomp.compress(Image.fromarray(photo(40, 30)), category="flower")[:4] == b"\x89CCZ"

    # Retrained in place, the card keeps its history and its tuned rate, but
    # not the measurements and description of the weights it replaced.
    card.update(rd={"test": {"points": []}}, tuning={"flower": {"level": 1.5}}, tuned_levels={"flower": 1.5}, description="the old weights")
    (models / "flower" / "card.json").write_text(json.dumps(card))
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--init", "flower", "--steps", "2", "--gan-steps", "0", "--crop", "32", "--batch", "2", "--fp32"])
    assert r.exit_code == 0 and "catcomp tune flower" in r.output, r.output
    new = json.loads((models / "flower" / "card.json").read_text())
    assert new["training"]["steps"] == 7 and [x["rd_steps"] for x in new["training"]["runs"]] == [3, 2]
    assert new["training"]["runs"][-1]["init_checksum"] == card["checksum"] != new["checksum"]
    assert new["tuned_levels"] == {"flower": 1.5} and not {"rd", "tuning", "description"} & set(new)
    # Resumed after it finished, the in-place run does not count itself twice.
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--init", "flower", "--steps", "2", "--gan-steps", "0", "--crop", "32", "--batch", "2", "--fp32", "--resume"])
    assert r.exit_code == 0, r.output
    again = json.loads((models / "flower" / "card.json").read_text())
    assert [x["init_checksum"] for x in again["training"]["runs"]] == [x["init_checksum"] for x in new["training"]["runs"]]
    assert again["training"]["steps"] == 7

    # --tables-only refits the general model's tables on the data; its weights stay as they are,
    # and so does its card but for the measurements of the old tables.
    weights = (models / "general" / "model.weights.h5").read_bytes()
    (models / "general" / "card.json").write_text(json.dumps({**json.loads(before), "rd": {"test": {}}, "description": "kept"}))
    r = CliRunner().invoke(main, ["train", "general", "--data", str(data), "--tables-only", "--crop", "32"])
    assert r.exit_code == 0, r.output
    card = json.loads((models / "general" / "card.json").read_text())
    assert card["tables"]["fitted_on_images"] == 4 and card["checksum"] != json.loads(before)["checksum"]
    assert (models / "general" / "model.weights.h5").read_bytes() == weights
    assert card["description"] == "kept" and card["tuned_level"] == 2.0 and "rd" not in card
    from catcomp.zoo import load_model

    tables = load_model(models / "general").tables  # both predictors fitted (the untrained tables had neither)
    assert tables.predictor[1:].any() and tables.mean_predictor[1:].any()
    img = photo(48, 32)
    assert np.asarray(catcomp.decompress(catcomp.compress(Image.fromarray(img), category="other"))).shape == img.shape
    r = CliRunner().invoke(main, ["train", "flower", "--data", str(data), "--init", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no model.weights.h5" in r.output


def test_install_makes_a_run_the_shipped_model(tmp_path, monkeypatch):
    """`catcomp install RUN NAME` copies a trained run's verified files over a
    model, keeps that model's tuned rate and data facts, and names what it replaced;
    a damaged run is refused and leaves the model as it was."""
    from click.testing import CliRunner

    from catcomp.cli import main
    from catcomp.transforms import CompressionModel
    from catcomp.zoo import load_model, save_model

    models = tmp_path / "models"
    monkeypatch.setenv("CATCOMP_MODELS", str(models))
    old = save_model(CompressionModel(TINY), models / "flower", {"category": "flower", "data": {"root": "d", "train_images": 9},
                                                                  "training": {"steps": 5}, "tuned_levels": {"flower": 1.5}, "description": "old"})
    run = tmp_path / "flower_run"
    new = save_model(CompressionModel(TINY), run, {"category": "flower", "data": {"root": "d"}, "training": {"steps": 8}})
    assert new["checksum"] != old["checksum"]
    bad = tmp_path / "bad_run"
    save_model(CompressionModel(TINY), bad, {"category": "flower"})
    (bad / "model.weights.h5").write_bytes((bad / "model.weights.h5").read_bytes()[:-10])
    r = CliRunner().invoke(main, ["install", str(bad), "flower"])
    assert r.exit_code == 1 and "bad_run" in r.output and "SHA-256" in r.output, r.output
    assert json.loads((models / "flower" / "card.json").read_text()) == old

    r = CliRunner().invoke(main, ["install", str(run), "flower", "--description", "new weights"])
    assert r.exit_code == 0 and "catcomp tune flower" in r.output, r.output
    card = load_model("flower").card
    assert card["checksum"] == new["checksum"] and card["name"] == "flower" and card["training"] == {"steps": 8}
    assert card["tuned_levels"] == {"flower": 1.5} and card["data"] == {"root": "d", "train_images": 9}
    assert card["replaces"]["checksum"] == old["checksum"] and card["replaces"]["steps"] == 5 and card["description"] == "new weights"
    assert (models / "flower" / "model.weights.h5").read_bytes() == (run / "model.weights.h5").read_bytes()
    r = CliRunner().invoke(main, ["install", str(models / "flower"), "flower"])
    assert r.exit_code == 1 and "already the model flower" in r.output, r.output


def test_residual_blocks_grow_a_trained_model(tmp_path, tiny_models, monkeypatch):
    import dataclasses
    import shutil

    from click.testing import CliRunner

    from catcomp.cli import main
    from catcomp.transforms import CompressionModel, transfer_weights
    from catcomp.zoo import load_weights

    # Fresh blocks start as the identity: the grown model decodes exactly as its source did.
    src = load_weights(tiny_models / "general")
    grown = CompressionModel(dataclasses.replace(src.config, res_blocks=2))
    transfer_weights(src, grown)
    x = photo(48, 32)[None].astype("float32") / 255
    np.testing.assert_array_equal(np.asarray(src(x, np.array([1.5]))[0]), np.asarray(grown(x, np.array([1.5]))[0]))
    assert len(grown.weights) == len(src.weights) + 8

    models = tmp_path / "models"
    shutil.copytree(tiny_models / "general", models / "general")
    monkeypatch.setenv("CATCOMP_MODELS", str(models))
    data = _folder(tmp_path / "data")
    args = ["train", "flower", "--data", str(data), "--steps", "3", "--gan-steps", "0", "--crop", "32", "--batch", "2", "--fp32"]
    r = CliRunner().invoke(main, args + ["--res-blocks", "1"])
    assert r.exit_code == 0, r.output
    card = json.loads((models / "flower" / "card.json").read_text())
    assert card["config"]["res_blocks"] == 1
    img = photo(40, 30)
    out = np.asarray(catcomp.decompress(catcomp.compress(Image.fromarray(img), category="flower")))
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 60
    # A fine-tune keeps the blocks of its starting model, and cannot drop them.
    r = CliRunner().invoke(main, args + ["--init", "flower", "--out", str(tmp_path / "f2")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "f2" / "card.json").read_text())["config"]["res_blocks"] == 1
    r = CliRunner().invoke(main, args + ["--init", "flower", "--res-blocks", "0", "--out", str(tmp_path / "f3")])
    assert r.exit_code == 2 and "residual blocks" in r.output


TWO_CPUS = """
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from catcomp.train import train
from tests.test_train import TINY
card = train(sys.argv[1], sys.argv[2], TINY, steps=4, gan_steps=2, beta=0.01, crop=32, batch=4, strategy="mirrored", verbose=0)
print(json.dumps(card["training"]["runs"][-1]))
"""


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    data = _folder(tmp_path / "data")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", TWO_CPUS, str(data), str(tmp_path / "out")], cwd=root, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    t = json.loads(p.stdout.strip().splitlines()[-1])
    assert t["replicas"] == 2 and t["rd_steps"] == 4
    assert json.loads((tmp_path / "out" / "checkpoint" / "gan" / "state.json").read_text())["step"] == 2


def test_training_pool_crops_fit_every_image():
    """Half-size copies are only kept when a crop still fits in them (a 400 px image
    halved to 200 px cannot feed 256 px crops), so the crop stream never fails."""
    from catcomp.train import crop_dataset, load_pool

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(400, 500), (600, 520), (200, 900)]]
    pool = load_pool(arrays, crop=256)
    assert sorted(p.shape[:2] for p in pool) == [(300, 260), (400, 500), (600, 520)]
    assert [p.shape[:2] for p in load_pool(arrays, crop=128)].count((200, 250)) == 1
    batch = next(iter(crop_dataset(pool, crop=256, batch=4)))
    assert batch.shape == (4, 256, 256, 3)


TORCH = """
import json, sys
from catcomp.train import train
from tests.test_train import TINY
for gan_steps in (2, 4):  # the second call resumes the first one's checkpoints
    card = train(sys.argv[1], sys.argv[2], TINY, steps=5, gan_steps=gan_steps, beta=0.01, crop=32, batch=2, resume=True, ckpt_every_s=0, verbose=0)
print(json.dumps(card["training"]["runs"][-1]))
"""


def test_pytorch_backend_trains_resumes_and_codes(tmp_path, monkeypatch):
    """The same Trainer under Keras' PyTorch backend (how a GPU machine without
    TensorFlow trains): both phases run, resume, and the weights code here."""
    import importlib.util

    import pytest

    if not importlib.util.find_spec("torch"):
        pytest.skip("PyTorch is not installed (optional: only GPU machines without TensorFlow train with it)")
    data = _folder(tmp_path / "data")
    out = tmp_path / "models" / "general"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    p = subprocess.run([sys.executable, "-c", TORCH, str(data), str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    t = json.loads(p.stdout.strip().splitlines()[-1])
    assert (t["rd_steps"], t["gan_steps"], t["replicas"]) == (5, 4, 1)
    assert json.loads((out / "checkpoint" / "gan" / "state.json").read_text())["step"] == 4
    # One logged epoch of phase 1 (the resumed call found it done), two of phase 2.
    assert [len((out / f"train_log_{k}.csv").read_text().splitlines()) for k in ("rd", "gan")] == [2, 3]
    monkeypatch.setenv("CATCOMP_MODELS", str(tmp_path / "models"))
    img = photo(40, 30)
    back = np.asarray(catcomp.decompress(catcomp.compress(Image.fromarray(img), category="other", level=1)))
    assert back.shape == (30, 40, 3) and np.abs(back.astype(int) - img).mean() < 100
