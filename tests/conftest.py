"""Shared tiny fixtures for the pivq tests (every model here runs in milliseconds on a 2-core CPU).

Test modules never import from ``tests`` (the torch-fidelity wheel ships a top-level ``tests`` package):
everything shared lives here as a fixture (the tiny architecture: tiny_model.py, on pytest's pythonpath).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton's CPU interpreter, so that the device solver's kernel runs on CPU tensors in tests (only
# where a test opts in: tests/test_device_solver.py); with one, the kernel runs there. Triton reads this when it
# is first imported (torch does not import it).
if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from tiny_model import TINY_MODEL

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"

# A 60-step schedule: T_q = 20, re-initialisation at 24 (W = 4, two inits), logs every 10, checkpoints every 15.
# lr and the EMA rate are raised so that 60 steps visibly learn and the EMA weights follow the raw ones.
TINY_SCHEDULE = {
    "steps": 60,
    "batch_size": 8,
    "lr_per_sample": 2.5e-4,
    "adam_betas": [0.9, 0.999],
    "ema_beta": 0.8,
    "ema_every": 1,
    "vq_loss": "unleashing",
    "vq_beta": 0.25,
    "quantize_start": 20,
    "init_window": 4,
    "init_repeats": 2,
    "kmeans_iters": 3,
    "log_every": 10,
    "image_every": 30,
    "checkpoint_every": 15,
    "seed": 0,
    "perceptual_weight": 0.0,
    "adversarial_start": None,
    "disc_weight": 1.0,
    "adaptive_weight_limit": 1.0,
    "diffaug": ["color", "translation"],
    "disc_layers": 3,
    "disc_ndf": 64,
    "disc_init": "pytorch",
    "data_order": "epochs",
    "precision": "fp32",
    "compile": False,
}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """pivq.train.train sets torch's global thread count; give the next test the count it had before."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models gain nothing from more; 2-core machines stay responsive)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def params():
    """params.yaml as loaded and validated by pivq.config, shared: mutate only `params_copy`."""
    from pivq.config import load_params

    loaded = load_params(PARAMS)
    return loaded


@pytest.fixture
def params_copy(params):
    return copy.deepcopy(params)


@pytest.fixture
def tiny_model_dict():
    return dict(TINY_MODEL, ch_mult=list(TINY_MODEL["ch_mult"]), attn_resolutions=list(TINY_MODEL["attn_resolutions"]))


@pytest.fixture
def tiny_cfg():
    from pivq.model import ModelConfig

    return ModelConfig.from_dict(TINY_MODEL, quantizer="matching")


@pytest.fixture
def make_model():
    """make_model(seed=0, quantizer="matching", init_codebook=True, **overrides) -> an eval-mode PIVQ whose
    codebook is set (to spread-out random vectors) unless ``init_codebook`` is False."""
    from pivq.model import PIVQ, ModelConfig

    def make(seed: int = 0, quantizer: str = "matching", init_codebook: bool = True, **overrides) -> PIVQ:
        cfg = ModelConfig.from_dict({"vq_loss": "unleashing", **TINY_MODEL, **overrides}, quantizer=quantizer)
        torch.manual_seed(seed)
        model = PIVQ(cfg).eval()
        if init_codebook:
            g = torch.Generator().manual_seed(seed + 1)
            model.quantizer.set_codebook(torch.randn(cfg.codebook_size, cfg.width, generator=g))
        return model

    return make


@pytest.fixture(scope="session")
def make_experiment(params):
    """make_experiment(name="toy_matching", model={...}, schedule={...}) -> a resolved experiment dict with the
    tiny model and the tiny schedule (entries overridable)."""
    from pivq.config import resolve_experiment

    def make(name: str = "toy_matching", model: dict | None = None, schedule: dict | None = None) -> dict:
        exp = copy.deepcopy(resolve_experiment(params, name))
        exp["model"] = {**copy.deepcopy(TINY_MODEL), **(model or {})}
        exp["schedule"] = {**copy.deepcopy(TINY_SCHEDULE), **(schedule or {})}
        exp["dataset"] = {**exp["dataset"], "resolution": 16, "n_train": 200, "n_test": 50}
        return exp

    return make


@pytest.fixture(scope="session")
def toyfaces16(tmp_path_factory) -> Path:
    """A prepared toyfaces set at 16px: 200 train and 50 test images, built once per session."""
    from pivq.data import prepare_toyfaces

    out = tmp_path_factory.mktemp("toyfaces16")
    prepare_toyfaces(out, resolution=16, n_train=200, n_test=50, seed=0)
    return out


@pytest.fixture(scope="session")
def toy_images(toyfaces16):
    """(train uint8 images, test uint8 images) of the tiny toyfaces set, in memory."""
    import numpy as np

    from pivq.data import PreparedDataset

    data = PreparedDataset(toyfaces16)
    images = np.asarray(data.images)
    return images[data.indices("train")], images[data.indices("test")]
