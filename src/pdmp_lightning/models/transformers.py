"""Transformer encoders, trained from scratch: a vision transformer for frames, one for spectrograms.

Both are built from torchvision's vision-transformer blocks (``torchvision.models.vision_transformer.Encoder``:
learned position embedding, pre-norm self-attention and MLP blocks, a final LayerNorm) behind a
convolutional patch embedding and a class token, with no pretrained weights (nothing is downloaded).
They keep the contract of the other encoders: an integer ``out_features`` (the class token's width)
and ``[batch, out_features]`` outputs, so fusions, probes and ``PDMPCallback`` use them unchanged.
Needs ``pip install "pdmp-lightning[vision]"``.

* ``VisionTransformerEncoder``: images ``[B, C, H, W]`` and videos ``[B, C, T, H, W]`` (frames folded
  into the batch, encoded one by one and pooled over time, as ``ResNet18Encoder``).
* ``SpectrogramTransformerEncoder``: spectrograms ``[B, 1, F, T]`` (or ``[B, F, T]``), cut into
  patches that may overlap (the audio spectrogram transformer's stride), as AST does.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pdmp_lightning.errors import check_int, config_error
from pdmp_lightning.models.encoders import encode_frames

__all__ = ["SpectrogramTransformerEncoder", "VisionTransformerEncoder"]


class _PatchTransformer(nn.Module):
    """Patch embedding (a strided convolution), class token, torchvision's transformer encoder.

    Args:
        in_channels: Input channels.
        grid: Patches along height and width.
        patch_size: Patch height and width.
        stride: Patch stride (``patch_size``: no overlap).
        depth, width, heads, mlp_dim, dropout: As in the public encoders.
    """

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        patch_size: int,
        stride: int,
        depth: int,
        width: int,
        heads: int,
        mlp_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        try:
            from torchvision.models.vision_transformer import Encoder
        except ImportError as err:
            raise ImportError(
                'The transformer encoders need torchvision: pip install "pdmp-lightning[vision]"'
            ) from err
        self.patches = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=stride)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.encoder = Encoder(
            seq_length=grid[0] * grid[1] + 1,
            num_layers=depth,
            num_heads=heads,
            hidden_dim=width,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=dropout,
        )
        # torchvision's initialisation of the patch embedding (VisionTransformer.__init__).
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.patches.weight, std=(1.0 / fan_in) ** 0.5)
        assert self.patches.bias is not None
        nn.init.zeros_(self.patches.bias)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)  # [N, patches, width]
        tokens = torch.cat([self.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        encoded: Tensor = self.encoder(tokens)
        return encoded[:, 0]


def _check_transformer(depth: int, width: int, heads: int, mlp_dim: int | None, dropout: float) -> int:
    for name, value in (("depth", depth), ("width", width), ("heads", heads)):
        check_int(name, value, 1, allowed="a positive integer")
    if width % heads:
        raise config_error("heads", heads, f"a divisor of width ({width})", "each head attends over width / heads.")
    check_int("mlp_dim", mlp_dim, 1, optional=True, allowed="None (4 x width) or a positive integer")
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise config_error("dropout", dropout, "a number in [0, 1)")
    return 4 * width if mlp_dim is None else mlp_dim


class VisionTransformerEncoder(nn.Module):
    """A small vision transformer for images and video frames, trained from scratch.

    Each frame is cut into ``patch_size`` x ``patch_size`` patches, embedded, prefixed with a class
    token and encoded by ``depth`` transformer blocks; the class token's final state is the frame's
    feature. A video ``[B, C, T, H, W]`` is encoded frame by frame and its features pooled over time
    (``temporal_pooling``), as the CNN encoders do.

    Args:
        in_channels: Input channels (3 for RGB; 1 for depth or infrared; 2L for stacked optical flow).
        image_size: Height and width of the frames (they must be square and divisible by ``patch_size``).
        patch_size: Side of a patch.
        depth: Number of transformer blocks.
        width: Token width (the output width, ``out_features``).
        heads: Attention heads (must divide ``width``).
        mlp_dim: Hidden width of each block's MLP (None: 4 x ``width``).
        dropout: Dropout in the blocks and the attention.
        temporal_pooling: How per-frame features of a video are pooled over time.

    Examples:
        >>> import torch
        >>> encoder = VisionTransformerEncoder(
        ...     image_size=32, patch_size=8, depth=2, width=64, heads=4
        ... )
        >>> # [batch, channels, time, height, width]
        >>> encoder(torch.randn(2, 3, 4, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 112,
        patch_size: int = 16,
        depth: int = 6,
        width: int = 192,
        heads: int = 3,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        temporal_pooling: Literal["mean", "max"] = "mean",
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, 1, allowed="a positive integer")
        check_int("patch_size", patch_size, 1, allowed="a positive integer")
        check_int("image_size", image_size, patch_size, allowed=f"an integer >= patch_size ({patch_size})")
        if image_size % patch_size:
            raise config_error(
                "image_size", image_size, f"a multiple of patch_size ({patch_size})", "patches tile the frame."
            )
        if temporal_pooling not in ("mean", "max"):
            raise config_error("temporal_pooling", temporal_pooling, "'mean' or 'max'")
        hidden = _check_transformer(depth, width, heads, mlp_dim, dropout)
        side = image_size // patch_size
        self.in_channels, self.image_size, self.temporal_pooling = in_channels, image_size, temporal_pooling
        self.out_features: int = width
        self.transformer = _PatchTransformer(
            in_channels, (side, side), patch_size, patch_size, depth, width, heads, hidden, dropout
        )

    def forward(self, x: Tensor) -> Tensor:
        """Encodes images ``[B, C, H, W]`` or videos ``[B, C, T, H, W]`` into ``[B, width]``."""
        size, channels = self.image_size, self.in_channels
        if x.dim() not in (4, 5) or x.shape[1] != channels or tuple(x.shape[-2:]) != (size, size):
            allowed = f"images [batch, {channels}, {size}, {size}] or videos [batch, {channels}, time, {size}, {size}]"
            raise config_error("x", tuple(x.shape), allowed, "image_size must match the data's frame size.")
        if x.dim() == 4:
            out: Tensor = self.transformer(x)
            return out
        return encode_frames(self.transformer, x, self.temporal_pooling)


class SpectrogramTransformerEncoder(nn.Module):
    """An audio spectrogram transformer (AST-style), trained from scratch.

    The spectrogram ``[B, 1, F, T]`` is cut into ``patch_size`` x ``patch_size`` patches every
    ``stride`` bins and frames (AST overlaps them: stride 10 for patches of 16), embedded, prefixed
    with a class token and encoded; the class token's final state is the feature.

    Args:
        input_size: (frequency bins, time frames) of the spectrograms (257 x 188 for the CREMA-D recipe).
        patch_size: Side of a patch.
        stride: Step between patches (None: ``patch_size``, no overlap).
        depth: Number of transformer blocks.
        width: Token width (the output width, ``out_features``).
        heads: Attention heads (must divide ``width``).
        mlp_dim: Hidden width of each block's MLP (None: 4 x ``width``).
        dropout: Dropout in the blocks and the attention.

    Examples:
        >>> import torch
        >>> encoder = SpectrogramTransformerEncoder(
        ...     (40, 30), patch_size=8, stride=6, depth=2, width=32, heads=2
        ... )
        >>> encoder(torch.randn(2, 1, 40, 30)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        input_size: tuple[int, int] = (257, 188),
        patch_size: int = 16,
        stride: int | None = None,
        depth: int = 6,
        width: int = 192,
        heads: int = 3,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("patch_size", patch_size, 1, allowed="a positive integer")
        stride = patch_size if stride is None else stride
        check_int("stride", stride, 1, allowed="None or a positive integer")
        sizes = tuple(input_size) if isinstance(input_size, tuple | list) else ()
        if len(sizes) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= patch_size for s in sizes
        ):
            raise config_error(
                "input_size", input_size, f"(frequency bins, time frames), each >= patch_size ({patch_size})"
            )
        hidden = _check_transformer(depth, width, heads, mlp_dim, dropout)
        grid = ((sizes[0] - patch_size) // stride + 1, (sizes[1] - patch_size) // stride + 1)
        self.input_size: tuple[int, int] = (sizes[0], sizes[1])
        self.out_features: int = width
        self.transformer = _PatchTransformer(1, grid, patch_size, stride, depth, width, heads, hidden, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Encodes spectrograms ``[B, 1, F, T]`` (or ``[B, F, T]``) into ``[B, width]``."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != self.input_size:
            bins, frames = self.input_size
            raise config_error(
                "x",
                tuple(x.shape),
                f"spectrograms [batch, 1, {bins}, {frames}] or [batch, {bins}, {frames}]",
                "input_size must match the data's spectrogram shape.",
            )
        out: Tensor = self.transformer(x)
        return out
