"""Decoding images: the one image reader of prepare and tl-predict, and many images at once.

``read_image`` turns an image file into what the model sees (RGB, square, uint8);
``check_image_header`` is what can be known without decoding; ``decode_into`` decodes a list
of files into an array, in worker processes (the same bytes for any count).
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from ..plumbing.errors import PipelineError

SIXTEEN_BIT_FULL_SCALE = 65535  # 16-bit images, and 32-bit integer ("I") images, are 0..65535
FORMATS_EXAMPLE = "any format Pillow reads: .jpg .png .tif .webp .bmp ..."
DECODE_CHUNK = 256  # images decoded per round: what the decoding holds in memory at once
REASON_CHARS = 120  # of why an image cannot be read


class UnreadableImage(PipelineError):
    """An image file PIL cannot decode; the message is '<path> (<reason>)'."""


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The suffixes of every format this Pillow can decode, from Pillow's own registry."""
    from PIL import Image, ImageFile

    def decodes(format_name: str) -> bool:
        factory = Image.OPEN.get(format_name, (None,))[0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        return factory is not None and not stub  # stubs (HDF5, GRIB, WMF...) need a handler

    return frozenset(
        suffix for suffix, name in Image.registered_extensions().items() if decodes(name)
    )


def read_image(path: Path, size: int) -> np.ndarray:
    """The one way prepare and predict read an image file: RGB, size x size, uint8."""
    with _opened(path) as image:
        decode_at_least(image, 2 * size)
        return resize_for_model(image, size)


def check_image_header(path: Path) -> None:
    """What can be known without decoding: Pillow identifies the file and its size is not a
    decompression bomb (the pixels are decoded later, when the split is stored)."""
    with _opened(path):
        pass


def not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is if it is not a regular file (a FIFO, a socket, a
    device: reading one may wait forever or never end), else None."""
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device"}
    kinds.update({stat.S_ISBLK: "a device", stat.S_ISDIR: "a folder"})
    return next((kind for test, kind in kinds.items() if test(mode)), "a special file")


def _open_regular(path: Path):
    """``path`` open for reading, only if it is a regular file: checked before opening, and on
    what was opened (without blocking: a FIFO put there meanwhile is not waited on)."""
    kind = not_regular(os.stat(path).st_mode)
    if kind is None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        kind = not_regular(os.fstat(fd).st_mode)
        if kind is None:
            os.set_blocking(fd, True)
            handle = os.fdopen(fd, "rb")
            handle.raw.name = str(path)  # for Pillow's messages
            return handle
        os.close(fd)
    raise UnreadableImage(f"{path} ({kind}, not a regular file)")


@contextlib.contextmanager
def _opened(path: Path):
    """The image file opened by Pillow; any reason it cannot be read is an UnreadableImage."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings(), _open_regular(path) as handle:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                yield image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        reason = f"too large: more than {Image.MAX_IMAGE_PIXELS} pixels"
        raise UnreadableImage(f"{path} ({reason})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UnreadableImage(f"{path} ({_reason(error, path)})") from None


def _reason(error: Exception, path: Path) -> str:
    """Why, in Pillow's (or the system's) words: "image file is truncated (150 bytes not
    processed)", "cannot identify image file", "Permission denied"; without the path, which
    the message already names first."""
    text = getattr(error, "strerror", None) or str(error)
    text = text.splitlines()[0] if text else ""
    for named in (f"<_io.BufferedReader name={str(path)!r}>", repr(str(path)), str(path)):
        text = text.replace(named, "")
    text = text.strip(" :")
    return text[:REASON_CHARS] or type(error).__name__


def decode_at_least(image, size: int) -> None:
    """A JPEG at least twice as large as needed is decoded smaller: the decoder's own DCT
    scaling (1/2, 1/4 or 1/8; Pillow's ``draft``), never below ``size`` on either side (the
    EXIF orientation is kept). Other formats, and JPEGs that need no such scaling, decode
    in full, exactly as before (bench/decode.py measures speed and pixel difference)."""
    if image.format == "JPEG" and min(image.size) // size >= 2:
        image.draft(None, (size, size))


def resize_for_model(image, size: int) -> np.ndarray:
    """The one resize used by prepare and predict: RGB, bilinear, square size x size, uint8."""
    from PIL import Image

    return np.asarray(rgb_as_viewed(image).resize((size, size), Image.BILINEAR), np.uint8)


def rgb_as_viewed(image):
    """RGB as a viewer shows the image: EXIF orientation applied, 16-bit and float images scaled
    to 8 bit, transparency composited on white."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "F" or image.mode == "I" or image.mode.startswith("I;16"):
        image = _to_8_bit_gray(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        on_white = Image.new("RGBA", image.size, "white")
        return Image.alpha_composite(on_white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _to_8_bit_gray(image):
    """Float images ("F") span 0..1; integer ones ("I;16...", "I") 0..65535; both clipped."""
    from PIL import Image

    full_scale = 1.0 if image.mode == "F" else SIXTEEN_BIT_FULL_SCALE
    pixels = np.asarray(image, np.float64) * (255 / full_scale)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def _decode_or_reason(path: str, size: int):
    """In a worker: the image, or why it cannot be read."""
    try:
        return read_image(Path(path), size)
    except UnreadableImage as error:
        return str(error)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the stage process, which stops them and reports it once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_into(out, files: list[str], size: int, workers: int, bar=None):
    """Decode ``files`` into ``out`` (rows in order); return (row, reason) of unreadable ones."""
    import multiprocessing
    import multiprocessing.util
    from concurrent.futures import ProcessPoolExecutor

    from ..plumbing.locks import in_system_temp

    unreadable = []
    pool = None
    if workers > 1 and len(files) > 1:
        with in_system_temp():  # the forkserver's socket and pymp-* folder, short paths
            multiprocessing.util.get_temp_dir()
        pool = ProcessPoolExecutor(
            min(workers, len(files)),
            mp_context=multiprocessing.get_context("forkserver"),  # no threads of ours copied
            initializer=_ignore_interrupts,
        )
    try:
        for start in range(0, len(files), DECODE_CHUNK):
            chunk = files[start : start + DECODE_CHUNK]
            sizes = [size] * len(chunk)
            if pool is None:
                decoded = map(_decode_or_reason, chunk, sizes)
            else:
                decoded = pool.map(_decode_or_reason, chunk, sizes, chunksize=4)
            for row, image in enumerate(decoded, start):
                if isinstance(image, str):
                    unreadable.append((row, image))
                else:
                    out[row] = image
                if bar is not None:
                    bar.update(1)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if pool is not None:
        pool.shutdown()
    return unreadable
