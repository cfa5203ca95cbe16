"""The PI-VQ autoencoder (paper section 3.2, Figure 2), in one file.

    image -> conv down-sampling stack -> W*H tokens + input positional embeddings
          -> [tokens ; L learned query embeddings] -> transformer encoder -> last L outputs = latent codes
    codes -> quantizer (nearest or matching) -> L codebook vectors, with NO positional embedding
          -> [codes ; W*H learned output embeddings] -> transformer encoder -> outputs after the first L
          -> reshape to the W x H grid -> conv up-sampling stack -> image

The conv stacks follow Unleashing Transformers (Bond-Taylor et al. 2022), themselves the taming-transformers
VQ-GAN stacks: residual blocks with GroupNorm and swish, self-attention at the configured resolutions and in
the middle block, stride-2 convolutions down and nearest-neighbour up-sampling. Where the two differ, a
setting says which: ``conv_tail`` (UT ends each stack with GroupNorm straight into the last conv, taming with
GroupNorm, SiLU, conv) and ``pixel_range`` (UT's images are in [0, 1], taming's in [-1, 1]).
Because the decoder sees the codes without positions and a transformer is permutation-equivariant, its outputs
after the first L are invariant to the order of the codes: the latent is a set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pivq.model.pixels import PIXEL_RANGES
from pivq.quantize import Quantizer
from pivq.quantize.module import VQ_LOSSES

CONV_TAILS = ("norm-conv", "norm-silu-conv")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one PI-VQ model; the presets live in params.yaml under ``models``."""

    resolution: int  # input images are resolution x resolution x 3
    nf: int  # base channel count of the conv stacks
    ch_mult: tuple[int, ...]  # channel multiplier per level; len(ch_mult) - 1 halvings
    res_blocks: int  # residual blocks per level
    attn_resolutions: tuple[int, ...]  # feature-map sizes that get self-attention
    norm_groups: int  # GroupNorm groups
    width: int  # d: transformer width = latent and codebook dimension
    heads: int
    layers: int  # transformer layers, in the encoder and in the decoder
    ffn: int  # transformer feed-forward width
    codes: int  # L: codes per image
    codebook_size: int  # K
    quantizer: str = "matching"  # nearest | matching | sinkhorn
    beta: float = 0.25  # the VQ loss's second weight (schedule.vq_beta)
    # Defaults: what model files written before these settings existed were (taming's forms)
    vq_loss: str = "vqvae"  # unleashing | vqvae: which term beta weights (pivq.quantize.module.Quantizer)
    pixel_range: str = "symmetric"  # unit: images in [0, 1] | symmetric: [-1, 1] (pivq.model.pixels)
    conv_tail: str = "norm-silu-conv"  # norm-conv | norm-silu-conv: the conv stacks' last layers
    extra: dict = field(default_factory=dict, compare=False)  # unused keys kept for the record

    @property
    def grid(self) -> int:
        """Side of the W x H token grid after the conv down-sampling stack."""
        return self.resolution // 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict, quantizer: str | None = None, beta: float | None = None,
                  vq_loss: str | None = None) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["ch_mult"] = tuple(kwargs["ch_mult"])
        kwargs["attn_resolutions"] = tuple(kwargs["attn_resolutions"])
        for key, value in (("quantizer", quantizer), ("beta", beta), ("vq_loss", vq_loss)):
            if value is not None:
                kwargs[key] = value
        cfg = cls(**kwargs)
        if cfg.resolution % 2 ** (len(cfg.ch_mult) - 1):
            raise ValueError(f"models: resolution {cfg.resolution} is not divisible by 2^(len(ch_mult)-1)")
        for key, allowed in (("vq_loss", VQ_LOSSES), ("pixel_range", PIXEL_RANGES), ("conv_tail", CONV_TAILS)):
            if getattr(cfg, key) not in allowed:
                raise ValueError(f"models: {key} {getattr(cfg, key)!r} is not one of {list(allowed)}")
        return cfg

    @classmethod
    def of_experiment(cls, experiment: dict) -> "ModelConfig":
        """The architecture a resolved experiment (or its training spec) trains: its model preset, its quantizer
        and its schedule's VQ loss."""
        sched = experiment["schedule"]
        return cls.from_dict(experiment["model"], quantizer=experiment["quantizer"], beta=sched["vq_beta"],
                             vq_loss=sched["vq_loss"])


# --- conv building blocks (Unleashing Transformers / taming-transformers) ----------------------------------


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6, affine=True)


def _tail(channels: int, cfg: ModelConfig) -> list[nn.Module]:
    """What comes before a stack's last conv: GroupNorm alone (UT, conv_tail norm-conv) or GroupNorm, SiLU (taming)."""
    norm = _norm(channels, cfg.norm_groups)
    return [norm] if cfg.conv_tail == "norm-conv" else [norm, nn.SiLU()]


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad as in taming-transformers


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ConvEncoder(nn.Module):
    """Image (B, 3, R, R) -> feature grid (B, d, R / 2^(levels-1), same)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        g, res = cfg.norm_groups, cfg.resolution
        layers: list[nn.Module] = [nn.Conv2d(3, cfg.nf, 3, padding=1)]
        cin = cfg.nf
        for level, mult in enumerate(cfg.ch_mult):
            cout = cfg.nf * mult
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(cin, cout, g))
                cin = cout
                if res in cfg.attn_resolutions:
                    layers.append(AttnBlock(cin, g))
            if level != len(cfg.ch_mult) - 1:
                layers.append(Downsample(cin))
                res //= 2
        layers += [ResBlock(cin, cin, g), AttnBlock(cin, g), ResBlock(cin, cin, g)]
        layers += [*_tail(cin, cfg), nn.Conv2d(cin, cfg.width, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Feature grid (B, d, W, H) -> image (B, 3, R, R): the mirror of ConvEncoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        g, res = cfg.norm_groups, cfg.grid
        cin = cfg.nf * cfg.ch_mult[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.width, cin, 3, padding=1)]
        layers += [ResBlock(cin, cin, g), AttnBlock(cin, g), ResBlock(cin, cin, g)]
        for level in reversed(range(len(cfg.ch_mult))):
            cout = cfg.nf * cfg.ch_mult[level]
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(cin, cout, g))
                cin = cout
                if res in cfg.attn_resolutions:
                    layers.append(AttnBlock(cin, g))
            if level != 0:
                layers.append(Upsample(cin))
                res *= 2
        layers += _tail(cin, cfg)
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)  # "last layer" for an adaptive GAN weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.net(h))


def _transformer(cfg: ModelConfig) -> nn.TransformerEncoder:
    # Pre-norm layers with a final LayerNorm: the paper does not say which; pre-norm trains stably
    # without warm-up. No dropout: the bottleneck is the regulariser.
    layer = nn.TransformerEncoderLayer(
        cfg.width, cfg.heads, cfg.ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(cfg.width), enable_nested_tensor=False)


# --- the model -------------------------------------------------------------------------------------------


class PIVQ(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        tokens = cfg.grid * cfg.grid
        self.conv_encoder = ConvEncoder(cfg)
        self.pos_in = nn.Parameter(torch.randn(1, tokens, cfg.width) * 0.02)  # input positional embeddings
        self.queries = nn.Parameter(torch.randn(1, cfg.codes, cfg.width) * 0.02)  # L learned embeddings
        self.encoder = _transformer(cfg)
        self.quantizer = Quantizer(cfg.codebook_size, cfg.width, cfg.quantizer, cfg.beta, cfg.vq_loss)
        self.pos_out = nn.Parameter(torch.randn(1, tokens, cfg.width) * 0.02)  # learned output embeddings
        self.decoder = _transformer(cfg)
        self.conv_decoder = ConvDecoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, R, R) in the model's pixel range (pivq.model.pixels) -> latent codes z_e, (B, L, d)."""
        h = self.conv_encoder(x).flatten(2).transpose(1, 2) + self.pos_in
        seq = torch.cat([h, self.queries.expand(len(x), -1, -1)], dim=1)
        return self.encoder(seq)[:, -self.cfg.codes :]

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Quantized codes (B, L, d), in any order -> images (B, 3, R, R). No positions on the codes."""
        seq = torch.cat([zq, self.pos_out.expand(len(zq), -1, -1)], dim=1)
        h = self.decoder(seq)[:, self.cfg.codes :]
        g = self.cfg.grid
        return self.conv_decoder(h.transpose(1, 2).reshape(len(zq), self.cfg.width, g, g))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code sets as codebook indices (B, L) -> images (B, 3, R, R)."""
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor, quantize: bool = True):
        """Returns (reconstruction, z_e, indices or None, VQ loss). ``quantize=False`` before T_q (sec. 3.7)."""
        z = self.encode(x)
        if not quantize:
            return self.decode(z), z, None, z.new_zeros(())
        zq, indices, vq_loss = self.quantizer(z)
        return self.decode(zq), z, indices, vq_loss

    @torch.no_grad()
    def codes_of(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> their code sets as indices (B, L), sorted (a set has no order)."""
        return self.quantizer.assign(self.encode(x)).sort(dim=1).values
