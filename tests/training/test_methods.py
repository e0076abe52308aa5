pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import io  # noqa: E402

from training.augment import Normalize, preset  # noqa: E402
from training.backbones import BackboneConfig, build_backbone  # noqa: E402
from training.losses import nt_xent, std_of_l2_normalized  # noqa: E402
from training.methods import METHODS, make_method  # noqa: E402

SHAPE = (1, 16, 16)
OPTIONS = {
    "simclr": {"hidden": 32, "out_dim": 16},
    "byol": {"hidden": 32, "out_dim": 16},
    "dino": {"hidden": 32, "bottleneck": 16, "prototypes": 64, "local_crops": 2},
    "mae": {"decoder_dim": 16, "decoder_depth": 1},
    "vae": {"latent": 8, "decoder_width": 16},
}
# DINO's loss is not meant to fall while its teacher moves (the teacher sharpens as it
# learns); with the teacher and centre held still it is plain distillation and must.
FIXED_TARGET = {"dino": {"momentum": 1.0, "center_momentum": 1.0}}
BACKBONE = {"mae": BackboneConfig(name="vit", patch_size=4, dim=32, depth=1, heads=2)}


def _digits(n=32):
    from training.data import PixelSpec, digits_split, render

    train, _ = digits_split()
    return torch.from_numpy(render(train.images[:n], PixelSpec(1, (16, 16), (0.0,), (1.0,))))


def _method(name, fixed_target=False):
    torch.manual_seed(0)
    backbone = build_backbone(BACKBONE.get(name, BackboneConfig(width=8, depths=(1, 1))), 1, SHAPE[1:])
    augment = preset("light" if name in ("mae", "vae") else "digits")
    options = {**OPTIONS[name], **(FIXED_TARGET.get(name, {}) if fixed_target else {})}
    return make_method(name, backbone, Normalize((0.3,), (0.3,)), augment, options, SHAPE)


def _loss_on_fixed_views(method, images):
    torch.manual_seed(123)  # the same views, and the same masks and noise, each time
    with torch.no_grad():
        return float(method(images, 0.5)[0])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_few_steps_lower_the_loss(name):
    images = _digits()
    method = _method(name, fixed_target=True)
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    before = _loss_on_fixed_views(method.train(), images)
    torch.manual_seed(1)
    for step in range(12):
        loss, logs = method(images, step / 12)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step((step + 1) / 12)
    after = _loss_on_fixed_views(method, images)
    assert after < before, f"{name}: loss {before:.4f} → {after:.4f}"
    assert 0 < float(logs["embedding_std"]) <= 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_round_trips_through_a_checkpoint(name):
    method = _method(name)
    method(_digits(8), 0.0)[0].backward()  # moves BatchNorm statistics and DINO's centre
    method.after_step(0.1)
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    restored = _method(name)
    restored.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    for (k, a), (_, b) in zip(method.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(method.encoder().eval()(x), restored.encoder().eval()(x))


def test_ema_targets_track_the_online_network():
    byol = _method("byol")
    with torch.no_grad():
        for p in byol.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in byol.target["backbone"].parameters()]
    byol.after_step(0.0)  # momentum = 0.99 at the start
    for old, new, online in zip(before, byol.target["backbone"].parameters(), byol.backbone.parameters()):
        assert torch.allclose(new, 0.99 * old + 0.01 * online, atol=1e-6)
    assert not any(p.requires_grad for p in byol.target.parameters())


def test_nt_xent_prefers_matching_pairs_and_std_monitor_sees_collapse():
    z = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    assert nt_xent(z, z, 0.1) < nt_xent(z, z.roll(1, 0), 0.1)
    assert float(std_of_l2_normalized(torch.ones(16, 8))) == 0.0
    assert abs(float(std_of_l2_normalized(torch.randn(4096, 64))) - 64**-0.5) < 0.01


def test_mae_needs_a_vit_and_exports_the_whole_image_encoder():
    with pytest.raises(ValueError, match="vit"):
        make_method(
            "mae",
            build_backbone(BackboneConfig(), 1, (16, 16)),
            Normalize((0.0,), (1.0,)),
            preset("light"),
            {},
            SHAPE,
        )
    mae = _method("mae")
    assert mae.encoder()(torch.randn(3, *SHAPE)).shape == (3, 32)
