"""The documentation's generated pages, made at every build from the code and the committed data:

* ``_generated/api/*.md``: one reference page per public module (autodoc of its ``__all__``);
* ``_generated/neurons/*.md``: one page per spiking family (LI, B, T, TS) with a plot of every type's membrane and
  output for the same input, drawn now by the library itself;
* ``_generated/results/*.md``: the benchmark and experiment reports, copied with their plots from
  ``benchmarks/results/`` and ``experiments/*/v*/results/`` (so the numbers cannot drift from the data);
* the docstring coverage of the public API (:mod:`coverage`): a public name without a docstring is a warning, which
  the strict build (``-W``) turns into a failure; the count is written to ``_generated/coverage.json``.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

from coverage import PUBLIC_MODULES, coverage
from sphinx.application import Sphinx
from sphinx.util import logging

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {
    "LI": ("Leaky integrators", "LI"),
    "B": ("Binary spiking neurons", "LIB"),
    "T": ("Ternary spiking neurons", "LIT"),
    "TS": ("Ternary spiking neurons with learnable scales", "LITS"),
}


def _write(path: Path, text: str) -> None:
    """Write only on change, so that Sphinx rebuilds only what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def api_pages(out: Path) -> None:
    lines = ["# API reference", "", "Every public name of `tracetorch` and `tracetorch_zoo`, from its docstring.", ""]
    lines += ["```{toctree}", ":maxdepth: 1", ""] + [m for m in PUBLIC_MODULES] + ["```", ""]
    _write(out / "index.md", "\n".join(lines))
    for name in PUBLIC_MODULES:
        mod = importlib.import_module(name)
        exported = ", ".join(getattr(mod, "__all__", ()))
        body = [f"# `{name}`", "", "```{eval-rst}", f".. automodule:: {name}"]
        if exported:
            body.append(f"   :members: {exported}")
        body += ["```", ""]
        _write(out / f"{name}.md", "\n".join(body))


def _family_types(family: str) -> list[str]:
    from tracetorch import snn
    from tracetorch.functional import NeuronSpec

    return [n for n in snn.__all__ if n != "SpikingLayer" and NeuronSpec.from_name(n).family == family]


# R types feed their own output back through a weight that starts at 0 (then they behave as their plain twins):
# the figures give it this value, so that what R changes shows
FIGURE_REC_WEIGHT = 0.6


def _figure_params(name: str) -> dict[str, float]:
    from tracetorch.functional import NeuronSpec

    spec = NeuronSpec.from_name(name)
    return {p.name: FIGURE_REC_WEIGHT for p in spec.params if p.name.endswith("rec_weight")}


def neuron_figure(family: str, path: Path) -> list[str]:
    """Run every type of ``family`` on one input current (16 neurons of which the plot shows one) and plot its
    membrane(s) and output; returns the types in plot order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from tracetorch import snn

    names = _family_types(family)
    T = 160
    t = torch.arange(T, dtype=torch.float32)
    current = 0.45 * torch.sin(2 * torch.pi * t / 80) + 0.25 * torch.sin(2 * torch.pi * t / 13)
    x = current.view(T, 1, 1).expand(T, 1, 4).contiguous()
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.45 * len(names)), sharex=True)
    for ax, name in zip(axes, names, strict=True):
        layer = getattr(snn, name)(4, **_figure_params(name))
        mems: dict[str, list[float]] = {}
        ys = []
        with torch.no_grad():
            for xt in x:
                ys.append(float(layer(xt)[0, 0]))
                for key, value in layer.get_states().items():
                    if key.endswith("mem"):
                        mems.setdefault(key, []).append(float(value[0, 0]))
        ax.plot(t, current, color="0.75", lw=1, label="input")
        for key, values in mems.items():
            ax.plot(t, values, lw=1.2, label=key)
        if layer.spec.fires:
            spikes = torch.tensor(ys)
            on = spikes != 0
            ax.scatter(t[on], spikes[on], marker="|", s=60, color="black", label="output spikes", zorder=3)
        else:
            ax.plot(t, ys, color="black", lw=1, ls="--", label="output")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    axes[-1].set_xlabel("time step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return names


def neuron_pages(out: Path) -> None:
    from tracetorch import snn

    index = ["# The 32 spiking types", ""]
    index += [
        "Every type is a name over one mechanism: the family (`LI`, `B`, `T`, `TS`) says what a neuron emits, and the",
        "prefixes say what it adds: `D` (dual: positive and negative copies of every trace, each with its own decay),",
        "`S` (synaptic: an input trace before the membrane), `R` (recurrent: a trace of the neuron's own output fed",
        "back). Each page runs every type of its family, with default parameters, on the same input current; the",
        f"`R` types with a recurrent weight of {FIGURE_REC_WEIGHT} (its default, 0, would make them behave as their",
        "plain twins).",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
    ]
    for family, (title, _) in FAMILIES.items():
        index.append(family)
        names = neuron_figure(family, out / f"{family}.png")
        page = [f"# {title} (`{family}`)", "", f"![membranes and outputs of the {family} types]({family}.png)", ""]
        page += ["| type | what it is |", "|---|---|"]
        for name in names:
            summary = (getattr(snn, name).__doc__ or "").strip().splitlines()[0].replace("|", "\\|")
            page.append(f"| {{class}}`~tracetorch.snn.{name}` | {summary} |")
        _write(out / f"{family}.md", "\n".join(page) + "\n")
    index += ["```", ""]
    _write(out / "index.md", "\n".join(index))


def _unlink_outside(text: str) -> str:
    """Links of a copied report to files beside it in the repository (not copied here) become their text."""
    return re.sub(r"\[([^\]]+)\]\((?!https?:|#)([^)]+?\.(?:md|json|toml|py))\)", r"\1 (``\2``)", text)


def experiment_title(config: Path) -> str:
    """What an experiment version is, from the first line of its ``config.toml`` (``# name vN: what it is ...``): the
    phrase up to the first clause break, parentheses balanced, a line that runs on cut at its last comma."""
    line = config.read_text().splitlines()[0].lstrip("# ").strip()
    head, _, what = line.partition(": ")
    if not what:
        return head
    parts = re.split(r": |; |(?<!Fig)(?<!Eq)(?<! al)\. ", what, maxsplit=1)  # "Fig. 3" is no sentence end
    what, ended = parts[0], len(parts) > 1
    while what.count("(") > what.count(")"):  # a parenthesis that runs on into the next line: drop it
        what = what[: what.rindex("(")].rstrip()
    what = what.rstrip(",;: ")
    if not ended and ", " in what and not line.rstrip().endswith((".", ")")):
        what = what[: what.rindex(", ")]
    return f"{head}: {what}"


def results_pages(out: Path) -> None:
    """Copy the committed reports and their plots; one page each, grouped by where they come from: the benchmark
    suites and the experiments (titled by what each experiment version is)."""
    bench = ROOT / "benchmarks" / "results"
    groups: dict[str, list[tuple[str, Path, Path, str | None]]] = {"Benchmarks": [], "Experiments": []}
    for md in sorted(bench.glob("*.md")):
        groups["Benchmarks"].append((f"benchmarks-{md.stem}", md, bench, None))
    for md in sorted(ROOT.glob("experiments/*/v*/results/results.md")):
        version, experiment = md.parent.parent.name, md.parent.parent.parent.name
        title = experiment_title(md.parent.parent / "config.toml")
        groups["Experiments"].append((f"{experiment}-{version}", md, md.parent, title))
    index = ["# Results", "", "Generated from the committed results files at build time: the benchmarks"]
    index += ["(`nox -s bench`, `benchmarks/*.py`) and every experiment version's reproduction.", ""]
    for caption, pages in groups.items():
        index += ["```{toctree}", ":maxdepth: 1", f":caption: {caption}", ""]
        for slug, md, folder, title in pages:
            target = out / slug
            text = _unlink_outside(md.read_text())
            if title is not None:  # "# byte_lm v3" says little: the heading names what the version is
                first, _, rest = text.partition("\n")
                text = f"# {title}\n{rest}" if first.startswith("# ") else text
            for png in folder.glob("*.png"):
                if png.name in text:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(png, target / png.name)
            _write(target / "index.md", text)
            index.append(f"{slug}/index")
        index += ["```", ""]
    _write(out / "index.md", "\n".join(index))


def check_coverage(app: Sphinx) -> None:
    total, missing = coverage()
    for name in missing:
        log.warning(f"public name without a docstring: {name}", type="tracetorch", subtype="docstring")
    report = {"public_names": total, "documented": total - len(missing), "missing": missing}
    _write(Path(app.srcdir) / "_generated" / "coverage.json", json.dumps(report, indent=1) + "\n")


def generate(app: Sphinx) -> None:
    out = Path(app.srcdir) / "_generated"
    api_pages(out / "api")
    neuron_pages(out / "neurons")
    results_pages(out / "results")
    check_coverage(app)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
