"""online_bytelm's text preparation: a SWORD dump's repeated sections are kept once, in order, without verse
references."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
