"""`python -m swinzoo.converters FORMAT SRC OUT`: read FORMAT into a swinzoo .safetensors file;
`python -m swinzoo.converters FORMAT --export SRC OUT`: write a swinzoo file out as FORMAT. No transfer, no zoo:
the thin script over one format module (`swinzoo convert` / `swinzoo export` do the rest).

Errors are one line on stderr, as `swinzoo`'s: bad input (a `SwinzooError`) exits 2, the disk (an OS error) and
anything else 1; `SWINZOO_DEBUG=1` shows the traceback. An existing OUT is refused unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swinzoo.converters import FORMATS, native, write
from swinzoo.errors import OneLineParser, SwinzooError, exit_code
from swinzoo.io import check_new_file

PROG = "python -m swinzoo.converters"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("format", choices=[name for name in FORMATS if name != "swinzoo"],
                   help="; ".join(f"{name}: {f.summary}" for name, f in FORMATS.items() if name != "swinzoo"))
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--export", action="store_true", help="SRC is a swinzoo checkpoint; write FORMAT to OUT")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT (a folder export replaces only "
                   "its own files in it)")
    p.add_argument("--allow-numeric-change", action="store_true", help="torchvision export of a V2 model with "
                   "pretrained windows (its biases change)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow a full (unsafe) torch.load")
    return p


def convert(args: argparse.Namespace) -> None:
    src, out = Path(args.src), Path(args.out)
    if not src.exists():
        raise SwinzooError(f"{src} does not exist; give the {'swinzoo checkpoint' if args.export else args.format} "
                           "file or folder to read")
    # refused before reading: a file or folder this script did not write is not replaced unasked
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise SwinzooError(f"{out} exists and is not empty; pass --overwrite to write into it, or choose another OUT")
    if not out.is_dir():
        check_new_file(out, args.overwrite)
    fmt = FORMATS[args.format]
    if args.export:
        write(native.read(src), args.format, out, allow_numeric_change=args.allow_numeric_change,
              overwrite=args.overwrite)
    else:
        checkpoint = fmt.read(src, None, "", args.trust_checkpoint, None)
        checkpoint.provenance = {"source": str(args.src), "format": fmt.name}
        native.write(checkpoint, out, overwrite=args.overwrite)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    """Run the script on `argv`; returns the exit code (errors reported as one line on stderr, as `swinzoo`'s)."""
    return exit_code(lambda: convert(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
