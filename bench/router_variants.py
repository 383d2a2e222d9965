"""Ways of combining the shipped router's parts at inference, chosen on ``val``
and reported on ``test`` (JSON out): horizontal-flip test-time augmentation of
the CNN and of the codec head, the head's mixing weight, and the codec head
retrained with several seeds and averaged (its features are shared, so an
ensemble of heads costs no extra analysis pass).

    python bench/router_variants.py [--data ../shared/data] [--seeds 5]

Every variant gets its threshold calibrated on ``val`` as the shipped router
does; the CNN and the general model are the installed ones, the heads are
trained on ``train`` (each image also mirrored) as ``--head-only`` trains them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, write_json  # noqa: E402

from catcomp import router as R  # noqa: E402


def main(argv=None):
    import keras

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, default=5, help="codec heads trained for the ensemble variant")
    ap.add_argument("--out", type=Path, default=RESULTS / "router_variants.json")
    a = ap.parse_args(argv)
    r = R.load_router()
    if r is None or r.head is None:
        sys.exit("needs the installed router with its codec head")
    (view,) = r.head_views
    cnn, head, feats, y = {}, {}, {}, {}
    for s in ("train", "val", "test"):
        v, y[s] = R.load_split(a.data, s, r.sizes)
        for flip in (False, True):
            f = (lambda t: t[:, :, ::-1]) if flip else (lambda t: t)
            cnn[s, flip] = np.asarray(r._predict(f(v[r.size])))
            feats[s, flip] = np.asarray(r._features(f(v[view])))
            head[s, flip] = np.asarray(r._head(feats[s, flip]))
    xt, yt = np.concatenate([feats["train", False], feats["train", True]]), np.concatenate([y["train"]] * 2)
    heads = {s: [] for s in ("val", "test")}
    for seed in range(a.seeds):  # the --head-only recipe with other seeds
        keras.utils.set_random_seed(seed)
        h = R.fit_head(xt, yt, classes=len(r.classes))
        for s in heads:
            heads[s].append(h.predict(feats[s, False], verbose=0))

    def mean(*ps):
        return sum(ps) / len(ps)

    parts = {
        "shipped": lambda s: (cnn[s, False], head[s, False]),
        "cnn flip TTA": lambda s: (mean(cnn[s, False], cnn[s, True]), head[s, False]),
        "cnn and head flip TTA": lambda s: (mean(cnn[s, False], cnn[s, True]), mean(head[s, False], head[s, True])),
        f"{a.seeds} head seeds": lambda s: (cnn[s, False], mean(*heads[s])),
    }
    report = {"data": str(a.data), "router": r.card["files"], "variants": []}
    for name, fn in parts.items():
        for w in (0.3, 0.4, 0.5, 0.6, 0.7):
            p = {s: (1 - w) * c + w * h for s, (c, h) in ((s, fn(s)) for s in ("val", "test"))}
            r.threshold = R.calibrate_threshold(p["val"], y["val"])
            ev = {s: R.evaluate(r, None, y[s], p[s]) for s in p}
            row = {"variant": name, "head_weight": w, "threshold": round(r.threshold, 4),
                   **{f"{s}_accuracy": ev[s]["accuracy"] for s in ev},
                   **{f"{s}_min_recall": float(min(c["recall"] for c in ev[s]["per_class"].values())) for s in ev},
                   "test_other_recall": ev["test"]["per_class"]["other"]["recall"]}
            report["variants"].append(row)
            print(row, flush=True)
    write_json(a.out, report)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
