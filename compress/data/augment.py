"""On-the-fly batch augmentation for training, torch only, so it stays cheap next to the student's forward pass.

The cached data set already holds varied renders; this adds a fresh small jitter every epoch so a student does
not memorise the exact pixels of its few renders per class. No flips: arrows and hands have a direction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_SHIFT = 0.08  # translation, as a fraction of the half-width (affine_grid's normalised coordinates)
SCALE_RANGE = (0.9, 1.1)  # zoom factor; > 1 enlarges the content
BRIGHTNESS = 0.15  # multiplicative factor drawn from [1 - b, 1 + b]
CONTRAST = 0.15  # blend toward/away from the per-image mean, factor from [1 - c, 1 + c]


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1]: the eval path, and the input every teacher and student expects."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32).div_(255.0)


def resize_uint8(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, size, size), antialiased; a no-op at the right size. Eval renders meet a
    model's fixed input size this way (a .pte cannot resize)."""
    if images_uint8.shape[-1] == size and images_uint8.shape[-2] == size or len(images_uint8) == 0:
        return images_uint8
    out = F.interpolate(images_uint8.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def _grid(zoom: torch.Tensor, shift: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """What F.affine_grid builds for a diagonal scale + translation, without its batched matmul (several x faster).

    Same convention as affine_grid with align_corners=False: output pixel centres at (2k + 1) / n - 1.
    """
    dev = zoom.device
    xs = (torch.arange(w, device=dev, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=dev, dtype=torch.float32) * 2 + 1) / h - 1
    inv = (1.0 / zoom).view(-1, 1, 1)
    grid = torch.empty(zoom.shape[0], h, w, 2, device=dev)
    grid[..., 0] = xs.view(1, 1, w) * inv + shift[:, 0].view(-1, 1, 1)
    grid[..., 1] = ys.view(1, h, 1) * inv + shift[:, 1].view(-1, 1, 1)
    return grid


AUG_PARAMS = 5  # zoom, shift x, shift y, brightness, contrast


def augment_params(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, AUG_PARAMS) random draws from `generator` only, so a seeded generator replays the same augmentation."""
    zoom = _uniform(n, *SCALE_RANGE, generator)
    shift = _uniform(2 * n, -MAX_SHIFT, MAX_SHIFT, generator).view(n, 2)
    bright = _uniform(n, 1.0 - BRIGHTNESS, 1.0 + BRIGHTNESS, generator)
    contrast = _uniform(n, 1.0 - CONTRAST, 1.0 + CONTRAST, generator)
    return torch.cat([zoom[:, None], shift, bright[:, None], contrast[:, None]], dim=1)


def train_augment(images_uint8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small zoom/translate and brightness/contrast jitter, float in [0, 1] (see `apply_augment`)."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    return apply_augment(images_uint8, augment_params(images_uint8.shape[0], generator))


def apply_augment(images_uint8: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Zoom/translate (one grid_sample for the batch) and brightness/contrast jitter from per-image `params`.

    Border padding repeats the edge pixels, which for the emoji renders is their plain background colour. The
    photometric jitter and the /255 are folded into one per-image affine a*x + d, applied in place, to keep memory
    passes few: brightness then contrast about the mean m is  c*(b*x - b*m) + b*m  =  (b*c)*x + b*m*(1 - c).
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    b, _, h, w = images_uint8.shape
    if b == 0:
        return images_uint8.to(torch.float32)
    dev = images_uint8.device
    params = params.to(dev)
    zoom, shift, bright, contrast = params[:, 0], params[:, 1:3], params[:, 3], params[:, 4]
    x = images_uint8.to(torch.float32)  # 0..255; the /255 is folded into the affine below
    grid = _grid(zoom, shift, h, w)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Contrast pivot: mean of a 4x-subsampled view is plenty and 16x cheaper than a full pass.
    mean = images_uint8[:, :, ::4, ::4].to(torch.float32).mean(dim=(1, 2, 3)) / 255.0
    scale = (bright * contrast / 255.0).view(b, 1, 1, 1)
    offset = (bright * mean * (1.0 - contrast)).view(b, 1, 1, 1)
    return x.mul_(scale).add_(offset).clamp_(0.0, 1.0)
