"""The Ray engine: a compress run spread over a Ray cluster with Ray Data.

A thin adapter. The driver plans the run exactly as the local engine does
(:func:`catcomp.folders.compress_plan`); Ray Data hands the planned files to
a pool of actors, and each actor runs the same per-image code
(:class:`catcomp.folders.CompressJob`): routing, compression at the tuned
or targeted rate, the never-overwrite checks, the atomic write and the
per-file error capture. Each actor loads the router and every category
model once, so any image can go to any actor without shuffling.

Inputs may be local paths or filesystem URIs that pyarrow reads
(``s3://``, ``gs://``, ``file://``); the output folder must be a path
every worker can write (one machine, or a shared mount on a cluster).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import CatcompError
from .folders import CompressJob, Result, compress_plan, input_set, is_uri

#: Environment the workers need to find the same models and limits as the driver.
_ENV = ("CATCOMP_MODELS", "CATCOMP_MAX_PIXELS")


class CompressActor:
    """A Ray Data actor: loads the models once, then compresses batches of planned files."""

    def __init__(self, job: CompressJob, inputs: set, env: dict):
        os.environ.update(env)
        from .categories import CATEGORIES, model_name
        from .router import load_router
        from .zoo import load_model

        self.job, self.inputs = job, inputs
        for c in [job.category] if job.category else CATEGORIES:
            load_model(model_name(c))
        if job.category is None:
            load_router()

    def __call__(self, batch: dict) -> dict:
        results = []
        for src, dst, err in zip(batch["src"], batch["dst"], batch["err"]):
            r = self.job(src if is_uri(src) else Path(src), Path(dst), err or None, self.inputs)
            results.append(json.dumps(r.as_dict()))
        return {"index": batch["index"], "result": results}


def _result(row) -> Result:
    d = json.loads(row["result"])
    d.pop("bpp")
    return Result(**d)


def compress_files_ray(inputs, out, category=None, level=None, overwrite=False, target=None, refine=0, address=None,
                       num_workers=None, progress=None) -> list[Result]:  # fmt: skip
    """:func:`catcomp.folders.compress_files` on Ray: same outputs, same results.

    ``address`` is passed to ``ray.init`` (``None``: a running cluster if
    the environment names one, else a local instance; ``"auto"``; or
    ``"ray://host:10001"``). ``num_workers`` actors (default: the
    cluster's CPU count) each use one CPU.
    """
    try:
        import ray
    except ImportError:
        raise CatcompError("the Ray engine needs Ray: pip install 'catcomp[ray]'") from None
    pairs = compress_plan(inputs, out)
    if not pairs:
        return []
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-stage chatter on the console
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    workers = max(1, min(num_workers or int(ray.cluster_resources().get("CPU", 1)), len(pairs)))
    job = CompressJob(category, level, target, overwrite, refine)
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    rows = [{"index": i, "src": str(s), "dst": str(d), "err": e or ""} for i, (s, d, e) in enumerate(pairs)]
    # Small blocks: results (and the progress bar) stream back image by image, and
    # a slow image holds up only its own block. Bounded, for folders of millions.
    blocks = min(len(rows), max(64, 8 * workers), 10_000)
    ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        CompressActor, fn_constructor_args=(job, input_set(pairs), env), batch_size=1, concurrency=workers, num_cpus=1
    )
    results: list = [None] * len(pairs)
    for row in ds.iter_rows():
        results[row["index"]] = r = _result(row)
        if progress:
            progress(r, len(pairs))
    return results
