"""The GPU check: ``python -m minifcn.gpucheck`` on a machine with an NVIDIA GPU.

One command that shows whether minifcn's GPU path works on this machine, and
how fast it is. It runs, in order:

1. the start-up check (CuPy, a device, a kernel compiled with NVRTC and run);
2. the device tests, ``pytest -m gpu`` (with the repository's ``tests/``), on
   real CuPy, with the custom kernels and again with ``MINIFCN_CUDA_KERNELS=0``
   for the tests that compare both paths;
3. the benchmark on the GPU (``python -m minifcn.bench --device gpu``),
   compared with PyTorch when it is installed, plus the paper-configuration
   FCN-8s (VGG16) forward+backward on one 500x500 image, twice at equal
   precision: TF32 off for both libraries, then TF32 on for both (CUDA-event
   times; each figure says which);
4. a short training run on the GPU (FCN-8s on the shapes set), resumed for a
   second epoch, then ``evaluate --device gpu`` on its checkpoint;

and prints one summary. It needs no network: run it from a checkout with
``PYTHONPATH=. python -m minifcn.gpucheck`` (or after ``pip install -e .``).
``--json PATH`` also writes every figure to a new file.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m minifcn.gpucheck", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", default=None, help="write the summary and figures to this new file")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per benchmark figure")
    p.add_argument("--paper-size", type=int, default=500, help="side of the paper-config image")
    p.add_argument("--train-size", type=int, default=512, help="training images for the run")
    p.add_argument(
        "--cpu-step-ms",
        type=float,
        default=None,
        help="a NumPy CPU train-step time (ms) from `python -m minifcn.bench` on another "
        "machine, to print the GPU speed-up against it",
    )
    p.add_argument("--skip-tests", action="store_true", help="skip the pytest step")
    return p.parse_args(argv)


def _step(title: str):
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def run_tests(extra_env: dict) -> dict:
    """``pytest -m gpu`` in a subprocess; its last line, and whether it passed."""
    tests = REPO / "tests"
    if not tests.is_dir():
        return dict(ok=None, summary="no tests/ folder next to the package: skipped")
    env = {**os.environ, **extra_env, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd + [str(tests)], cwd=REPO, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1] if lines else proc.stderr.strip()[-300:]
    failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    skipped = [ln for ln in lines if ln.startswith("SKIPPED")]
    return dict(
        ok=proc.returncode == 0,
        summary=summary.strip("= "),
        failures=failures[:20],
        skipped=skipped,
    )


def run_bench(repeat: int, paper_size: int) -> dict:
    from minifcn.commands import bench

    argv = ["--device", "gpu", "--repeat", str(repeat), "--paper-step", str(paper_size)]
    try:
        import torch  # noqa: F401

        if torch.cuda.is_available():
            argv += ["--compare", "torch"]
    except ImportError:
        pass
    result = bench.main(argv)
    return result


LOSS_AGREEMENT = 0.05  # GPU and CPU epoch-1 training losses, same seed: relative difference


def _epoch1_loss(folder: Path) -> float:
    return float(json.loads((folder / "metrics.json").read_text())[0]["train_loss"])


def run_training(train_size: int) -> dict:
    """Train 1 epoch on the GPU, resume it for a 2nd, evaluate on the GPU; train the same
    first epoch on the CPU. The GPU run is right when its epoch-1 loss matches the CPU's
    (same seed, same batches; float32 in a different order, so within LOSS_AGREEMENT)."""
    from minifcn.commands.evaluate import main as evaluate_main
    from minifcn.commands.train import train

    base = Path(tempfile.mkdtemp(prefix="minifcn_gpucheck_"))
    out, cpu_out = base / "run", base / "cpu"
    common = ["--no-progress", "--train-size", str(train_size), "--val-size", "128"]
    gpu = ["--out", str(out), "--device", "gpu", *common]
    t0 = time.perf_counter()
    train([*gpu, "--epochs", "1"])
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = train([*gpu, "--epochs", "2", "--resume"])
    second = time.perf_counter() - t0
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        scores = evaluate_main(
            ["--checkpoint", str(out / "best.npz"), "--device", "gpu", "--size", "128"]
        )
        train(["--out", str(cpu_out), "--device", "cpu", "--epochs", "1", *common])
    gpu_loss, cpu_loss = _epoch1_loss(out), _epoch1_loss(cpu_out)
    return dict(
        folder=str(out),
        epoch1_s=first,
        resumed_epoch2_s=second,
        best_mean_iu=summary.get("best_mean_iu") if isinstance(summary, dict) else None,
        evaluate_mean_iu=scores["mean_iu"],
        gpu_epoch1_loss=gpu_loss,
        cpu_epoch1_loss=cpu_loss,
        classes_found=sum(1 for iu in scores["per_class_iu"] if iu == iu and iu > 0),
        num_classes=len(scores["per_class_iu"]),
        ok=losses_agree(gpu_loss, cpu_loss),
    )


def losses_agree(gpu_loss: float, cpu_loss: float, tolerance: float = LOSS_AGREEMENT) -> bool:
    """True when both losses are finite and within ``tolerance`` of each other (relative)."""
    if not (math.isfinite(gpu_loss) and math.isfinite(cpu_loss)):
        return False
    return abs(gpu_loss - cpu_loss) <= tolerance * max(abs(cpu_loss), 1e-12)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.json:
        from minifcn.commands.args import check_new_file

        check_new_file(args.json, "--json")
    report: dict = {"checks": {}}
    t_all = time.perf_counter()
    check_start_up(report)
    if not args.skip_tests:
        check_device_tests(report)
    t = _step("3. benchmark on the GPU")
    bench = run_bench(args.repeat, args.paper_size)
    bench.pop("table", None)
    report["bench"] = bench
    print(f"({time.perf_counter() - t:.0f} s)")
    check_training(report, args.train_size)
    report["seconds"] = time.perf_counter() - t_all
    print(summary_text(report, args.cpu_step_ms))
    if args.json:
        from minifcn.storage.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2, default=str))
    failed = [k for k, ok in report["checks"].items() if not ok]
    if failed:
        raise SystemExit(f"gpucheck: FAILED: {', '.join(failed)}")
    return report


def check_start_up(report: dict) -> None:
    """Step 1: the GPU path starts (CuPy, a compiled probe kernel); the device's name."""
    from minifcn import backend
    from minifcn.commands.args import ensure_device

    t = _step("1. start-up check")
    ensure_device("gpu")
    cp = backend.cupy_module()
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    report["device"] = dict(
        name=name, cupy=cp.__version__, cuda_runtime=cp.cuda.runtime.runtimeGetVersion()
    )
    print(
        f"{name}; CuPy {cp.__version__}; probe kernel compiled and ran "
        f"({time.perf_counter() - t:.1f} s)"
    )
    report["checks"]["start-up"] = True


def check_device_tests(report: dict) -> None:
    """Step 2: the device tests, with the custom kernels and on the plain CuPy path."""
    t = _step("2. device tests: pytest -m gpu (custom kernels)")
    report["tests"] = run_tests({})
    print(report["tests"]["summary"], f"({time.perf_counter() - t:.0f} s)")
    for line in report["tests"].get("failures", []) + report["tests"].get("skipped", []):
        print("  " + line)
    t = _step("2b. device tests with MINIFCN_CUDA_KERNELS=0 (plain CuPy path)")
    report["tests_plain"] = run_tests({"MINIFCN_CUDA_KERNELS": "0"})
    print(report["tests_plain"]["summary"], f"({time.perf_counter() - t:.0f} s)")
    for line in report["tests_plain"].get("failures", []):
        print("  " + line)
    report["checks"]["tests"] = bool(report["tests"]["ok"] and report["tests_plain"]["ok"])


def check_training(report: dict, train_size: int) -> None:
    """Step 4: train, resume and evaluate on the GPU; a failure is reported, not raised."""
    t = _step("4. training on the GPU: 1 epoch, resumed for a 2nd, then evaluate --device gpu")
    try:
        report["training"] = run_training(train_size)
        report["checks"]["training"] = report["training"]["ok"]
    except (Exception, SystemExit) as err:  # report it in the summary, keep going
        report["training"] = dict(error=f"{type(err).__name__}: {err}")
        report["checks"]["training"] = False
    print(f"({time.perf_counter() - t:.0f} s)")


def summary_text(report: dict, cpu_step_ms: float | None = None) -> str:
    """The summary block printed at the end (and kept in the JSON)."""
    lines = ["", "=" * 72, f"minifcn GPU check on {report['device']['name']}"]
    lines.append(
        f"CuPy {report['device']['cupy']}, CUDA runtime {report['device']['cuda_runtime']}"
    )
    for key, label in (
        ("tests", "device tests (kernels)"),
        ("tests_plain", "device tests (plain)"),
    ):
        if key in report:
            mark = "PASS" if report[key]["ok"] else "FAIL"
            lines.append(f"{label:24s} {mark}  {report[key]['summary']}")
    bench = report.get("bench") or {}
    runs = bench.get("precision_runs") or [bench]
    for run in runs:
        lines += _precision_lines(run, cpu_step_ms)
    training = report.get("training", {})
    if "error" in training:
        lines.append(f"training                  FAIL  {training['error']}")
    elif training:
        lines.append(training_line(training))
    lines.append(f"total {report['seconds']:.0f} s")
    lines.append("=" * 72)
    return "\n".join(re.sub(r"\s+$", "", ln) for ln in lines)


def training_line(training: dict) -> str:
    """PASS when the GPU's epoch-1 loss matches the CPU's for the same seed: finishing
    without an error is not enough (a run that predicts background everywhere finishes)."""
    mark = "PASS" if training.get("ok") else "FAIL"
    found = f"IU > 0 for {training['classes_found']} of {training['num_classes']} classes"
    return (
        f"training                  {mark}  epoch-1 loss GPU {training['gpu_epoch1_loss']:.4f} "
        f"vs CPU {training['cpu_epoch1_loss']:.4f} (same seed, within "
        f"{LOSS_AGREEMENT:.0%}); epoch 1 {training['epoch1_s']:.1f} s, resumed epoch 2 "
        f"{training['resumed_epoch2_s']:.1f} s, evaluate mean IU "
        f"{training['evaluate_mean_iu']:.3f} ({found})"
    )


def _precision_lines(run: dict, cpu_step_ms: float | None) -> list:
    """The summary lines of one precision's figures (the train step, the paper step,
    the layer ratios), labelled with the precision both libraries ran at."""
    tf32 = run.get("tf32")
    label = "" if tf32 is None else f"TF32 {'on ' if tf32 else 'off'} "
    lines = []
    step = run.get("train_step") or {}
    if step:
        ms = step["step_s"] * 1e3
        text = f"{label}mini train step {ms:.2f} ms (batch {step['batch']}, {step['size']}px)"
        if "torch_ratio" in step:
            text += (
                f"; PyTorch {step['torch_step_s'] * 1e3:.2f} ms, ratio {step['torch_ratio']:.2f}"
            )
        if step.get("launches_per_step") is not None:
            text += f"; {step['launches_per_step']} launches"
        if cpu_step_ms:
            text += f"; {cpu_step_ms / ms:.1f}x the given CPU step ({cpu_step_ms:g} ms)"
        lines.append(text)
    paper = run.get("paper_step") or {}
    if paper:
        side = paper["size"]
        text = f"{label}paper FCN-8s fwd+bwd {paper['step_s'] * 1e3:.1f} ms (1x3x{side}x{side})"
        if "torch_ratio" in paper:
            torch_ms = paper["torch_step_s"] * 1e3
            text += f"; PyTorch+cuDNN {torch_ms:.1f} ms, ratio {paper['torch_ratio']:.2f}"
        lines.append(text)
    ratios = [r["torch_ratio"] for r in run.get("layers") or [] if r.get("torch_ratio")]
    if ratios:
        lines.append(
            f"{label}layer ratios to PyTorch {min(ratios):.2f} .. {max(ratios):.2f} (fwd+bwd)"
        )
    return lines


if __name__ == "__main__":
    main()
