"""What an export may say: every string redacted of credentials, values under
secret-looking keys masked, whatever wrote them into the store; pre-encoded JSON
(`RawJson`) and redacted rows pass untouched."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from virtwatch.core.libvirt.uri import MASK, is_secret_key, redact_text

_SCALARS = (int, float, bool)


_NUMBERS = frozenset({int, float, bool, type(None)})


_TEXTS = frozenset({str, type(None)})


class RawJson:
    """JSON text the database wrote (a series' array of numbers): spliced into the
    document verbatim when it is written, never redacted (it holds no strings). A
    holder, not a str subclass: making one would copy the text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return (
            f"RawJson({self.text[:40]!r}...)" if len(self.text) > 40 else f"RawJson({self.text!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJson) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class Redacted(list[dict[str, Any]]):
    """Rows every value of which `Redactor.rows` has already redacted."""


class Redactor:
    """Redaction with memory: each distinct string and key is redacted once (a day of
    health results repeats the same few hundred). Strings go through the URI redaction;
    values under secret-looking keys are masked."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self._keys: dict[str, tuple[str, bool]] = {}

    def text(self, v: str) -> str:
        out = self._texts.get(v)
        if out is None:
            out = self._texts[v] = redact_text(v)
        return out

    def key(self, k: object) -> tuple[str, bool]:
        """A key -> (its redacted text, whether its value is a secret)."""
        name = k if type(k) is str else str(k)
        out = self._keys.get(name)
        if out is None:
            red = self.text(name)
            out = self._keys[name] = (red, is_secret_key(red))
        return out

    def value(self, v: Any) -> Any:
        """A redacted copy of any JSON-able value (RawJson and Redacted pass untouched)."""
        if isinstance(v, (RawJson, Redacted)):
            return v
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, Mapping):
            return self._mapping(v.items())
        if isinstance(v, (list, tuple)):
            return [self.value(item) for item in v]
        return v

    def _mapping(self, items: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, item in items:
            name, secret = self.key(k)
            kind = type(item)
            if item is None:
                out[name] = None
            elif secret:
                out[name] = MASK
            elif kind is str:
                out[name] = self.text(item)
            elif kind in _SCALARS:
                out[name] = item
            else:
                out[name] = self.value(item)
        return out

    def rows(self, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Redacted:
        """Tuples of `names`' values -> redacted row dicts (a column at a time: a column
        of numbers passes as it is, a column of strings is mapped through the cache)."""
        keys = [self.key(n) for n in names]
        table = list(rows)
        if not table:
            return Redacted()
        columns: list[Sequence[Any]] = []
        for (_name, secret), col in zip(keys, zip(*table, strict=True), strict=True):
            kinds = set(map(type, col))
            if secret:
                columns.append([None if v is None else MASK for v in col])
            elif kinds <= _NUMBERS:
                columns.append(col)
            elif kinds <= _TEXTS:
                texts, text = self._texts, self.text
                columns.append([v if v is None else texts.get(v) or text(v) for v in col])
            else:
                columns.append([self.value(v) for v in col])
        names_out = [name for name, _ in keys]
        return Redacted(
            dict(zip(names_out, row, strict=False)) for row in zip(*columns, strict=True)
        )


def redact_document(value: Any) -> Any:
    """A copy with every string redacted and values under secret-looking keys masked.
    RawJson (numbers only) and Redacted rows pass untouched."""
    return Redactor().value(value)
