"""The loss terms of the training recipe beyond L1 + VQ (Unleashing Transformers / taming-transformers).

* LPIPS (Zhang et al. 2018) with the VGG16 trunk (the ``lpips`` package), on the images as the model sees them:
  in [0, 1] for a pixel_range "unit" model, as Unleashing Transformers calls ``lpips.LPIPS(net="vgg")`` on its
  [0, 1] images (models/vqgan.py line 438), or in [-1, 1] (LPIPS's documented range) for "symmetric".
* Hinge GAN losses for a PatchGAN discriminator (pivq.model.discriminator).
* The adaptive weight of the generator's adversarial loss: ||grad rec_loss|| / (||grad g_loss|| + 1e-4) at the
  decoder's last layer weights, clamped to [0, limit], times ``disc_weight``, detached.

Offline LPIPS: ``lpips.LPIPS(net="vgg")`` would have torchvision take VGG16's ImageNet weights from the torch hub
cache (``<torch hub dir>/checkpoints/vgg16-397923af.pth``; the hub dir is ``$TORCH_HOME/hub``, TORCH_HOME
defaulting to ``~/.cache/torch``), or download them, and unpickle them with ``weights_only=False`` (any code in
the file would run). ``build_lpips`` never lets torchvision see the file: it raises FileNotFoundError naming it
when it is missing (nothing is ever downloaded), checks that its sha256 begins with the published ``397923af``
(pivq.weights.WeightsFileError otherwise, never unpickled), loads it itself with
``torch.load(weights_only=True)`` and copies the convolutions into ``lpips.LPIPS(net="vgg", pnet_rand=True)``:
the same network, parameter for parameter. The LPIPS linear layers ship inside the lpips wheel.
``random_trunk=True`` (tests and benchmarks only) keeps the randomly initialised trunk and needs no file.
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
VGG16_SHA256_PREFIX = VGG16_FILE.rsplit("-", 1)[1].split(".", 1)[0]  # "397923af", torch hub's convention


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


def _vgg16_remedy(path: Path) -> str:
    return (f"This pipeline downloads nothing: copy torchvision's {VGG16_FILE} (VGG16_Weights.IMAGENET1K_V1, from "
            f"{VGG16_URL}) into the folder {path.parent}/ (the torch hub cache: $TORCH_HOME/hub/checkpoints, "
            "TORCH_HOME defaulting to ~/.cache/torch), or set perceptual_weight: 0 in the schedule.")


def check_lpips_weights() -> Path:
    """The VGG16 trunk weights file, verified: FileNotFoundError naming it when missing (nothing is downloaded),
    pivq.weights.WeightsFileError when its sha256 does not begin with ``397923af`` (hashed once per
    process: about 0.55 s for the 528 MiB file)."""
    from pivq.weights import verify_weights_file

    path = vgg16_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS (perceptual_weight > 0) needs torchvision's VGG16 weights at {path}, which is missing. "
            + _vgg16_remedy(path)
        )
    verify_weights_file(path, VGG16_SHA256_PREFIX, "LPIPS's VGG16", _vgg16_remedy(path))
    return path


def build_lpips(random_trunk: bool = False, seed: int = 0) -> nn.Module:
    """lpips.LPIPS(net="vgg") in eval mode with every parameter frozen (a fresh copy on each call).

    The trunk's weights come from the verified VGG16 file (:func:`check_lpips_weights`), loaded here with
    ``weights_only=True`` (module docstring). ``random_trunk``: a randomly initialised VGG16 trunk
    (``pnet_rand=True``), for tests and benchmarks only: its distances are not LPIPS. Built inside a forked RNG
    seeded with ``seed``: the caller's global random numbers are untouched. Building (torchvision constructs
    and initialises the whole VGG16, classifier included) takes seconds, so each process builds each variant
    once (the real one once per file version) and hands out copies.
    """
    if random_trunk:
        return copy.deepcopy(_lpips_prototype(True, seed))
    from pivq.weights import weights_sha256

    path = check_lpips_weights()
    return copy.deepcopy(_lpips_pretrained(str(path), weights_sha256(path)))


def _build(random_trunk: bool, seed: int) -> nn.Module:
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.load inside lpips
        torch.manual_seed(seed)
        net = lpips.LPIPS(net="vgg", pnet_rand=random_trunk, verbose=False)
    return net.eval().requires_grad_(False)


@functools.lru_cache(maxsize=None)
def _lpips_prototype(random_trunk: bool, seed: int) -> nn.Module:
    return _build(random_trunk, seed)


@functools.lru_cache(maxsize=None)
def _lpips_pretrained(path: str, sha256: str) -> nn.Module:
    """LPIPS with the trunk from the VGG16 file ``path`` (of that ``sha256``: the cache key), never unpickled
    by torchvision: its ``features.<i>.*`` tensors go to lpips's slices, which hold torchvision's
    ``features[i]`` under ``slice<k>.<i>`` (the classifier's are not used)."""
    from pivq.weights import WeightsFileError, load_verified_state_dict

    state = load_verified_state_dict(path, VGG16_SHA256_PREFIX, "LPIPS's VGG16", _vgg16_remedy(Path(path)))
    net = _build(True, 0)  # the trunk's random values are all overwritten below
    trunk = net.net
    wanted = {key: "features." + key.split(".", 1)[1] for key in trunk.state_dict()}
    missing = sorted(src for src in wanted.values() if src not in state)
    if missing:
        raise WeightsFileError(f"LPIPS's VGG16 weights file {path} refused: no {', '.join(missing[:4])}"
                               f"{' ...' if len(missing) > 4 else ''} (not a torchvision VGG16 state dict). "
                               + _vgg16_remedy(Path(path)))
    try:
        trunk.load_state_dict({key: state[src] for key, src in wanted.items()}, strict=True)
    except RuntimeError as err:  # a shape that is not VGG16's
        raise WeightsFileError(f"LPIPS's VGG16 weights file {path} refused: {err}. "
                               + _vgg16_remedy(Path(path))) from None
    return net.eval().requires_grad_(False)
