"""JavaScript value semantics that GrowthBook conditions rely on.

GrowthBook's reference SDK is JavaScript, and its conformance suite encodes JS coercion
(``"8" > 5`` is true, a missing attribute compares like ``null``, which is ``0`` next to a
number). Keeping those rules here, in one place, lets every operator share them.
"""

from __future__ import annotations

import math
import re
from typing import Any

# JS StringToNumber accepts decimal literals (with exponent), Infinity and 0x/0o/0b integers
# after trimming whitespace; Python's float() also accepts "nan", "inf" and "1_000", which JS
# does not, so parsing is done by pattern rather than by float() alone.
_JS_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\Z")
_JS_RADIX = re.compile(r"0([xXoObB])([0-9a-fA-F]+)\Z")
_RADIX_BASES = {"x": 16, "o": 8, "b": 2}
_JS_WHITESPACE = (
    " \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def is_real_number(value: object) -> bool:
    """True for JSON numbers; bool is excluded because JS never treats true as a number type."""
    return (type(value) is int) or (type(value) is float)


def string_to_number(text: str) -> float:
    """JS ``Number(text)``: NaN when the text is not a numeric literal."""
    stripped = text.strip(_JS_WHITESPACE)
    if not stripped:
        return 0.0
    if _JS_DECIMAL.match(stripped):
        return float(stripped.replace("Infinity", "inf"))
    radix = _JS_RADIX.match(stripped)
    if radix:
        try:
            return float(int(radix.group(2), _RADIX_BASES[radix.group(1).lower()]))
        except ValueError:
            return math.nan
    return math.nan


def number_to_string(number: float) -> str:
    """JS ``String(number)`` for the values JSON can carry."""
    if isinstance(number, int):
        return str(number)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    # Python writes 1e-07 where JS writes 1e-7.
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def to_js_string(value: object) -> str:
    """JS ``String(value)`` (``[1, 2]`` -> ``"1,2"``, objects -> ``"[object Object]"``)."""
    if type(value) is str:
        return value
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int or type(value) is float:
        return number_to_string(value)
    if isinstance(value, list | tuple):
        return ",".join("" if item is None else to_js_string(item) for item in value)
    return "[object Object]"


def to_primitive(value: object) -> object:
    """JS ToPrimitive with the number hint, as used by the relational operators."""
    if isinstance(value, list | tuple | dict):
        return to_js_string(value)
    return value


def to_number(value: object) -> float:
    """JS ``Number(value)`` for primitives; ``null`` is 0, which is why missing counts as 0."""
    if value is None:
        return 0.0
    if type(value) is bool:
        return 1.0 if value else 0.0
    if type(value) is int or type(value) is float:
        return float(value)
    if type(value) is str:
        return string_to_number(value)
    return string_to_number(to_js_string(value))


def _utf16_less(left: str, right: str) -> bool:
    # JS orders strings by UTF-16 code units, which differs from code points only when a
    # character beyond U+FFFF meets one in U+E000..U+FFFF.
    if left.isascii() and right.isascii():
        return left < right
    return left.encode("utf-16-be") < right.encode("utf-16-be")


def js_less_than(left: object, right: object) -> bool | None:
    """JS abstract relational comparison ``left < right``; None means "undefined" (a NaN)."""
    left = to_primitive(left)
    right = to_primitive(right)
    if type(left) is str and type(right) is str:
        return _utf16_less(left, right)
    left_number = to_number(left)
    right_number = to_number(right)
    if math.isnan(left_number) or math.isnan(right_number):
        return None
    return left_number < right_number


def strict_equals(left: object, right: object) -> bool:
    """``===`` for scalars, structural equality for arrays and objects.

    JS compares arrays and objects by reference, so ``{"$eq": ["a"]}`` could never match in
    the browser; structural equality is what a rule author means.
    """
    left_type = type(left)
    right_type = type(right)
    if left_type is bool or right_type is bool:
        return left_type is right_type and left == right
    if (left_type is int or left_type is float) and (right_type is int or right_type is float):
        return left == right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(
            strict_equals(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(strict_equals(left[k], right[k]) for k in left)
    return left_type is right_type and left == right


def truthy(value: object) -> bool:
    """JS truthiness: empty arrays and objects are truthy, NaN is falsy."""
    if value is None or value is False:
        return False
    if type(value) is int or type(value) is float:
        return value != 0 and not math.isnan(value)
    if type(value) is str:
        return value != ""
    return True


def js_type_name(value: object) -> str:
    """The names ``$type`` accepts: GrowthBook's getType over JS ``typeof``."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) is int or type(value) is float:
        return "number"
    if type(value) is str:
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "undefined"


def strict_member(value: Any, candidates: list[Any]) -> bool:
    """``candidates.includes(value)`` with the structural equality of ``strict_equals``."""
    return any(strict_equals(value, candidate) for candidate in candidates)
