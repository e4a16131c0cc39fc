"""What the image datasets share: a grid :class:`DataSpace`, the text form of an image and a PNG of samples.

An image is a numpy ``uint8`` array of shape ``(H, W)`` whose pixels take ``levels`` values ``0 .. levels-1``. Its
text form (what :meth:`GridImageDataModule.to_text` writes to a samples file, one image per line) writes each pixel
as one symbol of ``0-9a-z`` and the rows separated by ``/``, e.g. ``"0af0/..."``; :meth:`parse_text` reads it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from anyorder.atomic import write_with
from anyorder.data import DataSpace, DiscreteDataModule, TokenSet
from anyorder.errors import DataError

SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"
"""Pixel value v is written as ``SYMBOLS[v]`` in the text form (so at most 36 levels)."""

ROW_SEPARATOR = "/"

ORDER_STRIP_SAMPLES = 4
"""Samples (rows) in the step-by-step picture of generation orders."""

RENDER_COLUMNS = 8
"""Images per row of a rendered grid."""

RENDER_MIN_PIXELS = 56
"""A rendered image is scaled up by a whole factor until it is at least this many pixels high."""


def grid_space(shape: tuple[int, int], levels: int) -> DataSpace:
    """A ``grid`` space of ``H*W`` pixel variables (row-major), each over ``levels`` values named by their symbol."""
    if not 2 <= levels <= len(SYMBOLS):
        raise ValueError(f"levels must be in [2, {len(SYMBOLS)}] (got {levels})")
    height, width = shape
    size = height * width
    return DataSpace("grid", size, (levels,) * size, False, (height, width), tuple(SYMBOLS[:levels]))


def image_to_text(image: np.ndarray) -> str:
    """The text form of one image: a symbol per pixel, rows separated by ``/``."""
    return ROW_SEPARATOR.join("".join(SYMBOLS[int(v)] for v in row) for row in np.asarray(image))


def tile_images(images: Sequence[np.ndarray], levels: int, columns: int = RENDER_COLUMNS) -> np.ndarray:
    """The images side by side in rows of ``columns``, as one ``uint8`` grey picture (white = the top level).

    Each image is scaled up by a whole factor (at least :data:`RENDER_MIN_PIXELS` high) and framed by a one-pixel
    mid-grey border, so that black pixels at the edge of an image remain visible.
    """
    height, width = images[0].shape
    scale = max(1, -(-RENDER_MIN_PIXELS // height))
    cell_h, cell_w = height * scale + 1, width * scale + 1
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    picture = np.full((rows * cell_h + 1, cols * cell_w + 1), 128, dtype=np.uint8)
    for i, image in enumerate(images):
        grey = np.round(np.asarray(image, dtype=np.float64) * (255.0 / (levels - 1))).astype(np.uint8)
        big = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))
        top, left = (i // columns) * cell_h + 1, (i % columns) * cell_w + 1
        picture[top:top + height * scale, left:left + width * scale] = big
    return picture


def write_png(picture: np.ndarray, path: Path) -> bool:
    """Write a grey ``uint8`` picture as a PNG atomically, with matplotlib or else Pillow; False if neither exists."""
    try:
        from matplotlib import image as mpl_image
    except ImportError:
        mpl_image = None
    if mpl_image is not None:
        write_with(path, lambda f: mpl_image.imsave(f, picture, cmap="gray", vmin=0, vmax=255, format="png"))
        return True
    try:
        from PIL import Image
    except ImportError:
        return False
    write_with(path, lambda f: Image.fromarray(picture).save(f, format="PNG"))
    return True


class GridImageDataModule(DiscreteDataModule):
    """Base of the image datasets: ``image_shape`` pixels with ``levels`` values; domain objects are uint8 arrays.

    Subclasses set :attr:`name`, :attr:`image_shape` and :attr:`levels` and implement ``build``.
    """

    name = "images"
    image_shape: ClassVar[tuple[int, int]] = (0, 0)
    levels: ClassVar[int] = 2

    def make_space(self) -> DataSpace:
        """The dataset's grid space."""
        return grid_space(self.image_shape, self.levels)

    # -- domain objects ---------------------------------------------------------------------------------------------
    def decode(self, tokens: Tensor, length: int) -> np.ndarray:
        """One datapoint as a ``uint8`` image of shape ``image_shape``."""
        return tokens[:length].detach().cpu().numpy().astype(np.uint8).reshape(self.image_shape)

    def to_text(self, obj: Any) -> str:
        """The text form of an image (see the module doc); ``""`` for something that is not a valid image."""
        try:
            return image_to_text(self._as_image(obj, 0))
        except DataError:
            return ""

    def parse_text(self, text: str) -> np.ndarray:
        """An image from its text form (a :class:`~anyorder.errors.DataError` for a malformed line)."""
        return self._from_text(text, 0)

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Images (arrays or tensors of ``H*W`` pixel values, any shape) or their text forms, as a TokenSet."""
        size = self.image_shape[0] * self.image_shape[1]
        rows = [self._as_image(obj, i).reshape(size).astype(np.int64) for i, obj in enumerate(objs)]
        tokens = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, size, dtype=torch.long)
        return TokenSet.fixed(tokens)

    def render(self, objs: Sequence[Any], path: Path) -> bool:
        """A PNG grid of the (valid) images, 8 per row; False when there are none or no imaging library."""
        images = []
        for obj in objs:
            try:
                images.append(self._as_image(obj, 0))
            except DataError:
                continue
        if not images:
            return False
        return write_png(tile_images(images, self.levels), Path(path))

    def render_orders(self, tokens: Tensor, orders: Tensor, path: Path) -> list[Path]:
        """Two PNGs of the samples ``tokens`` [B, H*W] and their generation orders ``orders`` [B, H*W]:
        ``<path>-orders.png``, the mean generation step of each pixel over all samples (purple = early, yellow =
        late, with a colour bar over steps 0..D-1), and ``<path>-order-strip.png``, up to
        :data:`ORDER_STRIP_SAMPLES` samples after 1/8, 2/8, ... 8/8 of the D steps (pixels not generated yet in red).
        ``[]`` when there is no sample or Pillow is not installed."""
        from anyorder_plugins.images import orders as pictures

        size = self.image_shape[0] * self.image_shape[1]
        if tokens.shape[0] == 0 or not pictures.has_pillow():
            return []
        if tuple(tokens.shape) != tuple(orders.shape) or tokens.shape[1] != size:
            raise DataError(f"{self.name}: render_orders needs tokens and orders of shape [B, {size}]; got "
                            f"{tuple(tokens.shape)} and {tuple(orders.shape)}")
        values = tokens.detach().cpu().numpy()
        steps = orders.detach().cpu().numpy()
        stem = Path(path)
        heatmap = stem.with_name(stem.name + "-orders.png")
        pictures.write_rgb_png(pictures.order_heatmap_picture(steps, self.image_shape), heatmap)
        count = min(ORDER_STRIP_SAMPLES, len(values))
        images = [self._as_image(values[i], i) for i in range(count)]
        strip = pictures.order_strip_picture(images, list(steps[:count]), self.levels, pictures.snapshot_steps(size))
        strip_path = stem.with_name(stem.name + "-order-strip.png")
        pictures.write_rgb_png(strip, strip_path)
        return [heatmap, strip_path]

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _as_image(self, obj: Any, i: int) -> np.ndarray:
        if isinstance(obj, str):
            return self._from_text(obj, i)
        if isinstance(obj, Tensor):
            obj = obj.detach().cpu().numpy()
        try:
            values = np.asarray(obj)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{self.name}: sample {i} is not an image: {obj!r}") from exc
        height, width = self.image_shape
        if values.size != height * width or not np.issubdtype(values.dtype, np.number):
            raise DataError(f"{self.name}: sample {i} must be {height}x{width} pixel values; got an array of shape "
                            f"{values.shape} and dtype {values.dtype}")
        if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
            raise DataError(f"{self.name}: sample {i} has pixel values that are not whole numbers")
        if values.min() < 0 or values.max() >= self.levels:
            raise DataError(f"{self.name}: sample {i} has pixel values outside [0, {self.levels - 1}]")
        return values.astype(np.uint8).reshape(height, width)

    def _from_text(self, text: str, i: int) -> np.ndarray:
        height, width = self.image_shape
        rows = text.strip().split(ROW_SEPARATOR)
        if len(rows) != height or any(len(row) != width for row in rows):
            raise DataError(f"{self.name}: sample {i} is not {height} rows of {width} pixel symbols separated by "
                            f"{ROW_SEPARATOR!r}: {text!r}")
        index = {ch: v for v, ch in enumerate(SYMBOLS[:self.levels])}
        try:
            return np.array([[index[ch] for ch in row] for row in rows], dtype=np.uint8)
        except KeyError as exc:
            raise DataError(f"{self.name}: sample {i} has the symbol {exc.args[0]!r}, not one of "
                            f"{SYMBOLS[:self.levels]!r}: {text!r}") from exc
