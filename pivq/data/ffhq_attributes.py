"""Binary face attributes from FFHQ-features annotations (Azure Face API output, one JSON file per image).

Each file holds a list of detected faces; we keep the largest (FFHQ is aligned on one face, but a
second, smaller face is sometimes detected in the background). The probe (paper Fig. 5) needs binary
targets, so every attribute below is one rule on that face's ``faceAttributes``. ``RULES`` is the single
source of truth: the CSV columns, their order and the README table all come from it. toyfaces emits
the same schema, so one code path serves both datasets.

Fields are read as JSON defines them. A number must be a JSON number, a boolean a JSON ``true``/``false``
(a string such as ``"false"`` is refused, naming the field: it is not the Face API's output, and guessing
its meaning could hide a converted or hand-edited file), a name (``gender``, ``glasses``, a hair colour) a
JSON string. ``null`` (and ``NaN`` for a number) means unknown: every attribute that depends on it is left
empty in attributes.csv, like an image without a detected face, and the probe leaves that image out of
those attributes only. A missing field or a value of another type is an error naming the field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pivq.io import parse_json

YOUNG_BELOW = 30  # age_young: age < 30
SENIOR_FROM = 50  # age_senior: age >= 50; age_middle is the range between
HAPPY_SMILE = 0.5  # `smile` (identical to emotion.happiness in FFHQ-features) at or above this
FACIAL_HAIR = 0.5  # facialHair.beard / .moustache confidence at or above this
BALD = 0.5  # hair.bald confidence at or above this
FRONTAL_YAW = 15.0  # degrees: |headPose.yaw| below this
HAIR_COLOURS = ("black", "brown", "blond", "gray", "red")


class AnnotationError(ValueError):
    """A malformed field of one face's ``faceAttributes``; the message names the field (the caller adds the file)."""


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type ("object", "array", "string", ...), for error messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _described(value: Any) -> str:
    text = repr(value)
    return f"the {json_type(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def _field(face: dict[str, Any], path: str) -> Any:
    """``face["a"]["b"]`` for path "a.b", with an error naming the missing field; None if it or a parent is null."""
    value = face
    for key in path.split("."):
        if value is None:  # a null group (say "headPose": null): every field in it is unknown
            return None
        if not isinstance(value, dict) or key not in value:
            raise AnnotationError(f"faceAttributes lacks field {path!r}")
        value = value[key]
    return value


def _number(face: dict[str, Any], path: str) -> float | None:
    """A JSON number; None when it is null or NaN (unknown)."""
    value = _field(face, path)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AnnotationError(f"field {path!r} of faceAttributes is {_described(value)}, expected a number")
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise AnnotationError(f"field {path!r} of faceAttributes is {value}, expected a finite number")
    return value


def _boolean(face: dict[str, Any], path: str) -> bool | None:
    """A JSON true or false; None when null. A string ("false", "true") is refused: it is not a boolean."""
    value = _field(face, path)
    if value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise AnnotationError(f"field {path!r} of faceAttributes is {_described(value)}, expected a JSON boolean "
                              "(true or false)")
    return bool(value)


def _string(face: dict[str, Any], path: str) -> str | None:
    """A JSON string; None when null."""
    value = _field(face, path)
    if value is None or isinstance(value, str):
        return value
    raise AnnotationError(f"field {path!r} of faceAttributes is {_described(value)}, expected a string")


def _at_least(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value >= threshold


UNKNOWN = "unknown"  # what _hair_colour returns when a field it needs is null


def _hair_colour(face: dict[str, Any]) -> str | None:
    """hair_colour, or UNKNOWN when a field the answer depends on is null."""
    invisible, bald = _boolean(face, "hair.invisible"), _number(face, "hair.bald")
    if invisible or (bald is not None and bald >= BALD):
        return None
    if invisible is None or bald is None:
        return UNKNOWN
    colours = _field(face, "hair.hairColor")
    if colours is None:
        return UNKNOWN
    if not isinstance(colours, list):
        raise AnnotationError(f"field 'hair.hairColor' of faceAttributes is {_described(colours)}, expected an array "
                              "of {\"color\", \"confidence\"} objects")
    if not colours:
        return None
    best, best_confidence = None, None
    for k, entry in enumerate(colours):
        where = f"hair.hairColor[{k}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"field {where!r} of faceAttributes is {_described(entry)}, expected an object")
        try:
            colour, confidence = _string(entry, "color"), _number(entry, "confidence")
        except AnnotationError as err:  # name the entry: "field 'hair.hairColor[2].confidence' ..."
            raise AnnotationError(str(err).replace("'", f"'{where}.", 1)) from None
        if colour is None or confidence is None:
            return UNKNOWN
        if best_confidence is None or confidence > best_confidence:  # ties keep the first listed, as max() does
            best, best_confidence = colour, confidence
    return best


def hair_colour(face: dict[str, Any]) -> str | None:
    """The most confident hair colour, or None when no hair is visible (hidden, bald, or no estimate).

    Ties keep the first listed entry. The top entry may be "other", which sets no hair_* column. A null field
    the answer depends on raises AnnotationError (derive_binary leaves the hair_* columns empty instead).
    """
    colour = _hair_colour(face)
    if colour == UNKNOWN:
        raise AnnotationError("faceAttributes.hair: a field the hair colour depends on is null")
    return colour


@dataclass(frozen=True)
class Rule:
    name: str  # column name in attributes.csv
    description: str  # the rule in words, rendered into the README
    derive: Callable[[dict[str, Any]], bool | None]  # None: unknown (a null field), an empty cell


def _hair_rule(colour: str) -> Rule:
    def derive(face: dict[str, Any]) -> bool | None:
        found = _hair_colour(face)
        return None if found == UNKNOWN else found == colour

    return Rule(f"hair_{colour}", f"most confident hair.hairColor is {colour} (0 if bald or hair invisible)", derive)


def _in_range(value: float | None, low: float | None, high: float | None) -> bool | None:
    """low <= value < high (either bound None: open); None when the value is unknown."""
    if value is None:
        return None
    return (low is None or value >= low) and (high is None or value < high)


def _equals(value: str | None, expected: str) -> bool | None:
    return None if value is None else value == expected


RULES: list[Rule] = [
    Rule("gender_male", 'gender == "male"', lambda f: _equals(_string(f, "gender"), "male")),
    Rule("age_young", f"age < {YOUNG_BELOW}", lambda f: _in_range(_number(f, "age"), None, YOUNG_BELOW)),
    Rule("age_middle", f"{YOUNG_BELOW} <= age < {SENIOR_FROM}",
         lambda f: _in_range(_number(f, "age"), YOUNG_BELOW, SENIOR_FROM)),
    Rule("age_senior", f"age >= {SENIOR_FROM}", lambda f: _in_range(_number(f, "age"), SENIOR_FROM, None)),
    Rule("is_happy", f"smile >= {HAPPY_SMILE}", lambda f: _at_least(_number(f, "smile"), HAPPY_SMILE)),
    Rule("has_beard", f"facialHair.beard >= {FACIAL_HAIR}",
         lambda f: _at_least(_number(f, "facialHair.beard"), FACIAL_HAIR)),
    Rule("has_moustache", f"facialHair.moustache >= {FACIAL_HAIR}",
         lambda f: _at_least(_number(f, "facialHair.moustache"), FACIAL_HAIR)),
    Rule("bald", f"hair.bald >= {BALD}", lambda f: _at_least(_number(f, "hair.bald"), BALD)),
    Rule("eye_makeup", "makeup.eyeMakeup", lambda f: _boolean(f, "makeup.eyeMakeup")),
    Rule("lip_makeup", "makeup.lipMakeup", lambda f: _boolean(f, "makeup.lipMakeup")),
    Rule("glasses", 'glasses != "NoGlasses" (reading glasses, sunglasses or goggles)',
         lambda f: None if (g := _string(f, "glasses")) is None else g != "NoGlasses"),
    Rule("sunglasses", 'glasses == "Sunglasses"', lambda f: _equals(_string(f, "glasses"), "Sunglasses")),
    *(_hair_rule(c) for c in HAIR_COLOURS),
    Rule("head_pose_frontal", f"abs(headPose.yaw) < {FRONTAL_YAW:g} degrees",
         lambda f: None if (yaw := _number(f, "headPose.yaw")) is None else abs(yaw) < FRONTAL_YAW),
]
BINARY_ATTRIBUTES: list[str] = [rule.name for rule in RULES]


def derive_binary(face_attributes: dict[str, Any]) -> dict[str, int | None]:
    """Apply every rule to one face's ``faceAttributes``: {attribute: 0, 1, or None where a field it needs is
    null (unknown)} in BINARY_ATTRIBUTES order. AnnotationError names a missing field or one of the wrong type."""
    if not isinstance(face_attributes, dict):
        raise AnnotationError(f"faceAttributes is {_described(face_attributes)}, expected an object")
    values = {}
    for rule in RULES:
        value = rule.derive(face_attributes)
        values[rule.name] = None if value is None else int(value)
    return values


def load_face_attributes(json_path: str | os.PathLike, raw: bytes | None = None) -> dict[str, Any] | None:
    """The ``faceAttributes`` of the largest face in one annotation file; None if no face was detected.

    raw: the file's bytes, when the caller has read them already (FFHQ preparation also hashes them). The text
    may be UTF-8 (with or without a byte-order mark), UTF-16 or UTF-32, as JSON allows. Every malformed file is
    a ValueError naming it (and the line, the face or the field): text that is not JSON, JSON that is not an
    array of face objects, a face without a numeric ``faceRectangle`` width and height, or whose
    ``faceAttributes`` (the largest face's) is not an object."""
    if raw is None:
        try:
            raw = Path(json_path).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"missing file: {json_path}") from None
    try:
        faces = parse_json(raw, json_path)  # a ValueError naming the file, with line and column, on bad JSON
    except UnicodeDecodeError as err:
        raise ValueError(f"{json_path} is not JSON text (not valid UTF-8, UTF-16 or UTF-32: {err})") from None
    except RecursionError:
        raise ValueError(f"{json_path}: JSON nested too deeply to be an array of faces") from None
    if not isinstance(faces, list):
        raise ValueError(f"{json_path}: expected a JSON array of faces, got a JSON {json_type(faces)}")
    if not faces:
        return None
    areas = [_face_area(face, json_path, k) for k, face in enumerate(faces)]
    k = areas.index(max(areas))  # the largest; the first of equal ones, as max() gives
    attributes = faces[k].get("faceAttributes")
    if not isinstance(attributes, dict):
        what = "lacks field 'faceAttributes'" if "faceAttributes" not in faces[k] else \
            f"field 'faceAttributes' is {_described(attributes)}, expected an object"
        raise ValueError(f"{json_path}: face {k} {what}")
    return dict(attributes)


def _face_area(face: Any, json_path: str | os.PathLike, k: int) -> float:
    """width * height of one face's faceRectangle; a ValueError naming the file, the face and the field."""
    where = f"{json_path}: face {k}"
    if not isinstance(face, dict):
        raise ValueError(f"{where} is {_described(face)}, expected an object with faceRectangle and faceAttributes")
    rectangle = face.get("faceRectangle")
    if not isinstance(rectangle, dict):
        what = "lacks field 'faceRectangle'" if "faceRectangle" not in face else \
            f"field 'faceRectangle' is {_described(rectangle)}, expected an object"
        raise ValueError(f"{where} {what}")
    sides = []
    for side in ("width", "height"):
        value = rectangle.get(side)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0):
            what = "missing" if side not in rectangle else _described(value)
            raise ValueError(f"{where}: field 'faceRectangle.{side}' is {what}, expected a number of pixels")
        sides.append(value)
    return sides[0] * sides[1]


def rules_markdown() -> str:
    """The rules as a Markdown table, for the README."""
    lines = ["| attribute | rule |", "|---|---|"]
    lines += [f"| `{rule.name}` | {rule.description} |" for rule in RULES]
    return "\n".join(lines) + "\n"
