"""An export document as JSON text: the metric arrays are spliced in as they were
encoded (never parsed and dumped again); parsing, dumping and writing it (atomically)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from virtwatch.core.atomic_file import AtomicFile
from virtwatch.storage.redaction import RawJson


def _pieces(doc: Mapping[str, Any]) -> Iterator[str]:
    """The document as compact JSON, in pieces: the encoder's text with the database's
    arrays spliced in where they belong (`json.dumps` in one shot: only that path uses
    the C encoder)."""
    raws: list[str] = []
    nonce = secrets.token_hex(8)

    def hole(v: Any) -> Any:
        if isinstance(v, RawJson):
            raws.append(v.text)
            return f"\x00{nonce}:{len(raws) - 1}\x00"
        return v

    metrics = doc.get("metrics")
    if isinstance(metrics, Mapping) and isinstance(metrics.get("series"), list):
        series = [{k: hole(v) for k, v in s.items()} for s in metrics["series"]]
        doc = {**doc, "metrics": {**metrics, "series": series}}
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    at = 0
    for m in re.finditer(r'"\\u0000' + nonce + r':(\d+)\\u0000"', text):
        yield text[at : m.start()]
        yield raws[int(m.group(1))]
        at = m.end()
    yield text[at:]


def _series_pieces(series: Mapping[str, Any]) -> Iterator[str]:
    """One series as compact JSON, in pieces: its header, then its arrays verbatim."""
    header = {k: v for k, v in series.items() if not isinstance(v, RawJson)}
    yield json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)[:-1]
    for k, v in series.items():
        if isinstance(v, RawJson):
            yield f",{json.dumps(k)}:"
            yield v.text
    yield "}"


def _around_series(doc: Mapping[str, Any]) -> tuple[str, str]:
    """The document's JSON before and after the text of its series list."""
    marker = f"series-{secrets.token_hex(8)}"
    metrics = {**doc["metrics"], "series": marker}
    text = json.dumps(
        {**doc, "metrics": metrics}, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    head, tail = text.split(f'"{marker}"')
    return head + "[", "]" + tail


def export_json(doc: Mapping[str, Any]) -> str:
    """The document as compact JSON, the database's arrays spliced in verbatim."""
    return "".join(_pieces(doc))


def parse_export(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document as a reader of the file sees it (series arrays as lists)."""
    parsed: dict[str, Any] = json.loads(export_json(doc))
    return parsed


def dump_export(doc: Mapping[str, Any], out: IO[str]) -> None:
    """Write the document to `out` piece by piece (never one string of it all)."""
    for piece in _pieces(doc):
        out.write(piece)
    out.write("\n")


def write_export(doc: Mapping[str, Any], path: Path) -> Path:
    """Write `doc` to `path`, readable by its owner only (it names users and VMs)."""
    target = AtomicFile(path)
    with target as fh:
        dump_export(doc, fh)
    return target.path
