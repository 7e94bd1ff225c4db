"""`ivfusion export --onnx OUT.onnx`: ISFuse as an ONNX graph, checked with onnxruntime.

The graph takes the visible luminance, the infrared image and the two keep masks, each
(B, 1, H, W) float32 in [0, 1] with B, H and W dynamic, and returns the fused luminance
(B, 1, H, W) and the three gate maps, coarsest first, at the sizes `ISFuse.forward` gives:

    inputs:  visible_y, infrared, keep_visible, keep_infrared
    outputs: fused, gate_coarse, gate_mid, gate_fine

The masks are inputs, so every intervention runs through the one graph (the network sees
visible_y * keep_visible and infrared * keep_infrared, as `Fuser.intervene` feeds it).

ONNX has no adaptive average pooling, and the CFI pools keys and values to an r x r grid at
any size. Adaptive pooling is linear: along one axis of length n, output cell i averages
positions floor(i n / r) .. ceil((i + 1) n / r) - 1, so pooling is P_h @ X @ P_w^T with two
small averaging matrices that the graph computes from H and W (`pooling_matrix`); the same
windows, exact up to float rounding. Everything else (convolutions, max pooling, bilinear
resizing to a computed size) exports as it is.

`export_onnx` refuses to write a graph whose outputs leave the PyTorch forward pass by more
than 1/255 on the fused image or 1e-3 on a gate, on the bundled examples (`check_export`).
Needs the optional packages of the `export` extra: onnx, onnxscript and onnxruntime.
"""
from __future__ import annotations

import copy
import io as _bytes_io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .levels import GATE_LEVELS
from .modeling import ISFuse
from .modeling.cfi import PooledCrossAttention
from .shipped import ACCEPTED_SPECS

INPUT_NAMES = ("visible_y", "infrared", "keep_visible", "keep_infrared")
OUTPUT_NAMES = ("fused", *(f"gate_{lv.key}" for lv in GATE_LEVELS))
OPSET = 18
FUSED_BOUND = 1.0 / 255.0  # the most the fused image may move, against the PyTorch forward
GATE_BOUND = 1e-3  # the most a gate may move
# the interventions the check feeds the graph, one per bundled example in turn (every mask kind)
CHECK_INTERVENTIONS = ("none", "complementary", "drop-infrared")
MISSING = "the export needs onnx, onnxscript and onnxruntime: pip install -e \".[export]\""


def pooling_matrix(n: Tensor | int, r: int, like: Tensor) -> Tensor:
    """(r, n) averaging matrix of adaptive average pooling from n positions to r: row i averages
    positions floor(i n / r) .. ceil((i + 1) n / r) - 1 (PyTorch's windows). n may be a
    symbolic size, so the matrix is computed inside an exported graph."""
    i = torch.arange(r, device=like.device).unsqueeze(1)  # (r, 1)
    pos = torch.arange(n, device=like.device).unsqueeze(0)  # (1, n)
    start = torch.div(i * n, r, rounding_mode="floor")
    end = torch.div((i + 1) * n + r - 1, r, rounding_mode="floor")
    window = ((pos >= start) & (pos < end)).to(like.dtype)
    return window / window.sum(1, keepdim=True)


def adaptive_pool(x: Tensor, r: int) -> Tensor:
    """`F.adaptive_avg_pool2d(x, r)` as two matrix products, exportable at dynamic sizes."""
    p_h = pooling_matrix(x.shape[-2], r, x)
    p_w = pooling_matrix(x.shape[-1], r, x)
    return p_h @ x @ p_w.transpose(0, 1)


class MatrixPooledAttention(nn.Module):
    """`PooledCrossAttention` with its pooling written as matrix products (`adaptive_pool`);
    the same projections (shared with the module it wraps) and the same attention formula."""

    def __init__(self, att: PooledCrossAttention):
        super().__init__()
        self.att = att

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, h, w = q.shape
        r = self.att.r
        k = adaptive_pool(k, r).flatten(2)  # B, C, r*r
        v = adaptive_pool(v, r).flatten(2)
        q = q.flatten(2).transpose(1, 2)  # B, HW, C
        attn = torch.softmax(q @ k / math.sqrt(c), dim=-1)
        return (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, f_vi: Tensor, f_ir: Tensor) -> Tensor:
        a = self.att
        return self._attend(a.q_vi(f_vi), a.k_ir(f_ir), a.v_ir(f_ir)) + self._attend(a.q_ir(f_ir), a.k_vi(f_vi), a.v_vi(f_vi))


class ExportGraph(nn.Module):
    """What the ONNX graph computes: the masked inputs through a copy of `model` whose pooled
    attention is `MatrixPooledAttention`; outputs flat, in OUTPUT_NAMES order."""

    def __init__(self, model: ISFuse):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        if getattr(self.model, "unused", None) is not None:
            del self.model.unused  # modules the forward pass never calls
        for cfi in self.model.cfis:
            cfi.attention = MatrixPooledAttention(cfi.attention)

    def forward(self, visible_y: Tensor, infrared: Tensor, keep_visible: Tensor, keep_infrared: Tensor):
        fused, gates = self.model(visible_y * keep_visible, infrared * keep_infrared)
        return (fused, *gates)


@dataclass
class CheckRow:
    """One pair of the export check: its name and size, the intervention and the largest
    deviations of the ONNX outputs from the PyTorch forward."""

    name: str
    size: tuple[int, int]
    intervention: str
    fused: float
    gates: float

    @property
    def ok(self) -> bool:
        return self.fused <= FUSED_BOUND and self.gates <= GATE_BOUND


def _require():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise RuntimeError(MISSING) from None
    return onnxruntime


def to_onnx(model: ISFuse) -> bytes:
    """The ONNX graph of `model` (eval mode) as bytes; B, H and W dynamic (see the module docstring)."""
    _require()
    import contextlib
    import logging
    import warnings

    graph = ExportGraph(model.cpu())
    # a batch of 2 (torch.export specialises a size-1 axis), four distinct tensors (inputs
    # given as one aliased tensor are traced as one input)
    example = tuple(torch.rand(2, 1, 64, 96) for _ in INPUT_NAMES)
    dim = torch.export.Dim
    axes = {0: dim("batch", min=1, max=64), 2: dim("height", min=8, max=8192), 3: dim("width", min=8, max=8192)}
    shapes = {n: axes for n in INPUT_NAMES}  # the same Dims: all four inputs share one size
    # the exporter's progress lines and its notes about torchvision's operators are not the user's business
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(_bytes_io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, example, None,
                                        input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=shapes, opset_version=OPSET, dynamo=True,
                                        optimize=True, verbose=False, report=False)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    from . import __version__
    from .hub import describe

    meta = {"producer": f"ivfusion {__version__}", "weights": describe(model), "eta": str(model.config.eta),
            "inputs": ", ".join(INPUT_NAMES), "outputs": ", ".join(OUTPUT_NAMES)}
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return proto.SerializeToString()


def session(onnx_bytes: bytes):
    """An onnxruntime CPU session of an exported graph."""
    ort = _require()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def check_pairs(limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The bundled examples as (name, visible Y, infrared), (H, W) float32 in [0, 1], the
    network's inputs (`data.load_pair`)."""
    from .data import find_pairs, load_pair
    from .hub import EXAMPLES_DIR

    return [(name, *load_pair(ir_path, vi_path, form="network")) for name, ir_path, vi_path in
            find_pairs(EXAMPLES_DIR)[:limit]]


def check_export(onnx_bytes: bytes, model: ISFuse, pairs=None, seed: int = 0) -> list[CheckRow]:
    """Run the graph with onnxruntime and `model`'s PyTorch forward on each pair (default: the
    bundled examples), with the interventions of CHECK_INTERVENTIONS in turn; one CheckRow each."""
    from .interventions import MaskConfig, sample_masks

    sess = session(onnx_bytes)
    model = model.cpu().eval()
    rows = []
    for k, (name, vis_y, ir) in enumerate(check_pairs() if pairs is None else pairs):
        kind = CHECK_INTERVENTIONS[k % len(CHECK_INTERVENTIONS)]
        h, w = ir.shape
        m_vi, m_ir = sample_masks(kind, h, w, np.random.default_rng([seed, k]), MaskConfig(style="disjoint"))
        feeds = dict(zip(INPUT_NAMES, (a[None, None].astype(np.float32) for a in (vis_y, ir, m_vi, m_ir))))
        got = sess.run(list(OUTPUT_NAMES), feeds)
        with torch.inference_mode():
            t = {n: torch.from_numpy(a) for n, a in feeds.items()}
            fused, gates = model(t["visible_y"] * t["keep_visible"], t["infrared"] * t["keep_infrared"])
        want = [fused.numpy(), *(g.numpy() for g in gates)]
        for n, a, b in zip(OUTPUT_NAMES, got, want):
            if a.shape != b.shape:
                raise AssertionError(f"{name}: the graph's {n} is {a.shape}, the PyTorch forward's {b.shape}")
        dev = [float(np.abs(a - b).max()) for a, b in zip(got, want)]
        rows.append(CheckRow(name, (h, w), kind, dev[0], max(dev[1:])))
    return rows


def export_onnx(model: ISFuse, out: str | Path, pairs=None) -> list[CheckRow]:
    """Export `model` and write it to `out` if it passes its check (`write_checked`)."""
    return write_checked(to_onnx(model), model, out, pairs)


def write_checked(onnx_bytes: bytes, model: ISFuse, out: str | Path, pairs=None) -> list[CheckRow]:
    """Check a graph against `model` (`check_export`) and write it to `out` only if every pair
    holds the bounds; raises ExportCheckError (with the rows) otherwise. Returns the rows."""
    from .io import atomic_write

    rows = check_export(onnx_bytes, model, pairs)
    if not all(r.ok for r in rows):
        raise ExportCheckError(rows)
    atomic_write(out, onnx_bytes)
    return rows


class ExportCheckError(RuntimeError):
    """The exported graph left the PyTorch forward by more than the bounds on some pair."""

    def __init__(self, rows: list[CheckRow]):
        self.rows = rows
        bad = [r for r in rows if not r.ok]
        worst = max(bad, key=lambda r: (r.fused / FUSED_BOUND, r.gates / GATE_BOUND))
        super().__init__(f"the ONNX graph fails its check on {len(bad)} of {len(rows)} pairs (worst: {worst.name} with "
                         f"{worst.intervention}: fused {worst.fused * 255:.2f}/255, gates {worst.gates:.2e}; bounds "
                         f"1/255 and {GATE_BOUND:g}); nothing was written")


def format_rows(rows: list[CheckRow]) -> str:
    lines = [f"{'pair':<24} {'size':>9}  {'intervention':<14} {'fused (x/255)':>13} {'gates':>9}"]
    for r in rows:
        lines.append(f"{r.name:<24} {r.size[1]:>4}x{r.size[0]:<4}  {r.intervention:<14} {r.fused * 255:>13.4f} "
                     f"{r.gates:>9.2e}{'' if r.ok else '  FAIL'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write the network as ONNX (masks as inputs), checked with onnxruntime before it is written")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx",
                   help="the ONNX file to write (inputs: " + ", ".join(INPUT_NAMES) + "; outputs: "
                        + ", ".join(OUTPUT_NAMES) + ")")
    p.add_argument("--weights", default=None,
                   help=f"weights spec: {ACCEPTED_SPECS} (default: the bundled weights, or $IVFUSION_WEIGHTS)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from .cli_flags import user_error
    from .hub import WeightsError, describe, load_model

    out = Path(args.onnx)
    if out.suffix.lower() != ".onnx":
        return user_error("export", f"--onnx {args.onnx}: expected a file name ending in .onnx")
    if not out.parent.is_dir():
        return user_error("export", f"--onnx {args.onnx}: the folder {out.parent} does not exist")
    if out.is_dir():
        return user_error("export", f"--onnx {args.onnx}: is a folder; expected a file name ending in .onnx")
    try:
        _require()
    except RuntimeError as e:
        return user_error("export", e)
    try:
        model = load_model(args.weights)
    except (WeightsError, ValueError, OSError) as e:
        return user_error("export", e)
    print(f"weights: {describe(model)}")
    try:
        rows = export_onnx(model, out)
    except ExportCheckError as e:
        print(format_rows(e.rows))
        return user_error("export", e)
    except OSError as e:
        return user_error("export", f"cannot write {out}: {e.strerror or e}")
    print(format_rows(rows))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB): every pair within 1/255 (fused) and "
          f"{GATE_BOUND:g} (gates) of the PyTorch forward")
    return 0
