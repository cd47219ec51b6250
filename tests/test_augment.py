"""Property tests of the augmentation ops, RandAugment, CutMix / Mixup and the batched path."""

from __future__ import annotations

import pytest
import torch

from lit_effdl.augment import mix, ops, randaugment
from lit_effdl.augment.batched import build_batched
from lit_effdl.augment.pipelines import build_pipeline, expand_spec, is_random_spec
from lit_effdl.augment.randaugment import OP_TABLE, RA_OPS, RandAugment
from lit_effdl.augment.warp import warp_work
from lit_effdl.errors import UserError
from lit_effdl.losses import classification_loss


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n=4, c=3, size=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


# ---------------------------------------------------------------- colour and geometry, one implementation
def test_brightness_never_leaves_range_and_adds_a_constant():
    for images in (_images(40), _images(40).float() / 255):
        out = build_batched("brightness-d1")(images)
        assert out.dtype == images.dtype
        peak = 255 if images.dtype == torch.uint8 else 1
        assert out.min() >= 0 and out.max() <= peak
        x, y = images.double().flatten(1), out.double().flatten(1)
        inside = (y > 0) & (y < peak)  # unclipped pixels: one shift per image
        for row, shifted, keep in zip(x, y, inside):
            if keep.sum() > 1:
                delta = shifted[keep] - row[keep]
                assert float(delta.max() - delta.min()) <= (1.0 if peak == 255 else 1e-5)
        assert bool(((y == 0) | (y == peak)).any())  # delta up to the whole range: some pixels clip


def test_contrast_factor_one_is_identity_and_zero_is_flat():
    img = _images(2).float()
    assert torch.equal(ops.COLOR_OPS["contrast"](img.clone(), 1.0, 255.0), img)
    flat = ops.COLOR_OPS["contrast"](img.clone(), 0.0, 255.0)
    assert torch.allclose(flat.amax(dim=(1, 2, 3)), flat.amin(dim=(1, 2, 3)))
    identity = build_pipeline("contrast-f0", 16)  # factor U(1, 1)
    assert torch.equal(identity(_images(1)[0]), _images(1)[0])


def _dot(x: int, y: int, size: int = 16) -> torch.Tensor:
    img = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    img[0, 0, y, x] = 255
    return img


def _where(img: torch.Tensor) -> tuple[int, int]:
    ys, xs = torch.nonzero(img[0, 0] == 255, as_tuple=True)
    assert len(xs) == 1
    return int(xs[0]), int(ys[0])


def test_rotation_turns_about_the_centre_counter_clockwise_on_screen():
    m = ops.affine_matrix(16, 16, degrees=torch.tensor([90.0]))
    # centre (7.5, 7.5): (12, 7.5 - 0.5) -> up on screen by 90 degrees counter-clockwise
    assert _where(warp_work(_dot(12, 7), [(m, "fill")], 0)) == (7, 3)
    assert torch.equal(build_pipeline("rotate-d0", 16)(_dot(3, 4)[0]), _dot(3, 4)[0])


def test_shear_moves_a_pixel_by_its_distance_to_the_centre_row():
    m = ops.affine_matrix(16, 16, shear_x=torch.tensor([0.5]))
    assert _where(warp_work(_dot(6, 13), [(m, "fill")], 0)) == (9, 13)  # 6 + 0.5 * (13 - 7.5) = 8.75


def test_crop_is_a_window_of_the_reflect_padded_image():
    img = _images(1)[0]
    padded = torch.nn.functional.pad(img[None].float(), (2, 2, 2, 2), mode="reflect")[0].to(torch.uint8)
    windows = {(dy, dx) for dy in range(5) for dx in range(5)}
    for path in (build_pipeline("crop-pad2", 16), lambda im: build_batched("crop-pad2")(im[None])[0]):
        for _ in range(10):
            out = path(img)
            assert any(torch.equal(out, padded[:, dy:dy + 16, dx:dx + 16]) for dy, dx in windows)


def test_three_point_affine_maps_src_to_dst():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        src = torch.rand(3, 2, generator=g) * 32
        dst = torch.rand(3, 2, generator=g) * 32
        if abs(torch.linalg.det(torch.cat([src, torch.ones(3, 1)], 1))) < 1.0:
            continue
        a = ops.affine_from_points(src, dst)
        mapped = (a.double() @ torch.cat([src, torch.ones(3, 1)], 1).double().T).T
        assert (mapped - dst.double()).abs().max() < 1e-4


def test_three_point_affine_moves_a_pixel_onto_its_target():
    src, dst = [[4, 3], [12, 3], [4, 12]], [[10, 6], [10, 14], [1, 6]]  # a rotation + shift
    m = torch.eye(3)[None].clone()
    m[0, :2] = ops.affine_from_points(src, dst)
    assert _where(warp_work(_dot(4, 3), [(m, "fill")], 0)) == (10, 6)


def test_collinear_points_are_a_clear_error():
    with pytest.raises(UserError, match="collinear"):
        ops.affine_from_points([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 0], [0, 1]])


# ---------------------------------------------------------------- magnitude 0, N ops, bad input
@pytest.mark.parametrize("name", [n for n in RA_OPS if OP_TABLE[n][2] != 0.0])
def test_magnitude_zero_is_identity(name):
    img = _images(3)
    ra = RandAugment(2, 0, ops=(name,))
    for _ in range(4):  # both signs
        assert torch.equal(ra(img[0]), img[0]), name


def test_randaugment_applies_exactly_n_ops(monkeypatch):
    calls = []
    for name, fn in list(ops.COLOR_OPS.items()):  # count colour ops and geometric matrices
        monkeypatch.setitem(ops.COLOR_OPS, name, lambda x, p, peak, n=name, f=fn: calls.append(n) or f(x, p, peak))
    real_terms = randaugment.geom_terms
    monkeypatch.setattr(randaugment, "geom_terms", lambda p, *a: calls.append(*p) or real_terms(p, *a))
    img = _images(1)[0]
    for n in (0, 1, 2, 4):
        ra = RandAugment(n, 9)
        for _ in range(8):
            calls.clear()
            ra(img)
            assert len(calls) == n and all(name in RA_OPS for name in calls)


@pytest.mark.parametrize("spec, fragment", [
    ("rand-n2-mX", "mX"), ("rand-n2-m31", "31"), ("warp", "warp"), ("rand-n2", "rand"),
    ("flip-q3", "q3"), ("cutout-s1.5", "1.5"),
])
def test_bad_specs_name_the_value(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        build_pipeline(spec, 32)
    with pytest.raises(UserError, match=fragment):
        build_batched(spec)


def test_unknown_op_and_bad_magnitude():
    with pytest.raises(UserError, match="blur"):
        RandAugment(2, 9, ops=("rotate", "blur"))
    with pytest.raises(UserError, match="40"):
        RandAugment(2, 40)


def test_presets_and_randomness():
    assert expand_spec("strong_noflip") == ["crop", "rand-n2-m10", "cutout"]
    assert build_pipeline("none", 32) is None and build_batched("none") is None
    assert not is_random_spec("none") and is_random_spec("weak")


# ---------------------------------------------------------------- CutMix / Mixup
def test_cutmix_lambda_is_the_clipped_box_area_and_targets_sum_to_one():
    torch.manual_seed(0)
    h, w = 12, 20
    images = torch.stack([torch.zeros(1, h, w), torch.ones(1, h, w)])
    targets = torch.tensor([0, 1])
    cutmix, at_border = mix.Mix(cutmix_alpha=1.0), 0
    for _ in range(200):
        out, soft = cutmix(images, targets, num_classes=3)
        pasted = float(out[0].sum())  # pixels of image 0 that came from image 1
        assert soft[0, 0] == pytest.approx(1 - pasted / (h * w))
        assert soft[0, 1] == pytest.approx(pasted / (h * w))
        assert torch.allclose(soft.sum(1), torch.ones(2))
        box = torch.nonzero(out[0, 0])
        at_border += bool(len(box)) and bool((box.min(0).values == 0).any() | (box[:, 0].max() == h - 1)
                                             | (box[:, 1].max() == w - 1))
    assert at_border > 0  # boxes at the border were clipped and the label followed the true area


def test_mixup_soft_targets_and_label_smoothing_compose():
    torch.manual_seed(0)
    images, targets = _images(4), torch.tensor([0, 1, 2, 3])
    m = mix.Mix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    for _ in range(10):
        out, soft = m(images, targets, 5)
        assert torch.allclose(soft.sum(1), torch.ones(4))
    logits = torch.randn(4, 5)
    smoothed = soft * 0.9 + 0.1 / 5
    manual = -(smoothed * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(classification_loss(logits, soft, 0.1), manual)
    hard = classification_loss(logits, targets, 0.1)
    assert torch.allclose(hard, classification_loss(logits, mix.one_hot(targets, 5), 0.1))


def test_mixing_a_batch_of_one_is_an_error():
    with pytest.raises(UserError, match="batch of 1"):
        mix.Mix(cutmix_alpha=1.0)(_images(1), torch.tensor([0]), 3)
    with pytest.raises(UserError, match="mix_switch_prob"):
        mix.Mix(cutmix_alpha=1.0, switch_prob=2.0)


# ---------------------------------------------------------------- both paths: seeds and statistics
@pytest.mark.parametrize("spec", ["strong", "rrc+rotate+shear+affine3+brightness+contrast+cutout"])
def test_same_seed_same_output_on_both_paths(spec):
    images = _images(6)
    per_image, batched = build_pipeline(spec, 16), build_batched(spec)

    def run_per_image(seed):
        torch.manual_seed(seed)
        return torch.stack([per_image(im) for im in images])

    def run_batched(seed):
        torch.manual_seed(seed)
        return batched(images)

    for run in (run_per_image, run_batched):
        assert torch.equal(run(3), run(3))
        assert not torch.equal(run(3), run(4))


def _stats(x: torch.Tensor, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-draw statistics: grey level, spread, black (fill) and cutout-grey shares, pixels changed."""
    return {"mean": x.mean((1, 2, 3)), "std": x.std((1, 2, 3)), "zero": (x == 0).float().mean((1, 2, 3)),
            "grey": (x == 128).float().mean((1, 2, 3)), "changed": (x != inputs).float().mean((1, 2, 3))}


def _max_z(a: dict, b: dict) -> float:
    """Largest two-sample z statistic over the statistics (difference of means / its standard error)."""
    return max(float((a[k].mean() - b[k].mean()).abs() / (a[k].var() / len(a[k]) + b[k].var() / len(b[k])).sqrt())
               for k in a)


def test_per_image_and_batched_paths_share_one_distribution():
    """Statistics over 600 draws of fixed inputs agree between the paths (|z| < 3.5 each), while a
    batched pipeline with one more RandAugment op is told apart (the test can fail)."""
    torch.manual_seed(0)
    inputs = _images(4, c=3, size=16, seed=7).repeat(150, 1, 1, 1)
    spec = "flip+crop+rand-n2-m15+cutout"
    per_image = build_pipeline(spec, 16)
    a = _stats(torch.stack([per_image(im) for im in inputs]).float(), inputs.float())
    b = _stats(build_batched(spec)(inputs).float(), inputs.float())
    assert _max_z(a, b) < 3.5
    other = _stats(build_batched("flip+crop+rand-n3-m15+cutout")(inputs).float(), inputs.float())
    assert _max_z(a, other) > 3.5


def test_sync_free_colour_path_equals_the_selective_one():
    """The accelerator branch (every sample computes every op, keeps its own) = the CPU branch."""
    from lit_effdl.augment.batched import _colour_slot
    from lit_effdl.augment.randaugment import RA_OPS, draw_ops

    torch.manual_seed(0)
    x = torch.randint(0, 256, (200, 3, 12, 12)).float()
    idx, mag, sign = draw_ops(200, 1, 20.0, 0.0, len(RA_OPS))
    selective = _colour_slot(x.clone(), idx[:, 0], mag[:, 0], sign[:, 0], 255.0, select=True)
    everyone = _colour_slot(x.clone(), idx[:, 0], mag[:, 0], sign[:, 0], 255.0, select=False)
    torch.testing.assert_close(selective, everyone)
    assert not torch.equal(selective, x)
