"""Throughput of the training input pipeline over HDF5 patches (batches/s), JSON out.

Compare with a training step (~0.26 s for N=128, batch 8, 128 px on 2 cores):
the pipeline must deliver batches much faster than the trainer consumes them.

    python bench/pipeline.py H5DIR [--crop 128] [--batch 8] [--batches 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402

from data_prep.pipeline import h5_files, hdf5_dataset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("h5dir", type=Path)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    ds = iter(hdf5_dataset(a.h5dir, a.crop, a.batch))
    next(ds)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(a.batches):
        next(ds)
    per_batch = (time.perf_counter() - t0) / a.batches
    res = {"h5_files": len(h5_files(a.h5dir)), "crop": a.crop, "batch": a.batch, "load_seconds": round(load_s, 2),
           "seconds_per_batch": per_batch, "batches_per_second": 1 / per_batch}
    write_json(a.out, res)
    print(f"load {load_s:.1f} s, then {1 / per_batch:.0f} batches/s ({per_batch * 1000:.1f} ms per batch of {a.batch})")


if __name__ == "__main__":
    main()
