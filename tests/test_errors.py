"""Bad input gives a clear CatcompError naming the file; never garbage."""

import numpy as np
import pytest
from PIL import Image

import catcomp
from catcomp import container
from catcomp.zoo import load_model

from .conftest import photo


@pytest.fixture
def ccz(tmp_path):
    path = tmp_path / "good.ccz"
    path.write_bytes(catcomp.compress(Image.fromarray(photo()), level=3))
    return path


def test_truncated_file_is_detected(ccz):
    data = ccz.read_bytes()
    for cut in (3, 20, container.HEADER_SIZE, len(data) - 1):
        ccz.write_bytes(data[:cut])
        with pytest.raises(catcomp.FormatError) as e:
            catcomp.decompress(ccz)
        assert str(ccz) in str(e.value)


def test_every_single_bit_flip_is_detected(ccz):
    data = bytearray(ccz.read_bytes())
    rng = np.random.default_rng(0)
    for pos in list(range(container.HEADER_SIZE)) + list(rng.integers(container.HEADER_SIZE, len(data), 40)):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(catcomp.FormatError):
            catcomp.decompress(bytes(flipped))


def test_wrong_magic(tmp_path):
    p = tmp_path / "x.ccz"
    p.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(catcomp.FormatError, match="not a .ccz file"):
        catcomp.decompress(p)


def test_trailing_garbage_is_detected(ccz):
    with pytest.raises(catcomp.FormatError, match="unexpected bytes"):
        catcomp.decompress(ccz.read_bytes() + b"\0")


def test_newer_format_version_is_refused(ccz):
    data = bytearray(ccz.read_bytes())
    data[4] = container.VERSION + 1
    with pytest.raises(catcomp.FormatError, match="version"):
        catcomp.decompress(bytes(data))


def test_file_from_another_model_version_is_refused(ccz):
    c = container.Container.from_bytes(ccz.read_bytes())
    c.checksum = bytes(8)
    with pytest.raises(catcomp.ModelMismatchError, match="different version"):
        catcomp.decompress(c.to_bytes())


def test_file_from_unknown_model_is_refused(ccz):
    c = container.Container.from_bytes(ccz.read_bytes())
    c.model_id = "nosuchmodel"
    with pytest.raises(catcomp.ModelMismatchError, match="not installed"):
        catcomp.decompress(c.to_bytes())


def test_header_claiming_huge_image_is_refused_before_decoding(ccz):
    c = container.Container.from_bytes(ccz.read_bytes())
    c.width, c.height = 100_000, 100_000
    with pytest.raises(catcomp.FormatError, match="pixel limit"):
        catcomp.decompress(c.to_bytes())


def test_consistent_but_wrong_payload_is_detected(ccz):
    # A payload that passes the CRC (rewritten) but does not match the latent size.
    c = container.Container.from_bytes(ccz.read_bytes())
    c.sections[container.LATENT] = c.sections[container.LATENT][:-4]
    with pytest.raises(catcomp.FormatError):
        catcomp.decompress(c.to_bytes())


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "not an image"), (b"hello, I am text", "not an image"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "not an image|cannot read|damaged")],
)
def test_bad_input_images_name_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(catcomp.InputImageError, match=reason) as e:
        catcomp.compress(p)
    assert str(p) in str(e.value)


def test_truncated_jpeg_is_reported(tmp_path):
    p = tmp_path / "cut.jpg"
    Image.fromarray(photo(256, 256)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:600])
    with pytest.raises(catcomp.InputImageError, match="cut.jpg"):
        catcomp.compress(p)


def test_missing_file_and_unknown_category(tmp_path):
    with pytest.raises(catcomp.InputImageError, match="no such file"):
        catcomp.compress(tmp_path / "nope.png")
    with pytest.raises(catcomp.CatcompError, match="unknown category"):
        catcomp.compress(Image.fromarray(photo()), category="boats")


def test_tampered_weights_are_refused(tiny_models, tmp_path):
    import shutil

    d = tmp_path / "general"
    shutil.copytree(tiny_models / "general", d)
    w = d / "model.weights.h5"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(catcomp.ModelError, match="SHA-256"):
        load_model(d)


def test_model_id_cannot_point_outside_the_models_folder(ccz, monkeypatch):
    import re

    c = container.Container.from_bytes(ccz.read_bytes())
    c.model_id = "../general"
    with pytest.raises(ValueError, match="model id '../general'"):  # catcomp never writes such a file
        c.to_bytes()
    monkeypatch.setattr(container, "MODEL_ID", re.compile(".*"))  # a hostile writer does
    with pytest.raises(catcomp.FormatError, match="invalid model id"):
        catcomp.decompress(c.to_bytes())
