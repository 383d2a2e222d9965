"""Ray engine throughput on this machine: 1 and 2 Ray workers against the local
engine with 1 and 2 threads, on the same mixed folder of test-split images.

Every run is a fresh child process, so model loading is counted the same
way for both engines; for Ray the time to start the local Ray instance is
reported on its own and excluded from the throughput (a cluster is started
once, not per job). ``steady_images_per_s`` counts from the first finished
image on, which leaves out start-up (actors loading TensorFlow and the models). Writes ``docs/bench/ray_scaling.json``.

    python bench/ray_scaling.py [--per-category 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402
from folder import mixed_folder  # noqa: E402

CHILD = """
import json, sys, time
engine, workers, src, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t_init = 0.0
if engine == "ray":
    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t_init = time.perf_counter() - t0
    from catcomp.distributed import compress_files_ray as run
    kw = {"num_workers": workers}
else:
    from catcomp.folders import compress_files as run
    kw = {"workers": workers}
from catcomp.folders import summary
done = []
t0 = time.perf_counter()
res = run([src], out, progress=lambda r, n: done.append(time.perf_counter()), **kw)
dt = time.perf_counter() - t0
steady = (len(done) - 1) / (done[-1] - done[0])  # images/s once the first result is out (models loaded)
s = summary(res)
px = sum(r.width * r.height for r in res if r.ok)
print(json.dumps({"engine": engine, "workers": workers, "ray_init_seconds": round(t_init, 2), "seconds": round(dt, 2),
                  "images": s["ok"], "failed": s["failed"], "megapixels": round(px / 1e6, 2),
                  "images_per_s": round(s["ok"] / dt, 3), "mp_per_s": round(px / 1e6 / dt, 3),
                  "first_result_seconds": round(done[0] - t0, 2), "steady_images_per_s": round(steady, 3)}))
"""


def run_child(engine, workers, src, out) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, engine, str(workers), str(src), str(out)], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-category", type=int, default=12)
    p.add_argument("--out", type=Path, default=RESULTS / "ray_scaling.json")
    a = p.parse_args(argv)
    res = {"machine_cpus": __import__("os").cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res["folder_counts"] = mixed_folder(tmp / "mixed", a.per_category)
        outs = {}
        for engine, workers in (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)):
            outs[engine, workers] = tmp / f"out_{engine}_{workers}"
            r = run_child(engine, workers, tmp / "mixed", outs[engine, workers])
            res["runs"].append(r)
            print(json.dumps(r), flush=True)
        ref = {p.relative_to(outs["local", 1]): p.read_bytes() for p in outs["local", 1].rglob("*.ccz")}
        res["outputs_identical_to_local"] = all(
            {p.relative_to(o): p.read_bytes() for p in o.rglob("*.ccz")} == ref for o in outs.values()
        )
    by = {(r["engine"], r["workers"]): r for r in res["runs"]}
    res["ray_overhead_pct"] = {f"workers_{w}": round(100 * (by["ray", w]["seconds"] / by["local", w]["seconds"] - 1), 1) for w in (1, 2)}
    res["ray_steady_overhead_pct"] = {
        f"workers_{w}": round(100 * (by["local", w]["steady_images_per_s"] / by["ray", w]["steady_images_per_s"] - 1), 1) for w in (1, 2)
    }
    res["command"] = "python bench/ray_scaling.py"
    write_json(a.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
