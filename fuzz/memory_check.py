"""Memory of repeated decoding: the same file many times (valid, damaged ANS stream, CRC failure),
then files of many different sizes. Prints max RSS before and after each; used to explain the
slow RSS growth seen under the fuzzer (it grows with distinct shapes, not with decodes).

    python fuzz/memory_check.py
"""
import os, resource
os.environ["TF_CPP_MIN_LOG_LEVEL"]="3"
import numpy as np, tempfile
from PIL import Image
import catcomp
from catcomp import container
from catcomp.transforms import CompressionModel, ModelConfig
from catcomp.zoo import save_model
d = tempfile.mkdtemp(); os.environ["CATCOMP_MODELS"] = d
save_model(CompressionModel(ModelConfig(N=8, M=8, density_filters=(3, 3))), f"{d}/general", {})
good = catcomp.compress(Image.fromarray(np.random.default_rng(0).integers(0,255,(32,32,3),dtype=np.uint8)), category="other", level=1)
c = container.Container.from_bytes(good); c.sections[container.LATENT] = b"\x00\x05\x00\x00\x00"; bad = c.to_bytes()
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
for name, data in (("good", good), ("bad-ans", bad), ("bad-crc", good[:-3])):
    r0 = rss()
    for i in range(3000):
        try: catcomp.decompress(data)
        except catcomp.CatcompError: pass
    print(name, r0, "->", rss(), "MB after 3000", flush=True)
rng = np.random.default_rng(1)
files = [catcomp.compress(Image.fromarray(rng.integers(0,255,(16*int(h),16*int(w),3),dtype=np.uint8)), category="other", level=1) for h, w in rng.integers(1, 12, (300, 2))]
r0 = rss()
for k in range(3):
    for f in files: catcomp.decompress(f)
    print("varied shapes pass", k, r0, "->", rss(), flush=True)
