"""A fast inference path for ISFuse, built from the weights of a reference `ISFuse` module.

The reference modules in `ivfusion.modeling` follow the authors' forward pass op by op and
stay the training path. `build_fast(model)` returns a `FastISFuse`: an inference-only module
with the same call signature, ``(vis_y, ir) -> (fused, (g3, g4, g5))``, that computes the same
function with fewer and cheaper operations:

* BatchNorm folded into the preceding convolution (eval-mode statistics), and LeakyReLU /
  Sigmoid fused into the convolution as a oneDNN post-op on CPU
  (`torch.ops.mkldnn._convolution_pointwise`, the kernel that torch.compile emits);
* channels-last (NHWC) activations throughout, so the attention is plain GEMMs on
  (pixels x channels) views and the convolutions take oneDNN's fast NHWC kernels;
* the CFI's pooled cross-attention rewritten exactly:
  - adaptive average pooling is linear with weights summing to one, so it commutes with a
    1x1 convolution with bias: K and V are projected AFTER pooling (r*r = 64 tokens instead
    of H*W pixels);
  - the query projection is folded into the keys:
    (Wq f + bq)^T k / sqrt(C) = f^T (Wq^T k / sqrt(C)) + bq^T k / sqrt(C), so no Q map is
    ever computed and the scale costs nothing; one tiny GEMM per modality gives the folded
    keys, their per-token bias and the values from the pooled features;
  - logits (addmm), softmax and attention-times-values (mm, then addmm_ for the second
    direction) run on (pixels x channels) views of the channels-last maps, into reused buffers;
* scratch buffers (logits, cross, the gate mix) reused across calls (`Workspace`, per thread):
  a fresh 40-80 MB tensor costs page faults on every call;
* the encoders' first convolution (1 -> 32 channels) as one GEMM on 3x3 patches and the gate's
  1x1 (16 -> 1) projection as a matrix-vector product: oneDNN is slow with one channel;
* batch de-duplication: in a batch whose visible (or infrared) images repeat, as in a clean
  pass plus passes that intervene on the other modality only, each distinct image is
  encoded once.

Precision: fp32 (default) or bf16 (weights cast once, activations in bf16; convolutions go
through oneDNN only where bf16 is native, else through plain conv2d, about 10x slower than
fp32 on an AVX2 CPU).
See docs/PERFORMANCE.md for what each step bought, what did not pay, and the measured
deviation from the reference on real pairs.
"""
from __future__ import annotations

import functools
import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modeling import ISFuse, check_inputs
from .modeling.blocks import ConvBNAct

PATHS = ("auto", "reference", "fast", "fast-bf16")
BOUND = 2.0 / 255.0  # the deviation bound every path must hold on real pairs (issue 6)


def _mkldnn_ok(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and bf16_native())


@functools.lru_cache(maxsize=None)
def bf16_native() -> bool:
    """True where this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor]:
    """(weight, bias) of the convolution followed by eval-mode `bn`, as one convolution."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    if bn is None:
        return w.float(), b.float()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    w = w * scale.view(-1, 1, 1, 1)
    b = (b - bn.running_mean.detach().double()) * scale + bn.bias.detach().double()
    return w.float(), b.float()


class FastConv(nn.Module):
    """A convolution with folded BatchNorm and a fused activation ("leaky", "sigmoid" or None)."""

    def __init__(self, weight: Tensor, bias: Tensor, act: str | None, slope: float = 0.01, padding: int | None = None):
        super().__init__()
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.contiguous())
        self.act, self.slope = act, slope
        self.padding = weight.shape[-1] // 2 if padding is None else padding
        self.fused = True  # use oneDNN post-op fusion where available

    @classmethod
    def from_block(cls, block: ConvBNAct) -> "FastConv":
        w, b = fold_bn(block.conv, block.bn)
        return cls(w, b, "leaky", block.act.negative_slope)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, act: str | None) -> "FastConv":
        w, b = fold_bn(conv, None)
        return cls(w, b, act)

    def forward(self, x: Tensor) -> Tensor:
        p = self.padding
        if self.fused and _mkldnn_ok(x.device, x.dtype):
            attr, scalars = {"leaky": ("leaky_relu", [self.slope]), "sigmoid": ("sigmoid", []), None: ("none", [])}[self.act]
            return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, [p, p], [1, 1], [1, 1], 1, attr, scalars, "")
        y = F.conv2d(x, self.weight, self.bias, padding=p)
        if self.act == "leaky":
            return F.leaky_relu_(y, self.slope)
        if self.act == "sigmoid":
            return y.sigmoid_()
        return y


class PatchConv(nn.Module):
    """The encoders' first layer (1 -> C channels, 3x3, folded BN, LeakyReLU) as one GEMM on
    the nine shifted copies of the input: (pixels x 9) @ (9 x C), written straight into an
    NHWC tensor. A 1-channel direct convolution is memory-bound and slower in oneDNN."""

    def __init__(self, block: ConvBNAct):
        super().__init__()
        w, b = fold_bn(block.conv, block.bn)
        if w.shape[1] != 1 or w.shape[-1] != 3:
            raise ValueError("PatchConv takes a 3x3 convolution with one input channel")
        self.register_buffer("weight_t", w.reshape(w.shape[0], 9).t().contiguous())  # 9 x C
        self.register_buffer("bias", b)
        self.slope = block.act.negative_slope

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        cols = F.unfold(x, 3, padding=1)  # B, 9, HW
        y = torch.baddbmm(self.bias.view(1, 1, -1), cols.transpose(1, 2), self.weight_t.expand(b, -1, -1))  # B, HW, C
        F.leaky_relu_(y, self.slope)
        return y.view(b, h, w, -1).permute(0, 3, 1, 2)  # channels-last view


class PixelProj(nn.Module):
    """The gate's Conv1x1(C -> 1) + Sigmoid as a matrix-vector product on the channels-last
    view: a one-output-channel convolution is oneDNN's slowest case (3x slower here)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.weight.shape[0] != 1 or conv.weight.shape[-1] != 1:
            raise ValueError("PixelProj takes a 1x1 convolution with one output channel")
        self.register_buffer("weight", conv.weight.detach().reshape(-1).clone())
        self.register_buffer("bias", conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view for channels-last x
        return torch.addmv(self.bias, rows, self.weight).sigmoid_().view(b, 1, h, w)


class FastEncoder(nn.Module):
    def __init__(self, enc, patch_first: bool = True):
        super().__init__()
        first = enc.stages[0][0]
        self.first = PatchConv(first) if patch_first else FastConv.from_block(first)
        self.convs = nn.ModuleList([FastConv.from_block(enc.stages[0][1])] + [
            FastConv.from_block(blk) for stage in enc.stages[1:] for blk in stage])

    def forward(self, x: Tensor) -> list[Tensor]:
        c = self.convs
        # the first layer sees the image in fp32 whatever the path's dtype: rounding the input
        # to bf16 (8-bit mantissa, up to 0.5/255) alone moved bf16 outputs by 4/255
        f1 = c[0](self.first(x.float()).to(c[0].weight.dtype))
        f2 = c[2](c[1](F.max_pool2d(f1, 2)))
        f3 = c[4](c[3](F.max_pool2d(f2, 2)))
        return [f1, f2, f3]


class FastCFI(nn.Module):
    """One CFI level with the pooled cross-attention in its exact, cheaper form.

    For the direction "queries of modality q attend to keys/values of modality m":
        logits = (Wq f_q + bq)^T (Wk p_m + bk) / sqrt(C) = f_q^T Kq + beta
    with p_m the r x r pooled features of m, Kq = (Wk p_m + bk)^T Wq / sqrt(C) and
    beta = (Wk p_m + bk)^T bq / sqrt(C). One small GEMM per modality gives [Kq | beta | V]
    from the pooled features; the full-resolution work is then one GEMM with bias (logits,
    pixels x r*r), a softmax over the r*r tokens and one GEMM (attention times values) per
    direction, the second accumulating into the first's output.
    """

    def __init__(self, cfi, level: int = 0):
        super().__init__()
        self.level = level
        att = cfi.attention
        self.r = att.r
        c = att.q_vi.weight.shape[0]
        self.dim = c
        s = 1.0 / math.sqrt(c)
        get = lambda name: (getattr(att, name).weight.detach().double().reshape(c, c), getattr(att, name).bias.detach().double())
        for m, q in (("ir", "vi"), ("vi", "ir")):  # keys/values of m serve the queries of q
            (wk, bk), (wv, bv), (wq, bq) = get(f"k_{m}"), get(f"v_{m}"), get(f"q_{q}")
            # pooled (T, C) @ w + b = [Kq^T (T, C) | beta (T, 1) | V (T, C)]
            w = torch.cat([wk.t() @ wq * s, (wk.t() @ bq * s)[:, None], wv.t()], 1)
            b = torch.cat([bk @ wq * s, (bk @ bq * s)[None], bv])
            self.register_buffer(f"kv_{m}_w", w.float())
            self.register_buffer(f"kv_{m}_b", b.float())
        self.gate_conv = FastConv.from_block(cfi.gate.block)
        self.gate_proj = PixelProj(cfi.gate.proj)
        self.refine = FastConv.from_block(cfi.refine)

    def _keys(self, f: Tensor, m: str) -> tuple[Tensor, Tensor, Tensor]:
        """Query-folded keys (B, C, T), their bias (B, T) and the values (B, T, C)."""
        c = self.dim
        pooled = F.adaptive_avg_pool2d(f, self.r).flatten(2).transpose(1, 2).float()  # B, T, C
        kv = torch.baddbmm(getattr(self, f"kv_{m}_b"), pooled, getattr(self, f"kv_{m}_w").expand(f.shape[0], -1, -1))
        kv = kv.to(f.dtype)
        return kv[..., :c].transpose(1, 2).contiguous(), kv[..., c].contiguous(), kv[..., c + 1:].contiguous()

    def attention(self, f_vi: Tensor, f_ir: Tensor, ws: "Workspace") -> Tensor:
        b, c, h, w = f_vi.shape
        n = h * w
        kq_ir, beta_ir, v_ir = self._keys(f_ir, "ir")  # serve the visible queries
        kq_vi, beta_vi, v_vi = self._keys(f_vi, "vi")  # serve the infrared queries
        x_vi = f_vi.permute(0, 2, 3, 1).reshape(b, n, c)  # views of the channels-last maps
        x_ir = f_ir.permute(0, 2, 3, 1).reshape(b, n, c)
        cross = ws.get("cross", (b, n, c), f_vi)
        a_vi = ws.get("a_vi", (n, kq_ir.shape[2]), f_vi)
        a_ir = ws.get("a_ir", (n, kq_vi.shape[2]), f_vi)
        for i in range(b):  # the keys differ per image
            torch.addmm(beta_ir[i], x_vi[i], kq_ir[i], out=a_vi)
            torch.softmax(a_vi, -1, out=a_vi)
            torch.addmm(beta_vi[i], x_ir[i], kq_vi[i], out=a_ir)
            torch.softmax(a_ir, -1, out=a_ir)
            torch.mm(a_vi, v_ir[i], out=cross[i])
            cross[i].addmm_(a_ir, v_vi[i])
        return cross.view(b, h, w, c).permute(0, 3, 1, 2)

    def forward(self, f_vi: Tensor, f_ir: Tensor, ws: "Workspace") -> tuple[Tensor, Tensor]:
        cross = self.attention(f_vi, f_ir, ws)
        g = self.gate_proj(self.gate_conv(cross))
        mixed = torch.add(f_vi, f_ir, out=ws.get("mixed", f_vi.shape, f_vi, channels_last=True))
        mixed.lerp_(cross, g)  # g * cross + (1 - g) * local, local = f_vi + f_ir
        return self.refine(mixed), g


class Workspace:
    """Reused scratch buffers, one set per thread: a fresh 40-80 MB tensor costs page faults on
    every call (about a third of a softmax pass over it), a reused one does not. Buffers never
    escape a forward call, so reuse is invisible to callers; the three levels share them (they
    run one after the other). A buffer larger than `max_mb` is not kept (allocated per call),
    so that huge inputs do not pin memory: at 640x480 the kept buffers hold about 240 MB."""

    def __init__(self, max_mb: float = 256):
        self._local = threading.local()
        self.max_bytes = int(max_mb * 2**20)

    def get(self, name: str, shape, like: Tensor, channels_last: bool = False) -> Tensor:
        shape = tuple(shape)
        numel = math.prod(shape)
        bufs = self._local.__dict__.setdefault("bufs", {})
        key = (name, like.dtype, like.device)
        buf = bufs.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            if numel * buf.element_size() <= self.max_bytes:
                bufs[key] = buf
        flat = buf[:numel]
        if channels_last:
            b, c, h, w = shape
            return flat.view(b, h, w, c).permute(0, 3, 1, 2)
        return flat.view(shape)

    def clear(self) -> None:
        self._local.__dict__.pop("bufs", None)


class FastISFuse(nn.Module):
    """Inference-only ISFuse built from a reference module; same call signature and outputs
    (to rounding). Use `build_fast` to make one."""

    def __init__(self, model: ISFuse, dtype: torch.dtype = torch.float32,
                 patch_first: bool = True, dedup: bool = True, fuse_act: bool = True):
        super().__init__()
        self.config = model.config
        self.encoder_vi = FastEncoder(model.encoder_vi, patch_first)
        self.encoder_ir = FastEncoder(model.encoder_ir, patch_first)
        self.cfis = nn.ModuleList([FastCFI(c, k) for k, c in enumerate(model.cfis)])
        self.blocks = nn.ModuleList([nn.Sequential(*(FastConv.from_block(b) for b in blk)) for blk in model.decoder.blocks])
        self.head = FastConv.from_conv(model.decoder.head, "sigmoid")
        self.dtype = dtype
        self.dedup = dedup
        self.workspace = Workspace()
        for m in self.modules():
            if isinstance(m, FastConv):
                m.fused = fuse_act
        if dtype != torch.float32:
            firsts = {id(self.encoder_vi.first), id(self.encoder_ir.first)}
            for m in self.modules():
                if isinstance(m, (FastConv, PatchConv, PixelProj)) and id(m) not in firsts:
                    for name, buf in m.named_buffers(recurse=False):
                        setattr(m, name, buf.to(dtype))

    @property
    def path(self) -> str:
        return "fast" if self.dtype == torch.float32 else f"fast-{str(self.dtype).split('.')[-1].replace('bfloat16', 'bf16')}"

    def encode(self, x: Tensor, which: str) -> list[Tensor]:
        """Encoder features of one modality ("vi" or "ir"), channels-last, finest first."""
        enc = self.encoder_vi if which == "vi" else self.encoder_ir
        return enc(x.contiguous())

    def _encode_unique(self, x: Tensor, which: str) -> list[Tensor]:
        """Encode each distinct image of the batch once and index the features back."""
        b = x.shape[0]
        if not self.dedup or b == 1:
            return self.encode(x, which)
        first, index = [], []
        for i in range(b):
            for u, k in enumerate(first):
                if torch.equal(x[i], x[k]):
                    index.append(u)
                    break
            else:
                index.append(len(first))
                first.append(i)
        if len(first) == b:
            return self.encode(x, which)
        feats = self.encode(x[first], which)
        # torch.cat of channels-last slices is a plain memory copy (index_select is not)
        return [torch.cat([f[u:u + 1] for u in index]) for f in feats]

    @torch.inference_mode()
    def forward(self, vis_y: Tensor, ir: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        check_inputs(vis_y, ir)
        f_vi = self._encode_unique(vis_y, "vi")
        f_ir = self._encode_unique(ir, "ir")
        psi, gates = [], []
        for cfi, level in zip(self.cfis, (2, 1, 0)):
            p, g = cfi(f_vi[level], f_ir[level], self.workspace)
            psi.append(p)
            gates.append(g)
        x = psi[0]
        for block, skip in zip(self.blocks, psi[1:]):
            x = block(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False).add_(skip))
        fused = self.head(x)
        out_dtype = vis_y.dtype
        return fused.to(out_dtype).contiguous(), tuple(g.to(out_dtype).contiguous() for g in gates)


def build_fast(model: ISFuse, device: str | torch.device | None = None, dtype: torch.dtype | str = torch.float32,
               **options) -> FastISFuse:
    """The fast inference module for `model`'s current weights (eval-mode BatchNorm).

    It holds copies of the weights: rebuild it after the model's weights change.
    """
    if isinstance(dtype, str):
        dtype = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return FastISFuse(model.eval(), dtype, **options).to(device).eval()


def resolve_path(path: str, device: str | torch.device) -> str:
    """The concrete path ("reference", "fast" or "fast-bf16") that `path` names on `device`.

    "auto": the fastest path that holds the 2/255 bound on this device. On CPUs that is fp32
    "fast": "fast-bf16" does not hold the bound with the shipped weights (4.0/255 on the bundled
    night pair msrs_00039N, 3.0/255 from the bf16 encoders alone; `tools/bf16_deviation.py`), and
    where bf16 is not native (AVX2, or AVX-512 without BF16) it is also about 10x slower. On
    CUDA it is the reference module, which cuDNN already runs fast and the CPU rewrites slow
    down (H200, `ivfusion bench --device cuda`: fast 0.99x at 256x256 and 0.47x at 640x480).
    """
    if path not in PATHS:
        raise ValueError(f"unknown inference path {path!r}; accepted: {', '.join(PATHS)}")
    if path != "auto":
        return path
    return "fast" if torch.device(device).type == "cpu" else "reference"


def make_net(model: ISFuse, device: str | torch.device, path: str = "auto") -> tuple[nn.Module, str]:
    """(module, path name) for `Fuser`: the reference module itself, or a fast module built
    from its weights. "auto" falls back to the reference if the fast path cannot be built."""
    name = resolve_path(path, device)
    if name == "reference":
        return model, name
    try:
        return build_fast(model, device, torch.bfloat16 if name == "fast-bf16" else torch.float32), name
    except Exception:
        if path != "auto":
            raise
        return model, "reference"


def read_pair(ir_path, vi_path) -> tuple[Tensor, Tensor]:
    """A registered pair as the network sees it: (vis_y, ir), each (1, 1, H, W) float32 in [0, 1]
    (visible Y from OpenCV's YCrCb conversion, infrared as grey), at its native size."""
    import numpy as np

    from . import io

    vis = io.visible_to_ycrcb(io.read_image(vi_path))[..., 0]
    ir, _ = io.infrared_to_grey(io.read_image(ir_path))
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return as_t(vis), as_t(ir)


def real_pairs(data_dir, names: list[str] | None = None, limit: int | None = None) -> list[tuple[str, Tensor, Tensor]]:
    """(name, vis_y, ir) for the pairs in `data_dir` (a folder with ir/ and vi/), sorted by name."""
    from pathlib import Path

    data_dir = Path(data_dir)
    files = sorted(p for p in (data_dir / "ir").iterdir() if p.is_file())
    if names is not None:
        files = [p for p in files if p.stem in names or p.name in names]
    out = []
    for p in files[:limit]:
        vi = next((q for q in (data_dir / "vi").glob(p.stem + ".*")), None)
        if vi is not None:
            out.append((p.stem, *read_pair(p, vi)))
    return out


@torch.inference_mode()
def max_deviation(reference: nn.Module, net: nn.Module, pairs) -> dict:
    """Largest absolute difference of `net` from `reference` over `pairs` ((name, vis_y, ir)):
    on the fused image and on the gates, with the pair and size where the fused maximum occurs."""
    worst = {"fused": 0.0, "gates": 0.0, "pair": None, "size": None}
    for name, vis_y, ir in pairs:
        f_ref, g_ref = reference(vis_y, ir)
        f_net, g_net = net(vis_y, ir)
        d = (f_net.float() - f_ref.float()).abs().max().item()
        dg = max((a.float() - b.float()).abs().max().item() for a, b in zip(g_net, g_ref))
        if d >= worst["fused"]:
            worst.update(fused=d, pair=name, size=f"{vis_y.shape[-1]}x{vis_y.shape[-2]}")
        worst["gates"] = max(worst["gates"], dg)
    return worst


def synthetic_model(seed: int = 0, config=None) -> ISFuse:
    """A randomly initialised ISFuse whose BatchNorm statistics and affine parameters are random
    too (running_mean ~ U(-0.5, 0.5), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5),
    bias ~ U(-0.2, 0.2)), so that BatchNorm folding is really exercised: a stand-in for the
    authors' checkpoint where it is not available."""
    from .hub import untrained_model

    model = untrained_model(config, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    u = lambda t, lo, hi: t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                u(m.running_mean, -0.5, 0.5), u(m.running_var, 0.5, 2.0), u(m.weight, 0.5, 1.5), u(m.bias, -0.2, 0.2)
    model.weights_source = f"synthetic (random init and BatchNorm statistics, seed {seed})"
    return model.eval()


def fold_bn_model(model: ISFuse) -> ISFuse:
    """A copy of `model` with every BatchNorm folded into its convolution (BN replaced by
    Identity): the reference forward otherwise unchanged. For measuring that step alone."""
    import copy

    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            w, b = fold_bn(m.conv, m.bn)
            with torch.no_grad():
                m.conv.weight.copy_(w)
                m.conv.bias.copy_(b)
            m.bn = nn.Identity()
    return folded


class ChannelsLast(nn.Module):
    """Runs a module on channels-last inputs (the weights converted once)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, vis_y: Tensor, ir: Tensor):
        fused, gates = self.model(vis_y.contiguous(memory_format=torch.channels_last),
                                  ir.contiguous(memory_format=torch.channels_last))
        return fused.contiguous(), tuple(g.contiguous() for g in gates)
