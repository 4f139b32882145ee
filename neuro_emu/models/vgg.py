"""VGG for 32x32 inputs: conv3x3-BN-activation blocks, 2x2 pooling, a two-layer classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

# The training benchmark's SNN-VGG: conv 64, 64, pool, 128, 128, pool, 256, 256, pool.
SNN_VGG_CONFIG: tuple[int | str, ...] = (64, 64, "P", 128, 128, "P", 256, 256, "P")
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P",
)

Activation = Callable[[], nn.Module]


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGG(nn.Module):
    """``x: [B, 3, 32, 32] -> logits [B, num_classes]``.

    ``features``: for each int c in ``config`` a 3x3 conv (padding 1, no bias) to ``c * width``
    channels, BatchNorm and ``activation()``; each "P" a 2x2 pooling (average by default: an SNN
    passes spikes through it as rates, and max-pooling of spikes is not a rate). ``classifier``:
    Flatten, Linear to ``hidden * width``, ``activation()``, Linear to ``num_classes``.
    """

    def __init__(
        self,
        config: Sequence[int | str],
        activation: Activation,
        *,
        width: float = 1.0,
        hidden: int = 512,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in config:
            if item == "P":
                layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
                size //= 2
                continue
            out = _scaled(int(item), width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       activation()]
            channels = out
        self.features = nn.Sequential(*layers)
        hidden = _scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, hidden),
            activation(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg(config: Sequence[int | str], activation: Activation, **kwargs) -> VGG:
    """Build a :class:`VGG` (kept as a function for symmetry with :func:`resnet18`)."""
    return VGG(config, activation, **kwargs)
