"""Round trips through the .ccz format: any size, any mode, exact bytes reported."""

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import catcomp
from catcomp.metrics import psnr

from .conftest import photo


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (1000, 37), (64, 48)])
def test_round_trip_restores_size(size):
    im = Image.fromarray(photo(*size))
    out = catcomp.decompress(catcomp.compress(im, level=3))
    assert out.size == size and out.mode == "RGB"


def test_large_image_is_tiled_and_round_trips():
    # 4000x3000 takes the tiled path in both transforms.
    im = Image.fromarray(np.tile(photo(400, 300), (10, 10, 1)))
    out = catcomp.decompress(catcomp.compress(im, level=1))
    assert out.size == (4000, 3000)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_round_trip_restores_mode(mode):
    im = Image.fromarray(photo()).convert(mode)
    out = catcomp.decompress(catcomp.compress(im))
    assert (out.mode, out.size) == (mode, im.size)


def test_alpha_is_lossless():
    rgba = np.dstack([photo(), (np.arange(64 * 48) % 251).reshape(48, 64).astype(np.uint8)])
    out = catcomp.decompress(catcomp.compress(Image.fromarray(rgba, "RGBA")))
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_palette_restored_with_original_palette():
    im = Image.fromarray(photo()).quantize(16)
    out = catcomp.decompress(catcomp.compress(im))
    assert out.getpalette()[: 16 * 3] == im.getpalette()[: 16 * 3]


def test_sixteen_bit_is_reduced_with_warning():
    a = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    with pytest.warns(UserWarning, match="8 bits"):
        data = catcomp.compress(im)
    out = catcomp.decompress(data)
    assert out.mode == "I;16" and out.size == (64, 48)


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(photo(64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes())
    out = catcomp.decompress(catcomp.compress(path))
    assert out.size == (32, 64)


def test_bpp_counts_every_byte_of_the_file():
    im = Image.fromarray(photo(64, 48))
    data = catcomp.compress(im, level=2)
    h = catcomp.info(data)
    assert h["bytes"] == len(data)
    assert h["bpp"] == pytest.approx(8 * len(data) / (64 * 48))


def test_higher_level_means_more_bytes_and_less_error():
    im = Image.fromarray(photo(128, 96))
    sizes = [len(catcomp.compress(im, level=lv)) for lv in catcomp.LEVELS]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_level_is_written_on_the_knob_grid():
    data = catcomp.compress(Image.fromarray(photo()), level=2.37)
    assert catcomp.info(data)["level"] == pytest.approx(2.35)


def test_level_out_of_range_is_a_clear_error():
    with pytest.raises(catcomp.CatcompError, match="level"):
        catcomp.compress(Image.fromarray(photo()), level=9)


def test_decoded_pixels_equal_the_models_own_forward_pass():
    # The entropy coding is lossless on the latent: what decompress returns is
    # exactly the synthesis of the rounded latent (the model's eval forward).
    from catcomp.zoo import load_model

    a = photo(64, 64)
    out = np.asarray(catcomp.decompress(catcomp.compress(Image.fromarray(a), level=4)))
    x_hat, _, _ = load_model("general").model(a[None].astype("float32") / 255.0, np.array([4.0], "float32"))
    expected = np.clip(np.rint(np.asarray(x_hat)[0] * 255.0), 0, 255).astype(np.uint8)
    assert np.array_equal(out, expected)


_DECODE = """
import hashlib, sys, numpy as np, catcomp
sys.stdout.write(hashlib.sha256(np.asarray(catcomp.decompress(sys.argv[1])).tobytes()).hexdigest())
"""


def test_decoding_is_identical_across_processes_and_thread_counts(tmp_path, tiny_models):
    path = tmp_path / "x.ccz"
    path.write_bytes(catcomp.compress(Image.fromarray(photo(96, 80)), level=4))
    env = {"CATCOMP_MODELS": str(tiny_models), "TF_CPP_MIN_LOG_LEVEL": "3"}
    import os

    hashes = set()
    for threads in (None, "1", None):
        e = {**os.environ, **env, **({"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"} if threads else {})}
        r = subprocess.run([sys.executable, "-c", _DECODE, str(path)], env=e, capture_output=True, text=True, check=True)
        hashes.add(r.stdout)
    with warnings.catch_warnings():
        hashes.add(__import__("hashlib").sha256(np.asarray(catcomp.decompress(path)).tobytes()).hexdigest())
    assert len(hashes) == 1


def test_open_reads_ccz_and_plain_images(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(photo()).save(src)
    ccz = tmp_path / "a.ccz"
    ccz.write_bytes(catcomp.compress(src))
    assert catcomp.open(ccz).size == catcomp.open(src).size == (64, 48)


def test_psnr_of_round_trip_is_finite():
    a = photo()
    out = np.asarray(catcomp.decompress(catcomp.compress(Image.fromarray(a), level=5)))
    assert 0 < psnr(a, out) < 100


def test_png_bytes_input():
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "PNG")
    assert catcomp.decompress(catcomp.compress(buf.getvalue())).size == (64, 48)


@pytest.mark.parametrize("mode,restored", [("PA", "RGBA"), ("RGBX", "RGB"), ("YCbCr", "YCbCr")])
def test_unusual_modes_restore_to_a_close_relative(mode, restored):
    im = Image.fromarray(photo()).convert("RGBA" if mode == "PA" else "RGB")
    im = im.convert("P").convert("PA") if mode == "PA" else im.convert(mode)
    out = catcomp.decompress(catcomp.compress(im))
    assert out.mode == restored and out.size == im.size


def test_a_model_saved_under_any_directory_name_gets_a_model_id_its_files_decode_with(tmp_path, tiny_models):
    from catcomp.codec import PaddedImage, decode_container, encode_image
    from catcomp.container import Container
    from catcomp.zoo import load_model, save_model

    card = save_model(load_model(tiny_models / "general").model, tmp_path / "Flower run 0.01 (beta0)")
    assert card["name"] == "flower-run-0-01-"  # lower case, other characters as "-", 16 at most
    lm = load_model(tmp_path / "Flower run 0.01 (beta0)")
    img = photo(48, 32)
    data = encode_image(PaddedImage(Image.fromarray(img)), lm, 2, "flower")
    assert Container.from_bytes(data).model_id == "flower-run-0-01-"
    assert np.asarray(decode_container(Container.from_bytes(data), lm)).shape == img.shape
    bad = Container.from_bytes(data)
    bad.model_id = "flower_w0.1-beta0"  # the header's 16 bytes would cut it, and a decoder refuses the dot
    with pytest.raises(ValueError, match="flower_w0.1-beta0"):
        bad.to_bytes()
