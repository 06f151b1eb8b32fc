"""`python -m swinzoo.converters FORMAT SRC OUT`: read FORMAT into a swinzoo .safetensors file;
`python -m swinzoo.converters FORMAT --export SRC OUT`: write a swinzoo file out as FORMAT. No transfer, no zoo:
the thin script over one format module (`swinzoo convert` / `swinzoo export` do the rest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from swinzoo.converters import FORMATS, native


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m swinzoo.converters", description=__doc__.splitlines()[0])
    p.add_argument("format", choices=[name for name in FORMATS if name != "swinzoo"],
                   help="; ".join(f"{name}: {f.summary}" for name, f in FORMATS.items() if name != "swinzoo"))
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--export", action="store_true", help="SRC is a swinzoo checkpoint; write FORMAT to OUT")
    p.add_argument("--allow-numeric-change", action="store_true", help="torchvision export of a V2 model with "
                   "pretrained windows (its biases change)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow a full (unsafe) torch.load")
    args = p.parse_args(argv)
    fmt = FORMATS[args.format]
    if args.export:
        fmt.write(native.read(args.src), args.out, allow_numeric_change=args.allow_numeric_change)
    else:
        checkpoint = fmt.read(Path(args.src), None, "", args.trust_checkpoint, None)
        checkpoint.provenance = {"source": str(args.src), "format": fmt.name}
        native.write(checkpoint, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
