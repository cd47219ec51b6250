"""What the strategies rank, computed over a data module's training pool: embeddings (a checkpoint's
pooled backbone features, or pixels + PCA without one) or a checkpoint's class probabilities."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lit_effdl.data.sources import ImageSource
from lit_effdl.data.views import ImagesOnlyView
from lit_effdl.errors import UserError

PCA_DIMS = 50
PIXEL_SIDE = 32  # pixels are downscaled to at most this side before PCA (memory: N x C x 32 x 32 floats)


def _batches(pool: ImageSource, batch_size: int, num_workers: int) -> Iterator[torch.Tensor]:
    for batch in DataLoader(ImagesOnlyView(pool), batch_size=batch_size, shuffle=False, num_workers=num_workers):
        yield batch["image"]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (as the TypiClust and ProbCover papers use their features)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def whiten(x: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """PCA to ``dims`` (at most the rank) with every component scaled to unit variance, then unit rows.

    Self-supervised features spend most of their variance on directions that are not the class: on
    MNIST with our SimCLR backbone (k-NN 0.977) TypiClust's 10 picks cover 2.7 classes on the raw
    features and 8 whitened to 32 dimensions (docs/selection.md)."""
    from sklearn.decomposition import PCA

    if dims < 1:
        raise UserError(f"whiten_dims={dims} is not valid: use a positive number of dimensions (e.g. 32), or none")
    dims = min(dims, x.shape[1], len(x) - 1)
    return l2_normalise(PCA(dims, whiten=True, random_state=seed).fit_transform(x).astype(np.float32))


def pixel_embeddings(pool: ImageSource, dims: int = PCA_DIMS, seed: int = 0, batch_size: int = 256,
                     num_workers: int = 0) -> np.ndarray:
    """Pixels in [0, 1] (downscaled to at most 32x32), PCA to ``dims`` dimensions (seeded), unit rows."""
    from sklearn.decomposition import PCA

    rows = []
    for images in _batches(pool, batch_size, num_workers):
        x = images.float() / 255.0
        if x.shape[-1] > PIXEL_SIDE:
            x = F.adaptive_avg_pool2d(x, PIXEL_SIDE)
        rows.append(x.flatten(1).numpy())
    pixels = np.concatenate(rows)
    dims = min(dims, *pixels.shape)
    return l2_normalise(PCA(dims, svd_solver="randomized", random_state=seed).fit_transform(pixels).astype(np.float32))


def trained_image_size(payload: dict) -> int | None:
    """The image side a lit-effdl checkpoint was trained on, where it says."""
    import yaml

    meta = payload.get("lit_effdl") or {}
    if meta.get("image_size"):
        return int(meta["image_size"])
    try:
        data = (yaml.safe_load(meta.get("config") or "") or {}).get("data") or {}
    except yaml.YAMLError:
        return None
    size = (data.get("init_args") or {}).get("image_size") if isinstance(data, dict) else None
    return int(size) if isinstance(size, int) else None


def network_outputs(ckpt_path: str, pool: ImageSource, image_size: int, kind: str, batch_size: int = 256,
                    num_workers: int = 0) -> np.ndarray:
    """``kind`` ``embeddings`` (pooled pre-logit backbone features, unit rows) or ``probabilities``
    (softmax) of the checkpoint's evaluated network (EMA when the run had it) on every pool image."""
    from lit_effdl.models.auxiliary import pooled_features
    from lit_effdl.models.inputs import normalise_images
    from lit_effdl.models.loading import read_checkpoint
    from lit_effdl.models.teacher import load_evaluated_network

    payload = read_checkpoint(ckpt_path, setting="ckpt_path")
    trained = trained_image_size(payload) if isinstance(payload, dict) else None
    if trained is not None and trained != image_size:
        raise UserError(f"ckpt_path {ckpt_path} was trained on {trained}x{trained} images but the config's data "
                        f"gives {image_size}x{image_size}: select with the data settings (image_size) it was "
                        "trained on, or a checkpoint trained on these images")
    teacher = load_evaluated_network(ckpt_path, headless_ok=kind == "embeddings")
    net, channels = teacher.net, (payload.get("hyper_parameters") or {}).get("in_chans", 3)
    if channels != pool.channels:
        raise UserError(f"ckpt_path {ckpt_path} takes {channels}-channel images but the data has {pool.channels}")
    if kind == "embeddings" and not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise UserError(f"embeddings need a backbone with forward_features / forward_head (timm-style); "
                        f"{type(net).__name__} has none: use a timm or lit-effdl backbone, or no ckpt_path")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device)
    rows = []
    with torch.inference_mode():
        for images in _batches(pool, batch_size, num_workers):
            x = images.to(device)
            try:
                if kind == "embeddings":
                    x = normalise_images(x, teacher.mean, teacher.std)
                    out = pooled_features(net, x).flatten(1)
                else:
                    out = teacher(x).float().softmax(dim=1)
            except RuntimeError as err:  # a first layer sized for other images (an MLP, a fixed stem)
                raise UserError(f"ckpt_path {ckpt_path} cannot take the data's {image_size}x{image_size} images "
                                f"({str(err).splitlines()[0]}): use the image size it was trained on") from None
            rows.append(out.float().cpu().numpy())
    values = np.concatenate(rows)
    return l2_normalise(values) if kind == "embeddings" else values
