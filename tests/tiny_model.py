"""The tiny architecture shared by conftest.py's fixtures and workflow_support.py's shrunken params (importable
because pyproject.toml puts tests/ on pytest's pythonpath; not a test module).

16px -> 8x8 token grid, d = 16, L = 8 codes, K = 32 entries: every model runs in milliseconds on a 2-core CPU.
"""

TINY_MODEL = {
    "resolution": 16,
    "nf": 8,
    "ch_mult": [1, 2],
    "res_blocks": 1,
    "attn_resolutions": [8],
    "norm_groups": 4,
    "width": 16,
    "heads": 2,
    "layers": 1,
    "ffn": 32,
    "codes": 8,
    "codebook_size": 32,
    "pixel_range": "unit",
    "conv_tail": "norm-conv",
}
