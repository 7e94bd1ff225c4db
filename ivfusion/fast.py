"""A fast inference path for ISFuse, derived from a reference `ISFuse` module.

The reference modules in `ivfusion.modeling` follow the authors' forward pass op by op and
stay the training path. `build_fast(model)` returns a `FastISFuse`: a copy of the reference
module in which some modules are swapped for exact, cheaper equivalents; the reference
modules' own `forward` methods still do the wiring (the encoders, each CFI; only the loop over
the three CFIs is `FastISFuse.fuse_features`'s own, to drop each level's maps early), so a
change in `modeling/` needs no change here. The swaps (`derive`):

* `ConvBNAct` -> `FastConv`: BatchNorm folded into the convolution (eval-mode statistics),
  the LeakyReLU fused into it as a oneDNN post-op on CPU
  (`torch.ops.mkldnn._convolution_pointwise`, the kernel that torch.compile emits), weights
  and activations channels-last (NHWC), where oneDNN's kernels are fastest;
* a 3x3 convolution with one input channel (the encoders' first layer) -> `PatchConv`: one
  GEMM on 3x3 patches; oneDNN is slow with one channel;
* a 1x1 convolution with one output channel (the gate's projection) -> `PixelProj`: a
  matrix-vector product on the channels-last view (3x faster here); any other bare
  convolution -> `FastConv` without activation;
* `GatedMix` -> `FastMix`: the CFI's g * cross + (1 - g) * local computed in place in the
  cross map when nobody reads it afterwards;
* `Decoder` -> `FastDecoder`: the same blocks, with each level's temporaries freed early;
* `PooledCrossAttention` -> `FastAttention`, the pooled cross-attention rewritten exactly:
  - adaptive average pooling is linear with weights summing to one, so it commutes with a
    1x1 convolution with bias: K and V are projected AFTER pooling (r*r = 64 tokens instead
    of H*W pixels);
  - the query projection is folded into the keys:
    (Wq f + bq)^T k / sqrt(C) = f^T (Wq^T k / sqrt(C)) + bq^T k / sqrt(C), so no Q map is
    ever computed and the scale costs nothing;
  - logits (addmm), softmax and attention-times-values (mm, then addmm_ for the second
    direction) run on (pixels x channels) views of the channels-last maps, in blocks of
    `QUERY_BLOCK` queries (exact: each query's softmax is over the r*r tokens only), the
    logits in small reused buffers (`Workspace`, per thread).

Memory (tools/forward_memory.py): at 1024x1024 a feature map is 128 MB, so what matters is
how many are alive at once. No full-size scratch buffer is kept between calls, the logits
never exist for all pixels at once, and a forward pass frees each level's features, cross map
and decoder temporaries as soon as they are used.

Precision: fp32 (default), bf16 (weights cast once, activations in bf16 except the first
layers, which see the image in fp32: rounding the input to bf16 alone moved outputs by 4/255;
convolutions go through oneDNN only where bf16 is native, else through plain conv2d, about
10x slower than fp32 on an AVX2 CPU), or mixed (`fp32_encoders`: the encoders in fp32, the
CFIs and the decoder in bf16; within the 2/255 bound, where bf16 alone is not). See
docs/PERFORMANCE.md for what each step bought and the measured deviation from the reference
on real pairs.
"""
from __future__ import annotations

import copy
import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import bf16_native
from .modeling import ISFuse, check_inputs
from .modeling.blocks import ConvBNAct, upsample_to
from .modeling.cfi import GatedMix, PooledCrossAttention
from .modeling.decoder import Decoder

QUERY_BLOCK = 16384  # query pixels per attention block (logits: 16384 x r*r floats, 4 MB)
PATHS = ("auto", "reference", "fast", "fast-mixed", "fast-bf16")
BOUND = 2.0 / 255.0  # the deviation bound every path must hold on real pairs (issue 6)


def _mkldnn_ok(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and bf16_native())


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
        cross = torch.empty(b, n, c, dtype=f_vi.dtype, device=f_vi.device)
        # Each query's softmax is over the r*r tokens only, so blocks of queries are exact and
        # the logits never exist for all pixels at once (at 1024x1024: 2 x 256 MB otherwise).
        rows = min(n, QUERY_BLOCK)
        a_vi = self.workspace.get("a_vi", (rows, kq_ir.shape[2]), f_vi)
        a_ir = self.workspace.get("a_ir", (rows, kq_vi.shape[2]), f_vi)
        for i in range(b):  # the keys differ per image
            for s in range(0, n, rows):
                e = min(n, s + rows)
                av, ai, out = a_vi[:e - s], a_ir[:e - s], cross[i, s:e]
                torch.addmm(beta_ir[i], x_vi[i, s:e], kq_ir[i], out=av)
                torch.softmax(av, -1, out=av)
                torch.addmm(beta_vi[i], x_ir[i, s:e], kq_vi[i], out=ai)
                torch.softmax(ai, -1, out=ai)
                torch.mm(av, v_ir[i], out=out)
                out.addmm_(ai, v_vi[i])
        return cross.view(b, h, w, c).permute(0, 3, 1, 2)


class FastMix(nn.Module):
    """`GatedMix` without a new full-size map where it can: the cross map is overwritten in
    place, (cross - local) * g + local with local = f_vi + f_ir (the same value up to
    rounding), when the caller has said it will not read `cross` again
    (`Workspace.cross_is_scratch`, per thread); else local is a new map, lerped towards cross."""

    def __init__(self, workspace: "Workspace"):
        super().__init__()
        self.workspace = workspace

    def forward(self, cross: Tensor, g: Tensor, f_vi: Tensor, f_ir: Tensor) -> Tensor:
        g = g.to(cross.dtype)
        if self.workspace.cross_is_scratch:
            return cross.sub_(f_vi).sub_(f_ir).mul_(g).add_(f_vi).add_(f_ir)
        return torch.add(f_vi, f_ir).to(memory_format=torch.channels_last).lerp_(cross, g)


class FastDecoder(nn.Module):
    """`Decoder` with the same (swapped) blocks, run so that temporaries die early: the
    upsampled map takes the skip in place, the psi list is emptied as it is used, and each
    block's layers run one by one, so at most two finest-level maps are alive at once
    (`Decoder.forward` holds five: skip, upsampled, sum and both convolutions' outputs)."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.blocks, self.head = decoder.blocks, decoder.head

    def forward(self, psi: list[Tensor]) -> Tensor:
        """psi: the CFI outputs, coarsest first, as for `Decoder.forward`; the list is emptied."""
        x = psi.pop(0)
        for block in self.blocks:
            skip = psi.pop(0)
            x = upsample_to(x, skip).add_(skip)
            del skip
            for layer in block:
                x = layer(x)
        return torch.sigmoid(self.head(x))


class Workspace:
    """Reused scratch buffers, one set per thread: a fresh tensor costs page faults on every
    call, a reused one does not. Buffers never escape a forward call, so reuse is invisible to
    callers; the three levels share them (they run one after the other). Only the attention's
    logit blocks live here (`QUERY_BLOCK` rows: 2 x 4 MB); a buffer larger than `max_mb` is not
    kept, so that no input size pins memory in every thread that ever ran a forward pass.

    cross_is_scratch (per thread): set by `FastISFuse.fuse_features` when the caller will not
    read the CFIs' cross maps, so that `FastMix` may overwrite them."""

    def __init__(self, max_mb: float = 16):
        self._local = threading.local()
        self.max_bytes = int(max_mb * 2**20)

    @property
    def cross_is_scratch(self) -> bool:
        return getattr(self._local, "cross_is_scratch", False)

    @cross_is_scratch.setter
    def cross_is_scratch(self, value: bool) -> None:
        self._local.cross_is_scratch = bool(value)

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
    fast.decoder = FastDecoder(fast.decoder)  # after the walk: its blocks are swapped already
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
                 fuse_act: bool = True, fp32_encoders: bool = False):
        super().__init__()
        self.config = model.config
        self.workspace = Workspace()
        self.model = derive(model, self.workspace, patch_first)
        self.dtype = dtype
        self.fp32_encoders = bool(fp32_encoders) and dtype != torch.float32
        encoders = {id(m) for enc in (self.model.encoder_vi, self.model.encoder_ir) for m in enc.modules()}
        for m in self.model.modules():
            if isinstance(m, FastConv):
                m.fused = fuse_act
            # leaves only; fp32 stays where it is cheap and matters: the first layers (the image
            # itself), the one-channel outputs (gate logits, the fused image's logits) and the
            # attention's tiny key GEMM; with fp32_encoders, the encoders too (most of the bf16
            # path's deviation comes from them, and an intervention re-encodes only crops)
            keep = isinstance(m, (PatchConv, FastAttention, PixelProj)) or (
                isinstance(m, FastConv) and 1 in (m.weight.shape[0], m.weight.shape[1])) or (
                self.fp32_encoders and id(m) in encoders)
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
        if self.dtype == torch.float32:
            return "fast"
        return "fast-mixed" if self.fp32_encoders else f"fast-{str(self.dtype).split('.')[-1].replace('bfloat16', 'bf16')}"

    @torch.inference_mode()
    def encode(self, vis_y: Tensor, ir: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """As `ISFuse.encode`; features channels-last, in the path's dtype."""
        return self.model.encode(vis_y.contiguous(), ir.contiguous())

    @torch.inference_mode()
    def fuse_features(self, f_vi: list[Tensor], f_ir: list[Tensor], return_cross: bool = False,
                      release: bool = False):
        """As `ISFuse.fuse_features` (the same CFIs, coarse to fine, then the decoder); outputs
        contiguous float32. Memory: a CFI's cross map is dropped as soon as its level is done
        (kept only with return_cross), and with release=True the caller hands its two lists
        over: each level's features are set to None in them once used, so that the finest
        maps are freed before the decoder runs."""
        own = lambda t: t.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        psi, gates, crosses = [], [], []
        self.workspace.cross_is_scratch = not return_cross
        try:
            for cfi, level in zip(self.model.cfis, (2, 1, 0)):  # as ISFuse.fuse_features
                a, b = f_vi[level], f_ir[level]
                if self.fp32_encoders:  # the CFIs run in the path's dtype
                    a, b = a.to(self.dtype), b.to(self.dtype)
                p, g, cross = cfi.forward_with_cross(a, b)
                del a, b
                if release:
                    f_vi[level] = f_ir[level] = None
                psi.append(p)
                gates.append(g)
                if return_cross:
                    crosses.append(own(cross))
                del p, g, cross
        finally:
            self.workspace.cross_is_scratch = False
        fused = own(self.model.decoder(psi))
        gates = tuple(own(g) for g in gates)
        return (fused, gates, tuple(crosses)) if return_cross else (fused, gates)

    @torch.inference_mode()
    def forward(self, vis_y: Tensor, ir: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        check_inputs(vis_y, ir)
        fused, gates = self.fuse_features(*self.encode(vis_y, ir), release=True)
        out_dtype = vis_y.dtype
        return fused.to(out_dtype), tuple(g.to(out_dtype) for g in gates)


def build_fast(model: ISFuse, device: str | torch.device | None = None, dtype: torch.dtype | str = torch.float32,
               **options) -> FastISFuse:
    """The fast inference module for `model`'s current weights (eval-mode BatchNorm).

    It holds copies of the weights: rebuild it after the model's weights change.
    options: patch_first, fuse_act (False switches one optimisation off, for ablations);
    fp32_encoders (with a bf16 dtype: the "fast-mixed" path).
    """
    if isinstance(dtype, str):
        dtypes = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(dtypes)}")
        dtype = dtypes[dtype]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return FastISFuse(model.eval(), dtype, **options).to(device).eval()


def resolve_path(path: str, device: str | torch.device) -> str:
    """The concrete path ("reference", "fast", "fast-mixed" or "fast-bf16") that `path` names on `device`.

    "auto": fp32 "fast" on CPUs, so that measurements (`ivfusion evaluate`, `study`) give the
    same figures on every CPU. "fast-bf16" does not hold the 2/255 bound with the shipped
    weights (4.0/255 on the bundled night pair msrs_00039N, 3.0/255 from the bf16 encoders
    alone; `tools/bf16_deviation.py`). "fast-mixed" (fp32 encoders, bf16 CFIs and decoder)
    holds it (at most 1.4/255 on the bundled pairs) and a pass is 1.3-2x faster where bf16 is
    native (`tools/pass_contention.py`; the Lab does not use it yet: `ivfusion.lab.models.LAB_PATH`). Where bf16 is not native
    (AVX2, or AVX-512 without BF16) both bf16 paths are about 10x slower. On CUDA "auto" is the
    reference module, which cuDNN already runs fast and the CPU rewrites slow down (H200,
    `ivfusion bench --device cuda`: fast 0.99x at 256x256 and 0.47x at 640x480).
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
        if name == "fast":
            return build_fast(model, device, torch.float32), name
        return build_fast(model, device, torch.bfloat16, fp32_encoders=name == "fast-mixed"), name
    except Exception:
        if path != "auto":
            raise
        return model, "reference"
