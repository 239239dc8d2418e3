"""The catalog: a markdown table of every registry entry, generated from the entries' own data.

``python -m tracetorch_zoo.catalog`` prints it; ``python -m tracetorch_zoo.catalog --update README.md`` rewrites
the part of a file between ``<!-- zoo-catalog:start -->`` and ``<!-- zoo-catalog:end -->`` (the repository's
README holds one; a test fails when it differs from the entries, so the numbers cannot drift).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .architectures import family_of
from .card import dataset_of
from .registry import get_entry, list_models

__all__ = ["END", "START", "markdown_table", "update_file"]

START, END = "<!-- zoo-catalog:start -->", "<!-- zoo-catalog:end -->"
_FAMILY = {"snn": "SNN", "rnn": "RNN", "ssm": "SSM", "other": "other"}


def _headline(metrics: list[dict]) -> str:
    if not metrics:
        return "-"
    m = metrics[0]
    split = f", {m['split']}" if m.get("split") else ""
    return f"{m['name']} **{m['value']}** ({dataset_of(m)[1]}{split})"


def markdown_table() -> str:
    """One row per entry: name, family, headline metric, parameters, size, snapshots, producing experiment."""
    rows = [
        "| entry | family | headline metric | parameters | size | snapshots | produced by |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for name in list_models():
        e = get_entry(name)
        meta = e.metadata
        try:
            family = _FAMILY[family_of(e.architecture)]
        except Exception:  # an architecture whose module is not imported: say so instead of failing the listing
            family = "?"
        size = meta.get("size_bytes")
        rows.append(
            f"| `{name}` | {family} | {_headline(meta.get('metrics', []))} | {meta.get('num_parameters', 0):,} | "
            f"{size / 1e6:.1f} MB | {', '.join(f'`{s}`' for s in e.snapshots) or '-'} | "
            f"{meta.get('experiment', '?')} {meta.get('version', '')}{' (embedded)' if e.embedded else ''} |"
            if size
            else f"| `{name}` | {family} | {_headline(meta.get('metrics', []))} | - | - | - | - |"
        )
    return "\n".join(rows)


def update_file(path: str | Path) -> bool:
    """Replace the catalog section of ``path`` with :func:`markdown_table`; returns whether it changed."""
    path = Path(path)
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{markdown_table()}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracetorch_zoo.catalog", description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", metavar="FILE", help="rewrite the catalog section of FILE")
    args = ap.parse_args(argv)
    if args.update:
        print(f"{args.update}: {'updated' if update_file(args.update) else 'already up to date'}")
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
