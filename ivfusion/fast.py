"""A fast inference path for ISFuse, derived from a reference `ISFuse` module.

The reference modules in `ivfusion.modeling` follow the authors' forward pass op by op and
stay the training path. `build_fast(model)` returns a `FastISFuse`: a copy of the reference
module in which some modules are swapped for exact, cheaper equivalents; the reference
modules' own `forward` methods still do the wiring, so a change in `modeling/` needs no
change here. The swaps (`derive`):

* `ConvBNAct` -> `FastConv`: BatchNorm folded into the convolution (eval-mode statistics),
  the LeakyReLU fused into it as a oneDNN post-op on CPU
  (`torch.ops.mkldnn._convolution_pointwise`, the kernel that torch.compile emits), weights
  and activations channels-last (NHWC), where oneDNN's kernels are fastest;
* a 3x3 convolution with one input channel (the encoders' first layer) -> `PatchConv`: one
  GEMM on 3x3 patches; oneDNN is slow with one channel;
* a 1x1 convolution with one output channel (the gate's projection) -> `PixelProj`: a
  matrix-vector product on the channels-last view (3x faster here); any other bare
  convolution -> `FastConv` without activation;
* `GatedMix` -> `FastMix`: the CFI's g * cross + (1 - g) * local as an in-place lerp into a
  reused buffer;
* `PooledCrossAttention` -> `FastAttention`, the pooled cross-attention rewritten exactly:
  - adaptive average pooling is linear with weights summing to one, so it commutes with a
    1x1 convolution with bias: K and V are projected AFTER pooling (r*r = 64 tokens instead
    of H*W pixels);
  - the query projection is folded into the keys:
    (Wq f + bq)^T k / sqrt(C) = f^T (Wq^T k / sqrt(C)) + bq^T k / sqrt(C), so no Q map is
    ever computed and the scale costs nothing;
  - logits (addmm), softmax and attention-times-values (mm, then addmm_ for the second
    direction) run on (pixels x channels) views of the channels-last maps, the logits in
    reused buffers (`Workspace`, per thread: a fresh 80 MB tensor costs page faults).

Precision: fp32 (default) or bf16 (weights cast once, activations in bf16 except the first
layers, which see the image in fp32: rounding the input to bf16 alone moved outputs by 4/255;
convolutions go through oneDNN only where bf16 is native, else through plain conv2d, about
10x slower than fp32 on an AVX2 CPU). See docs/PERFORMANCE.md for what each step bought and
the measured deviation from the reference on real pairs.
"""
from __future__ import annotations

import copy
import functools
import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modeling import ISFuse, check_inputs
from .modeling.blocks import ConvBNAct
from .modeling.cfi import GatedMix, PooledCrossAttention

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
    """A convolution with folded BatchNorm and a fused activation ("leaky", "sigmoid" or None).
    Input and output (B, C, H, W), channels-last; the input is cast to the weights' dtype."""

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
        return cls(w, b, "leaky", block.act.negative_slope, block.conv.padding[0])

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, act: str | None = None) -> "FastConv":
        w, b = fold_bn(conv, None)
        return cls(w, b, act, padding=conv.padding[0])

    def forward(self, x: Tensor) -> Tensor:
        p = self.padding
        x = x.to(self.weight.dtype)
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
    """A 3x3 convolution with one input channel (folded BN, LeakyReLU) as one GEMM on the nine
    shifted copies of the input: (pixels x 9) @ (9 x C), written straight into an NHWC tensor.
    A 1-channel direct convolution is memory-bound and slower in oneDNN. Computes in fp32."""

    def __init__(self, block: ConvBNAct):
        super().__init__()
        w, b = fold_bn(block.conv, block.bn)
        if w.shape[1] != 1 or w.shape[-1] != 3 or block.conv.padding[0] != 1:
            raise ValueError("PatchConv takes a 3x3 'same' convolution with one input channel")
        self.register_buffer("weight_t", w.reshape(w.shape[0], 9).t().contiguous())  # 9 x C
        self.register_buffer("bias", b)
        self.slope = block.act.negative_slope

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        cols = F.unfold(x.float(), 3, padding=1)  # B, 9, HW
        y = torch.baddbmm(self.bias.view(1, 1, -1), cols.transpose(1, 2), self.weight_t.expand(b, -1, -1))  # B, HW, C
        F.leaky_relu_(y, self.slope)
        return y.view(b, h, w, -1).permute(0, 3, 1, 2)  # channels-last view


class PixelProj(nn.Module):
    """A 1x1 convolution with one output channel as a matrix-vector product on the
    channels-last view: a one-output-channel convolution is oneDNN's slowest case."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.weight.shape[0] != 1 or conv.weight.shape[-1] != 1:
            raise ValueError("PixelProj takes a 1x1 convolution with one output channel")
        self.register_buffer("weight", conv.weight.detach().reshape(-1).clone())
        self.register_buffer("bias", conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        rows = x.to(self.weight.dtype).permute(0, 2, 3, 1).reshape(-1, c)  # a view for channels-last x
        return torch.addmv(self.bias, rows, self.weight).view(b, 1, h, w)


class FastAttention(nn.Module):
    """`PooledCrossAttention` in its exact, cheaper form; same call (f_vi, f_ir) -> cross.

    For the direction "queries of modality q attend to keys/values of modality m":
        logits = (Wq f_q + bq)^T (Wk p_m + bk) / sqrt(C) = f_q^T Kq + beta
    with p_m the r x r pooled features of m, Kq = (Wk p_m + bk)^T Wq / sqrt(C) and
    beta = (Wk p_m + bk)^T bq / sqrt(C). One small GEMM per modality gives [Kq | beta | V]
    from the pooled features; the full-resolution work is then one GEMM with bias (logits,
    pixels x r*r), a softmax over the r*r tokens and one GEMM (attention times values) per
    direction, the second accumulating into the first's output.
    """

    def __init__(self, att: PooledCrossAttention, workspace: "Workspace"):
        super().__init__()
        self.r = att.r
        c = att.q_vi.weight.shape[0]
        self.dim = c
        self.workspace = workspace
        s = 1.0 / math.sqrt(c)
        get = lambda name: (getattr(att, name).weight.detach().double().reshape(c, c), getattr(att, name).bias.detach().double())
        for m, q in (("ir", "vi"), ("vi", "ir")):  # keys/values of m serve the queries of q
            (wk, bk), (wv, bv), (wq, bq) = get(f"k_{m}"), get(f"v_{m}"), get(f"q_{q}")
            # pooled (T, C) @ w + b = [Kq^T (T, C) | beta (T, 1) | V (T, C)]
            w = torch.cat([wk.t() @ wq * s, (wk.t() @ bq * s)[:, None], wv.t()], 1)
            b = torch.cat([bk @ wq * s, (bk @ bq * s)[None], bv])
            self.register_buffer(f"kv_{m}_w", w.float())
            self.register_buffer(f"kv_{m}_b", b.float())

    def _keys(self, f: Tensor, m: str) -> tuple[Tensor, Tensor, Tensor]:
        """Query-folded keys (B, C, T), their bias (B, T) and the values (B, T, C)."""
        c = self.dim
        pooled = F.adaptive_avg_pool2d(f, self.r).flatten(2).transpose(1, 2).float()  # B, T, C
        kv = torch.baddbmm(getattr(self, f"kv_{m}_b"), pooled, getattr(self, f"kv_{m}_w").expand(f.shape[0], -1, -1))
        kv = kv.to(f.dtype)
        return kv[..., :c].transpose(1, 2).contiguous(), kv[..., c].contiguous(), kv[..., c + 1:].contiguous()

    def forward(self, f_vi: Tensor, f_ir: Tensor) -> Tensor:
        b, c, h, w = f_vi.shape
        n = h * w
        f_vi = f_vi.contiguous(memory_format=torch.channels_last)
        f_ir = f_ir.contiguous(memory_format=torch.channels_last)
        kq_ir, beta_ir, v_ir = self._keys(f_ir, "ir")  # serve the visible queries
        kq_vi, beta_vi, v_vi = self._keys(f_vi, "vi")  # serve the infrared queries
        x_vi = f_vi.permute(0, 2, 3, 1).reshape(b, n, c)  # views of the channels-last maps
        x_ir = f_ir.permute(0, 2, 3, 1).reshape(b, n, c)
        # one buffer per level size: the three levels' cross maps are alive together
        cross = self.workspace.get(f"cross{h}x{w}", (b, n, c), f_vi)
        a_vi = self.workspace.get("a_vi", (n, kq_ir.shape[2]), f_vi)
        a_ir = self.workspace.get("a_ir", (n, kq_vi.shape[2]), f_vi)
        for i in range(b):  # the keys differ per image
            torch.addmm(beta_ir[i], x_vi[i], kq_ir[i], out=a_vi)
            torch.softmax(a_vi, -1, out=a_vi)
            torch.addmm(beta_vi[i], x_ir[i], kq_vi[i], out=a_ir)
            torch.softmax(a_ir, -1, out=a_ir)
            torch.mm(a_vi, v_ir[i], out=cross[i])
            cross[i].addmm_(a_ir, v_vi[i])
        return cross.view(b, h, w, c).permute(0, 3, 1, 2)


class FastMix(nn.Module):
    """`GatedMix` in place: local = f_vi + f_ir written into a reused buffer, then
    lerp_(cross, g) = local + g * (cross - local), the same value up to rounding."""

    def __init__(self, workspace: "Workspace"):
        super().__init__()
        self.workspace = workspace

    def forward(self, cross: Tensor, g: Tensor, f_vi: Tensor, f_ir: Tensor) -> Tensor:
        out = self.workspace.get("mix", f_vi.shape, f_vi, channels_last=True)
        return torch.add(f_vi, f_ir, out=out).lerp_(cross, g.to(out.dtype))


class Workspace:
    """Reused scratch buffers, one set per thread: a fresh 40-80 MB tensor costs page faults on
    every call (about a third of a softmax pass over it), a reused one does not. Buffers never
    escape a forward call, so reuse is invisible to callers; the three levels share them (they
    run one after the other). A buffer larger than `max_mb` is not kept (allocated per call),
    so that huge inputs do not pin memory: at 640x480 the kept buffers hold about 250 MB."""

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

    def __deepcopy__(self, memo) -> "Workspace":
        return Workspace(self.max_bytes / 2**20)  # a copy gets its own (empty) buffers


def _swap(module: nn.Module, workspace: Workspace, patch_first: bool) -> nn.Module | None:
    """The fast replacement of one reference module, or None to keep it (and look inside)."""
    if isinstance(module, ConvBNAct):
        conv = module.conv
        if patch_first and conv.in_channels == 1 and conv.kernel_size == (3, 3) and conv.padding == (1, 1):
            return PatchConv(module)
        return FastConv.from_block(module)
    if isinstance(module, PooledCrossAttention):
        return FastAttention(module, workspace)
    if isinstance(module, GatedMix):
        return FastMix(workspace)
    if isinstance(module, nn.Conv2d):
        if module.out_channels == 1 and module.kernel_size == (1, 1):
            return PixelProj(module)
        return FastConv.from_conv(module)
    return None


def derive(model: ISFuse, workspace: Workspace, patch_first: bool = True) -> ISFuse:
    """A deep copy of `model` (eval mode) with every module that has a fast equivalent swapped
    for it (see the module docstring); the modules' own forward methods stay."""
    fast = copy.deepcopy(model).eval()

    def walk(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            new = _swap(child, workspace, patch_first)
            if new is None:
                walk(child)
            else:
                setattr(parent, name, new)

    walk(fast)
    if getattr(fast, "unused", None) is not None:
        del fast.unused  # modules the forward pass never calls
    return fast


class FastISFuse(nn.Module):
    """Inference-only ISFuse derived from a reference module; same call signature and outputs
    (to rounding), and the same `encode` / `fuse_features` split. Use `build_fast` to make one.

    Outputs are contiguous tensors in the input's dtype; features from `encode` are
    channels-last in the path's dtype and are meant for `fuse_features` of the same module.
    """

    def __init__(self, model: ISFuse, dtype: torch.dtype = torch.float32, patch_first: bool = True,
                 fuse_act: bool = True):
        super().__init__()
        self.config = model.config
        self.workspace = Workspace()
        self.model = derive(model, self.workspace, patch_first)
        self.dtype = dtype
        for m in self.model.modules():
            if isinstance(m, FastConv):
                m.fused = fuse_act
            # leaves only; fp32 stays where it is cheap and matters: the first layers (the image
            # itself), the one-channel outputs (gate logits, the fused image's logits) and the
            # attention's tiny key GEMM
            keep = isinstance(m, (PatchConv, FastAttention, PixelProj)) or (
                isinstance(m, FastConv) and 1 in (m.weight.shape[0], m.weight.shape[1]))
            if dtype != torch.float32 and not keep and not list(m.children()):
                m.to(dtype)

    @property
    def encoder_vi(self) -> nn.Module:
        return self.model.encoder_vi

    @property
    def encoder_ir(self) -> nn.Module:
        return self.model.encoder_ir

    @property
    def path(self) -> str:
        return "fast" if self.dtype == torch.float32 else f"fast-{str(self.dtype).split('.')[-1].replace('bfloat16', 'bf16')}"

    @torch.inference_mode()
    def encode(self, vis_y: Tensor, ir: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """As `ISFuse.encode`; features channels-last, in the path's dtype."""
        return self.model.encode(vis_y.contiguous(), ir.contiguous())

    @torch.inference_mode()
    def fuse_features(self, f_vi: list[Tensor], f_ir: list[Tensor], return_cross: bool = False):
        """As `ISFuse.fuse_features`; outputs contiguous float32."""
        out = self.model.fuse_features(f_vi, f_ir, return_cross)
        # clone: the cross maps live in the workspace, which the next call overwrites
        own = lambda t: t.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        return (own(out[0]), *(tuple(own(t) for t in ts) for ts in out[1:]))

    @torch.inference_mode()
    def forward(self, vis_y: Tensor, ir: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        check_inputs(vis_y, ir)
        fused, gates = self.model(vis_y.contiguous(), ir.contiguous())
        out_dtype = vis_y.dtype
        return fused.to(out_dtype).contiguous(), tuple(g.to(out_dtype).contiguous() for g in gates)


def build_fast(model: ISFuse, device: str | torch.device | None = None, dtype: torch.dtype | str = torch.float32,
               **options) -> FastISFuse:
    """The fast inference module for `model`'s current weights (eval-mode BatchNorm).

    It holds copies of the weights: rebuild it after the model's weights change.
    options: patch_first, fuse_act (False switches one optimisation off, for ablations).
    """
    if isinstance(dtype, str):
        dtypes = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(dtypes)}")
        dtype = dtypes[dtype]
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
