"""A small UNet denoiser for 8x8 and 28x28 grey images (Ronneberger et al. 2015, as
used for diffusion by Ho et al. 2020): residual blocks with GroupNorm, SiLU and an
added time embedding, two resolutions down and up with skip connections. Sized
for CPU: about 1.1 M parameters (4.4 MB in float32) at base width 32."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sampleopt.diffusion.denoisers import Denoiser
from sampleopt.diffusion.parameterization import PREDICTIONS
from sampleopt.errors import UsageError
from sampleopt.models.embedding import TimeEmbedding


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class SmallUNet(Denoiser):
    """x (n, c, h, w), t (n,) -> prediction (n, c, h, w); h and w divisible by
    2^(len(mults) - 1)."""

    def __init__(
        self,
        channels: int = 1,
        num_train_steps: int = 1000,
        base: int = 32,
        mults: tuple[int, ...] = (1, 2, 2),
        prediction: str = "eps",
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise UsageError(f"unknown prediction type {prediction!r}")
        self.prediction = prediction
        self.config = {
            "channels": channels,
            "num_train_steps": num_train_steps,
            "base": base,
            "mults": list(mults),
            "prediction": prediction,
        }
        tdim = 4 * base
        self.embed = TimeEmbedding(num_train_steps, tdim)
        widths = [base * m for m in mults]
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = base
        for i, w in enumerate(widths):
            self.down.append(ResBlock(ch, w, tdim))
            ch = w
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, 2, padding=1))
        self.mid1, self.mid2 = ResBlock(ch, ch, tdim), ResBlock(ch, ch, tdim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(ch + w, w, tdim))
            ch = w
            self.upsample.append(
                nn.Conv2d(w, widths[i - 1], 3, padding=1) if i > 0 else nn.Identity()
            )
            if i > 0:
                ch = widths[i - 1]
        self.out_norm = _norm(ch)
        self.out = nn.Conv2d(ch, channels, 3, padding=1)
        self.factor = 2 ** (len(widths) - 1)

    def forward(self, x, t):
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise UsageError(
                f"SmallUNet needs height and width divisible by {self.factor}, got {tuple(x.shape)}"
            )
        temb = self.embed(t)
        h = self.inp(x)
        skips = []
        for block, down in zip(self.down, self.downsample, strict=True):
            h = block(h, temb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid1(h, temb), temb)
        for block, up in zip(self.up, self.upsample, strict=True):
            h = block(torch.cat([h, skips.pop()], 1), temb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
