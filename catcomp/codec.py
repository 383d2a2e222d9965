"""Image <-> ``.ccz`` bytes.

Any PIL image goes in: EXIF orientation is applied, grayscale/palette/CMYK
are coded as RGB and converted back, alpha is kept losslessly (PNG), 16-bit
images are reduced to 8 bits with a warning. The RGB image is edge-padded to
a multiple of 16, transformed, quantized at the chosen rate level and
entropy-coded; decoding restores the original size and mode.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from keras import ops
from PIL import Image, ImageOps, UnidentifiedImageError

from . import container
from .categories import check_category, model_name, models_dir
from .container import MODEL_ID, Container
from .entropy import LEVEL_STEP, decode_symbols, encode_symbols, level_index
from .errors import CatcompError, FormatError, InputImageError, ModelMismatchError
from .zoo import LoadedModel, load_model

#: Largest image (pixels) accepted, in and out; CATCOMP_MAX_PIXELS overrides.
MAX_PIXELS = int(os.environ.get("CATCOMP_MAX_PIXELS", Image.MAX_IMAGE_PIXELS or 89_478_485))
#: Images larger than this (per side, pixels) are transformed in tiles.
TILE = 512
_MARGIN = 64  # pixels of context around each tile (receptive field ~61 px)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
#: Modes decoded as a close relative PIL can convert back to.
_RESTORE_AS = {"PA": "RGBA", "RGBa": "RGBA", "La": "LA", "RGBX": "RGB", "I;16L": "I;16", "I;16B": "I;16", "I;16N": "I;16"}


class PaddedImage:
    """An RGB uint8 array padded to a multiple of 16 plus what restores the original."""

    def __init__(self, im: Image.Image, name=None):
        self.mode, self.width, self.height = _RESTORE_AS.get(im.mode, im.mode), im.width, im.height
        self.alpha = self.palette = None
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
            self.mode = "RGBA"
        if im.mode in _SIXTEEN_BIT:
            warnings.warn(f"{name or 'image'}: {im.mode} image reduced to 8 bits per sample", stacklevel=3)
            a = np.asarray(im, dtype=np.float64)
            a = a / 257.0 if im.mode != "F" else a
            im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        elif im.mode in _ALPHA_MODES:
            self.alpha = np.asarray(im.getchannel("A"))
        elif im.mode == "P":
            self.palette = bytes(im.getpalette("RGB") or [])
        rgb = np.asarray(im.convert("RGB"))
        self.pad = (-self.width % 16, -self.height % 16)
        self.rgb = np.pad(rgb, ((0, self.pad[1]), (0, self.pad[0]), (0, 0)), mode="edge")

    def extra_sections(self) -> dict:
        out = {}
        if self.alpha is not None:
            buf = io.BytesIO()
            Image.fromarray(self.alpha, "L").save(buf, "PNG", optimize=True)
            out[container.ALPHA] = buf.getvalue()
        if self.palette is not None:
            out[container.PALETTE] = self.palette
        return out


def restore_mode(rgb: np.ndarray, c: Container) -> Image.Image:
    """The decoded RGB array back to the original image mode."""
    im = Image.fromarray(rgb, "RGB")
    if c.mode in _SIXTEEN_BIT:
        l8 = np.asarray(im.convert("L"))
        if c.mode == "F":
            return Image.fromarray(l8.astype(np.float32))
        return Image.fromarray(l8.astype(np.int32 if c.mode == "I" else np.uint16) * 257)
    if container.PALETTE in c.sections:
        pal = Image.new("P", (1, 1))
        pal.putpalette(c.sections[container.PALETTE])
        return im.quantize(palette=pal, dither=Image.Dither.NONE)
    if container.ALPHA in c.sections:
        try:
            alpha = Image.open(io.BytesIO(c.sections[container.ALPHA]))
            alpha.load()
        except (OSError, UnidentifiedImageError) as e:
            raise FormatError(f"corrupt alpha section: {e}") from None
        if alpha.size != im.size or alpha.mode != "L":
            raise FormatError("corrupt alpha section (wrong size or mode)")
        base = im.convert("L") if c.mode == "LA" else im
        base.putalpha(alpha)
        return base.convert(c.mode)
    return im if c.mode == "RGB" else im.convert(c.mode)


# --- reading inputs ---------------------------------------------------------------


def read_image(src, name=None) -> tuple[Image.Image, str]:
    """Open a path, bytes or PIL image; apply EXIF orientation; check its size.

    ``name`` is what errors call the image (default: the path, or ``<bytes>``).
    """
    if isinstance(src, Image.Image):
        im = src
        name = name or getattr(src, "filename", None) or "<image>"
    else:
        name = name or (str(src) if not isinstance(src, (bytes, bytearray)) else "<bytes>")
        try:
            im = Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)
        except FileNotFoundError:
            raise InputImageError("no such file", name) from None
        except IsADirectoryError:
            raise InputImageError("is a directory, not an image", name) from None
        except UnidentifiedImageError:
            raise InputImageError("not an image file Pillow can read", name) from None
        except Image.DecompressionBombError as e:
            raise InputImageError(f"refused: {e}", name) from None
        except OSError as e:
            raise InputImageError(f"cannot read image: {e}", name) from None
    if im.width * im.height > MAX_PIXELS:
        raise InputImageError(f"{im.width}x{im.height} exceeds the {MAX_PIXELS}-pixel limit", name)
    try:
        if getattr(im, "n_frames", 1) > 1:
            warnings.warn(f"{name}: animated image, only the first frame is compressed", stacklevel=2)
            im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputImageError(f"damaged or truncated image: {e}", name) from None
    return im, name


# --- transforms in tiles ---------------------------------------------------------------


def _tiled(fn, x: np.ndarray, scale: float, tile: int, box=False) -> np.ndarray:
    """Apply a fully convolutional ``fn`` to (H, W, C) ``x`` in overlapping tiles.

    ``scale`` is output pixels per input pixel (1/16 or 16; 1 for latent to
    latent); ``tile`` and the margin are in input pixels and multiples of the
    stride, so tiles stitch exactly. Images that fit one tile are transformed
    whole. With ``box``, ``fn`` also gets the crop's (y0, y1, x0, x1) in ``x``.
    """
    H, W = x.shape[:2]

    def call(ya, yb, xa, xb):
        t = x[None, ya:yb, xa:xb]
        return ops.convert_to_numpy(fn(t, (ya, yb, xa, xb)) if box else fn(t))[0]

    if H <= tile and W <= tile:
        return call(0, H, 0, W)
    margin = _MARGIN if scale < 1 else _MARGIN // 16
    out = None
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            yb, xb = min(y0 + tile + margin, H), min(x0 + tile + margin, W)
            r = call(ya, yb, xa, xb)
            if out is None:
                out = np.empty((int(H * scale), int(W * scale), r.shape[-1]), dtype=r.dtype)
            oy, ox = int((y0 - ya) * scale), int((x0 - xa) * scale)
            th, tw = int(min(tile, H - y0) * scale), int(min(tile, W - x0) * scale)
            out[int(y0 * scale) : int(y0 * scale) + th, int(x0 * scale) : int(x0 * scale) + tw] = r[oy : oy + th, ox : ox + tw]
    return out


# --- the codec ------------------------------------------------------------------------


def resolve(category: str | None, level: float | None) -> tuple[str, LoadedModel, int]:
    """The category written to the file, its model, and the knob grid index."""
    category = check_category(category) or "other"
    lm = load_model(model_name(category))
    level = lm.tuned_level_for(category) if level is None else float(level)
    num_levels = lm.model.config.num_levels
    if not 0.0 <= level <= num_levels - 1:
        raise CatcompError(f"level {level} is outside 0..{num_levels - 1}")
    return category, lm, level_index(level, num_levels)


def analyse(img: PaddedImage, lm: LoadedModel) -> np.ndarray:
    """The float latent of a padded image (the expensive half of encoding; rate-independent)."""
    # uint8 goes into the tiler and each tile is made float on its own: a whole
    # 24 MP image in float32 would be 288 MB, and two temporaries of it.
    return _tiled(lambda t: lm.model.analysis(t.astype(np.float32) / 255.0 - 0.5), img.rgb, 1 / 16, TILE)


def quantize(y: np.ndarray, lm: LoadedModel, j: int) -> np.ndarray:
    """Integer symbols of latent ``y`` at knob grid index ``j``."""
    g, _ = lm.model.gains(np.array([j * LEVEL_STEP], dtype=np.float32))
    return np.clip(np.rint(y * ops.convert_to_numpy(g)[0]), -(2**30), 2**30).astype(np.int32)


def pack(img: PaddedImage, lm: LoadedModel, q: np.ndarray, j: int, category: str) -> bytes:
    """The ``.ccz`` bytes for symbols ``q`` of ``img``."""
    sections = {container.LATENT: encode_symbols(q, lm.tables, j), **img.extra_sections()}
    return Container(lm.name, lm.checksum, category, j, img.width, img.height, img.mode, img.pad, sections).to_bytes()


def synthesize(q: np.ndarray, lm: LoadedModel, j: int, width: int, height: int) -> np.ndarray:
    """Decoded RGB uint8 pixels (cropped to ``width`` x ``height``) from symbols ``q``."""
    _, inv_g = lm.model.gains(np.array([j * LEVEL_STEP], dtype=np.float32))
    y_hat = (q * ops.convert_to_numpy(inv_g)[0]).astype(np.float32)

    def to_pixels(t):  # each tile made uint8 on its own: a 24 MP image in float32 is 288 MB, and temporaries of it
        return np.clip(np.rint((ops.convert_to_numpy(lm.model.synthesis(t)) + 0.5) * 255.0), 0, 255).astype(np.uint8)

    return _tiled(to_pixels, y_hat, 16, TILE // 16)[:height, :width]


def refined(y: np.ndarray, img: PaddedImage, lm: LoadedModel, j: int, refine) -> np.ndarray:
    """Latent ``y`` after encoder-side refinement ``refine``: a step count or a
    :class:`catcomp.refine.Refinement` (0: ``y`` itself)."""
    if not refine:
        return y
    from .refine import TILE, Refinement, refine_tile

    refine = Refinement.of(refine)  # checked before the first tile

    return _tiled(lambda t, b: refine_tile(t[0], img.rgb[16 * b[0] : 16 * b[1], 16 * b[2] : 16 * b[3]], lm, j, refine)[None], y, 1, TILE, box=True)


def encode_image(img: PaddedImage, lm: LoadedModel, j: int, category: str, refine=0) -> bytes:
    return pack(img, lm, quantize(refined(analyse(img, lm), img, lm, j, refine), lm, j), j, category)


def compress(image_or_path, category: str | None = None, level: float | None = None, target=None, refine=0) -> bytes:
    """Compress an image (path, bytes or PIL image) into ``.ccz`` bytes.

    ``category`` picks the model (``None``: the router decides; without an
    installed router, the general model); ``level`` is the continuous rate
    knob in ``[0, len(LEVELS) - 1]`` (``None``: the category's tuned rate);
    ``target`` (a :class:`catcomp.Target`) instead searches the knob per
    image for a file size, bpp, ratio or quality; ``refine`` = N > 0 spends that
    many optimisation steps on the latent for a better file (slower encoding,
    same decoder), and ``refine=Refinement.aiming_at(N, "ssim")`` aims them at
    SSIM (see :mod:`catcomp.refine`).
    """
    return compress_image(*read_image(image_or_path), category, level, target, refine)[0]


def compress_image(im: Image.Image, name: str, category: str | None = None, level: float | None = None, target=None, refine=0):
    """:func:`compress` for an opened image; also returns the router's decision (or ``None``)."""
    if target is not None and level is not None:
        raise CatcompError("give a rate level or a rate target, not both")
    route = None
    if category is None:
        from .router import route_image

        route = route_image(im)
        category = route.category
    category, lm, j = resolve(category, level)
    img = PaddedImage(im, name)
    if target is None:
        return encode_image(img, lm, j, category, refine), route
    from .ratecontrol import search

    try:
        return search(img, lm, category, target, refine)[0], route
    except CatcompError as e:
        raise CatcompError(str(e), name) from None


def read_container(data_or_path) -> tuple[Container, str]:
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        return Container.from_bytes(bytes(data_or_path), "<bytes>"), "<bytes>"
    name = str(data_or_path)
    try:
        data = Path(data_or_path).read_bytes()
    except OSError as e:
        raise FormatError(f"cannot read: {e.strerror or e}", name) from None
    return Container.from_bytes(data, name), name


def decompress(data_or_path) -> Image.Image:
    """Decode ``.ccz`` bytes or a ``.ccz`` path to a PIL image of the original size and mode."""
    c, name = read_container(data_or_path)
    try:
        return decode_container(c)
    except FormatError as e:
        raise type(e)(str(e), name) from None


def decode_container(c: Container, lm: LoadedModel | None = None) -> Image.Image:
    """Decode a parsed container with the installed model it names (or with ``lm``, checksum checked)."""
    if c.width * c.height > MAX_PIXELS:
        raise FormatError(f"header claims {c.width}x{c.height}, over the {MAX_PIXELS}-pixel limit")
    if not MODEL_ID.fullmatch(c.model_id):
        raise FormatError(f"invalid model id {c.model_id!r}")
    if lm is None:
        if not (models_dir() / c.model_id / "card.json").is_file():
            raise ModelMismatchError(f"made with model {c.model_id!r}, which is not installed here")
        lm = load_model(models_dir() / c.model_id)
    if lm.checksum != c.checksum:
        raise ModelMismatchError(
            f"made with a different version of model {c.model_id!r} (checksum {c.checksum.hex()}, installed {lm.checksum.hex()})"
        )
    if c.level_index >= lm.tables.num_positions:
        raise FormatError(f"rate level index {c.level_index} out of range")
    H, W = c.height + c.pad[1], c.width + c.pad[0]
    q = decode_symbols(c.sections[container.LATENT], (H // 16, W // 16, lm.model.config.M), lm.tables, c.level_index)
    rgb = synthesize(q, lm, c.level_index, c.width, c.height)
    return restore_mode(rgb, c)


def info(data_or_path) -> dict:
    """The header of a ``.ccz`` file as a dict (no decoding)."""
    c, name = read_container(data_or_path)
    size = container.HEADER_SIZE + sum(len(v) + 5 for v in c.sections.values())
    return {
        "file": name, "format_version": container.VERSION, "model": c.model_id, "model_checksum": c.checksum.hex(),
        "category": c.category, "level": round(c.level_index * LEVEL_STEP, 4), "width": c.width, "height": c.height,
        "mode": c.mode, "padding": list(c.pad), "bytes": size, "bpp": 8 * size / (c.width * c.height),
        "sections": {k.decode(): len(v) for k, v in c.sections.items()}, "header_bytes": container.HEADER_SIZE,
    }  # fmt: skip


def open_image(path) -> Image.Image:
    """Open a ``.ccz`` file (decoded) or any image Pillow reads, as a PIL image."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            is_ccz = f.read(4) == container.MAGIC
    except OSError as e:
        raise InputImageError(f"cannot read: {e.strerror or e}", p) from None
    return decompress(p) if is_ccz else read_image(p)[0]


__all__ = ["compress", "decompress", "info", "open_image", "MAX_PIXELS"]
