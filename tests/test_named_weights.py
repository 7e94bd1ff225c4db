"""Every shipped weights name (`ivfusion.hub.NAMED_WEIGHTS`) loads through every command that
takes --weights and through the Lab's model menu: fuse, info, evaluate, study, bench, export."""
import cv2
import pytest

from ivfusion.cli import main as ivfusion_cli
from ivfusion.hub import DEFAULT_WEIGHTS, NAMED_WEIGHTS, load_model, named_path

pytestmark = pytest.mark.slow  # every command on the real network

NAMES = sorted(NAMED_WEIGHTS)


@pytest.fixture(scope="module")
def pair(shared_dir, tmp_path_factory):
    """ir/ and vi/ holding one real pair, cut to 96x96 (each command runs the network on it)."""
    root = tmp_path_factory.mktemp("named")
    for sub in ("ir", "vi"):
        (root / sub).mkdir()
        img = cv2.imread(str(shared_dir / "data" / "roadscene" / "test" / sub / "FLIR_00211.jpg"))
        assert cv2.imwrite(str(root / sub / "FLIR_00211.png"), img[100:196, 200:296])
    return root


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_name_is_its_folder_with_a_model_card(name):
    folder = named_path(name)
    for f in ("model.safetensors", "config.json", "MODEL_CARD.md"):
        assert (folder / f).is_file(), folder / f
    a, b = load_model(name).state_dict(), load_model(folder).state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_bundled_is_the_default_name():
    from ivfusion.hub import DEFAULT_NAME

    assert DEFAULT_WEIGHTS == named_path(DEFAULT_NAME)


@pytest.mark.parametrize("name", NAMES)
def test_every_command_takes_a_shipped_name(name, pair, tmp_path, capsys):
    ir, vi = pair / "ir", pair / "vi"
    runs = {
        "fuse": ["fuse", "--infrared", str(ir), "--visible", str(vi), "--out", str(tmp_path / "fused")],
        "info": ["info", "--size", "96", "96"],
        "evaluate": ["evaluate", "--infrared", str(ir), "--visible", str(vi), "--no-progress", "--workers", "1"],
        "study": ["study", str(pair), "--k", "2", "--no-plots", "--no-progress", "--out", str(tmp_path / "study")],
        "bench": ["bench", "--sizes", "64x64", "--runs", "1", "--warmup", "0", "--paths", "reference"],
        "export": ["export", "--onnx", str(tmp_path / "model.onnx")],
    }
    for command, argv in runs.items():
        assert ivfusion_cli([*argv, "--weights", name]) == 0, (command, capsys.readouterr().err[-500:])
    assert (tmp_path / "fused" / "FLIR_00211.png").is_file() and (tmp_path / "model.onnx").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_the_lab_offers_every_shipped_name(name):
    from ivfusion import lab
    from ivfusion.lab.models import named_choice

    bank = lab.ModelBank(env={}, device="cpu", max_side=96)
    choice = named_choice(name)
    assert choice in bank.choices()
    fuser, _ = bank.get(choice)
    assert str(named_path(name)) in fuser.weights_source
