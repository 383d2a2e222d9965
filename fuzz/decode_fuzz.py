"""Coverage-guided fuzzing of the .ccz decoder with atheris (run outside CI, for long).

Every input must either decode or raise a ``catcomp.CatcompError``; anything
else (another exception, a hang, runaway memory) is a finding.

The harness builds a tiny model in a temporary models folder. Its seed corpus is
valid files of several modes and levels, plus versions with their CRCs recomputed
so that mutations reach the body decoder. Inputs are read either as raw files or,
when the first byte is odd, as a recipe that rewrites a valid container's fields
with correct CRCs.

    pip install atheris
    python fuzz/decode_fuzz.py -max_total_time=3600 -rss_limit_mb=4096 [corpus_dir]
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import atheris  # noqa: E402
import constriction  # noqa: E402, F401  (imported before instrumenting: only catcomp's own code is instrumented)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow  # noqa: E402, F401
from PIL import Image  # noqa: E402

with atheris.instrument_imports(include=["catcomp"]):
    import catcomp
    from catcomp import container

from catcomp.transforms import CompressionModel, ModelConfig  # noqa: E402
from catcomp.zoo import save_model  # noqa: E402

MODELS = tempfile.mkdtemp(prefix="catcomp-fuzz-models-")
os.environ["CATCOMP_MODELS"] = MODELS
keras.utils.set_random_seed(1)
save_model(CompressionModel(ModelConfig(N=8, M=8, density_filters=(3, 3))), f"{MODELS}/general", {})
rng = np.random.default_rng(0)
SEEDS = [catcomp.compress(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(m), category="other", level=lv)
         for w, h, m, lv in ((32, 32, "RGB", 1), (17, 40, "RGBA", 4), (48, 16, "P", 2.5), (16, 16, "L", 0))]


def recipe(data: bytes) -> bytes:
    """Rewrite fields of a valid container from fuzz bytes, keeping the CRCs right."""
    fdp = atheris.FuzzedDataProvider(data)
    c = container.Container.from_bytes(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    c.width, c.height = fdp.ConsumeIntInRange(0, 1 << 20), fdp.ConsumeIntInRange(0, 1 << 20)
    c.pad = (fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 255))
    c.level_index = fdp.ConsumeIntInRange(0, 255)
    c.mode = fdp.PickValueInList(["RGB", "RGBA", "P", "L", "LA", "I;16", "CMYK", "1", "??"])
    if fdp.ConsumeBool():
        c.sections[container.LATENT] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    for key in (b"A", b"P"):
        if fdp.ConsumeBool():
            c.sections[key] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
    try:
        return c.to_bytes()
    except (ValueError, OverflowError, catcomp.CatcompError):
        return b""


def TestOneInput(data: bytes):
    if data[:1] and data[0] & 1:
        data = recipe(data[1:])
    try:
        catcomp.decompress(data)
    except catcomp.CatcompError:
        pass


def main():
    argv = list(sys.argv)
    corpus = next((a for a in argv[1:] if not a.startswith("-")), None)
    if corpus and not os.path.isfile(corpus):  # a file argument replays one input
        os.makedirs(corpus, exist_ok=True)
        for i, s in enumerate(SEEDS):
            with open(os.path.join(corpus, f"seed{i}.ccz"), "wb") as f:
                f.write(b"\0" + s if s[0] & 1 else s)
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
