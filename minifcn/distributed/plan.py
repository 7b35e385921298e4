"""The arithmetic to plan a data-parallel run: ``python -m minifcn.distributed.plan``.

Per step every rank sends and receives its gradients once (one allreduce of the flat
buffer). A ring allreduce over N ranks moves 2 (N - 1) / N times the buffer through
each rank's link, so at B bytes and a link of L bits/s it takes at least
2 (N - 1) / N * 8 B / L seconds, whatever the number of ranks (the bound the
latency terms are added to; NCCL inside one machine uses NVLink, far faster).
This prints that bound for the mini and the paper FCN-8s beside the measured GPU
step times (``notebooks/measured/gpucheck_h100.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models import FCN8s

MEASURED = Path(__file__).resolve().parents[2] / "notebooks" / "measured" / "gpucheck_h100.json"


def allreduce_bytes(model) -> int:
    """Bytes of the one buffer a step sums: every trainable gradient plus loss and weight."""
    params = [p for p in model.parameters() if p.requires_grad]
    return (sum(int(p.data.size) for p in params) + 2) * params[0].data.dtype.itemsize


def ring_allreduce_seconds(nbytes: int, ranks: int, gbit_per_s: float) -> float:
    """The bandwidth bound of a ring allreduce of ``nbytes`` over ``ranks`` ranks."""
    return 2 * (ranks - 1) / ranks * nbytes * 8 / (gbit_per_s * 1e9)


def gpu_step_seconds(path: Path = MEASURED) -> dict:
    """Measured step times on the GPU (empty when the file is absent)."""
    if not path.exists():
        return {}
    bench = json.loads(path.read_text()).get("bench", {})
    out = {"gpu": bench.get("machine", {}).get("gpu", "?")}
    if "train_step" in bench:
        t = bench["train_step"]
        out["mini"] = (t["step_s"], f"batch {t['batch']} at {t['size']}x{t['size']}, +SGD")
    if "paper_step" in bench:
        t = bench["paper_step"]
        out["paper"] = (t["step_s"], f"batch 1 at {t['size']}x{t['size']}, fwd+bwd")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m minifcn.distributed.plan", description=__doc__)
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 64])
    p.add_argument("--links", type=float, nargs="+", default=[10.0, 100.0], help="Gb/s")
    args = p.parse_args(argv)
    steps = gpu_step_seconds()
    print(f"measured GPU step times ({steps.get('gpu', 'none found')}, {MEASURED.name})")
    nets = {
        "mini": FCN8s(5, config="mini"),  # shapes: 5 classes
        "paper": FCN8s(21, config="paper"),  # PASCAL VOC: 21 classes
    }
    for name, model in nets.items():
        nbytes = allreduce_bytes(model)
        params = sum(int(q.data.size) for q in model.parameters())
        step = steps.get(name)
        where = f"; GPU step {step[0] * 1e3:.1f} ms ({step[1]})" if step else ""
        size = f"{nbytes / 1e6:,.1f} MB per allreduce"
        print(f"\n{name} FCN-8s: {params:,} parameters, {size}{where}")
        for link in args.links:
            cells = []
            for n in args.ranks:
                t = ring_allreduce_seconds(nbytes, n, link)
                ratio = f" = {t / step[0]:.2f}x the step" if step else ""
                cells.append(f"N={n}: {t * 1e3:,.1f} ms{ratio}")
            print(f"  {link:g} Gb/s  " + "; ".join(cells))


if __name__ == "__main__":
    main()
