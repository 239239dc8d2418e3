"""``tracetorch-zoo``: list, inspect, download, generate from and publish zoo models.

    tracetorch-zoo list [PATTERN]
    tracetorch-zoo info NAME_OR_ID [--card]
    tracetorch-zoo eval NAME_OR_ID [--data PATH]
    tracetorch-zoo download NAME_OR_ID
    tracetorch-zoo generate NAME_OR_ID (--prompt TEXT | --prompt-file PATH|-) [--max-bytes N] [--temperature T]
                                       [--top-k K] [--seed S] [--states SNAPSHOT]
    tracetorch-zoo push DIRECTORY OWNER/NAME [--tag TAG]

NAME_OR_ID is a registry name, ``hf-hub:owner/name@revision`` or a local directory. ``--endpoint`` and
``--token`` default to the Hugging Face client's own settings (``HF_ENDPOINT``, ``HF_TOKEN``).
``info`` shows a model's metrics and hidden-state snapshots (``--card``: its whole model card); ``eval`` reproduces
its headline metric where the test data is on this machine, or else its golden tensors, and says which.
``generate`` streams bytes to stdout as they are produced; it needs a model with a ``stream_bytes`` method
(the byte language models). The prompt is bytes: ``--prompt`` passes the command line's own bytes through
(any encoding), ``--prompt-file`` reads a file, or stdin for ``-``.

Every failure is one line on stderr (``tracetorch-zoo: what was wrong; what to do``) and a non-zero exit status:
1 for a failed command, 2 for bad arguments. ``TRACETORCH_ZOO_TRACEBACK=1`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import traceback
from pathlib import Path

from ._version import __version__
from .errors import ZooError

__all__ = ["build_parser", "main"]

# Each command imports what it needs: `--help`, `--version` and `list` run without torch (about 3 s to import).


def _folder(name_or_id: str, args: argparse.Namespace) -> Path:
    from . import hub

    return hub.resolve_folder(name_or_id, endpoint=args.endpoint, token=args.token, cache_dir=args.cache_dir)


def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import get_entry, list_models

    names = list_models(args.pattern)
    if not names:
        print(f"no registered models match {args.pattern!r}")
    for name in names:
        e = get_entry(name)
        params = e.metadata.get("num_parameters", "?")
        print(f"{name:32s} {e.repo_id}@{e.revision[:12]}  params={params}  license={e.license or '?'}")
    return 0


def _metric_line(m: dict) -> str:
    from .card import dataset_of

    split = f" ({m['split']})" if m.get("split") else ""
    return f"  {m['name']:40s} {m['value']!s:>8s}  {dataset_of(m)[1]}{split}"


def _cmd_info(args: argparse.Namespace) -> int:
    import tracetorch as tt

    from . import hub
    from .pretrained import list_snapshots, read_config, snapshot_path
    from .registry import get_entry

    folder = _folder(args.name, args)
    cfg = read_config(folder)
    meta = cfg.get("metadata", {})
    if args.card:
        card = folder / "README.md"
        print(card.read_text() if card.is_file() else f"(no model card in {folder})")
        return 0
    print(f"# {meta.get('name', cfg['architecture'])}")
    print(f"architecture: {cfg['architecture']}  parameters: {cfg['num_parameters']:,}")
    names = list_snapshots(folder)
    if hub.parse_id(args.name)[0] == "registry":
        e = get_entry(args.name)
        names = [n for n in names if f"states/{n}.safetensors" in e.files]  # only what the entry pins
        size = e.metadata.get("size_bytes")
        where = "embedded in tracetorch-zoo" if e.embedded else "downloaded"
        print(f"source: {e.repo_id}@{e.revision} ({where}{f', {size / 1e6:.1f} MB' if size else ''})")
        print(f"license: {e.license or '?'}")
    elif meta.get("license"):
        print(f"license: {meta['license']}")
    if meta.get("experiment"):
        sha = meta.get("git_sha", "?")[:12]
        print(f"produced by: experiment {meta['experiment']} {meta.get('version', '')} (git {sha})")
    for title, key in (("metrics", "metrics"), ("compared with", "comparisons")):
        if meta.get(key):
            print(f"{title}:")
            for m in meta[key]:
                print(_metric_line(m))
    print("snapshots:" + ("" if names else " none"))
    for name in names:
        _, info = tt.read_states(snapshot_path(folder, name))
        what = info.get("meaning") or ", ".join(f"{k}={v}" for k, v in sorted(info.items()) if k != "architecture")
        print(f"  {name}: {what}")
    print(f"folder: {folder}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    report = evaluate(_folder(args.name, args), data=args.data)
    print(f"{args.name}: {report}")
    return 0 if report.ok else 1


def _cmd_download(args: argparse.Namespace) -> int:
    print(_folder(args.name, args))
    return 0


def _retain_freed_memory() -> None:
    """Keep freed heap memory in this process (glibc) instead of returning it to the OS and faulting it back
    in on the next step: about 1.5x faster streaming on the machines measured. The CLI owns its process, so
    it may; the library never changes allocator settings."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _prompt_bytes(args: argparse.Namespace) -> bytes:
    """The prompt's bytes: ``--prompt`` as the command line gave them (``os.fsencode`` undoes the surrogate
    escapes Python decodes argv with, so non-UTF-8 bytes survive), or ``--prompt-file`` (``-``: stdin)."""
    if args.prompt_file is None:
        return os.fsencode(args.prompt)
    if args.prompt_file == "-":
        return sys.stdin.buffer.read()
    path = Path(args.prompt_file)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    return path.read_bytes()


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from . import hub

    _retain_freed_memory()
    model = hub.load(args.name, states=args.states, endpoint=args.endpoint, token=args.token, cache_dir=args.cache_dir)
    if not hasattr(model, "stream_bytes"):
        raise ZooError(f"{args.name} ({type(model).__name__}) is not a byte language model: it has no stream_bytes()")
    generator = torch.Generator().manual_seed(args.seed)
    out = sys.stdout.buffer
    prompt = _prompt_bytes(args)
    out.write(prompt)
    out.flush()
    with torch.no_grad():
        for chunk in model.stream_bytes(
            prompt, max_bytes=args.max_bytes, temperature=args.temperature, top_k=args.top_k, generator=generator
        ):
            out.write(chunk)
            out.flush()  # bytes appear as they are generated
    out.write(b"\n")
    out.flush()
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from . import hub

    sha = hub.push_to_hub(args.directory, args.repo_id, tag=args.tag, endpoint=args.endpoint, token=args.token)
    print(sha)
    return 0


def _count(text: str) -> int:
    """An integer >= 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _temperature(text: str) -> float:
    """A finite number >= 0 (argparse type; ``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _hub_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--endpoint", default=default, help="Hub endpoint (default: the client's, HF_ENDPOINT)")
    parser.add_argument("--token", default=default, help="Hub token (default: the client's, HF_TOKEN)")
    parser.add_argument("--cache-dir", default=default, metavar="PATH", help="download cache (default: the client's)")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser. The Hub options go before or after the subcommand."""
    ap = argparse.ArgumentParser(prog="tracetorch-zoo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"tracetorch-zoo {__version__}")
    _hub_options(ap, None)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model = "a registry name, hf-hub:owner/name@revision, or a local directory"

    def command(name: str, help: str, fn) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _hub_options(p, argparse.SUPPRESS)  # given here, it overrides; absent, the top-level value stays
        p.set_defaults(fn=fn)
        return p

    p = command("list", "list the registered models", _cmd_list)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern of names (default: all)")
    p = command("info", "show a model's metrics, snapshots and source", _cmd_info)
    p.add_argument("name", metavar="NAME_OR_ID", help=model)
    p.add_argument("--card", action="store_true", help="print the whole model card instead")
    p = command("eval", "reproduce the headline metric (or the golden tensors) and say which", _cmd_eval)
    p.add_argument("name", metavar="NAME_OR_ID", help=model)
    p.add_argument("--data", default=None, help="folder or file holding the test data (default: where it is installed)")
    p = command("download", "fetch a model into the cache and print its folder", _cmd_download)
    p.add_argument("name", metavar="NAME_OR_ID", help=model)
    p = command("generate", "stream bytes from a byte language model", _cmd_generate)
    p.add_argument("name", metavar="NAME_OR_ID", help=model)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt's text (its bytes, in any encoding)")
    prompt.add_argument("--prompt-file", metavar="PATH", help="read the prompt's bytes from a file ('-': stdin)")
    p.add_argument("--max-bytes", type=_count, default=256, help="bytes to generate (>= 0, default 256)")
    p.add_argument("--temperature", type=_temperature, default=1.0, help="finite, >= 0 (0: greedy; default 1)")
    p.add_argument("--top-k", type=_count, default=0, help=">= 0 (0, the default: no top-k truncation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--states", default=None, help="hidden-state snapshot to start from (default: zero states)")
    p = command("push", "publish a save_pretrained directory to a Hub repository", _cmd_push)
    p.add_argument("directory", help="a folder written by save_pretrained")
    p.add_argument("repo_id", metavar="OWNER/NAME", help="the Hub repository (created if missing)")
    p.add_argument("--tag", default=None, help="tag the pushed commit (an existing tag is moved)")
    return ap


def _fail(message: str) -> int:
    print(f"tracetorch-zoo: {' '.join(message.split())}", file=sys.stderr)  # one line
    if os.environ.get("TRACETORCH_ZOO_TRACEBACK"):
        traceback.print_exc()
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 bad arguments, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)  # --help and --version exit here, before any heavy import
        return args.fn(args)
    except BrokenPipeError:  # `tracetorch-zoo info NAME | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        print("tracetorch-zoo: interrupted", file=sys.stderr)
        return 130
    except (ZooError, FileNotFoundError, ValueError) as exc:  # StateLoadError is a ValueError
        return _fail(str(exc))
    except RuntimeError as exc:
        if type(exc).__module__.startswith("tracetorch"):  # StateError, ExportError: messages meant for users
            return _fail(str(exc))
        return _fail(_unexpected(exc))
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}")
    except Exception as exc:  # a bug of ours: still one line, and where to look
        return _fail(_unexpected(exc))


def _unexpected(exc: BaseException) -> str:
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug in tracetorch-zoo? rerun with TRACETORCH_ZOO_TRACEBACK=1 "
        "and report the traceback)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
