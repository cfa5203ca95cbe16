"""The loss terms of the training recipe beyond L1 + VQ (Unleashing Transformers / taming-transformers).

* LPIPS (Zhang et al. 2018) with the VGG16 trunk, on images in [-1, 1] (the ``lpips`` package).
* Hinge GAN losses for a PatchGAN discriminator (pivq.model.discriminator).
* The adaptive weight of the generator's adversarial loss: ||grad rec_loss|| / (||grad g_loss|| + 1e-4) at the
  decoder's last layer weights, clamped to [0, limit], times ``disc_weight``, detached.

Offline LPIPS: ``lpips.LPIPS(net="vgg")`` builds torchvision's VGG16 with ImageNet weights, which torchvision
takes from the torch hub cache (``<torch hub dir>/checkpoints/vgg16-397923af.pth``; the hub dir is
``$TORCH_HOME/hub``, TORCH_HOME defaulting to ``~/.cache/torch``) and otherwise downloads. ``build_lpips``
checks that file first and raises FileNotFoundError naming it: nothing is ever downloaded. The LPIPS linear
layers ship inside the lpips wheel. ``random_trunk=True`` (tests and benchmarks only) builds the same network
with a randomly initialised trunk and needs no file.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1, as lpips requests it
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean D(fake)."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, limit: float,
                    disc_weight: float) -> torch.Tensor:
    """clamp(||d rec_loss / d W|| / (||d g_loss / d W|| + 1e-4), 0, limit) * disc_weight, detached.

    ``W`` is the decoder's last layer weight; the graph is kept for the backward pass that follows.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grad) / (torch.norm(g_grad) + 1e-4)
    return (torch.clamp(weight, 0.0, limit) * disc_weight).detach()


def vgg16_weights_path() -> Path:
    """Where torchvision (hence lpips) looks for the VGG16 trunk weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def check_lpips_weights() -> Path:
    """The VGG16 trunk weights file, or FileNotFoundError naming it (nothing is downloaded)."""
    path = vgg16_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS (perceptual_weight > 0) needs torchvision's VGG16 weights at {path}, which is missing. "
            f"This pipeline downloads nothing: copy {VGG16_FILE} (from {VGG16_URL}) into the folder {path.parent}/ "
            "(the torch hub cache: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to ~/.cache/torch), "
            "or set perceptual_weight: 0 in the schedule."
        )
    return path


def build_lpips(random_trunk: bool = False, seed: int = 0) -> nn.Module:
    """lpips.LPIPS(net="vgg") in eval mode with every parameter frozen (a fresh copy on each call).

    ``random_trunk``: a randomly initialised VGG16 trunk (``pnet_rand=True``), for tests and benchmarks only:
    its distances are not LPIPS. Built inside a forked RNG seeded with ``seed``: the caller's global random
    numbers are untouched. Building (torchvision constructs and initialises the whole VGG16, classifier
    included) takes seconds, so each process builds each variant once and hands out copies.
    """
    if not random_trunk:
        check_lpips_weights()
    return copy.deepcopy(_lpips_prototype(random_trunk, seed))


@functools.lru_cache(maxsize=None)
def _lpips_prototype(random_trunk: bool, seed: int) -> nn.Module:
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.load inside lpips
        torch.manual_seed(seed)
        net = lpips.LPIPS(net="vgg", pnet_rand=random_trunk, verbose=False)
    return net.eval().requires_grad_(False)
