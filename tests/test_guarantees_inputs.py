"""Bad input, careless or hostile, ends in one line and a non-zero exit before any work:
files that declare more than they hold, images that would decompress to gigabytes, split
files with surprises, arguments out of range, an environment variable with a bad value."""

import io
import json
import zipfile

import numpy as np
import pytest
from guarantee_tools import checkpoint, command, one_error_line, png_bomb, voc_tree
from numpy.lib import format as npy_format

from minifcn.commands.evaluate import main as evaluate_main
from minifcn.commands.train import train
from minifcn.models.checkpoint import load_checkpoint
from minifcn.storage import npz
from minifcn.storage.npz import save_npz_atomic

QUICK = ["--train-size", "4", "--val-size", "4", "--batch-size", "4", "--no-progress"]


def npz_with_member(path, name, shape, body: bytes, compress=False):
    """An .npz whose member ``name`` declares ``shape`` (float32) but holds ``body``."""
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
    )
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as z:
        z.writestr(name + ".npy", header.getvalue() + body)
        z.writestr("__meta__.npy", _npy(np.array(json.dumps({"spec": None}))))
    return path


def _npy(array) -> bytes:
    f = io.BytesIO()
    np.save(f, array)
    return f.getvalue()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("ckpt") / "m.npz")


# ------------------------------------------------------- files that declare too much
def test_an_array_declaring_more_than_its_bytes_is_refused_by_every_reader(tmp_path, ckpt):
    bomb = npz_with_member(tmp_path / "b.npz", "conv1_1.weight", (10**6, 10**6), b"\0" * 64)
    vgg = npz_with_member(tmp_path / "v.npz", "conv1_1_W", (10**5, 10**5, 3, 3), b"\0" * 64)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    cases = [
        ("minifcn.evaluate", "--checkpoint", bomb),
        ("minifcn.predict", image, "--checkpoint", bomb, "-o", tmp_path / "o.png"),
        ("minifcn.export", "--checkpoint", bomb, "-o", tmp_path / "o.onnx"),
        ("minifcn.train", "--init-from", bomb, "--out", tmp_path / "r1", *QUICK),
        ("minifcn.train", "--vgg16", vgg, "--out", tmp_path / "r2", *QUICK),
    ]
    for args in cases:
        code, _, err = command(*args)
        line = one_error_line(err)
        assert code == 1 and "declares shape" in line and "holds 64 bytes" in line, (args, line)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_spec_that_declares_more_classes_than_the_weights_is_refused(tmp_path, ckpt):
    state, meta, extra = load_checkpoint(ckpt)
    meta["spec"]["num_classes"] = 1500  # a 4 MB file that would build a 1,500-class model
    save_npz_atomic(tmp_path / "lie.npz", state, meta)
    code, _, err = command("minifcn.evaluate", "--checkpoint", tmp_path / "lie.npz")
    line = one_error_line(err)
    assert code == 1 and "1500 classes" in line and "score_fr.weight" in line
    meta["spec"]["num_classes"] = 5
    meta["spec"]["config"]["convs_per_block"] = [2, 2, 3, 3, 30]  # 27 convs not in the file
    save_npz_atomic(tmp_path / "lie2.npz", state, meta)
    code, _, err = command("minifcn.export", "--checkpoint", tmp_path / "lie2.npz")
    assert code == 1 and "conv5_4.weight" in one_error_line(err)


def test_arrays_beyond_the_memory_budget_are_refused_before_reading(tmp_path, monkeypatch, ckpt):
    """A compressed member inflating past the budget (half of the machine's memory; here
    lowered to 8 MiB so that the test stays small) is refused from its header."""
    monkeypatch.setattr(npz, "memory_budget", lambda: 8 * 2**20)
    n = 4 * 2**20  # 16 MiB of float32 zeros, a few KiB once deflated
    bomb = npz_with_member(tmp_path / "z.npz", "w", (n,), b"\0" * (4 * n), compress=True)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(SystemExit, match=r"declare 16\.0 MiB, more than the 8\.0 MiB"):
        evaluate_main(["--checkpoint", str(bomb)])
    with pytest.raises(SystemExit, match=r"declare 16\.0 MiB"):
        train(["--vgg16", str(bomb), "--out", str(tmp_path / "r"), *QUICK])
    assert not (tmp_path / "r").exists()
    evaluate_main(["--checkpoint", str(ckpt), "--size", "2"])  # a real one still loads


def test_a_member_declaring_more_than_deflate_can_hold_is_refused(tmp_path):
    path = npz_with_member(tmp_path / "d.npz", "w", (4,), b"\0" * 16, compress=True)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("w.npy")
    # Rewrite the declared uncompressed size in the central directory to 2**31.
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x01\x02"))
    data[central + 24 : central + 28] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert info.compress_size < 100
    code, _, err = command("minifcn.evaluate", "--checkpoint", path)
    assert code == 1 and "declares 2.0 GiB but the file holds" in one_error_line(err)


# ------------------------------------------------------------ decompression bombs
def test_decompression_bomb_images_are_refused_in_one_line(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000
    model = checkpoint(tmp_path / "voc.npz", classes=21, dataset="voc")
    code, _, err = command("minifcn.predict", bomb, "--checkpoint", model, "-o", tmp_path / "m.png")
    line = one_error_line(err)
    assert code == 1 and "bomb.png" in line and "decompression bomb" in line
    root = voc_tree(tmp_path / "voc")
    png_bomb(root / "JPEGImages" / "b.jpg")  # a PNG bomb under a .jpg name
    code, _, err = command(
        "minifcn.evaluate", "--checkpoint", model, "--data-root", root, "--max-memory", "0.5"
    )
    line = one_error_line(err)
    assert code == 1 and "b.jpg" in line and "decompression bomb" in line
    out = tmp_path / "run"
    code, _, err = command(
        "minifcn.train", "--dataset", "voc", "--config", "mini", "--data-root", root,
        "--batch-size", "1", "--out", out, "--no-progress",
    )  # fmt: skip
    assert code == 1 and "b.jpg" in err and "decompression bomb" in err
    assert "Traceback" not in err and not out.exists()


# --------------------------------------------------------------------- split files
def test_a_split_file_with_a_byte_order_mark_reads_its_first_id(tmp_path):
    root = voc_tree(tmp_path / "voc", split_text=b"\xef\xbb\xbfa\r\nb\r\n")
    model = checkpoint(tmp_path / "voc.npz", classes=21, dataset="voc")
    scores = evaluate_main(["--checkpoint", str(model), "--data-root", str(root)])
    assert len(scores["per_class_iu"]) == 21


@pytest.mark.parametrize(
    "text, message",
    [
        (b"a\nb\na\n", "lists 'a' twice (lines 1 and 3)"),
        (b"a\n../../etc/passwd\n", "line 2: '../../etc/passwd' is not an image id"),
        (b"a\n\xff\xfeb\n", "is not UTF-8 text"),
    ],
    ids=["duplicate", "path", "not-utf8"],
)
def test_a_split_file_with_duplicates_paths_or_bad_bytes_is_refused(tmp_path, text, message):
    root = voc_tree(tmp_path / "voc", split_text=text)
    model = checkpoint(tmp_path / "voc.npz", classes=21, dataset="voc")
    code, _, err = command("minifcn.evaluate", "--checkpoint", model, "--data-root", root)
    line = one_error_line(err)
    assert code == 1 and message in line and "val.txt" in line


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "args, message",
    [
        (["minifcn.oracle", "--strides", "0"], "--strides: must be a positive integer"),
        (["minifcn.oracle", "--band", "-1"], "--band: must be a positive integer"),
        (["minifcn.oracle", "--steps", "1e9"], "--steps: expected an integer"),
        (["minifcn.oracle", "--image-size", "20"], "cannot segment an image side of 20"),
        (["minifcn.oracle", "--size", "100000000"], "more than the"),
        (["minifcn.oracle", "--models", "fcn4s"], "invalid choice: 'fcn4s'"),
        (["minifcn.explain", "--size", "0"], "--size: must be a positive integer"),
        (["minifcn.explain", "--config", "mini", "--size", "5"], "cannot segment"),
        (["minifcn.compare", "x", "--val-size", "0"], "--val-size: must be a positive"),
        (["minifcn.compare", "x", "--band", "0"], "--band: must be a positive integer"),
        (["minifcn.compare", "x", "--seed", "-3"], "--seed: must be an integer >= 0"),
        (["minifcn.compare", "missing-run"], "checkpoint not found"),
        (["minifcn.bench", "--repeat", "0"], "--repeat: must be a positive integer"),
        (["minifcn.bench", "--paper-step", "99999"], "--paper-step: must be at most 2,048"),
        (["minifcn.evaluate", "--checkpoint", "c", "--max-memory", "1e300"], "at most"),
        (["minifcn.evaluate", "--checkpoint", "c", "--max-memory", "nan"], "finite"),
        (["minifcn.predict", "i.png", "--checkpoint", "c", "--max-memory", "1e-12"], "byte"),
        (["minifcn.evaluate", "--checkpoint", "c", "--size", "10000000000"], "at most"),
        (["minifcn.evaluate", "--checkpoint", "c", "--size", "100000000"], "GiB of memory"),
    ],
)
def test_secondary_commands_check_their_arguments(tmp_path, args, message):
    code, _, err = command(*args, cwd=tmp_path)
    line = one_error_line(err)
    assert code in (1, 2) and message in line, line


def test_a_forced_tile_too_large_for_the_budget_is_refused(tmp_path, ckpt):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    code, _, err = command(
        "minifcn.predict", image, "--checkpoint", ckpt, "--tile", "100000", "--max-memory",
        "1", "-o", tmp_path / "m.png",
    )  # fmt: skip
    line = one_error_line(err)
    assert code == 1 and "--tile 100000 needs about" in line and "use --tile" in line
    assert not (tmp_path / "m.png").exists()
    code, _, err = command(
        "minifcn.evaluate", "--checkpoint", ckpt, "--size", "2", "--tile", "100000",
        "--max-memory", "1",
    )  # fmt: skip
    assert code == 1 and "--tile 100000 needs about" in one_error_line(err)


def test_compare_refuses_a_run_with_another_class_count(tmp_path):
    voc = checkpoint(tmp_path / "voc.npz", classes=21, dataset="voc")
    code, out, err = command("minifcn.compare", voc, "--val-size", "4")
    line = one_error_line(err)
    assert code == 1 and "21 classes of voc" in line and "mean IU" not in out


# ------------------------------------------------------------------- environment
@pytest.mark.parametrize("cmd", ["minifcn.train", "minifcn.evaluate", "minifcn.compare"])
def test_an_unusable_mplbackend_is_refused_with_the_accepted_values(tmp_path, cmd):
    code, _, err = command(cmd, "--help", env={"MPLBACKEND": "garbage"}, cwd=tmp_path)
    line = one_error_line(err)
    assert code == 1 and "MPLBACKEND='garbage'" in line and "'agg'" in line
    assert not list(tmp_path.iterdir())
