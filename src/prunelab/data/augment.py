"""Training-time augmentation on in-memory image batches.

Random translation is the augmentation of the MNIST literature (shifts of up to two pixels,
e.g. Ciresan et al. 2012; Sabour et al. 2017): it changes what a digit looks like to the
network, not what it is. It runs on whole batches with one gather, so it costs a fraction of a
training step, and it draws from a generator the loader seeds from (seed, epoch), so a resumed
run sees the same shifted images as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_shift(images: Tensor, max_shift: int, fill: float,
                 generator: torch.Generator) -> Tensor:
    """``images`` [B, C, H, W], each moved by its own (dy, dx) drawn from [-max_shift, max_shift].

    Pixels that enter from outside the image take ``fill`` (the background value, after
    normalisation); pixels moved past the border are dropped. ``max_shift=0`` returns
    ``images`` itself.
    """
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    s = max_shift
    offsets = torch.randint(0, 2 * s + 1, (2, b), generator=generator).to(images.device)
    padded = torch.nn.functional.pad(images, (s, s, s, s), value=fill)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)   # [B, H]
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)   # [B, W]
    batch = torch.arange(b, device=images.device)[:, None, None]
    # [B, H, W, C] from advanced indexing on dims 0, 2, 3; back to [B, C, H, W]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
