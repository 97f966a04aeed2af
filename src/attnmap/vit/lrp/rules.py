"""LRP propagation rules as pure functions on tensors (Chefer et al., CVPR 2021, conservative rules).

Every rule takes the relevance arriving at a layer's output plus the tensors the forward pass
recorded, and returns the relevance of the layer's input(s). Nothing here sums across the batch:
relevance is per sample, so a map computed in a batch equals the one computed alone.

Stabiliser (the ε of every division R ⊘ Z):

- ``REFERENCE_STABILISER`` (used for float64): ``a / (b + 1e-9)``, and 0 where b = 0. This is what
  the reference implementation does; it does not follow b's sign, and 1e-9 is below float32
  resolution, so it is only used where it is exact enough (float64) and for conformance.
- ``SIGN_STABILISER`` (used for float32; the LRP methods refuse float16 and bfloat16 models):
  ``a / (b + 1e-7·sign(b))`` with sign(0) = +1, the classic LRP-ε. It never divides by a value smaller
  than 1e-7 in magnitude and never flips a denominator's sign, which keeps the float32 maps close to
  the float64 ones (correlation ≥ 0.99). Why 1e-7: on the reference fixture model, full LRP in
  float32 correlates 0.9996 with float64 at 1e-7, 0.995 at 1e-6 and 0.91 at 1e-5 (a larger ε visibly
  changes the rule); much below 1e-7 the stabiliser sits under float32 resolution and round-off
  takes over again.

Linear and convolution z⁺ rules (α=1, β=0, signed inputs) use the identities
``x⁺W⁺ᵀ + x⁻W⁻ᵀ = (xWᵀ + |x||W|ᵀ)/2`` and ``x⁺⊙(SW⁺) + x⁻⊙(SW⁻) = (x⊙(SW) + |x|⊙(S|W|))/2``:
``xWᵀ`` is the forward's pre-bias output, so each rule costs three matmuls instead of the
reference's eight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input

from attnmap.vit.pooling import pool_tokens, winners


@dataclass(frozen=True)
class Stabiliser:
    """How ``a ⊘ b`` avoids dividing by (nearly) zero; see the module docstring."""

    eps: float
    follow_sign: bool

    def divide(
        self, a: torch.Tensor, b: torch.Tensor, factor: float = 1.0, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """a ⊘ b, divided by ``factor`` (folded into the denominator pass). ``out``: a buffer of the
        result's shape the sign-following form may compute in (see `Workspace`)."""
        if self.follow_sign:  # factor·(b + eps·sign(b)), sign(+0) = +1
            eps = torch.tensor(factor * self.eps, dtype=b.dtype, device=b.device)
            denominator = torch.copysign(eps, b) if out is None else torch.copysign(eps, b, out=out)
            denominator.add_(b, alpha=factor)
            if a.dtype == b.dtype and denominator.shape == torch.broadcast_shapes(a.shape, b.shape):
                return torch.div(a, denominator, out=denominator)  # reuse the temporary
            return a / denominator
        if factor != 1.0:
            a = a / factor
        denominator = b + self.eps
        denominator = torch.where(denominator == 0, self.eps, denominator)
        return torch.where(b != 0, a / denominator, torch.zeros((), dtype=a.dtype, device=a.device))

    def divide_scaled_nonnegative(
        self, a: torch.Tensor, scaled: torch.Tensor, factor: float, offset: torch.Tensor | None
    ) -> torch.Tensor:
        """a ⊘ b for b = (scaled − offset) / factor ≥ 0 by construction, returned divided by ``factor``.

        i.e. a / (scaled − offset + factor·ε). Overwrites ``scaled`` (a temporary of the caller); the
        offset and ε go in one pass, which matters on CPUs where every elementwise op is a sync point.
        """
        if self.follow_sign:
            shift = factor * self.eps if offset is None else factor * self.eps - offset
            return torch.div(a, scaled.add_(shift), out=scaled)
        if offset is not None:
            scaled = scaled.sub_(offset)
        zero = torch.zeros((), dtype=a.dtype, device=a.device)
        return torch.where(scaled != 0, a / (scaled + factor * self.eps), zero)


class Workspace:
    """Temporaries of one relevance pass, reused block after block.

    Every block asks for temporaries of the same shapes. Fresh CPU tensors of a few MB each come
    from the system allocator, which maps and zero-fills new pages for most of them; reusing one
    buffer per (role, shape) removes that cost. A buffer is only ever a temporary *inside* one rule
    (or one that the next rule of the same block consumes), never a returned relevance that
    outlives the block.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, role: str, shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
        key = (role, tuple(shape), like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.empty(key[1], dtype=like.dtype, device=like.device)
        return buffer


def _buffer(work: Workspace | None, role: str, shape: tuple[int, ...] | torch.Size, like: torch.Tensor):
    return None if work is None else work.get(role, shape, like)


REFERENCE_STABILISER = Stabiliser(eps=1e-9, follow_sign=False)
SIGN_STABILISER = Stabiliser(eps=1e-7, follow_sign=True)


def stabiliser_for(dtype: torch.dtype) -> Stabiliser:
    """The reference stabiliser in float64 (exact conformance), the sign-following one otherwise."""
    return REFERENCE_STABILISER if dtype == torch.float64 else SIGN_STABILISER


def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first, kept broadcastable: (B, 1, ..., 1)."""
    return t.sum(dim=tuple(range(1, t.ndim)), keepdim=True)


def linear_zplus(
    relevance: torch.Tensor,
    x: torch.Tensor,
    output: torch.Tensor,
    weight: torch.Tensor,
    stab: Stabiliser,
    abs_weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
    work: Workspace | None = None,
    result_role: str | None = None,
    spend_output: bool = False,
) -> torch.Tensor:
    """z⁺ (α1β0) rule of ``y = x Wᵀ + b`` for signed x, times ``scale``.

    ``output`` is x Wᵀ from the forward, or x Wᵀ + b when ``bias`` is given (it is subtracted). The
    bias takes no relevance; each output's relevance is split over the inputs in proportion to
    their positive contributions x⁺W⁺ and x⁻W⁻. With Z₂ = xWᵀ + |x||W|ᵀ = 2Z and S₂ = R ⊘₂ Z₂:
    R_x = x ⊙ (S₂W) + |x| ⊙ (S₂|W|). ``abs_weight`` = |W| if the caller has it cached; ``work``
    holds the temporaries, and the result too when ``result_role`` names its buffer (for a result
    the caller consumes before the next rule with that role). ``spend_output``: ``output`` is not
    read after this rule, so it may be overwritten (a relevance pass consuming its trace).
    """
    if abs_weight is None:
        abs_weight = weight.abs()
    in_features, out_features = x.shape[-1], output.shape[-1]
    flat_x = x.reshape(-1, in_features)
    rows = flat_x.shape[0]
    abs_x = torch.abs(flat_x, out=_buffer(work, "abs_x", flat_x.shape, flat_x))
    factor = 2.0 / scale  # Z₂·factor/2 in one addmm: the scale costs no extra pass
    flat_output = output.detach().reshape(-1, out_features)
    # Z₂ written over the forward's output when the caller is done with it: addmm into another
    # buffer first copies its input there, one more pass over the output per rule
    in_place = spend_output and flat_output.data_ptr() == output.data_ptr()
    scaled = torch.addmm(
        flat_output,
        abs_x,
        abs_weight.T,
        beta=factor / 2,
        alpha=factor / 2,
        out=flat_output if in_place else _buffer(work, "z", (rows, out_features), flat_x),
    )
    offset = None if bias is None else bias * (factor / 2)
    s = stab.divide_scaled_nonnegative(relevance.reshape(-1, out_features), scaled, factor, offset)
    positive = torch.mm(s, abs_weight, out=_buffer(work, "s_abs_w", flat_x.shape, flat_x))
    into = None if result_role is None else _buffer(work, result_role, flat_x.shape, flat_x)
    result = torch.mm(s, weight, out=into)
    result.mul_(flat_x).addcmul_(positive, abs_x)
    return result.reshape(x.shape)


def _conv_transpose(
    s: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size, conv: dict
) -> torch.Tensor:
    return conv2d_input(input_shape, weight, s, **conv)


def conv_zplus(
    relevance: torch.Tensor,
    x: torch.Tensor,
    z_pre_bias: torch.Tensor,
    weight: torch.Tensor,
    conv: dict,
    stab: Stabiliser,
) -> torch.Tensor:
    """z⁺ (α1β0) rule of a Conv2d for signed inputs; ``conv`` = its stride/padding/dilation/groups."""
    abs_weight = weight.abs()
    abs_x = x.abs()
    z = (z_pre_bias + F.conv2d(abs_x, abs_weight, None, **conv)) * 0.5
    s = stab.divide(relevance, z)
    return (
        x * _conv_transpose(s, weight, x.shape, conv) + abs_x * _conv_transpose(s, abs_weight, x.shape, conv)
    ) * 0.5


def _is_patchify(weight: torch.Tensor, conv: dict, image: torch.Tensor) -> bool:
    """A convolution that cuts the image into non-overlapping patches: a matmul on the patch matrix."""

    def pair(value: object) -> tuple:
        return tuple(value) if isinstance(value, (tuple, list)) else (value, value)

    kernel = tuple(weight.shape[-2:])
    return (
        pair(conv["stride"]) == kernel
        and pair(conv["padding"]) == (0, 0)
        and pair(conv["dilation"]) == (1, 1)
        and conv["groups"] == 1
        and image.shape[-2] % kernel[0] == 0
        and image.shape[-1] % kernel[1] == 0
    )


def _zbox_patches(relevance: torch.Tensor, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`conv_zbox` for a patchify convolution: the same sums as matmuls on the (B·P, C·kh·kw) patches
    (the transposed convolution of a stride = kernel convolution is a matmul and a reshape)."""
    batch, channels, height, width = image.shape
    kh, kw = weight.shape[-2:]
    gh, gw = height // kh, width // kw
    flat = image.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    patches = image.view(batch, channels, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5)
    size = channels * kh * kw
    bounded = image.new_empty(batch, gh, gw, 2, channels, kh, kw)  # [X − L, X − H] per patch
    torch.sub(patches, low.view(-1, 1, 1, 1, 1, 1), out=bounded[:, :, :, 0])
    torch.sub(patches, high.view(-1, 1, 1, 1, 1, 1), out=bounded[:, :, :, 1])
    bounded = bounded.view(-1, 2 * size)
    w_flat = weight.reshape(weight.shape[0], size)
    w_split = torch.cat([w_flat.clamp(min=0), w_flat.clamp(max=0)], dim=1)  # (D, 2·size)
    z = torch.addmm(torch.full((), 1e-9, dtype=image.dtype, device=image.device), bounded, w_split.T)
    s = relevance.permute(0, 2, 3, 1).reshape(-1, weight.shape[0]) / z
    shares = (s @ w_split).mul_(bounded).view(batch, gh, gw, 2, channels, kh, kw).sum(dim=3)
    return shares.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)


def conv_zbox(
    relevance: torch.Tensor,
    image: torch.Tensor,
    weight: torch.Tensor,
    conv: dict,
) -> torch.Tensor:
    """zᴮ rule of the first convolution: inputs bounded by each image's global min L and max H.

    Za = conv(X, W) − conv(L, W⁺) − conv(H, W⁻) + 1e-9 (plain division, as the reference);
    R = X⊙convᵀ(S, W) − L⊙convᵀ(S, W⁺) − H⊙convᵀ(S, W⁻). Computed in the equal, cancellation-free
    form Za = conv(X−L, W⁺) + conv(X−H, W⁻) + 1e-9, R = (X−L)⊙convᵀ(S, W⁺) + (X−H)⊙convᵀ(S, W⁻).
    """
    if _is_patchify(weight, conv, image):
        return _zbox_patches(relevance, image, weight)
    flat = image.flatten(1)
    above_low = image - flat.min(dim=1).values.view(-1, 1, 1, 1)  # X − L ≥ 0
    below_high = image - flat.max(dim=1).values.view(-1, 1, 1, 1)  # X − H ≤ 0
    w_pos = weight.clamp(min=0)
    w_neg = weight.clamp(max=0)
    # Za as a sum of non-negative terms: no cancellation in float32.
    z = F.conv2d(above_low, w_pos, None, **conv) + F.conv2d(below_high, w_neg, None, **conv) + 1e-9
    s = relevance / z
    shape = image.shape
    return above_low * _conv_transpose(s, w_pos, shape, conv) + below_high * _conv_transpose(
        s, w_neg, shape, conv
    )


def attention_value_rule(
    relevance: torch.Tensor,
    attn: torch.Tensor,
    value: torch.Tensor,
    product: torch.Tensor,
    stab: Stabiliser,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LRP-0 of O = A·V (per head): returns (R_A, R_V), each summing to ΣR (the block halves them)."""
    s = stab.divide(relevance, product)
    return attn * (s @ value.transpose(-1, -2)), value * (attn.transpose(-1, -2) @ s)


def query_key_rule(
    relevance: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    scores: torch.Tensor,
    stab: Stabiliser,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LRP-0 of the unscaled scores Q·Kᵀ (per head): returns (R_Q, R_K), each times ``scale``."""
    s = stab.divide(relevance, scores, factor=1.0 / scale)
    return query * (s @ key), key * (s.transpose(-1, -2) @ query)


def _per_sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a ⊙ b per sample, (B, 1, ..., 1), without materialising the product when shapes agree.

    One BLAS dot per sample: a batched (1×K)·(K×1) matmul takes several times as long on CPU."""
    if a.shape != b.shape or a.ndim < 2:
        return per_sample_sum(a * b)
    flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    dots = torch.stack([torch.dot(flat_a[i], flat_b[i]) for i in range(a.shape[0])])
    return dots.view(a.shape[0], *([1] * (a.ndim - 1)))


def add_rule(
    relevance: torch.Tensor,
    x0: torch.Tensor,
    x1: torch.Tensor,
    stab: Stabiliser,
    total_input: torch.Tensor | None = None,
    work: Workspace | None = None,
    role: str = "add",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the relevance of ``x0 + x1`` between the two summands, conserving it per sample.

    The LRP-0 shares are rescaled so that each branch's total is its |share| of the sample's total
    (a branch whose raw share summed negative is sign-flipped). ``x1`` may broadcast (pos_embed).
    ``total_input`` is x0 + x1 when the forward already computed it (the same operation, so the same
    value). The raw shares' totals are dot products: only the two rescaled shares are materialised.
    With ``work`` both shares live there, the first in the buffer named ``role`` (valid until the
    next add rule with that role), the second in one shared by all add rules.
    """
    z = x0 + x1 if total_input is None else total_input
    s = stab.divide(relevance, z, out=_buffer(work, "add_share1", z.shape, z))
    total0 = _per_sample_dot(x0, s)
    total1 = _per_sample_dot(x1, s) if x1.shape == s.shape else per_sample_sum(x1 * s)
    total = per_sample_sum(relevance)
    abs0 = total0.abs()
    abs1 = total1.abs()
    scale0 = stab.divide(stab.divide(abs0, abs0 + abs1) * total, total0)
    scale1 = stab.divide(stab.divide(abs1, abs0 + abs1) * total, total1)
    share0 = torch.mul(x0, s, out=_buffer(work, role, s.shape, s)).mul_(scale0)
    share1 = s.mul_(x1).mul_(scale1)  # s is this function's own temporary
    return share0, share1


def clone_rule(
    branch0: torch.Tensor, branch1: torch.Tensor, x: torch.Tensor, stab: Stabiliser
) -> torch.Tensor:
    """Relevance of a tensor used twice (the residual fork): R₁ + R₂, 0 where x = 0.

    The reference computes LRP-0 of the copy, x ⊙ ((R₁+R₂) ⊘ x), which differs from R₁ + R₂ by the
    factor x/(x+ε); with the reference stabiliser that form is used, so float64 conforms exactly.
    ``branch0`` must be a temporary of the caller: it is overwritten with the result.
    """
    if stab.follow_sign:
        total = branch0.add_(branch1)
        # A residual stream without exact zeros (nearly always) needs no mask: on a CPU, counting them
        # costs a third of building and applying it. On a GPU the count would wait for the device.
        if x.device.type != "cpu" or torch.count_nonzero(x) < x.numel():
            total.masked_fill_(x == 0, 0)
        return total
    return passthrough_rule(branch0 + branch1, x, stab)


def passthrough_rule(relevance: torch.Tensor, x: torch.Tensor, stab: Stabiliser) -> torch.Tensor:
    """LRP-0 of a selection or concatenation (output = x): x ⊙ (R ⊘ x)."""
    return x * stab.divide(relevance, x)


def mean_rule(
    relevance: torch.Tensor,
    tokens: torch.Tensor,
    stab: Stabiliser,
) -> torch.Tensor:
    """LRP-0 of the token mean (global average pooling): (B, D) relevance onto (B, T, D) tokens."""
    s = stab.divide(relevance, tokens.sum(dim=1))
    return tokens * s.unsqueeze(1)


def max_pool_rule(relevance: torch.Tensor, tokens: torch.Tensor, kind: str, stab: Stabiliser) -> torch.Tensor:
    """LRP of timm's max / avgmax token pool (`attnmap.vit.pooling`): (B, D) relevance onto (B, T, D).

    'max': winner takes all, R_td = w_td · R_d (w: the token holding feature d's maximum; ties
    share). 'avgmax' = ½ max + ½ mean: LRP-0 of that piecewise-linear pool,
    R_td = x_td (½ w_td + ½ / T) · R_d ⊘ pooled_d.
    """
    weights = winners(tokens)
    if kind == "max":
        return weights * relevance.unsqueeze(1)
    weights = 0.5 * weights + 0.5 / tokens.shape[1]
    return tokens * weights * stab.divide(relevance, pool_tokens(tokens, kind)).unsqueeze(1)
