"""Frozen experiment configs: ``v<N>/config.toml`` with variants, resolved to one dict and hashed.

A config file's header comment must name the exact command that runs it (a line starting ``# command:``).
Variants (``[variants.smoke]``, ``[variants.gpu]``, ...) are partial tables deep-merged over the base; the
resolved dict (variant applied, ``variants`` removed) is what the experiment sees and what the hash covers.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

__all__ = ["Config", "ConfigError", "config_hash", "load_config", "parse_override"]


class ConfigError(ValueError):
    """A config that cannot be resolved as asked: no such variant, an override of a key the config lacks."""


@dataclass(frozen=True)
class Config:
    """A resolved config: ``data`` (the dict), where it came from, the variant, its command and hash."""

    data: dict[str, Any]
    path: Path
    variant: str | None
    command: str
    hash: str

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def config_hash(data: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``data``."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_override(item: str) -> dict[str, Any]:
    """``"train.steps=200"`` -> ``{"train": {"steps": 200}}`` (the value is parsed as TOML, else a string)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"overrides are KEY=VALUE with a dotted key, got {item!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = key.strip().split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = parsed
    return out


def _check_override_key(path: Path, raw: dict[str, Any], item: str) -> None:
    import difflib

    key = item.partition("=")[0].strip()
    node: Any = raw
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(walked) or "the top level"
            have = sorted(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, have, n=3)
            hint = f"; did you mean {', '.join('.'.join([*walked, c]) for c in close)}?" if close else ""
            raise ConfigError(
                f"{path}: --set {item!r}: the config has no key {key!r} ({where} has: {', '.join(have) or 'nothing'})"
                f"{hint}"
            )
        node = node[part]
        walked.append(part)


def load_config(path: str | Path, variant: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Read ``config.toml``, apply ``variant`` then ``overrides`` (``"train.steps=200"``) and hash the result.

    Raises :class:`ConfigError` for a missing ``# command:`` header, an unknown variant (naming the known ones) or an
    override of a key the config does not have (naming the close ones: a typo is never applied silently).
    """
    path = Path(path)
    text = path.read_text()
    command = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("# command:")), "")
    if not command:
        raise ConfigError(f"{path}: the header must give the exact command in a '# command: ...' line")
    raw = tomllib.loads(text)
    variants = raw.pop("variants", {})
    if variant is not None:
        if variant not in variants:
            known = ", ".join(sorted(variants)) or "none"
            raise ConfigError(f"{path}: no variant {variant!r} (known: {known})")
        raw = _merge(raw, variants[variant])
    for item in overrides:
        _check_override_key(path, raw, item)
        raw = _merge(raw, parse_override(item))
    resolved = {**raw, "variant": variant}
    if overrides:  # only when given, so that plain configs keep their hash
        resolved["overrides"] = list(overrides)
    # [publish] says where results go, not what they are: it is left out of the hash
    hashed = {k: v for k, v in resolved.items() if k != "publish"}
    return Config(data=resolved, path=path, variant=variant, command=command, hash=config_hash(hashed))
