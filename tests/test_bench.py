"""The benchmark runs end to end, and the GPU kernels' index math matches the NumPy layers."""

import json
import time

import numpy as np
import pytest
from helpers import close

from minifcn.accel.cuda_kernels import col2im_gather_reference, col2im_gpu, im2col_gpu
from minifcn.backend import plain_path
from minifcn.commands import bench
from minifcn.nn import MaxPool2d, col2im, im2col


def test_bench_quick_run_writes_every_figure_to_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    result = bench.main(["--quick", "--repeat", "1", "--json", str(path)])
    out = capsys.readouterr().out
    assert "conv3x3" in out and "GFLOP/s" in out
    saved = json.loads(path.read_text())
    assert set(saved) >= {"machine", "settings", "matmul", "layers", "train_step", "table"}
    assert saved["matmul"]["gflops"] > 0
    assert {"cpu", "cores", "numpy", "blas"} <= set(saved["machine"])
    kinds = {row["kind"] for row in saved["layers"]}
    assert kinds == {"conv", "convT", "pool", "loss"}
    for row in saved["layers"]:
        assert {"layer", "shape", "fwd_ms", "bwd_ms", "gflops", "pct_matmul"} <= set(row)
        assert row["fwd_ms"] > 0 and row["bwd_ms"] > 0
        assert row["minifcn_threads"] >= 1 and row.get("steal_cores", 0) >= 0
    assert "minifcn's pool: " in out
    if saved["train_step"] is not None:  # present once minifcn.models exists
        assert {"images_per_s", "peak_bytes", "step_s"} <= set(saved["train_step"])
    assert len(result["layers"]) == len(saved["layers"])


def test_bench_on_the_device_times_both_precisions_with_events_and_counts_launches(
    tmp_path, standin
):
    path = tmp_path / "gpu.json"
    bench.main(["--device", "gpu", "--quick", "--repeat", "1", "--no-plain", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert saved["settings"]["clock"] == "cuda events" and saved["settings"]["tf32"] == "both"
    runs = saved["precision_runs"]
    assert [run["tf32"] for run in runs] == [False, True]
    for run in runs:
        assert {row["tf32"] for row in run["layers"]} == {run["tf32"]}
        assert run["precision_settings"]["CUPY_TF32"] == ("1" if run["tf32"] else "0")
        step = run["train_step"]
        assert 0 < step["launches_per_step"] <= 250, step["launches_per_step"]
        assert step["launches_note"] == "counted by the CuPy stand-in"
    assert saved["layers"] == runs[0]["layers"]  # the top level keeps TF32 off


def test_bench_tf32_off_alone_times_one_precision(tmp_path, standin):
    result = bench.main(["--device", "gpu", "--quick", "--repeat", "1", "--no-plain",
                         "--no-train", "--tf32", "off"])  # fmt: skip
    assert [run["tf32"] for run in result["precision_runs"]] == [False]


def test_bench_refuses_an_unknown_tf32_value_in_one_line(capsys):
    with pytest.raises(SystemExit) as err:
        bench.main(["--tf32", "maybe"])
    assert err.value.code == 2
    assert "--tf32: invalid choice: 'maybe'" in capsys.readouterr().err


def test_bench_under_load_measures_idle_busy_and_a_second_copy(tmp_path, capsys):
    path = tmp_path / "load.json"
    result = bench.main(["--under-load", "--quick", "--steps", "1", "--json", str(path)])
    saved = json.loads(path.read_text())
    cases = saved["under_load"]["cases"]
    assert set(cases) == {"minifcn/idle", "minifcn/busy", "minifcn/copy"}
    assert [cases[k]["load"] for k in sorted(cases)] == ["busy", "loop-minifcn", "none"]
    for case in cases.values():
        assert case["median_step_s"] > 0 and case["threads"] >= 1
    assert set(saved["under_load"]["slowdowns"]) == {"minifcn/busy", "minifcn/copy"}
    assert result["under_load"]["target"] == 2.5
    assert "beside a second copy: minifcn" in capsys.readouterr().out


def test_bench_scaling_times_one_thread_every_core_and_the_convolution_side_by_side(
    tmp_path, capsys
):
    from minifcn.accel.threads import usable_cores

    path = tmp_path / "scaling.json"
    bench.main(["--scaling", "--quick", "--steps", "1", "--json", str(path)])
    saved = json.loads(path.read_text())["scaling"]
    cores = usable_cores()
    assert set(saved["steps"]) == {"minifcn"}
    assert set(saved["steps"]["minifcn"]) == {"1", str(cores)}
    assert all(t > 0 for t in saved["steps"]["minifcn"].values())
    assert len(saved["halves"]) == 2 and all(t > 0 for t in saved["halves"])
    assert saved["whole_one_thread"] > 0
    pieces = saved["pieces"]
    assert [len(pieces[k]) for k in ("alone", "threads", "processes")] == [1, 2, 2]
    assert all(t > 0 for k in ("alone", "threads", "processes") for t in pieces[k])
    copies = pieces["copies"]["calls"]
    assert list(copies) == ["1", "4", "16", "64"]
    assert all(c["alone"] > 0 and len(c["threads"]) == 2 for c in copies.values())
    beside = pieces["beside"]
    assert all(beside[k] > 0 for k in ("alone", "long_copy", "short_copies"))
    assert beside["short_calls"] == 64 and beside["long_values"] > beside["short_values"]
    assert 0 < pieces["handover"] < 1
    out = capsys.readouterr().out
    assert "1 thread" in out and "two processes at once" in out
    assert "(turns at the lock)" in out and "the batch split over two processes" in out
    assert "the batch whole (not in halves)" in out


def test_bench_scaling_report_states_each_ratio():
    from minifcn.commands.scaling import scaling_report

    steps = {"minifcn": {"1": 0.2, "4": 0.1}, "torch": {"1": 0.3, "4": 0.1}}
    copies = {"values": 400_000, "calls": {"1": {"alone": 1e-4, "threads": [1e-4, 1.2e-4]}}}
    pieces = {"alone": [0.001], "threads": [0.002, 0.0015], "processes": [0.001, 0.0011]}
    lines = scaling_report(steps, {**pieces, "copies": copies}, cores=4)
    assert "the threads buy 2.00x" in lines[1] and "the threads buy 3.00x" in lines[2]
    assert lines[4] == "  alone 1000 us"
    assert lines[5].endswith("2000, 1500 us (1.75x the time alone)")
    assert lines[6].endswith("1000, 1100 us (1.05x the time alone)")
    assert lines[7] == "the same 1.6 MB copy in more NumPy calls:"
    assert lines[8].endswith("alone    100 us, two threads at once    110 us each (1.10x)")
    assert len(lines) == 9  # a report of an older run, without the convolution beside copies


def test_bench_scaling_report_states_what_the_batch_split_over_processes_buys():
    from minifcn.commands.scaling import scaling_report

    steps = {"minifcn": {"1": 0.2, "2": 0.15}}
    pieces = {"alone": [0.001], "threads": [0.002], "processes": [0.001]}
    copies = {"values": 400_000, "calls": {}}
    lines = scaling_report(steps, {**pieces, "copies": copies}, 2, [0.11, 0.125], whole=0.16)
    assert lines[2] == (
        "  minifcn, the batch split over two processes at once (half each, 1 thread): "
        "110.0, 125.0 ms: the second core buys 1.60x"
    )  # the slower half's step against the halves on one thread
    assert lines[3] == (
        "  minifcn 1 thread, the batch whole (not in halves): 160.0 ms: "
        "on one thread the halves take 1.25x as long"
    )


def test_bench_scaling_report_states_the_convolution_beside_each_copy():
    from minifcn.commands.scaling import scaling_report

    steps = {"minifcn": {"1": 0.2, "2": 0.1}}
    copies = {"values": 400_000, "calls": {}}
    beside = dict(alone=0.001, long_copy=0.0011, short_copies=0.0015)
    beside.update(long_values=4_000_000, short_values=400_000, short_calls=64)
    pieces = {"alone": [0.001], "threads": [0.002], "processes": [0.001]}
    lines = scaling_report(steps, {**pieces, "copies": copies, "beside": beside}, 2)
    tail = lines[-4:]
    handed = scaling_report(steps, {**pieces, "copies": copies, "handover": 2.5e-4}, 2)
    assert handed[-1] == "a job of two empty pieces on a pool of two threads: 250 us"
    assert tail[0] == "the convolution on one thread while a second thread copies:"
    assert tail[1] == "  alone 1000 us"
    assert tail[2] == "  beside 16 MB in one call (memory traffic): 1100 us (1.10x)"
    assert tail[3] == "  beside 1.6 MB in 64 calls (turns at the lock): 1500 us (1.50x)"


def test_a_worker_result_is_its_json_line_and_a_failure_is_one_line_naming_it(capsys):
    from minifcn.commands.scaling import emit, worker_result

    emit({"a": 1})
    assert worker_result("noise\n" + capsys.readouterr().out, "", 0, "x") == {"a": 1}
    with pytest.raises(SystemExit, match="error: --scaling: the torch measurement failed: boom"):
        worker_result("RESULT {}", "trace\nboom\n", 1, "--scaling: the torch measurement")
    with pytest.raises(SystemExit, match="error: w failed: no output"):
        worker_result("", "", 0, "w")


def _im2col_by_offsets(x, kh, kw, s, p):
    """The textbook loop over kernel offsets, on an explicitly padded image."""
    n, c, h, w = x.shape
    out_h, out_w = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    img = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    col = np.zeros((n, c, kh, kw, out_h, out_w), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = img[:, :, i : i + s * out_h : s, j : j + s * out_w : s]
    return col


GEOMETRIES = [  # (h, w, kh, kw, stride, padding): plain, s | k, uneven, FCN's 64/32
    (7, 6, 3, 2, 2, 1),
    (9, 8, 4, 4, 2, 1),
    (9, 7, 6, 4, 2, 3),
    (8, 8, 4, 4, 2, 0),
    (13, 11, 3, 3, 1, 1),
    (21, 19, 16, 16, 8, 0),
    (5, 6, 64, 64, 32, 31),
    (6, 6, 3, 3, 3, 2),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_im2col_matches_the_offset_loop_on_an_explicitly_padded_image(rng, geometry):
    h, w, kh, kw, s, p = geometry
    x = rng.standard_normal((2, 3, h, w))
    np.testing.assert_array_equal(im2col(x, kh, kw, s, p), _im2col_by_offsets(x, kh, kw, s, p))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_gather_formula_of_the_gpu_kernel_matches_col2im(rng, geometry):
    h, w, kh, kw, s, p = geometry
    col = rng.standard_normal(im2col(np.zeros((2, 3, h, w)), kh, kw, s, p).shape)
    close(col2im_gather_reference(col, h, w, s, p), col2im(col, h, w, s, p), rtol=1e-12)


@pytest.mark.parametrize("ceil", [True, False])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("size", [(8, 8), (7, 5), (6, 9)])
def test_max_pool_tiled_views_match_the_plain_loop_with_ties(xp, rng, ceil, k, size):
    """The accelerated pool's strided views against the plain loop, with ties (first wins)."""
    x = rng.standard_normal((2, 3) + size).astype(np.float32)
    x[0, 0] = np.round(x[0, 0])  # some ties: the first offset must win in both
    x = xp.asarray(x)
    with plain_path():
        loop = MaxPool2d(k, k, ceil_mode=ceil)
        y_loop = loop(x)
    fast = MaxPool2d(k, k, ceil_mode=ceil)
    y = fast(x)
    close(y, y_loop, rtol=0, atol=0)
    dy = xp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    close(fast.backward(dy), loop.backward(dy), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nc", "cn"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_gpu_im2col_and_col2im_kernels_match_the_plain_functions(xp, rng, geometry, layout):
    if xp is np:
        pytest.skip("compares the CUDA kernels with NumPy")
    h, w, kh, kw, s, p = geometry
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    col = im2col(x, kh, kw, s, p)  # (N, C, kh, kw, out_h, out_w)
    to_layout = (lambda a: a) if layout == "nc" else (lambda a: a.transpose(1, 2, 3, 0, 4, 5))
    shape = to_layout(col).shape
    got = im2col_gpu(xp.asarray(x), kh, kw, s, p, xp.empty(shape, dtype=xp.float32), layout)
    close(got, to_layout(col), rtol=0, atol=0)
    dcol = rng.standard_normal(col.shape).astype(np.float32)
    dcol_layout = xp.asarray(np.ascontiguousarray(to_layout(dcol)))
    close(
        col2im_gpu(dcol_layout, h, w, s, p, layout), col2im(dcol, h, w, s, p), rtol=1e-6, atol=1e-6
    )


@pytest.mark.gpu
def test_gpu_softmax_cross_entropy_kernels_match_numpy(xp, rng):
    if xp is np:
        pytest.skip("compares the CuPy kernels with NumPy")
    from minifcn.nn import SoftmaxCrossEntropy

    scores = (rng.standard_normal((2, 5, 6, 7)) * 10).astype(np.float32)
    labels = rng.integers(0, 5, (2, 6, 7))
    labels[0, :2] = 255
    cpu, gpu = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert gpu(xp.asarray(scores), xp.asarray(labels)) == pytest.approx(
        cpu(scores, labels), rel=1e-5
    )
    close(gpu.backward(2.0), cpu.backward(2.0), rtol=1e-5, atol=1e-7)


def test_winograd_f2x2_3x3_is_the_convolution_and_bench_times_its_parts(rng, capsys):
    from minifcn.accel import winograd
    from minifcn.nn.conv import conv2d

    for shape, padding in [((2, 3, 8, 6), 1), ((1, 2, 6, 8), 0), ((1, 1, 4, 4), 2)]:
        x = rng.standard_normal(shape)
        weight = rng.standard_normal((4, shape[1], 3, 3))
        bias = rng.standard_normal(4)
        expected, _ = conv2d(x, weight, 1, padding)
        u = winograd.transform_weight(weight)
        close(winograd.conv3x3(x, u, padding), expected, rtol=1e-12, atol=1e-12)
        with_bias = winograd.conv3x3(x, u, padding, bias)
        close(with_bias, expected + bias.reshape(1, -1, 1, 1), rtol=1e-12, atol=1e-12)
        turned = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # the input gradient's kernel
        dy = rng.standard_normal(expected.shape)
        want, _ = conv2d(dy, turned, 1, 2 - padding if padding < 2 else 0)
        if padding < 2:
            close(winograd.conv3x3(dy, winograd.turned(u), 2 - padding), want, rtol=1e-12)
    result = bench.main(["--quick", "--repeat", "1", "--no-train", "--no-plain", "--winograd"])
    (row,) = result["winograd"]  # the quick table has one 3x3 stride-1 layer
    parts = ("weight_ms", "input_ms", "products_ms", "output_ms")
    assert row["winograd_ms"] == pytest.approx(sum(row[k] for k in parts))
    assert row["other_form_ms"] > 0 and row["winograd_form"] is False  # 4 channels: too few
    assert "Winograd F(2x2, 3x3)" in capsys.readouterr().out


def test_the_layer_table_alternates_minifcn_and_pytorch_and_takes_the_median_round(monkeypatch):
    """A slow spell of a shared machine falls on both libraries: the rounds alternate,
    and each figure is the median over the rounds (not the first, not the mean)."""
    calls = []
    ours = iter([(1.0, 9.0), (3.0, 2.0), (2.0, 4.0)])
    theirs = iter([(5.0, 1.0), (4.0, 7.0), (6.0, 3.0)])

    def fake_ours(case, device, repeat):
        calls.append(("minifcn", repeat))
        fwd, bwd = next(ours)
        return dict(fwd_s=fwd, bwd_s=bwd, out_shape=(1, 2))

    def fake_torch(torch, case, device, repeat):
        calls.append(("torch", repeat))
        fwd, bwd = next(theirs)
        return dict(fwd_s=fwd, bwd_s=bwd)

    monkeypatch.setattr(bench, "time_ours", fake_ours)
    monkeypatch.setattr(bench, "time_torch", fake_torch)
    args = bench.parse_args(["--repeat", "4", "--rounds", "3"])
    mine, other = bench.alternating({}, args, torch=object())
    assert calls == [("minifcn", 4), ("torch", 4)] * 3
    assert (mine["fwd_s"], mine["bwd_s"], mine["out_shape"]) == (2.0, 4.0, (1, 2))
    assert (other["fwd_s"], other["bwd_s"]) == (5.0, 3.0)
    calls.clear()
    ours = iter([(1.0, 1.0)])
    mine, other = bench.alternating({}, bench.parse_args(["--quick"]), torch=None)
    assert calls == [("minifcn", 5)] and other is None


def test_each_figure_is_the_median_of_five_rounds_by_default_and_one_with_quick():
    """Five, so that a slow spell that moves one library's median (three of its rounds)
    also covers two of the other's, between them."""
    assert bench.ROUNDS == 5 and bench.parse_args([]).rounds == 5
    assert bench.parse_args(["--quick"]).rounds == 1
    assert bench.parse_args(["--rounds", "2"]).rounds == 2


def test_bench_refuses_a_round_count_out_of_range(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])
    assert "--rounds" in capsys.readouterr().err


def test_the_train_step_alternates_minifcn_and_pytorch_over_the_rounds(monkeypatch, capsys):
    """As the layer table: the step's rounds alternate, each figure the median round."""
    calls = []
    ours = iter([0.3, 0.1, 0.2])
    theirs = iter([0.5, 0.6, 0.4])

    def fake_ours(device, batch, size):
        def time(repeat):
            calls.append(("minifcn", repeat))
            return next(ours)

        def finish(seconds):
            calls.append(("finish", seconds))
            return dict(step_s=seconds, images_per_s=batch / seconds, peak_bytes=2**20,
                        peak_note="fake", max_rss_bytes=2**20, launches_per_step=None)  # fmt: skip

        return bench.StepTimer(time, finish, model="the model")

    def fake_torch(torch, model, device, batch, size):
        assert model == "the model"  # PyTorch mirrors minifcn's model

        def time(repeat):
            calls.append(("torch", repeat))
            return next(theirs)

        return time

    monkeypatch.setattr(bench, "train_step_ours", fake_ours)
    monkeypatch.setattr(bench, "train_step_torch", fake_torch)
    args = bench.parse_args(["--repeat", "4", "--rounds", "3", "--no-plain"])
    train = bench.measure_train_step(args, torch=object(), label="")
    assert calls == [("minifcn", 4), ("torch", 4)] * 3 + [("finish", 0.2)]
    assert train["torch_step_s"] == 0.5 and train["rounds"] == 3
    assert abs(train["torch_ratio"] - 0.4) < 1e-12
    assert "minifcn / torch = 0.40" in capsys.readouterr().out


def test_timeit_times_enough_runs_to_fill_the_span(monkeypatch):
    """Five runs of a 2 ms call would sample 10 ms of the machine: the timed runs fill
    SPAN at the warm-up's pace, never fewer than --repeat, never more than MOST_RUNS."""
    monkeypatch.setitem(bench.SPAN, "seconds", 0.1)
    assert bench.timed_runs(5, 0.002) == 50
    assert bench.timed_runs(5, 0.03) == 5
    assert bench.timed_runs(5, 1e-9) == bench.MOST_RUNS
    assert bench.timed_runs(5, 0.0) == 5
    monkeypatch.setitem(bench.SPAN, "seconds", 0.0)
    assert bench.timed_runs(5, 0.002) == 5
    monkeypatch.setitem(bench.SETTLE, "seconds", 0.0)
    monkeypatch.setitem(bench.WARM_UP, "seconds", 0.0)
    monkeypatch.setitem(bench.SPAN, "seconds", 0.05)
    runs = []
    bench.timeit(lambda: (runs.append(1), time.sleep(0.001)), repeat=1)
    assert 3 <= len(runs) - 1 <= 51  # one warm-up run, then about 0.05 s / (1 ms + overhead)


def test_the_machine_line_names_the_pools_thread_counts_and_the_hosts_steal():
    rows = [dict(minifcn_threads=2, steal_cores=0.1), dict(minifcn_threads=1, steal_cores=0.5)]
    line = bench.machine_line(rows)
    assert line.startswith("minifcn's pool: 1/2 threads") and "0.10-0.50 cores' worth" in line
    assert "steal" not in bench.machine_line([dict(minifcn_threads=2)])


def test_timeit_runs_before_untimed_ahead_of_every_run(monkeypatch):
    """The loss's backward is timed one a forward: ``before`` runs ahead of each run,
    warm-up included, and its time is not counted."""
    monkeypatch.setitem(bench.SETTLE, "seconds", 0.0)
    monkeypatch.setitem(bench.WARM_UP, "seconds", 0.0)
    monkeypatch.setitem(bench.SPAN, "seconds", 0.0)
    order = []
    seconds = bench.timeit(
        lambda: order.append("run"), 3, before=lambda: (order.append("before"), time.sleep(0.05))
    )
    assert order == ["before", "run"] * 4 and seconds < 0.01
