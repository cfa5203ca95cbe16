"""Dataset preparation and loading: one prepared format (prepared.py) for every dataset."""

from pivq.data.celeba import prepare_celeba, prepare_celebahq
from pivq.data.ffhq import prepare_ffhq
from pivq.data.ffhq_attributes import BINARY_ATTRIBUTES, RULES, derive_binary, load_face_attributes, rules_markdown
from pivq.data.prepared import ImageRows, PreparedDataset, write_prepared, write_preview
from pivq.data.sources import check_source
from pivq.data.toyfaces import FACTORS, prepare_toyfaces, render_toyfaces

__all__ = [
    "BINARY_ATTRIBUTES",
    "FACTORS",
    "ImageRows",
    "PreparedDataset",
    "RULES",
    "check_source",
    "derive_binary",
    "load_face_attributes",
    "prepare_celeba",
    "prepare_celebahq",
    "prepare_ffhq",
    "prepare_toyfaces",
    "render_toyfaces",
    "rules_markdown",
    "write_prepared",
    "write_preview",
]
