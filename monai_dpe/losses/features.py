"""Feature networks for the regularised feature loss: VGG19, random VGG features, MONAI's perceptual nets.

Nothing here downloads: pretrained weights come from a local file or the torch hub cache,
and a missing file fails at once with a message that says how to provide one.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["VGG19Features", "FeatureDistance", "build_feature_distance", "VGG19_URL_FILE", "MONAI_PERCEPTUAL_TYPES"]

# torchvision's file name for ImageNet VGG19 weights, as found in the torch hub cache
VGG19_URL_FILE = "vgg19-dcbb9e9d.pth"
MONAI_PERCEPTUAL_TYPES = (
    "alex",
    "vgg",
    "squeeze",
    "radimagenet_resnet50",
    "medicalnet_resnet10_23datasets",
    "medicalnet_resnet50_23datasets",
    "resnet50",
)
# (out_channels per conv) per block; "M" is a 2x2 max pool, as torchvision's VGG19 "E" layout
_VGG19_LAYOUT: Sequence = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_MIN_SIDE = 2 ** _VGG19_LAYOUT.count("M")  # conv5_4 sees a 1-pixel map after the four pools
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG19's convolutional trunk up to conv5_4 (no final ReLU), frozen, with ImageNet normalisation.

    Layer indices match torchvision's ``vgg19().features``, so its state dict (keys
    ``features.N.weight``) loads directly. Inputs are RGB or grey in [0, 1].

    Args:
        weights_path: a torchvision VGG19 state dict file; ``None`` keeps the initialisation.
        seed: seed of the random initialisation (used when there is no weights file).
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        prev = 3
        for item in _VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                conv = nn.Conv2d(prev, int(item), 3, padding=1)
                # variance-preserving init, so random features stay informative down to conv5_4
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers += [conv, nn.ReLU(inplace=True)]
                prev = int(item)
        torch.random.set_rng_state(generator_state)
        self.features = nn.Sequential(*layers[:-1])  # stop at conv5_4
        if weights_path is not None:
            self.load_weights(weights_path)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a torchvision VGG19 state dict (classifier keys are ignored)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a VGG19 state dict (it holds a {type(state).__name__}).")
        trunk = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        own = self.features.state_dict()
        missing = [k for k in own if k not in trunk]
        if missing:
            raise ValueError(f"{path}: not a VGG19 state dict (missing {missing[:3]}...).")
        self.features.load_state_dict({k: trunk[k] for k in own})

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # frozen feature extractor: always in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"VGG19 features take grey or RGB images, got {x.shape[1]} channels (drop an alpha channel first).")
        if min(x.shape[2:]) < _MIN_SIDE:
            raise ValueError(f"VGG19 features up to conv5_4 pool four times and need at least {_MIN_SIDE} px a side, "
                             f"got {tuple(x.shape[2:])}.")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        return self.features((x - self.mean) / self.std)


class FeatureDistance(nn.Module):
    """Mean L1 distance between a feature extractor's outputs (a tensor or a list of tensors)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.dim() == 5:  # a 2D extractor sees every depth slice as a batch item
            pred, target = _slices(pred), _slices(target)
        fp, ft = self.extractor(pred), self.extractor(target)
        if isinstance(fp, torch.Tensor):
            return (fp - ft.detach()).abs().mean()
        return torch.stack([(a - b.detach()).abs().mean() for a, b in zip(fp, ft)]).mean()


def _slices(volume: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, D) -> (B*D, C, H, W)."""
    b, c, h, w, d = volume.shape
    return volume.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)


def cached_vgg19_path() -> str:
    """Where torchvision would cache ImageNet VGG19 weights (under the torch hub directory)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", VGG19_URL_FILE)


def build_feature_distance(
    network: str | nn.Module = "vgg19",
    weights_path: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    seed: int = 0,
) -> nn.Module:
    """Build the feature distance used by :class:`RegularizedFeatureLoss`.

    Args:
        network: ``"vgg19"`` (pretrained ImageNet VGG19 up to conv5_4, as the paper),
            ``"vgg19_random"`` (the same layers, random frozen weights: an offline fallback),
            one of MONAI ``PerceptualLoss``'s network types (``"alex"``, ``"radimagenet_resnet50"``, ...),
            or an ``nn.Module`` that maps an image batch to features.
        weights_path: a local weights file (VGG19: a torchvision state dict; ``"resnet50"``: MONAI's
            ``pretrained_path``).
        spatial_dims: 2 or 3 (3D inputs go through 2D extractors slice by slice).
        seed: seed of random feature weights.
    """
    if isinstance(network, nn.Module):
        return FeatureDistance(network)
    if network == "vgg19":
        path = weights_path or cached_vgg19_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"pretrained VGG19 weights not found at {path} and nothing is downloaded here: pass "
                "weights_path=<a torchvision vgg19 state dict .pth>, or use network='vgg19_random' or another module."
            )
        return FeatureDistance(VGG19Features(path))
    if network == "vgg19_random":
        return FeatureDistance(VGG19Features(None, seed=seed))
    if network in MONAI_PERCEPTUAL_TYPES:
        return _monai_perceptual(network, weights_path, spatial_dims)
    raise ValueError(f"unknown feature network {network!r}; use 'vgg19', 'vgg19_random', {MONAI_PERCEPTUAL_TYPES} or a module.")


def _monai_perceptual(network: str, weights_path, spatial_dims: int) -> nn.Module:
    """MONAI's PerceptualLoss, after checking that its weights can be had without a download."""
    from monai.losses import PerceptualLoss

    hint = "pass weights_path=<local file> (resnet50), pre-populate the torch hub cache, or use network='vgg19_random'"
    if network in ("alex", "vgg", "squeeze"):
        if importlib.util.find_spec("lpips") is None:
            raise FileNotFoundError(f"feature network {network!r} needs the 'lpips' package and its cached weights; {hint}.")
    elif network == "resnet50":
        if weights_path is None or not os.path.isfile(weights_path):
            raise FileNotFoundError(f"feature network 'resnet50' needs a local weights file, got {weights_path!r}; {hint}.")
        return PerceptualLoss(spatial_dims, network, pretrained_path=str(weights_path))
    else:
        repo_dir = os.path.join(torch.hub.get_dir(), "Project-MONAI_perceptual-models_main")
        if not os.path.isdir(repo_dir):
            raise FileNotFoundError(f"feature network {network!r} is not in the torch hub cache ({repo_dir}); {hint}.")
    is_fake_3d = not network.startswith("medicalnet_")
    return PerceptualLoss(spatial_dims, network, is_fake_3d=is_fake_3d)
