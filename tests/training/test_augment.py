pytest = __import__("pytest")
torch = pytest.importorskip("torch")

from training.augment import (  # noqa: E402
    Normalize,
    affine_crop,
    augment,
    preset,
    random_erase,
)


def _images(n=8, c=1, size=16):
    torch.manual_seed(0)
    return torch.rand(n, c, size, size)


def test_identity_geometry_reproduces_the_image():
    x = _images()
    same = affine_crop(x, preset("none"))
    assert torch.allclose(same, x, atol=1e-5)


def test_views_are_random_in_range_and_sized():
    x = _images(c=3)
    torch.manual_seed(1)
    a = augment(x, preset("natural"))
    b = augment(x, preset("natural"))
    assert a.shape == x.shape and not torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    small = augment(x, preset("digits"), out_size=(8, 8))
    assert small.shape == (8, 3, 8, 8)


def test_digits_preset_never_flips():
    assert preset("digits").hflip == 0.0
    # a left-right asymmetric image stays asymmetric the same way under pure crops
    x = torch.zeros(64, 1, 16, 16)
    x[..., :8] = 1.0
    torch.manual_seed(2)
    out = affine_crop(x, preset("none", crop_scale=(0.8, 1.0)))
    assert (out[..., :4].mean((1, 2, 3)) > out[..., -4:].mean((1, 2, 3))).all()


def test_erasing_writes_the_fill_value():
    x = torch.ones(32, 1, 16, 16)
    torch.manual_seed(3)
    out = random_erase(x, preset("digits", erase_p=1.0, fill=0.0))
    erased = (out == 0).flatten(1).sum(1)
    assert (erased > 0).all() and (erased < 16 * 16).all()


def test_overrides_are_coerced_and_checked():
    cfg = preset("digits", crop_scale="0.7,1.1", rotate="5")
    assert cfg.crop_scale == (0.7, 1.1) and cfg.rotate == 5.0
    with pytest.raises(ValueError, match="unknown augmentation"):
        preset("digits", flips=1)


def test_normalize_matches_the_manifest_maths():
    x = _images()
    out = Normalize((0.25,), (0.5,))(x)
    assert torch.equal(out, (x - 0.25) / 0.5)
