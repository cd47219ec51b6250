"""Property tests of the augmentation ops, RandAugment, CutMix / Mixup and the batched path."""

from __future__ import annotations

import pytest
import torch

from lit_effdl.augment import mix, ops, randaugment
from lit_effdl.augment.batched import BatchedPipeline, build_batched
from lit_effdl.augment.pipelines import build_pipeline, expand_spec, is_random_spec
from lit_effdl.augment.randaugment import OP_TABLE, RA_OPS, RandAugment, apply_op, op_param
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


# ---------------------------------------------------------------- brightness, contrast
def test_brightness_never_leaves_range_and_adds_a_constant():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        img = _images(2, seed=int(torch.randint(0, 1000, (), generator=g)))
        delta = float(torch.empty(()).uniform_(-1.5, 1.5, generator=g))
        out = ops.brightness(img, delta)
        assert out.dtype == torch.uint8
        expected = (img.float() + delta * 255).round().clamp(0, 255)
        assert torch.equal(out.float(), expected)
        fimg = img.float() / 255
        fout = ops.brightness(fimg, delta)
        assert fout.min() >= 0.0 and fout.max() <= 1.0
        unclipped = ((fimg + delta) >= 0) & ((fimg + delta) <= 1)
        assert torch.allclose(fout[unclipped], fimg[unclipped] + delta, atol=1e-6)


def test_contrast_factor_one_is_identity_and_zero_is_flat():
    img = _images(2)
    assert torch.equal(ops.contrast(img, 1.0), img)
    flat = ops.contrast(img.float() / 255, 0.0)
    assert torch.allclose(flat.amax(dim=(1, 2, 3)), flat.amin(dim=(1, 2, 3)))


# ---------------------------------------------------------------- affine from three points
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
    img = torch.zeros(1, 16, 16, dtype=torch.uint8)
    img[0, 3, 4] = 255  # (x=4, y=3)
    src, dst = [[4, 3], [12, 3], [4, 12]], [[10, 6], [10, 14], [1, 6]]  # a rotation + shift
    out = ops.affine_points(img, src, dst)
    ys, xs = torch.nonzero(out[0] == 255, as_tuple=True)
    assert (int(xs[0]), int(ys[0])) == (10, 6)


def test_collinear_points_are_a_clear_error():
    with pytest.raises(UserError, match="collinear"):
        ops.affine_from_points([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 0], [0, 1]])


# ---------------------------------------------------------------- magnitude 0, N ops, bad input
@pytest.mark.parametrize("name", [n for n in RA_OPS if OP_TABLE[n][2] != 0.0])
def test_magnitude_zero_is_identity(name):
    img = _images(3)
    x = img.float()
    for sign in (-1.0, 1.0):
        param = op_param(name, torch.zeros(3), torch.full((3,), sign))
        out = apply_op(name, x.clone(), param, 255.0, 0.0)
        assert torch.equal(out.round().to(torch.uint8), img), name
    # and through the per-image RandAugment restricted to this op
    assert torch.equal(RandAugment(2, 0, ops=(name,))(img[0]), img[0])


def test_randaugment_applies_exactly_n_ops(monkeypatch):
    calls = []
    for name, fn in list(ops.COLOR_OPS.items()):  # count colour ops and geometric matrices
        monkeypatch.setitem(ops.COLOR_OPS, name, lambda x, p, peak, n=name, f=fn: calls.append(n) or f(x, p, peak))
    real_matrix = randaugment.py_matrix
    monkeypatch.setattr(randaugment, "py_matrix", lambda n, *a: calls.append(n) or real_matrix(n, *a))
    img = _images(1)[0]
    for n in (0, 1, 2, 4):
        ra = RandAugment(n, 9)
        for _ in range(8):
            calls.clear()
            ra(img)
            assert len(calls) == n and sorted(ra.last_ops) == sorted(calls)
    batched = BatchedPipeline("rand-n3-m9")
    batched(_images(8))
    assert batched.last_ops.shape == (8, 3)


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
    clipped = 0
    for _ in range(200):
        lam = float(torch.rand(()))
        out, soft, lam_true = mix.cutmix(images, targets, lam, num_classes=3)
        pasted = float(out[0].sum())  # pixels of image 0 that came from image 1
        assert lam_true == pytest.approx(1 - pasted / (h * w))
        assert torch.allclose(soft.sum(1), torch.ones(2))
        assert soft[0, 0] == pytest.approx(lam_true) and soft[0, 1] == pytest.approx(1 - lam_true)
        clipped += abs(lam_true - lam) > 0.05
    assert clipped > 0  # boxes at the border were clipped and lambda followed the true area


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
        mix.cutmix(_images(1), torch.tensor([0]), 0.5, 3)
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
