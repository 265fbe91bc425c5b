"""Config values as text on train_net.py's command line, the way Detectron2 reads them back."""

from __future__ import annotations

import ast


def parse_value(text: str):
    """A command-line value as Detectron2 reads it: a Python literal, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def format_value(value) -> str:
    """The command-line text that Detectron2 reads back as `value`."""
    if isinstance(value, str):
        # Quote only a string that would otherwise read back as another type ("1", "[1]").
        return repr(value) if parse_value(value) != value else value
    return repr(value)


def split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets and quotes: 'a,[1, 2],b' -> ['a', '[1, 2]', 'b']."""
    parts, current, depth, quote = [], [], 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def is_number(value) -> bool:
    """Whether `value` can be plotted on a numeric axis (an int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
