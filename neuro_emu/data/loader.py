"""Batches of CIFAR-style images held on the device, augmented with batched tensor ops.

The uint8 images live on ``device`` once; each batch is gathered there, cropped and flipped by
:func:`augment_batch` (one gather from the zero-padded batch, no per-image Python loop) and
normalised by :func:`normalize`. Every random draw (the epoch's permutation, each image's crop
offset and flip) comes from a CPU ``torch.Generator`` seeded by ``(seed, epoch)``, so the batches of
an epoch are the same on CPU and GPU, on every run, and when training resumes at that epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from neuro_emu.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD


def augment_batch(
    images_u8_nhwc: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int
) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip, for given draws.

    ``out[b] = flip_b(zero_pad(images[b], pad)[dy : dy + H, dx : dx + W])`` with
    ``(dy, dx) = offsets[b]`` and ``flip_b`` reversing the width axis where ``flips[b]``. Offsets
    ``(pad, pad)`` and no flip give the image back unchanged.

    Args:
        images_u8_nhwc: ``[B, H, W, C]``, uint8 (any dtype works).
        offsets: ``[B, 2]`` integer ``(dy, dx)``, each in ``0 .. 2 * pad``.
        flips: ``[B]`` bool.
        pad: zero padding on each side, >= 0.

    Returns: ``[B, H, W, C]``, same dtype and device as ``images_u8_nhwc``.

    Raises:
        ValueError: a shape, dtype, device or offset out of range (checking the range reads the
            offsets back from the device once).
    """
    x = images_u8_nhwc
    if x.dim() != 4:
        raise ValueError(f"images_u8_nhwc: expected [B, H, W, C], got shape {list(x.shape)}")
    b = x.shape[0]
    if offsets.shape != (b, 2) or offsets.dtype.is_floating_point or offsets.dtype == torch.bool:
        raise ValueError(
            f"offsets: expected integer [{b}, 2], got {offsets.dtype} {list(offsets.shape)}"
        )
    if flips.shape != (b,) or flips.dtype != torch.bool:
        raise ValueError(f"flips: expected bool [{b}], got {flips.dtype} {list(flips.shape)}")
    if offsets.device != x.device or flips.device != x.device:
        raise ValueError(
            f"offsets, flips: expected on {x.device} like the images, got {offsets.device} and "
            f"{flips.device}"
        )
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad: expected an int >= 0, got {pad!r}")
    if b and (offsets.min() < 0 or offsets.max() > 2 * pad):
        raise ValueError(
            f"offsets: expected values in 0..{2 * pad} (pad={pad}), got "
            f"{int(offsets.min())}..{int(offsets.max())}"
        )
    return _augment(x, offsets, flips, pad)


def _augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """:func:`augment_batch` unchecked: the loader's draws are in range by construction."""
    b, h, w, _ = x.shape
    padded = F.pad(x, (0, 0, pad, pad, pad, pad))  # [B, H + 2p, W + 2p, C]
    o_h = torch.arange(h, device=x.device)
    o_w = torch.arange(w, device=x.device)
    rows = offsets[:, :1] + o_h  # [B, H]
    # a flip reads the crop's columns right to left: the same gather, reversed column offsets
    cols = offsets[:, 1:] + torch.where(flips[:, None], o_w.flip(0), o_w)  # [B, W]
    i_b = torch.arange(b, device=x.device)[:, None, None]
    return padded[i_b, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]


def normalize(images_u8_nhwc: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float32 ``[B, 3, H, W]``, ``(x / 255 - mean[c]) / std[c]`` with
    CIFAR-10's channel mean and std.

    Computed as ``x * (1 / (255 std)) + (-mean / std)`` in float32 (exactly rounded ops, so CPU and
    GPU agree bit for bit); ``channels_last`` gives the result ``torch.channels_last`` strides.

    Raises:
        ValueError: ``images_u8_nhwc`` is not ``[B, H, W, 3]``.
    """
    if images_u8_nhwc.dim() != 4 or images_u8_nhwc.shape[-1] != 3:
        raise ValueError(
            f"images_u8_nhwc: expected [B, H, W, 3], got shape {list(images_u8_nhwc.shape)}"
        )
    scale, shift = _normalize_coefficients(images_u8_nhwc.device)
    return _normalize(images_u8_nhwc, scale, shift, channels_last)


def _normalize_coefficients(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float64)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float64)
    scale = (1 / (255 * std)).float().view(1, 3, 1, 1)
    shift = (-mean / std).float().view(1, 3, 1, 1)
    return scale.to(device), shift.to(device)


def _normalize(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    # NHWC permuted to NCHW is a channels_last view; the float copy keeps those strides
    y = x.permute(0, 3, 1, 2).to(torch.float32).mul_(scale).add_(shift)  # [B, 3, H, W]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return y.contiguous(memory_format=fmt)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A generator seed for ``(seed, epoch)``; unlike ``seed + epoch``, (42, 1) != (43, 0)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)  # 62 bits, positive


class BatchLoader:
    """Epochs of ``(x, y)`` batches from uint8 images held on ``device``.

    Each epoch (:meth:`set_epoch`; it does not advance by itself, as with ``DistributedSampler``):

    - ``train=True``: a permutation of the images; ``train=False``: their order.
    - ``world_size > 1``: rank ``r`` takes positions ``r, r + world_size, ...`` of the first
      ``N - N % world_size``, so the ranks' shares are equal and disjoint (the remainder is
      dropped, also when evaluating).
    - batches of ``batch_size`` from the share; ``drop_last`` (default: ``train``) drops a last
      partial batch.
    - ``augment`` (default: ``train``): each image ``i`` gets crop offset ``(dy, dx)`` uniform in
      ``0 .. 2 * pad`` and a flip with p = 0.5, drawn per image index, so an image's augmentation in
      an epoch does not depend on batch size or world size.

    Every draw is a pure function of ``(seed, epoch)``, made by a CPU generator: the same batches on
    CPU and GPU, and when a run resumes at an epoch.

    Yields: ``x: float32 [B, 3, H, W]`` (normalised, :func:`normalize`; ``channels_last`` strides
    on request) and ``y: int64 [B]``, both on ``device``.

    Raises:
        ValueError: ``images`` not uint8 ``[N, H, W, 3]``, ``labels`` not ``[N]`` integers, or a
            size, rank, seed or pad out of range.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 42,
        augment: bool | None = None,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        pad: int = 4,
    ) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images: expected uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}"
            )
        n = images.shape[0]
        if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"labels: expected integer [{n}] (one per image), got {labels.dtype} "
                f"{list(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank, world_size: expected 0 <= rank < world_size, got {rank}, {world_size}"
            )
        if seed < 0:
            raise ValueError(f"seed: expected >= 0, got {seed}")
        if pad < 0:
            raise ValueError(f"pad: expected >= 0, got {pad}")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # [N, H, W, 3] uint8, once
        self.labels = labels.to(self.device, torch.int64)  # [N]
        self.batch_size = batch_size
        self.train = train
        self.augment = train if augment is None else augment
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.pad = pad
        self.epoch = 0
        self._scale, self._shift = _normalize_coefficients(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields (its shuffle and augmentation)."""
        if epoch < 0:
            raise ValueError(f"epoch: expected >= 0, got {epoch}")
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Images in this rank's share of an epoch (before ``drop_last``)."""
        return self.images.shape[0] // self.world_size

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """CPU draws of an epoch: this rank's image indices ``[num_samples]``, and, when augmenting,
        offsets ``[N, 2]`` and flips ``[N]`` indexed by image."""
        n = self.images.shape[0]
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        share = order[self.rank : self.num_samples * self.world_size : self.world_size]
        if not self.augment:
            return share, None, None
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        return share, offsets, flips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        share, offsets, flips = (
            t if t is None else t.to(self.device) for t in self._draws(self.epoch)
        )
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            i_img = share[start : start + self.batch_size]  # [B]
            x = self.images[i_img]  # [B, H, W, 3] uint8
            if self.augment:
                x = _augment(x, offsets[i_img], flips[i_img], self.pad)
            yield _normalize(x, self._scale, self._shift, self.channels_last), self.labels[i_img]
