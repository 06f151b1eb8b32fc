"""The `swinzoo` command: a thin dispatcher over one module per verb in `swinzoo.commands`.

Each command module has `register(subparsers)`, which adds its parser and sets `func`. `cli_main(args)` runs in
process (tests call it directly) and turns a `SwinzooError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from swinzoo.errors import SwinzooError

COMMAND_MODULES = (
    "swinzoo.commands.zoo",  # list, info
    "swinzoo.commands.convert",  # convert, export
    "swinzoo.commands.push",  # push
    "swinzoo.commands.download",  # download
    "swinzoo.commands.bench",  # bench
    "swinzoo.commands.finetune",  # finetune
    "swinzoo.commands.eval",  # eval, predict
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinzoo", description="Swin Transformer V1/V2 zoo, converters, fine-tuning.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def cli_main(args: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(args)
    try:
        return int(ns.func(ns) or 0)
    except SwinzooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def main() -> None:
    sys.exit(cli_main())


if __name__ == "__main__":
    main()
