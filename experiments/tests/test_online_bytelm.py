"""Text preparation of the byte-LM experiments: a SWORD dump's repeated sections are kept once, in order, without
verse references; ``ttexp.corpora`` runs diatheke once and checks the pinned sha256."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from ttexp.corpora import read_text, sword_dump

HERE = Path(__file__).resolve().parent


def _experiment():
    spec = importlib.util.spec_from_file_location(
        "online_bytelm_experiment", HERE.parent / "online_bytelm" / "experiment.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sword_sections_keeps_each_section_once():
    raw = (
        "Genesis 1:1: \n"
        "Genesis 1:2:  * Verses 1-2 *    In the beginning.    * Verses 3-5 *    Light.\n"
        "Genesis 1:3:  * Verses 1-2 *    In the beginning.    * Verses 3-5 *    Light.\n"
        "    Chapter 2\n"
        "    Chapter Outline\n"
        "I John 2:1: * Verse 1 *    Little children.    * Verses 3-5 *    Light.\n"
        "Revelation of John 22:21: (MHCC)\n"
    )
    text = _experiment().sword_sections(raw).decode()
    assert text.splitlines() == [
        "* Verses 1-2 *    In the beginning.",
        "* Verses 3-5 *    Light.",
        "Chapter 2",
        "Chapter Outline",
        "* Verse 1 *    Little children.",
    ]


def test_sword_dump_runs_diatheke_once_and_read_text_checks_the_pin(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    fake = bin_dir / "diatheke"  # stands in for Debian's diatheke: prints a dump, records its arguments
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "sys.stdout.write('Genesis 1:1: * Verse 1 *    In the beginning.\\n')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    path = tmp_path / "data" / "mhcc-sections.txt"
    got = sword_dump("MHCC", "Genesis 1:1", "sword-comm-mhcc", path, who="t", transform=lambda raw: raw.upper())
    assert got == path and path.read_bytes() == b"GENESIS 1:1: * VERSE 1 *    IN THE BEGINNING.\n"
    sword_dump("MHCC", "Genesis 1:1", "sword-comm-mhcc", path, who="t")  # the file exists: no second call
    assert log.read_text().splitlines() == ["-b MHCC -f plain -k Genesis 1:1"]
    text, digest = read_text(path, tmp_path / "hf", who="t")
    assert text == path.read_bytes() and digest == hashlib.sha256(text).hexdigest()
    with pytest.raises(SystemExit, match="the config pins"):
        read_text(path, tmp_path / "hf", sha256="0" * 64, who="t")
