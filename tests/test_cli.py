"""The `ivfusion` command as a user runs it: real files, folders, failures reported by name."""
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ivfusion import Fuser, read_image
from ivfusion.levels import GATE_LEVELS, npz_key


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


@pytest.mark.slow  # runs the command in a subprocess
def test_folder_mode_fuses_good_pairs_and_names_failures(folders, tmp_path):
    ir, vi = folders
    out = tmp_path / "out"
    res = ivfusion("fuse", "--infrared", ir, "--visible", vi, "--out", out, "--weights", "untrained",
                   "--max-side", "200")
    assert res.returncode == 1, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["FLIR_00211.png", "FLIR_04269.png"]
    assert "failed broken:" in res.stderr and "not a readable image" in res.stderr
    assert "skipped 1 file(s) with no file of the same name on the other side: lonely.jpg (visible only)" in res.stderr
    assert "fused 2 of 3 pairs" in res.stdout and "failed: broken" in res.stdout
    assert "downscaled from 496x301" in res.stdout
    assert "Traceback" not in res.stderr


def _bad_pairs(ir, vi, src):
    """Unusable pairs of every kind, each beside good ones: name -> (infrared bytes, visible bytes)."""
    good_ir, good_vi = (src / "ir" / "FLIR_00211.jpg").read_bytes(), (src / "vi" / "FLIR_00211.jpg").read_bytes()
    png = lambda a: cv2.imencode(".png", a)[1].tobytes()
    header = bytearray(png(np.zeros((8, 8), np.uint8)))
    header[16:24] = (50000).to_bytes(4, "big") * 2  # IHDR width and height: 50000 x 50000
    return {
        "b_tiny": (png(np.full((1, 1), 200, np.uint8)), png(np.full((1, 1, 3), 90, np.uint8))),
        "c_flat": (png(np.zeros((64, 80), np.uint8)), png(np.zeros((64, 80, 3), np.uint8))),
        "d_huge_header": (bytes(header), good_vi),
        "e_truncated": (good_ir[: len(good_ir) // 3], good_vi),
        "f_sizes": (png(np.zeros((30, 40), np.uint8)), good_vi),
    }


@pytest.mark.slow  # runs the command in a subprocess
def test_folder_mode_continues_past_any_failure_and_writes_no_partial_file(folders, tmp_path, shared_dir):
    ir, vi = folders
    (ir / "broken.png").unlink()
    for name, (ir_bytes, vi_bytes) in _bad_pairs(ir, vi, shared_dir / "data" / "roadscene" / "test").items():
        (ir / f"{name}.png").write_bytes(ir_bytes)
        (vi / f"{name}.png").write_bytes(vi_bytes)
    out = tmp_path / "out"
    res = ivfusion("fuse", "--infrared", ir, "--visible", vi, "--out", out, "--weights", "untrained",
                   "--max-side", "160", "--save-gates")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    written = sorted(p.name for p in out.iterdir())
    summary = res.stderr[res.stderr.index("pair(s) failed"):]
    failed = [line.split(":")[0].strip() for line in summary.splitlines()[1:] if line.strip()]
    ok = sorted({"FLIR_00211", "FLIR_04269", "b_tiny", "c_flat", "d_huge_header", "e_truncated", "f_sizes"}
                - set(failed))
    assert {"FLIR_00211", "FLIR_04269"} <= set(ok)
    # every pair is either written (image and gates, complete) or named in the summary
    assert written == sorted([f"{s}.png" for s in ok] + [f"{s}_gates.npz" for s in ok])
    for s in ok:
        assert read_image(out / f"{s}.png").ndim == 3
        assert sorted(np.load(out / f"{s}_gates.npz").files) == ["gate_coarse", "gate_fine", "gate_mid", "gates_full"]
    assert "f_sizes" in failed and "--resize-ir" in summary and "resize_ir=True" not in res.stderr
    assert "d_huge_header" in failed and "e_truncated" in failed
    assert f"failed: {', '.join(failed)}" in res.stdout


@pytest.mark.slow  # runs the command in a subprocess
def test_single_pair_output_is_lossless_and_matches_the_library(folders, tmp_path):
    ir, vi = folders
    out = tmp_path / "single" / "fused.png"
    res = ivfusion("fuse", "--infrared", ir / "FLIR_04269.jpg", "--visible", vi / "FLIR_04269.jpg", "--out", out,
                   "--weights", "untrained", "--intervention", "complementary", "--seed", "5", "--save-gates",
                   "--max-side", "200", "--path", "reference")
    assert res.returncode == 0, res.stderr
    expected = Fuser("untrained", device="cpu", max_side=200, path="reference").fuse(
        read_image(vi / "FLIR_04269.jpg"), read_image(ir / "FLIR_04269.jpg"), "complementary", 5)
    np.testing.assert_array_equal(read_image(out), expected.fused_rgb)
    gates = np.load(out.with_name("fused_gates.npz"))
    assert sorted(gates.files) == sorted([npz_key(lv) for lv in GATE_LEVELS] + ["gates_full"])
    for lv in GATE_LEVELS:
        np.testing.assert_allclose(gates[npz_key(lv)], expected.gates[lv.index], atol=1e-6)
    assert gates["gate_fine"].shape == expected.fused_y.shape  # the fine level is at full size
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.slow  # runs the command in a subprocess
def test_the_removed_flag_spellings_are_refused(folders, tmp_path):
    ir, vi = folders
    res = ivfusion("fuse", "--ir", ir / "FLIR_04269.jpg", "--vis", vi / "FLIR_04269.jpg", "--out", tmp_path / "o.png",
                   "--weights", "untrained", "--intervention", "drop-ir")
    assert res.returncode == 2 and "unrecognized arguments: --ir" in res.stderr or "invalid choice" in res.stderr


@pytest.mark.slow  # runs the command in a subprocess
def test_mismatched_sizes_tell_cli_users_about_resize_ir(folders, tmp_path):
    ir, vi = folders
    small = tmp_path / "small.png"
    assert cv2.imwrite(str(small), cv2.imread(str(ir / "FLIR_04269.jpg"))[:100, :120])
    res = ivfusion("fuse", "--infrared", small, "--visible", vi / "FLIR_04269.jpg", "--out", tmp_path / "x.png",
                   "--weights", "untrained")
    assert res.returncode == 1 and "Add --resize-ir" in res.stderr and "resize_ir=True" not in res.stderr
    assert "120x100" in res.stderr and "Traceback" not in res.stderr
    res = ivfusion("fuse", "--infrared", small, "--visible", vi / "FLIR_04269.jpg", "--out", tmp_path / "x.png",
                   "--weights", "untrained", "--resize-ir", "--max-side", "64")
    assert res.returncode == 0 and "infrared resized from 120x100" in res.stdout


@pytest.mark.slow  # runs the command in a subprocess
def test_no_pairs_found_says_the_names_differ(tmp_path, folders):
    ir, vi = folders
    other = tmp_path / "renamed"
    other.mkdir()
    for p in vi.iterdir():
        shutil.copy(p, other / f"v_{p.name}")
    res = ivfusion("fuse", "--infrared", ir, "--visible", other, "--out", tmp_path / "o", "--weights", "untrained")
    assert res.returncode == 2 and "no pairs found" in res.stderr and "differ" in res.stderr
    assert "v_FLIR_00211.jpg" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # runs the command in a subprocess
def test_bad_weights_and_mismatched_args(folders, tmp_path):
    ir, vi = folders
    res = ivfusion("fuse", "--infrared", ir, "--visible", vi, "--out", tmp_path / "o",
                   "--weights", tmp_path / "none.safetensors")
    assert res.returncode == 2 and "weights not found" in res.stderr
    res = ivfusion("fuse", "--infrared", ir / "FLIR_00211.jpg", "--visible", vi, "--out", tmp_path / "o")
    assert res.returncode != 0 and "both be files or both be folders" in res.stderr
    res = ivfusion("fuse", "--infrared", ir, "--visible", vi, "--out", tmp_path / "o", "--intervention", "blur")
    assert res.returncode == 2 and "invalid choice" in res.stderr
    res = ivfusion("fuse", "--visible", vi, "--out", tmp_path / "o")
    assert res.returncode == 2 and "required: --infrared" in res.stderr
    res = ivfusion("info", "--weights", tmp_path / "nope")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "nope" in res.stderr


@pytest.mark.slow  # runs the command in a subprocess
def test_info_prints_the_papers_size_and_cost():
    res = ivfusion("info")
    assert res.returncode == 0, res.stderr
    assert "231,780" in res.stdout and "192,388" in res.stdout
    assert "MACs at 256x256: 5.953 G" in res.stdout


@pytest.mark.slow  # runs the command in a subprocess
def test_module_and_help_entry_points():
    res = ivfusion("--help")
    assert res.returncode == 0
    for command in ("fuse", "info", "train", "evaluate"):
        assert command in res.stdout


# ---- one command-line style: the same conventions in every subcommand ---------------------
# A user error in each subcommand, found before any model or data is loaded.
USER_ERRORS = {
    "fuse": ["fuse", "--visible", "v.png", "--out", "o.png"],
    "info": ["info", "--weights", "no/such/weights"],
    "train": ["train", "--out", "{tmp}/run", "--val", "none", "--crop", "0"],
    "evaluate": ["evaluate", "--infrared", "{tmp}/ir", "--visible", "{tmp}/vi"],
    "study": ["study", "{tmp}", "--weights", "untrained", "--limit", "0"],
}


@pytest.mark.parametrize("command", sorted(USER_ERRORS))
def test_a_user_error_is_one_argparse_style_line_with_exit_code_2(command, tmp_path, capsys):
    from ivfusion.cli import main

    argv = [a.format(tmp=tmp_path) for a in USER_ERRORS[command]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ivfusion {command}: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["fuse", "train", "evaluate", "study", "bench"])
def test_every_device_flag_takes_the_same_names_and_refuses_others_at_parse_time(command, capsys):
    from ivfusion.cli import build_parser
    from ivfusion.device import DEVICE_NAMES

    parser = build_parser(command)
    sub = parser._subparsers._group_actions[0].choices[command]
    (device,) = [a for a in sub._actions if "--device" in a.option_strings]
    assert DEVICE_NAMES in device.help and device.metavar == "NAME"
    if command != "train":  # train's flags fill TrainConfig, which checks the name (the test above)
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--device", "gpu0"])
        assert f"ivfusion {command}: error: argument --device: device 'gpu0' is unknown" in capsys.readouterr().err


def test_every_training_setting_has_one_flag_and_every_flag_shows_its_default():
    import argparse

    from ivfusion.train.config import add_arguments, setting_names

    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = [a for a in p._actions if a.dest not in ("help", "config")]
    assert sorted(a.dest for a in flags) == sorted(setting_names())  # a new TrainConfig field needs its flag
    assert all(a.default is None for a in flags)  # so that --config and a resumed run's config can fill them
    assert all("(default " in a.help for a in flags)


# ---- ranges checked when the command line is parsed (issue 25) -----------------------------
@pytest.mark.parametrize("argv, message", [
    (["bench", "--sizes", "0x0"], "argument --sizes: size '0x0': each side must be at least 4 pixels"),
    (["bench", "--sizes", "100000x100000"], "argument --sizes: size '100000x100000': at most 50 megapixels"),
    (["bench", "--runs", "-1"], "argument --runs: must be a whole number >= 1, got '-1'"),
    (["bench", "--threads", "-3"], "argument --threads: must be a whole number >= 1, got '-3'"),
    (["info", "--size", "0", "0"], "argument --size: must be a whole number >= 4, got '0'"),
    (["evaluate", "--digits", "-5"], "argument --digits: must be a whole number from 0 to 12"),
    (["evaluate", "--seed", "-1"], "argument --seed: must be a whole number >= 0, got '-1'"),
    (["fuse", "--seed", "-1"], "argument --seed: must be a whole number >= 0, got '-1'"),
    (["fuse", "--max-side", "0"], "argument --max-side: must be a whole number >= 4 or 'none' (never downscale)"),
    (["study", "somewhere", "--weights", "untrained", "--seed", "-1"], "argument --seed: must be a whole number >= 0"),
])
def test_a_number_out_of_range_is_a_usage_error_at_parse_time(argv, message, capsys):
    from ivfusion.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"ivfusion {argv[0]}: error: {message}"), err


def test_downscaling_is_turned_off_by_name_only():
    from ivfusion.cli import build_parser

    parser = build_parser("fuse")
    assert parser.parse_args(["fuse", "--out", "o", "--max-side", "none"]).max_side is None
    assert parser.parse_args(["fuse", "--out", "o", "--max-side", "4"]).max_side == 4
    assert parser.parse_args(["fuse", "--out", "o"]).max_side == 2048


def test_info_refuses_a_size_past_the_largest_image_and_counts_any_other_without_running_it(capsys):
    import torch

    from ivfusion.bench import count_macs
    from ivfusion.hub import load_model

    from ivfusion.cli import main

    assert main(["info", "--size", "100000", "100000"]) == 2
    err = capsys.readouterr().err
    assert err == "ivfusion info: error: --size 100000 100000: at most 50 megapixels, the largest image ivfusion reads\n"
    # counted on shapes alone, the MACs are those of a real forward (an odd size too)
    assert main(["info", "--size", "37", "50"]) == 0
    x = torch.zeros(1, 1, 37, 50)
    assert f"MACs at 37x50: {count_macs(load_model('untrained'), x, x) / 1e9:.3f} G" in capsys.readouterr().out


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    from ivfusion.cli import main

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for command, out in [("study", afile), ("study", afile / "sub"), ("train", afile), ("train", afile / "sub")]:
        args = [str(tmp_path), "--weights", "untrained"] if command == "study" else ["--val", "none"]
        assert main([command, *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"ivfusion {command}: error: --out {out} is not a folder ({afile} is a file); give a folder\n"


def test_study_names_unmatched_files_exits_1_on_a_failed_pair_and_remeasures_a_malformed_record(
        shared_dir, tmp_path, capsys):
    import json

    from ivfusion.cli import main

    src = shared_dir / "data" / "msrs" / "train"
    ds = tmp_path / "set"
    for sub in ("ir", "vi"):
        (ds / sub).mkdir(parents=True)
        (ds / sub / "00001D.png").write_bytes((src / sub / "00001D.png").read_bytes())
    (ds / "ir" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)  # a pair that fails
    (ds / "vi" / "zz.png").write_bytes((src / "vi" / "00002D.png").read_bytes())
    (ds / "vi" / "lonely.png").write_bytes((src / "vi" / "00003N.png").read_bytes())  # no infrared partner
    out = tmp_path / "out"
    args = ["study", str(ds), "--weights", "untrained", "--k", "2", "--max-side", "64", "--no-progress", "--no-plots",
            "--out", str(out)]
    assert main(args) == 1
    captured = capsys.readouterr()
    label = f"{tmp_path.name}/set"  # a dataset's label: its folder's last two parts
    assert (f"{label}: skipped 1 file(s) with no file of the same name on the other side: lonely.png (visible only)"
            in captured.err.splitlines())
    assert captured.err.splitlines()[-1] == ("ivfusion study: 1 of 2 pair runs failed (named above) and are left out "
                                             "of the statistics")
    assert f"failed: {label}/zz with untrained: " in captured.out
    assert "Traceback" not in captured.err

    (record,) = (out / "cache").rglob("*.json")  # the good pair's; a record without "tests" is stale
    kept = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in kept.items() if k != "tests"}))
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "(1 computed" in captured.out and "0 from the cache" in captured.out
    assert "1 cached record(s) were torn or malformed" in captured.err
    assert json.loads(record.read_text())["tests"] == kept["tests"]  # measured again: the same numbers
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "1 from the cache" in captured.out and "torn or malformed" not in captured.err
