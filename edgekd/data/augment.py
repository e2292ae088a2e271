"""Augmentation of training batches, seeded per sample and view.

`data.augment` lists standard operations; they run on whole batches on the training device.
A *view* is one augmented version of the whole training split: every random draw of view v for
sample i is a function of (seed, v, i) alone — never of the batch it lands in, the rank that reads
it or what ran before — so any epoch's batches can be made again bit for bit: after a resume, on
every rank of a data-parallel run, and by the teacher cache, which stores the teacher's outputs
for each view once (FKD-style). Mixup and cutmix partners come from a seeded per-view
permutation of the split, so a sample's partner and weight are fixed per view too.

Recovery phases read views from a pool of `data.augment_views` (epoch e of a phase reads
pool view `order[e mod pool]`, the order drawn from the phase's seed); teacher training reads a
fresh view every epoch (views FRESH_VIEWS, FRESH_VIEWS + 1, …), since no cache needs it to repeat.

The operations run in a fixed order, whatever the order of the list: one affine warp for all
geometry (crop, flip, rotation: a single resampling), colour jitter, random erasing, then
mixing. The warp and the colour adjustments are kornia's batched functional ops (pure PyTorch,
any device); the parameters are drawn here with NumPy, because kornia's augmentation modules
draw theirs per batch from torch's global generator, which ties a sample's view to its batch.
No operation changes a sample's shape: crops are resized back to the image size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer, model_validator
from torch.utils.data import DataLoader, DistributedSampler

from edgekd.config import StrictModel
from edgekd.errors import InputError
from edgekd.registry import unknown_name

Range = tuple[float, float]


def _check_range(name: str, low: float, high: float, *, upper: float | None = None) -> None:
    if not 0 < low <= high or (upper is not None and high > upper):
        limit = f" ≤ {upper:g}" if upper is not None else ""
        raise ValueError(f"{name} must be [low, high] with 0 < low ≤ high{limit} (got [{low:g}, {high:g}])")


class RandomCrop(StrictModel):
    """Pad by `padding` (black), take a random `size`×`size` window (default: the image's own size,
    i.e. a random shift of up to `padding` pixels) and resize it back to the image size."""

    size: int | None = Field(None, ge=1)
    padding: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _does_something(self) -> RandomCrop:
        if self.size is None and self.padding == 0:
            raise ValueError("give padding (a random shift, e.g. padding: 2) and/or size (a smaller window, resized back)")
        return self


class RandomResizedCrop(StrictModel):
    """A random box of `scale` × the image's area and aspect ratio in `ratio`, resized to the image size
    (torchvision's algorithm: 10 tries, then the centre crop)."""

    scale: Range = (0.35, 1.0)
    ratio: Range = (3 / 4, 4 / 3)

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCrop:
        _check_range("scale (a fraction of the image's area; a crop cannot be larger than the image)", *self.scale, upper=1.0)
        _check_range("ratio", *self.ratio)
        return self


class HorizontalFlip(StrictModel):
    p: float = Field(0.5, ge=0, le=1)


class Rotation(StrictModel):
    """A rotation by an angle drawn uniformly from [-degrees, degrees] (corners fill black)."""

    degrees: float = Field(15.0, gt=0, le=180)


class ColorJitter(StrictModel):
    """torchvision's ColorJitter for RGB images in [0, 1]: brightness, contrast and saturation
    factors from [max(0, 1 - x), 1 + x], hue shifted by up to `hue` of a turn, in that order."""

    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)
    p: float = Field(1.0, ge=0, le=1)


class RandomErasing(StrictModel):
    """Zhong et al.: with probability `p` a box of `scale` × the area and aspect ratio in `ratio`
    is set to the dataset mean (0 after normalization, timm's default)."""

    p: float = Field(0.25, ge=0, le=1)
    scale: Range = (0.02, 0.33)
    ratio: Range = (0.3, 3.3)

    @model_validator(mode="after")
    def _ranges(self) -> RandomErasing:
        _check_range("scale", *self.scale, upper=1.0)
        _check_range("ratio", *self.ratio)
        return self


class Mixup(StrictModel):
    """Zhang et al.: x = λ·x_i + (1-λ)·x_j, target λ·y_i + (1-λ)·y_j, λ ~ Beta(alpha, alpha)."""

    alpha: float = Field(0.2, gt=0)
    p: float = Field(1.0, ge=0, le=1)


class Cutmix(StrictModel):
    """Yun et al.: a box of x_j pasted into x_i, box area 1-λ with λ ~ Beta(alpha, alpha); the target
    weights follow the box's area after clipping to the image."""

    alpha: float = Field(1.0, gt=0)
    p: float = Field(1.0, ge=0, le=1)


OPERATIONS: dict[str, type[StrictModel]] = {
    "random_crop": RandomCrop,
    "random_resized_crop": RandomResizedCrop,
    "horizontal_flip": HorizontalFlip,
    "rotation": Rotation,
    "color_jitter": ColorJitter,
    "random_erasing": RandomErasing,
    "mixup": Mixup,
    "cutmix": Cutmix,
}
# Each operation draws from its own random stream, so changing one leaves the others' draws alone.
_STREAMS = {name: number for number, name in enumerate([*OPERATIONS, "pairing"], start=1)}
_POOL_ORDER_STREAM = 100
# Views from here on are teacher training's, one per epoch: never in a recovery pool.
FRESH_VIEWS = 1_000_000


class AugmentStep(StrictModel):
    """One entry of `data.augment`: exactly one operation, `{random_crop: {padding: 2}}`
    (or just its name, `horizontal_flip`, for its defaults)."""

    random_crop: RandomCrop | None = None
    random_resized_crop: RandomResizedCrop | None = None
    horizontal_flip: HorizontalFlip | None = None
    rotation: Rotation | None = None
    color_jitter: ColorJitter | None = None
    random_erasing: RandomErasing | None = None
    mixup: Mixup | None = None
    cutmix: Cutmix | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {data: {}}
        if isinstance(data, dict):  # `{horizontal_flip: null}` means its defaults too
            for name in data:
                if name not in OPERATIONS:
                    raise ValueError(unknown_name("augmentation", str(name), OPERATIONS))
            return {key: {} if value is None else value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> AugmentStep:
        given = [name for name in OPERATIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"each entry names exactly one operation ({', '.join(OPERATIONS)}); got {given or 'none'}")
        return self

    @model_serializer(mode="wrap")
    def _only_the_operation(self, handler: Any) -> dict[str, Any]:
        """Dumped as written, `{random_crop: {size: null, padding: 2}}`, so recipe.json loads back."""
        return {self.name: handler(self)[self.name]}

    @property
    def name(self) -> str:
        return next(name for name in OPERATIONS if getattr(self, name) is not None)

    @property
    def settings(self) -> Any:
        return getattr(self, self.name)


def check_pipeline(steps: list[AugmentStep]) -> None:
    """What can be checked without the data: each operation at most once, one crop."""
    names = [step.name for step in steps]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once; give each operation once")
    if "random_crop" in names and "random_resized_crop" in names:
        raise ValueError("random_crop and random_resized_crop both crop; give one of them")


def check_for_data(steps: list[AugmentStep], input_shape: tuple[int, ...]) -> None:
    """What needs the data's shape; runs after the data loads and before anything trains."""
    for position, step in enumerate(steps):
        where = f"data.augment[{position}].{step.name}"
        if len(input_shape) != 3:
            raise InputError(f"{where}: augmentation works on images (channels, height, width); these samples have shape {tuple(input_shape)}")
        channels, height, width = input_shape
        settings = step.settings
        if isinstance(settings, RandomCrop) and settings.size is not None:
            room = min(height, width) + 2 * settings.padding
            if settings.size > room:
                raise InputError(
                    f"{where}.size: a {settings.size}×{settings.size} crop is larger than the {height}×{width} images "
                    f"padded by {settings.padding} on each side; use size ≤ {room} (or more padding)"
                )
        if isinstance(settings, ColorJitter) and channels != 3:
            raise InputError(f"{where}: colour jitter needs RGB images (3 channels); these have {channels}. Remove it, or use random_erasing/random_crop instead")


@dataclass
class ViewDraws:
    """Every random choice of one view, one row per training sample (NumPy, on the CPU)."""

    affine: np.ndarray | None = None  # (N, 2, 3) source → output pixel coordinates
    colour: np.ndarray | None = None  # (N, 4) brightness, contrast, saturation factors; hue in turns
    erase: np.ndarray | None = None  # (N, 4) box rows [top, bottom), columns [left, right); empty when not erased
    partner: np.ndarray | None = None  # (N,) the sample each one is mixed with
    keep: np.ndarray | None = None  # (N,) mixup weight of the sample itself (1 when not mixed up)
    cut: np.ndarray | None = None  # (N, 4) cutmix box taken from the partner; empty when not cut


class Augmenter:
    """Makes any view of any training sample: `augmenter(x, y, index, view)` → (images, targets).

    `x` are the samples at `index` (positions in the training split), as the loader gives them;
    mixing partners are read from `images`/`labels` (the whole split). Targets stay class indices
    unless the pipeline mixes; then they are (B, num_classes) probabilities, which
    `F.cross_entropy` accepts as they are."""

    def __init__(
        self, steps: list[AugmentStep], images: torch.Tensor, labels: torch.Tensor, *, mean: list[float],
        std: list[float], num_classes: int, seed: int,
    ):
        self.steps = {step.name: step.settings for step in steps}
        self.images, self.labels = images, labels
        self.shape = tuple(images.shape[1:])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.num_classes = num_classes
        self.seed = seed
        self.mixes = "mixup" in self.steps or "cutmix" in self.steps
        self._draws: dict[int, ViewDraws] = {}

    # ---- parameters -------------------------------------------------------------------
    def draws(self, view: int) -> ViewDraws:
        """All parameters of view `view`; kept for the two most recent views."""
        if view not in self._draws:
            if len(self._draws) >= 2:
                self._draws.pop(next(iter(self._draws)))
            self._draws[view] = self._draw(view)
        return self._draws[view]

    def _rng(self, name: str, view: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, view, _STREAMS[name]])

    def _draw(self, view: int) -> ViewDraws:
        n = len(self.images)
        _, height, width = self.shape
        draws = ViewDraws()
        if self.steps.keys() & {"random_crop", "random_resized_crop", "horizontal_flip", "rotation"}:
            draws.affine = self._draw_affine(view, n, height, width)
        if "color_jitter" in self.steps:
            draws.colour = self._draw_colour(view, n)
        if "random_erasing" in self.steps:
            settings = self.steps["random_erasing"]
            draws.erase = _random_boxes(self._rng("random_erasing", view), n, height, width, settings.scale, settings.ratio, settings.p)
        if self.mixes:
            self._draw_mixing(view, n, height, width, draws)
        return draws

    def _draw_affine(self, view: int, n: int, height: int, width: int) -> np.ndarray:
        # The output shows the box [x0, x0+w] × [y0, y0+h] of the source (edge coordinates),
        # mirrored and rotated about its centre; the matrix maps output pixel centres to source ones.
        x0, y0 = np.zeros(n), np.zeros(n)
        box_w, box_h = np.full(n, float(width)), np.full(n, float(height))
        if crop := self.steps.get("random_crop"):
            rng = self._rng("random_crop", view)
            size_h, size_w = (crop.size, crop.size) if crop.size else (height, width)
            y0 = rng.integers(0, height + 2 * crop.padding - size_h + 1, n) - crop.padding
            x0 = rng.integers(0, width + 2 * crop.padding - size_w + 1, n) - crop.padding
            box_h, box_w = np.full(n, float(size_h)), np.full(n, float(size_w))
        if resized := self.steps.get("random_resized_crop"):
            x0, y0, box_w, box_h = _resized_crop_boxes(self._rng("random_resized_crop", view), n, height, width, resized.scale, resized.ratio)
        mirror = np.ones(n)
        if flip := self.steps.get("horizontal_flip"):
            mirror = np.where(self._rng("horizontal_flip", view).random(n) < flip.p, -1.0, 1.0)
        angle = np.zeros(n)
        if rotation := self.steps.get("rotation"):
            angle = np.radians(self._rng("rotation", view).uniform(-rotation.degrees, rotation.degrees, n))
        cos, sin = np.cos(angle), np.sin(angle)
        sx, sy = box_w / width, box_h / height
        # output → source: src = c_box + diag(sx, sy)·diag(mirror, 1)·R(angle)·(out - c_out)
        linear = np.stack([np.stack([sx * mirror * cos, -sx * mirror * sin], -1), np.stack([sy * sin, sy * cos], -1)], -2)
        centre_out = np.array([(width - 1) / 2, (height - 1) / 2])
        centre_box = np.stack([x0 + box_w / 2 - 0.5, y0 + box_h / 2 - 0.5], -1)
        shift = centre_box - linear @ centre_out
        inverse = np.linalg.inv(linear)  # kornia's warp_affine takes source → output
        forward = np.concatenate([inverse, -(inverse @ shift[..., None])], -1)
        return forward.astype(np.float32)

    def _draw_colour(self, view: int, n: int) -> np.ndarray:
        settings = self.steps["color_jitter"]
        rng = self._rng("color_jitter", view)
        factors = [rng.uniform(max(0.0, 1 - amount), 1 + amount, n) for amount in (settings.brightness, settings.contrast, settings.saturation)]
        hue = rng.uniform(-settings.hue, settings.hue, n)
        applied = rng.random(n) < settings.p
        table = np.stack([*factors, hue], -1)
        table[~applied] = (1.0, 1.0, 1.0, 0.0)
        return table.astype(np.float32)

    def _draw_mixing(self, view: int, n: int, height: int, width: int, draws: ViewDraws) -> None:
        rng = self._rng("pairing", view)
        order = rng.permutation(n)
        draws.partner = np.empty(n, dtype=np.int64)
        draws.partner[order] = np.roll(order, -1)  # a random cycle: nobody is their own partner
        mixup, cutmix = self.steps.get("mixup"), self.steps.get("cutmix")
        use_cutmix = rng.random(n) < 0.5 if mixup and cutmix else np.full(n, cutmix is not None)
        applied = rng.random(n) < np.where(use_cutmix, cutmix.p if cutmix else 0.0, mixup.p if mixup else 0.0)
        keep = np.ones(n)
        if mixup:
            weights = self._rng("mixup", view).beta(mixup.alpha, mixup.alpha, n)
            chosen = applied & ~use_cutmix
            keep[chosen] = weights[chosen]
        draws.keep = keep.astype(np.float32)
        draws.cut = np.zeros((n, 4), dtype=np.int64)
        if cutmix:
            boxes = _cutmix_boxes(self._rng("cutmix", view), n, height, width, cutmix.alpha)
            chosen = applied & use_cutmix
            draws.cut[chosen] = boxes[chosen]

    # ---- application ------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        draws = self.draws(view)
        rows = index.cpu().numpy()
        images = self._each(x, rows, draws)
        if not self.mixes:
            return images, y
        assert draws.partner is not None and draws.keep is not None and draws.cut is not None
        partners = draws.partner[rows]
        partner_images = self._each(self.images[torch.from_numpy(partners)].to(x.device), partners, draws)
        keep = torch.from_numpy(draws.keep[rows]).to(x.device)
        cut = _box_masks(torch.from_numpy(draws.cut[rows]).to(x.device), images.shape[-2:])
        blended = keep.view(-1, 1, 1, 1) * images + (1 - keep.view(-1, 1, 1, 1)) * partner_images
        images = torch.where(cut, partner_images, blended)
        own = keep * (1 - cut.flatten(1).float().mean(1))  # cutmix: the area left to the sample itself
        targets = own[:, None] * F.one_hot(y.to(x.device), self.num_classes)
        targets = targets + (1 - own)[:, None] * F.one_hot(self.labels[torch.from_numpy(partners)].to(x.device), self.num_classes)
        return images, targets

    def _each(self, x: torch.Tensor, rows: np.ndarray, draws: ViewDraws) -> torch.Tensor:
        """The per-sample operations (geometry, colour, erasing) on samples `rows`."""
        from kornia.geometry.transform import warp_affine  # imported on first use: ~1 s that runs without augmentation skip

        if draws.affine is not None or draws.colour is not None:
            mean, std = self.mean.to(x.device), self.std.to(x.device)
            x = x * std + mean  # pixel values: padding is black, colour jitter reads [0, 1]
            if draws.affine is not None:
                matrices = torch.from_numpy(draws.affine[rows]).to(x.device)
                x = warp_affine(x, matrices, tuple(x.shape[-2:]), mode="bilinear", padding_mode="zeros", align_corners=True)
            if draws.colour is not None:
                x = _jitter(x, torch.from_numpy(draws.colour[rows]).to(x.device))
            x = (x - mean) / std
        if draws.erase is not None:
            x = x.masked_fill(_box_masks(torch.from_numpy(draws.erase[rows]).to(x.device), x.shape[-2:]), 0.0)
        return x


def _jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    from kornia.enhance import (
        adjust_brightness_accumulative, adjust_contrast_with_mean_subtraction, adjust_hue,
        adjust_saturation_with_gray_subtraction,
    )

    x = x.clamp(0, 1)
    x = adjust_brightness_accumulative(x, factors[:, 0])
    x = adjust_contrast_with_mean_subtraction(x, factors[:, 1])
    x = adjust_saturation_with_gray_subtraction(x, factors[:, 2])
    return adjust_hue(x, factors[:, 3] * 2 * math.pi).clamp(0, 1)


def _box_masks(boxes: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """(B, 4) boxes [top, bottom, left, right) → (B, 1, H, W) masks."""
    rows = torch.arange(size[0], device=boxes.device).view(1, -1, 1)
    cols = torch.arange(size[1], device=boxes.device).view(1, 1, -1)
    top, bottom, left, right = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    return ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)).unsqueeze(1)


def _box_sizes(rng: np.random.Generator, n: int, area: float, scale: Range, ratio: Range, tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """`tries` candidate (width, height) pairs per sample, torchvision's way: area and log-uniform ratio."""
    target = area * rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries)))
    return np.sqrt(target * aspect), np.sqrt(target / aspect)


def _first_fit(fits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return fits.any(1), fits.argmax(1)


def _resized_crop_boxes(rng: np.random.Generator, n: int, height: int, width: int, scale: Range, ratio: Range) -> tuple[np.ndarray, ...]:
    box_w, box_h = _box_sizes(rng, n, height * width, scale, ratio)
    found, first = _first_fit((box_w <= width) & (box_h <= height))
    box_w, box_h = box_w[np.arange(n), first], box_h[np.arange(n), first]
    # torchvision's fallback: the whole image, cut to the ratio range, centred
    aspect = width / height
    fallback_w = width if ratio[0] <= aspect <= ratio[1] else (width if aspect < ratio[0] else height * ratio[1])
    fallback_h = height if ratio[0] <= aspect <= ratio[1] else (width / ratio[0] if aspect < ratio[0] else height)
    box_w, box_h = np.where(found, box_w, fallback_w), np.where(found, box_h, fallback_h)
    position = rng.random((n, 2))
    x0 = np.where(found, position[:, 0] * (width - box_w), (width - box_w) / 2)
    y0 = np.where(found, position[:, 1] * (height - box_h), (height - box_h) / 2)
    return x0, y0, box_w, box_h


def _random_boxes(rng: np.random.Generator, n: int, height: int, width: int, scale: Range, ratio: Range, p: float) -> np.ndarray:
    """Integer erasing boxes as torchvision's RandomErasing picks them; empty where not applied."""
    box_w, box_h = _box_sizes(rng, n, height * width, scale, ratio)
    box_w, box_h = np.rint(box_w).astype(np.int64), np.rint(box_h).astype(np.int64)
    found, first = _first_fit((box_h < height) & (box_w < width) & (box_h > 0) & (box_w > 0))
    box_w, box_h = box_w[np.arange(n), first], box_h[np.arange(n), first]
    position = rng.random((n, 2))
    applied = found & (rng.random(n) < p)
    top = (position[:, 0] * (height - box_h + 1)).astype(np.int64)
    left = (position[:, 1] * (width - box_w + 1)).astype(np.int64)
    boxes = np.stack([top, top + box_h, left, left + box_w], -1)
    boxes[~applied] = 0
    return boxes


def _cutmix_boxes(rng: np.random.Generator, n: int, height: int, width: int, alpha: float) -> np.ndarray:
    """Boxes of area ≈ 1-λ (λ ~ Beta(α, α)) centred uniformly, clipped to the image (timm's rand_bbox)."""
    cut = np.sqrt(1 - rng.beta(alpha, alpha, n))
    cut_h, cut_w = (height * cut).astype(np.int64), (width * cut).astype(np.int64)
    centre_y, centre_x = rng.integers(0, height, n), rng.integers(0, width, n)
    return np.stack([
        np.clip(centre_y - cut_h // 2, 0, height), np.clip(centre_y + cut_h // 2, 0, height),
        np.clip(centre_x - cut_w // 2, 0, width), np.clip(centre_x + cut_w // 2, 0, width),
    ], -1)


def pool_view(seed: int, epoch: int, pool: int) -> int:
    """The pool view that epoch `epoch` (1-based) of the phase seeded `seed` reads: the phase walks a
    seeded order of the pool, so its first `pool` epochs see different views."""
    order = np.random.default_rng([_POOL_ORDER_STREAM, seed]).permutation(pool)
    return int(order[(epoch - 1) % pool])


class TrainBatches:
    """One training phase's batches: the loader's seeded order, each epoch's samples in one view.

    Yields (images, targets, index, view) on `device`; `set_epoch` picks the epoch's view (and tells
    a distributed sampler its epoch). Without an augmenter the images are the samples as stored and
    `view` is None."""

    def __init__(self, loader: DataLoader, augmenter: Augmenter | None, view_of_epoch: Callable[[int], int], device: torch.device):
        self.loader, self.augmenter, self.view_of_epoch, self.device = loader, augmenter, view_of_epoch, device
        self.view: int | None = None
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        self.view = self.view_of_epoch(epoch) if self.augmenter is not None else None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int | None]]:
        for x, y, index in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.augmenter is not None and self.view is not None:
                x, y = self.augmenter(x, y, index, self.view)
            yield x, y, index, self.view


def make_augmenter(steps: list[AugmentStep], data: Any, seed: int) -> Augmenter | None:
    """The run's augmenter for its training split (None without `data.augment`); checks the
    settings that depend on the data's shape first (InputError naming the field)."""
    if not steps:
        return None
    check_for_data(steps, data.input_shape)
    images, labels = data.train.tensors
    return Augmenter(steps, images, labels, mean=data.mean, std=data.std, num_classes=data.num_classes, seed=seed)


__all__ = [
    "FRESH_VIEWS", "AugmentStep", "Augmenter", "OPERATIONS", "TrainBatches", "check_for_data", "check_pipeline", "make_augmenter", "pool_view",
]
