"""The `ivfusion` command as a user runs it: real files, folders, failures reported by name."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ivfusion import Fuser, read_image


def ivfusion(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ivfusion", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def folders(tmp_path, shared_dir):
    src = shared_dir / "data" / "roadscene" / "test"
    ir, vi = tmp_path / "ir", tmp_path / "vi"
    ir.mkdir(), vi.mkdir()
    for name in ("FLIR_00211.jpg", "FLIR_04269.jpg"):
        shutil.copy(src / "ir" / name, ir / name)
        shutil.copy(src / "vi" / name, vi / name)
    (ir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    shutil.copy(src / "vi" / "FLIR_00211.jpg", vi / "broken.jpg")
    shutil.copy(src / "vi" / "FLIR_00211.jpg", vi / "lonely.jpg")
    return ir, vi


def test_folder_mode_fuses_good_pairs_and_names_failures(folders, tmp_path):
    ir, vi = folders
    out = tmp_path / "out"
    res = ivfusion("fuse", "--ir", ir, "--vis", vi, "--out", out, "--weights", "untrained", "--max-side", "200")
    assert res.returncode == 1, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["FLIR_00211.png", "FLIR_04269.png"]
    assert "failed broken:" in res.stderr and "not a readable image" in res.stderr
    assert "lonely (visible only)" in res.stderr
    assert "fused 2 of 3 pairs" in res.stdout and "failed: broken" in res.stdout
    assert "downscaled from 496x301" in res.stdout


def test_single_pair_output_is_lossless_and_matches_the_library(folders, tmp_path):
    ir, vi = folders
    out = tmp_path / "single" / "fused.png"
    res = ivfusion("fuse", "--ir", ir / "FLIR_04269.jpg", "--vis", vi / "FLIR_04269.jpg", "--out", out,
                   "--weights", "untrained", "--intervention", "complementary", "--seed", "5", "--save-gates",
                   "--max-side", "200", "--path", "reference")
    assert res.returncode == 0, res.stderr
    expected = Fuser("untrained", device="cpu", max_side=200, path="reference").fuse(
        read_image(vi / "FLIR_04269.jpg"), read_image(ir / "FLIR_04269.jpg"), "complementary", 5)
    np.testing.assert_array_equal(read_image(out), expected.fused_rgb)
    gates = np.load(out.with_name("fused_gates.npz"))
    assert sorted(gates.files) == ["gate3", "gate4", "gate5", "gates_full"]
    np.testing.assert_allclose(gates["gate5"], expected.gates[2], atol=1e-6)


def test_bad_weights_and_mismatched_args(folders, tmp_path):
    ir, vi = folders
    res = ivfusion("fuse", "--ir", ir, "--vis", vi, "--out", tmp_path / "o", "--weights", tmp_path / "none.safetensors")
    assert res.returncode == 2 and "weights not found" in res.stderr
    res = ivfusion("fuse", "--ir", ir / "FLIR_00211.jpg", "--vis", vi, "--out", tmp_path / "o")
    assert res.returncode != 0 and "both be files or both be folders" in res.stderr
    res = ivfusion("fuse", "--ir", ir, "--vis", vi, "--out", tmp_path / "o", "--intervention", "blur")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_info_prints_the_papers_size_and_cost():
    res = ivfusion("info")
    assert res.returncode == 0, res.stderr
    assert "231,780" in res.stdout and "192,388" in res.stdout
    assert "MACs at 256x256: 5.953 G" in res.stdout


def test_module_and_help_entry_points():
    res = ivfusion("--help")
    assert res.returncode == 0
    for command in ("fuse", "info", "train", "evaluate"):
        assert command in res.stdout
