"""Binary face attributes from FFHQ-features annotations (Azure Face API output, one JSON file per image).

Each file holds a list of detected faces; we keep the largest (FFHQ is aligned on one face, but a
second, smaller face is sometimes detected in the background). The probe (paper Fig. 5) needs binary
targets, so every attribute below is one rule on that face's ``faceAttributes``. ``RULES`` is the single
source of truth: the CSV columns, their order and the README table all come from it. toyfaces emits
the same schema, so one code path serves both datasets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pivq.io import parse_json, read_json

YOUNG_BELOW = 30  # age_young: age < 30
SENIOR_FROM = 50  # age_senior: age >= 50; age_middle is the range between
HAPPY_SMILE = 0.5  # `smile` (identical to emotion.happiness in FFHQ-features) at or above this
FACIAL_HAIR = 0.5  # facialHair.beard / .moustache confidence at or above this
BALD = 0.5  # hair.bald confidence at or above this
FRONTAL_YAW = 15.0  # degrees: |headPose.yaw| below this
HAIR_COLOURS = ("black", "brown", "blond", "gray", "red")


def _field(face: dict[str, Any], path: str) -> Any:
    """``face["a"]["b"]`` for path "a.b", with an error naming the missing field."""
    value = face
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"faceAttributes lacks field {path!r}")
        value = value[key]
    return value


def hair_colour(face: dict[str, Any]) -> str | None:
    """The most confident hair colour, or None when no hair is visible (hidden, bald, or no estimate).

    Ties keep the first listed entry. The top entry may be "other", which sets no hair_* column.
    """
    if _field(face, "hair.invisible") or _field(face, "hair.bald") >= BALD:
        return None
    colours = _field(face, "hair.hairColor")
    if not colours:
        return None
    return max(colours, key=lambda c: c["confidence"])["color"]


@dataclass(frozen=True)
class Rule:
    name: str  # column name in attributes.csv
    description: str  # the rule in words, rendered into the README
    derive: Callable[[dict[str, Any]], bool]


def _hair_rule(colour: str) -> Rule:
    return Rule(f"hair_{colour}", f"most confident hair.hairColor is {colour} (0 if bald or hair invisible)",
                lambda f: hair_colour(f) == colour)


RULES: list[Rule] = [
    Rule("gender_male", 'gender == "male"', lambda f: _field(f, "gender") == "male"),
    Rule("age_young", f"age < {YOUNG_BELOW}", lambda f: _field(f, "age") < YOUNG_BELOW),
    Rule("age_middle", f"{YOUNG_BELOW} <= age < {SENIOR_FROM}",
         lambda f: YOUNG_BELOW <= _field(f, "age") < SENIOR_FROM),
    Rule("age_senior", f"age >= {SENIOR_FROM}", lambda f: _field(f, "age") >= SENIOR_FROM),
    Rule("is_happy", f"smile >= {HAPPY_SMILE}", lambda f: _field(f, "smile") >= HAPPY_SMILE),
    Rule("has_beard", f"facialHair.beard >= {FACIAL_HAIR}", lambda f: _field(f, "facialHair.beard") >= FACIAL_HAIR),
    Rule("has_moustache", f"facialHair.moustache >= {FACIAL_HAIR}",
         lambda f: _field(f, "facialHair.moustache") >= FACIAL_HAIR),
    Rule("bald", f"hair.bald >= {BALD}", lambda f: _field(f, "hair.bald") >= BALD),
    Rule("eye_makeup", "makeup.eyeMakeup", lambda f: bool(_field(f, "makeup.eyeMakeup"))),
    Rule("lip_makeup", "makeup.lipMakeup", lambda f: bool(_field(f, "makeup.lipMakeup"))),
    Rule("glasses", 'glasses != "NoGlasses" (reading glasses, sunglasses or goggles)',
         lambda f: _field(f, "glasses") != "NoGlasses"),
    Rule("sunglasses", 'glasses == "Sunglasses"', lambda f: _field(f, "glasses") == "Sunglasses"),
    *(_hair_rule(c) for c in HAIR_COLOURS),
    Rule("head_pose_frontal", f"abs(headPose.yaw) < {FRONTAL_YAW:g} degrees",
         lambda f: abs(_field(f, "headPose.yaw")) < FRONTAL_YAW),
]
BINARY_ATTRIBUTES: list[str] = [rule.name for rule in RULES]


def derive_binary(face_attributes: dict[str, Any]) -> dict[str, int]:
    """Apply every rule to one face's ``faceAttributes``: {attribute: 0 or 1} in BINARY_ATTRIBUTES order."""
    return {rule.name: int(rule.derive(face_attributes)) for rule in RULES}


def load_face_attributes(json_path: str | os.PathLike, raw: bytes | None = None) -> dict[str, Any] | None:
    """The ``faceAttributes`` of the largest face in one annotation file; None if no face was detected.

    raw: the file's bytes, when the caller has read them already (FFHQ preparation also hashes them)."""
    faces = read_json(json_path) if raw is None else parse_json(raw, json_path)  # ValueError naming the file
    if not isinstance(faces, list):
        raise ValueError(f"{json_path}: expected a JSON array of faces, got {type(faces).__name__}")
    if not faces:
        return None
    try:
        largest = max(faces, key=lambda f: f["faceRectangle"]["width"] * f["faceRectangle"]["height"])
        return dict(largest["faceAttributes"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{json_path}: malformed face entry (missing {err})") from None


def rules_markdown() -> str:
    """The rules as a Markdown table, for the README."""
    lines = ["| attribute | rule |", "|---|---|"]
    lines += [f"| `{rule.name}` | {rule.description} |" for rule in RULES]
    return "\n".join(lines) + "\n"
