"""The layout rules of docs/ARCHITECTURE.md, checked on the source: who may import what.
Module boundaries follow concepts, not a line count."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ivfusion"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of every module `path` imports (lazy imports inside functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


MODULES = _modules()


def _under(imported: set[str], prefix: str) -> list[str]:
    return sorted(m for m in imported if m == prefix or m.startswith(prefix + "."))


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith(("ivfusion.lab", "ivfusion.bench"))])
def test_the_library_never_imports_the_lab_or_the_app(name):
    imported = _imports(name, MODULES[name])
    assert not _under(imported, "ivfusion.lab") and not _under(imported, "app"), name
    assert not _under(imported, "gradio"), f"{name} imports gradio: only the Lab may"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("ivfusion.train")])
def test_training_imports_no_inference_code(name):
    imported = _imports(name, MODULES[name])
    for banned in ("ivfusion.predictor", "ivfusion.fast", "ivfusion.reencode", "ivfusion.stability"):
        assert not _under(imported, banned), f"{name} imports {banned}"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("ivfusion.bench")])
def test_only_the_app_benchmark_imports_the_lab(name):
    if name != "ivfusion.bench.app":
        assert not _under(_imports(name, MODULES[name]), "ivfusion.lab"), name


def test_the_import_rules_are_not_vacuous():
    # the checker must see the imports it polices: the app benchmark does import the Lab
    assert _under(_imports("ivfusion.bench.app", MODULES["ivfusion.bench.app"]), "ivfusion.lab")
    assert "ivfusion.modeling" in _imports("ivfusion.predictor", MODULES["ivfusion.predictor"]) | {
        m.rpartition(".")[0] for m in _imports("ivfusion.predictor", MODULES["ivfusion.predictor"])}
