"""Can the adversarial phase's discriminator tell a model's reconstructions from
the originals at all? It trains a fresh discriminator alone against a frozen
model (random levels, random crops of one category's ``train`` split) and
logs its loss; 2 ln 2 = 1.386 is chance. Writes JSON.

    python bench/disc_probe.py flower RUN/beta0 [--lr 3e-4] [--steps 400] --out OUT.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, write_json  # noqa: E402

from catcomp.train import crop_dataset, discriminator_optimizer, gan_losses, training_pool  # noqa: E402
from catcomp.transforms import build_discriminator  # noqa: E402
from catcomp.zoo import load_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("category")
    ap.add_argument("model", help="model directory (kept frozen)")
    ap.add_argument("--lr", type=float, default=3e-4, help="the discriminator's Adam rate (training uses 3e-4)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    import tensorflow as tf

    lm = load_model(a.model)
    model, cfg = lm.model, lm.model.config
    disc = build_discriminator(cfg)
    opt = discriminator_optimizer(a.lr)
    pool, _ = training_pool(DATA, a.crop, [a.category])
    batches = iter(crop_dataset(pool, a.crop, a.batch, seed=1))

    @tf.function
    def step(x):
        level = tf.random.uniform((a.batch,), 0.0, cfg.num_levels - 1.0)
        x_hat, z_hat, _ = model(x, level, training=False)
        with tf.GradientTape() as tape:
            _, loss = gan_losses(disc([x, z_hat], training=True), disc([x_hat, z_hat], training=True))
        opt.apply_gradients(zip(tape.gradient(loss, disc.trainable_variables), disc.trainable_variables))
        return loss

    t0, losses, means = time.time(), [], []
    for i in range(a.steps):
        losses.append(float(step(next(batches))))
        if (i + 1) % 50 == 0:
            means.append({"step": i + 1, "d_loss": float(np.mean(losses[-50:]))})
            print(f"step {i + 1}: mean d_loss {means[-1]['d_loss']:.4f} ({time.time() - t0:.0f} s)", flush=True)
    write_json(a.out, {"category": a.category, "model": a.model, "checksum": lm.card["checksum"], "lr": a.lr,
                       "crop": a.crop, "batch": a.batch, "chance": 2 * float(np.log(2)), "d_loss_per_50_steps": means})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
