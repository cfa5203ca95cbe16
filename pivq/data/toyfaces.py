"""toyfaces: a procedural, deterministic dataset of aligned cartoon faces with known discrete attributes.

It lets the whole pipeline, the attribute probe included, run and mean something without downloads.
Every factor in FACTORS is drawn independently with fixed probabilities and is visible in the image.
Faces share one layout (eyes, nose and mouth at fixed places) up to a jitter of 3% of the frame, a
small scale change and a lighting gradient, so no two images are equal.

Image i depends only on (seed, i): its random numbers come from ``np.random.default_rng([seed, i])``
and rendering is elementwise per image, so chunked or parallel generation gives identical bytes.
Shapes are drawn as hard masks on a grid at least twice as fine as the output (64 pixels across at
least) and box-averaged down (anti-aliasing). Coordinates are in [-1, 1], y pointing down, the face
centred at the origin.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pivq.data.ffhq_attributes import BINARY_ATTRIBUTES, derive_binary
from pivq.data.images import check_splits
from pivq.data.prepared import write_prepared, write_preview

# Discrete factors: value -> probability, drawn independently per image.
FACTORS: dict[str, dict[str, float]] = {
    "gender": {"female": 0.5, "male": 0.5},  # male: wider face, square jaw, thicker brows
    "age_group": {"young": 0.45, "middle": 0.35, "senior": 0.2},  # lines at the mouth; senior: forehead, pale
    "skin_tone": {"light": 0.25, "medium": 0.25, "tan": 0.25, "dark": 0.25},
    "hair_color": {"black": 0.3, "brown": 0.3, "blond": 0.2, "gray": 0.1, "red": 0.1},  # also brows, beard
    "hair_style": {"short": 0.45, "long": 0.4, "bald": 0.15},
    "eye_color": {"blue": 0.3, "green": 0.2, "brown": 0.5},
    "glasses_type": {"none": 0.6, "reading": 0.25, "sunglasses": 0.15},
    "smile": {"no": 0.5, "yes": 0.5},  # open D-shaped mouth with teeth vs closed lips
    "beard": {"no": 0.75, "yes": 0.25},
    "moustache": {"no": 0.75, "yes": 0.25},
    "eye_makeup": {"no": 0.7, "yes": 0.3},  # purple eyelids
    "lip_makeup": {"no": 0.7, "yes": 0.3},  # red lips
    "hat": {"no": 0.8, "yes": 0.2},  # navy cap over the crown; hair (or its absence) shows at the sides
    "background": {"blue": 0.25, "green": 0.25, "yellow": 0.25, "pink": 0.25},
    "pose": {"frontal": 0.8, "left": 0.1, "right": 0.1},  # |yaw| < 8 vs 20..30 degrees: features shift
}
# Continuous nuisance parameters, each from one uniform number in [0, 1).
NUISANCE = ("dx", "dy", "scale", "width", "brightness", "light_x", "light_y", "yaw",
            "age_years", "score", "hair_conf")
N_UNIFORMS = len(FACTORS) + len(NUISANCE) + len(FACTORS["hair_color"])  # + one confidence per hair colour

TOY_ONE_HOT = {"skin_tone": "skin", "eye_color": "eye", "background": "bg"}  # factor -> column prefix
JITTER = 0.06  # max shift in coordinate units (3% of the 2-unit frame)
AGE_YEARS = {"young": (18, 30), "middle": (30, 50), "senior": (50, 80)}  # matches ffhq_attributes bins
PIXELS_PER_CHUNK = 1 << 21  # supersampled pixels rendered at once: bounds memory at any resolution

# Colours (RGB in [0, 1]), in FACTORS value order.
SKIN = np.array([[0.98, 0.86, 0.76], [0.90, 0.72, 0.56], [0.76, 0.55, 0.38], [0.50, 0.34, 0.25]], np.float32)
HAIR = np.array([[0.10, 0.08, 0.07], [0.36, 0.20, 0.07], [0.92, 0.80, 0.45], [0.70, 0.70, 0.72],
                 [0.75, 0.27, 0.10]], np.float32)
IRIS = np.array([[0.20, 0.45, 0.90], [0.20, 0.65, 0.25], [0.40, 0.22, 0.08]], np.float32)
BACKGROUND = np.array([[0.55, 0.70, 0.92], [0.60, 0.84, 0.60], [0.96, 0.88, 0.52], [0.94, 0.68, 0.80]],
                      np.float32)
SHIRT = np.array([0.30, 0.32, 0.38], np.float32)
HAT = np.array([0.12, 0.16, 0.42], np.float32)
EYELID = np.array([0.48, 0.15, 0.80], np.float32)
LIPSTICK = np.array([0.85, 0.05, 0.15], np.float32)
WHITE = np.array([0.97, 0.97, 0.95], np.float32)
DARK = np.array([0.05, 0.04, 0.05], np.float32)
SUNGLASS = np.array([0.10, 0.10, 0.14], np.float32)
MOUTH = np.array([0.35, 0.05, 0.08], np.float32)

EYE_X, EYE_Y = 0.19, -0.05  # eye centres at (+-EYE_X, EYE_Y) before yaw shift
MOUTH_Y = 0.27


def sample_factors(n: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Factor codes (int index into FACTORS[name]) and nuisance uniforms for images start..start+n-1."""
    u = np.array([np.random.default_rng([seed, i]).random(N_UNIFORMS) for i in range(start, start + n)])
    u = u.reshape(n, N_UNIFORMS).astype(np.float32)  # reshape: n == 0 gives (0,) otherwise
    params = {}
    for k, (name, probs) in enumerate(FACTORS.items()):
        cdf = np.cumsum(list(probs.values()))
        params[name] = np.minimum(np.searchsorted(cdf, u[:, k], side="right"), len(probs) - 1)
    for k, name in enumerate(NUISANCE, start=len(FACTORS)):
        params[name] = u[:, k]
    params["hair_confidences"] = u[:, len(FACTORS) + len(NUISANCE):]
    return params


def _value(params: dict[str, np.ndarray], factor: str) -> np.ndarray:
    """Codes of one factor as their string values."""
    return np.array(list(FACTORS[factor]))[params[factor]]


# ---------------------------------------------------------------------------------------------- render


class _Canvas:
    """Layers painted as palette indices (one byte per pixel); colours are looked up once at the end.

    Painting a float RGB image layer by layer is 12 bytes of traffic per pixel and layer; this is 1.
    """

    def __init__(self, b: int, size: int, background: np.ndarray):
        self.labels = np.zeros((b, size, size), np.uint8)
        self.palette = [background]

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> None:
        """Cover ``mask`` (broadcast to (B, S, S)) with ``colour``: (3,) or one per image (B, 3)."""
        self.palette.append(np.broadcast_to(np.asarray(colour, np.float32), (len(self.labels), 3)))
        np.copyto(self.labels, len(self.palette) - 1, where=mask)

    def rgb(self) -> np.ndarray:
        palette = np.stack(self.palette, axis=1)  # (B, layers, 3)
        return palette[np.arange(len(palette))[:, None, None], self.labels]


def _ellipse(x: np.ndarray, y: np.ndarray, cx: Any, cy: Any, rx: Any, ry: Any) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def _column(a: np.ndarray) -> np.ndarray:
    """Per-image values (B,) shaped to broadcast against (B, S, S) grids."""
    return a[:, None, None]


def _render_chunk(p: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    """Render one batch of images; every operation is per pixel and per image (no cross-image reduction)."""
    ss = _supersample(resolution)
    size = resolution * ss
    b = len(p["gender"])
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    scale = _column(0.97 + 0.06 * p["scale"])
    x = (grid[None, None, :] - _column(JITTER * (2 * p["dx"] - 1))) / scale
    y = (grid[None, :, None] - _column(JITTER * (2 * p["dy"] - 1))) / scale
    male = _column(p["gender"] == 1)
    # Yaw shifts the inner features sideways (a cartoon's head turn); the outline stays put.
    yaw = _yaw_degrees(p)
    fx = x - _column(np.float32(0.45 / 90) * yaw)

    skin = SKIN[p["skin_tone"]]
    senior = p["age_group"] == 2
    skin[senior] = 0.75 * skin[senior] + 0.25 * skin[senior].mean(axis=1, keepdims=True) + 0.06  # paler
    hair = HAIR[p["hair_color"]]
    facial_hair = 0.8 * hair  # a shade darker than the hair so a blond beard shows on light skin
    style = p["hair_style"]

    canvas = _Canvas(b, size, BACKGROUND[p["background"]])
    paint = canvas.paint

    # Head outline: an ellipse, its lower half a superellipse (exponent 3: square male jaw).
    rx = _column(np.where(p["gender"] == 1, 0.52, 0.45) + 0.04 * (p["width"] - 0.5))
    ry = 0.62
    ax, ay = np.abs(x / rx), np.abs(y / ry)  # integer powers only: exact and identical in any batch
    head = np.where(male & (y > 0), ax**3 + ay**3, ax**2 + ay**2) <= 1

    long_hair = _column(style == 1) & _ellipse(x, y, 0, 0.05, rx + 0.16, 0.82) & (y < 0.68)
    paint(long_hair, hair)
    paint((np.abs(x) < 0.19) & (y > 0.3), 0.85 * skin)  # neck
    paint(_ellipse(x, y, 0, 1.3, 0.9, 0.6), SHIRT)
    paint(_ellipse(np.abs(x), y, rx, 0.02, 0.08, 0.12), 0.92 * skin)  # ears
    paint(head, skin)

    # Hair on top (short and long alike): inside a slightly larger head, above a curved hairline.
    hairline = -0.42 + 0.45 * (x / rx) ** 2
    has_hair = _column(style != 2)
    paint(has_hair & _ellipse(x, y, 0, -0.03, rx + 0.04, ry + 0.04) & (y < hairline), hair)

    # Age lines from middle age (mouth folds, one forehead line), deeper and more for seniors.
    age = _column(p["age_group"])
    fold = (np.abs(np.abs(fx) - (0.17 + 0.12 * (y - 0.08))) < 0.03) & (y > 0.08) & (y < 0.32)
    line1 = (np.abs(y + 0.25) < 0.02) & (np.abs(fx) < 0.22) & (y > hairline)
    line2 = (np.abs(y + 0.32) < 0.02) & (np.abs(fx) < 0.2) & (y > hairline)
    paint((fold | line1) & (age == 1), 0.68 * skin)
    paint((fold | line1 | line2) & (age == 2), 0.55 * skin)

    # Eyes: purple lids (make-up), white, iris, pupil; brows in the hair colour.
    ex = np.abs(fx)  # both eyes at once through the mirror image
    paint(_column(p["eye_makeup"] == 1) & _ellipse(ex, y, EYE_X, EYE_Y - 0.04, 0.14, 0.09), EYELID)
    sclera = _ellipse(ex, y, EYE_X, EYE_Y, 0.1, 0.06)
    paint(sclera, WHITE)
    paint(sclera & _ellipse(ex, y, EYE_X, EYE_Y, 0.055, 0.055), IRIS[p["eye_color"]])
    paint(_ellipse(ex, y, EYE_X, EYE_Y, 0.022, 0.022), DARK)
    brow_y = EYE_Y - 0.13 + 0.3 * (ex - EYE_X) ** 2
    brow_half = np.where(male, 0.03, 0.018)
    paint((np.abs(y - brow_y) < brow_half) & (np.abs(ex - EYE_X) < 0.11), 0.85 * hair)
    paint(_ellipse(ex, y, 0.035, 0.13, 0.025, 0.018), 0.7 * skin)  # nostrils

    # Facial hair, then the mouth over it.
    paint(_column(p["beard"] == 1) & head & (y > 0.12), facial_hair)
    paint(_column(p["moustache"] == 1) & _ellipse(fx, y, 0, MOUTH_Y - 0.065, 0.15, 0.045), facial_hair)
    lip_colour = np.where((p["lip_makeup"] == 1)[:, None], LIPSTICK, skin * np.float32([0.85, 0.55, 0.55]))
    smile = _column(p["smile"] == 1)
    closed = ~smile & _ellipse(fx, y, 0, MOUTH_Y, 0.15, 0.035)
    d_outer = smile & _ellipse(fx, y, 0, MOUTH_Y - 0.02, 0.18, 0.13) & (y > MOUTH_Y - 0.025)
    d_inner = smile & _ellipse(fx, y, 0, MOUTH_Y - 0.02, 0.14, 0.095) & (y > MOUTH_Y - 0.005)
    paint(closed | d_outer, lip_colour)
    paint(d_inner, MOUTH)
    paint(d_inner & (y < MOUTH_Y + 0.025), WHITE)  # upper teeth

    # Glasses: rims and a bridge; sunglasses also have opaque dark lenses (hiding eye colour and lids).
    glasses = _column(p["glasses_type"])
    lens_d = np.sqrt((ex - EYE_X) ** 2 + (y - EYE_Y) ** 2)
    paint((glasses == 2) & (lens_d < 0.13), SUNGLASS)
    frame = (np.abs(lens_d - 0.13) < 0.02) | ((np.abs(y - EYE_Y + 0.02) < 0.016) & (ex < EYE_X - 0.12))
    paint((glasses > 0) & frame, DARK)

    # Hat: a cap over the crown with a brim; hair or bare skin still shows at the temples.
    crown = _ellipse(x, y, 0, -0.05, rx + 0.07, ry + 0.1) & (y < -0.42)
    brim = (np.abs(y + 0.42) < 0.045) & (np.abs(x) < rx + 0.14)
    paint(_column(p["hat"] == 1) & (crown | brim), HAT)

    # Lighting: overall brightness and a soft linear gradient (no trig: keeps results batch-independent).
    gradient = 1 + _column(0.16 * p["light_x"] - 0.08) * x + _column(0.16 * p["light_y"] - 0.08) * y
    img = canvas.rgb()
    img *= (_column(0.9 + 0.2 * p["brightness"]) * gradient)[..., None]

    # Box filter in a fixed order of additions, so the result cannot depend on the batch size.
    out = sum(img[:, i::ss, j::ss] for i in range(ss) for j in range(ss)) / (ss * ss)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _yaw_degrees(p: dict[str, np.ndarray]) -> np.ndarray:
    """Frontal: uniform in [-8, 8); left: [-30, -20); right: [20, 30). Negative yaw shifts features left."""
    turned = 20 + 10 * p["yaw"]
    return np.select([p["pose"] == 0, p["pose"] == 1], [16 * p["yaw"] - 8, -turned], turned).astype(np.float32)


def _supersample(resolution: int) -> int:
    """At least 2x, and at least 64 supersampled pixels across so that small faces stay crisp."""
    return max(2, math.ceil(64 / resolution))


def _render(p: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    n = len(p["gender"])
    per_chunk = max(1, PIXELS_PER_CHUNK // (resolution * _supersample(resolution)) ** 2)
    images = np.empty((n, resolution, resolution, 3), np.uint8)
    for a in range(0, n, per_chunk):
        images[a:a + per_chunk] = _render_chunk(_slice(p, a, a + per_chunk), resolution)
    return images


def _slice(p: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {k: v[a:b] for k, v in p.items()}


# ------------------------------------------------------------------------------------------ annotations


def _face_attributes(p: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per image, a ``faceAttributes`` dict in the FFHQ-features schema, so derive_binary serves both sets.

    Scores of true attributes lie in [0.6, 1), of false ones in [0, 0.3): thresholds at 0.5 recover them.
    One uniform per image sets all scores: they are nuisance, only their side of 0.5 carries meaning.
    """
    def score(yes: bool, u: float) -> float:
        return round(0.6 + 0.4 * u if yes else 0.3 * u, 3)

    yaw = _yaw_degrees(p)
    glasses = np.array(["NoGlasses", "ReadingGlasses", "Sunglasses"])[p["glasses_type"]]
    age_groups = _value(p, "age_group")
    hair_names = list(FACTORS["hair_color"])
    faces = []
    for i in range(len(p["gender"])):
        u = float(p["score"][i])
        low, high = AGE_YEARS[age_groups[i]]
        colours = [{"color": c, "confidence": round(0.6 * float(p["hair_confidences"][i, k]), 2)}
                   for k, c in enumerate(hair_names)]
        colours[p["hair_color"][i]]["confidence"] = round(0.9 + 0.1 * float(p["hair_conf"][i]), 2)
        accessories = [{"type": "headwear", "confidence": score(True, u)}] if p["hat"][i] else []
        if p["glasses_type"][i]:
            accessories.append({"type": "glasses", "confidence": score(True, u)})
        faces.append({
            "gender": "male" if p["gender"][i] else "female",
            "age": float(int(low + (high - low) * float(p["age_years"][i]))),
            "smile": score(bool(p["smile"][i]), u),
            "headPose": {"pitch": 0.0, "roll": 0.0, "yaw": round(float(yaw[i]), 1)},
            "facialHair": {"moustache": score(bool(p["moustache"][i]), u), "beard": score(bool(p["beard"][i]), u),
                           "sideburns": 0.0},
            "glasses": str(glasses[i]),
            "makeup": {"eyeMakeup": bool(p["eye_makeup"][i]), "lipMakeup": bool(p["lip_makeup"][i])},
            "accessories": accessories,
            "hair": {"bald": score(p["hair_style"][i] == 2, u), "invisible": False,
                     "hairColor": sorted(colours, key=lambda c: -c["confidence"])},
        })
    return faces


def _categorical(p: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({name: _value(p, name) for name in FACTORS})


def attribute_table(
    p: dict[str, np.ndarray], faces: list[dict[str, Any]]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The prepared attribute table and its (binary, categorical) column names.

    Binary: the FFHQ rules, then toy-only one-hot columns for factors FFHQ has no rule for.
    Categorical: the raw value of every factor with more than two values (two-valued ones are binary).
    """
    table = pd.DataFrame([derive_binary(f) for f in faces], columns=BINARY_ATTRIBUTES)
    table["hat"] = (p["hat"] == 1).astype(np.int8)
    table["hair_short"] = (p["hair_style"] == 0).astype(np.int8)  # bald is already an FFHQ rule
    table["hair_long"] = (p["hair_style"] == 1).astype(np.int8)
    for factor, prefix in TOY_ONE_HOT.items():
        for code, value in enumerate(FACTORS[factor]):
            table[f"{prefix}_{value}"] = (p[factor] == code).astype(np.int8)
    binary = list(table.columns)
    categorical = [name for name, values in FACTORS.items() if len(values) > 2]
    for name in categorical:
        table[name] = _value(p, name)
    return table, binary, categorical


# ---------------------------------------------------------------------------------------------- public


def render_toyfaces(
    n: int, resolution: int, seed: int, start: int = 0
) -> tuple[np.ndarray, pd.DataFrame, list[dict[str, Any]]]:
    """Images start..start+n-1 of the toyfaces set for ``seed``.

    Returns uint8 images (n, resolution, resolution, 3), a DataFrame with every factor's value (strings,
    one column per FACTORS key) and one FFHQ-features ``faceAttributes`` dict per image.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    p = sample_factors(n, seed, start)
    return _render(p, resolution), _categorical(p), _face_attributes(p)


def prepare_toyfaces(
    out_dir: str | os.PathLike, resolution: int, n_train: int, n_test: int, seed: int, name: str = "toyfaces"
) -> Path:
    """Render a toyfaces set into a prepared-dataset folder (plus preview.png); return its manifest path.

    The first n_train images are the train split, the rest test. Images are streamed in chunks.
    """
    count = n_train + n_test
    split = ["train"] * n_train + ["test"] * n_test
    check_splits(split, "toyfaces: the first n_train images -> train, the n_test after them -> test",
                 f"n_train={n_train}, n_test={n_test}")
    p = sample_factors(count, seed)  # cheap: the tables exist before a single image is drawn
    table, binary, categorical = attribute_table(p, _face_attributes(p))
    write_preview(Path(out_dir) / "preview.png", _render(_slice(p, 0, 64), resolution))

    def chunks(size: int = 1000) -> Iterator[np.ndarray]:
        with tqdm(total=count, desc=f"{name} {resolution}px", unit="img", file=sys.stderr) as bar:
            for a in range(0, count, size):
                yield _render(_slice(p, a, a + size), resolution)
                bar.update(min(size, count - a))

    return write_prepared(
        out_dir, name, chunks(), count=count, resolution=resolution, attributes=table,
        split=split, binary_attributes=binary, categorical_attributes=categorical,
        source={"generator": "pivq.data.toyfaces.render_toyfaces", "seed": seed},
        params={"resolution": resolution, "n_train": n_train, "n_test": n_test, "seed": seed, "factors": FACTORS},
    )
