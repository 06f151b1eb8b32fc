"""One module per CLI verb; each exposes `register(subparsers)`. Shared argument types below.

Verb modules import the library inside their run functions, not at the top: building the parser (and so
`swinzoo --help`) must not pay for importing torch and Lightning. The format names are spelled out here for the
same reason; a test holds them equal to `swinzoo.converters.FORMATS`.
"""

import argparse

from swinzoo.json_text import strict_dumps

FORMAT_CHOICES = ("auto", "swinzoo", "official", "timm", "hf", "torchvision", "mmdet", "simmim")
EXPORT_CHOICES = ("official", "timm", "hf", "torchvision", "mmdet", "simmim", "onnx", "pt2")
# what every verb reading a model takes (swinzoo.sources reads them all), said once so the verbs agree
SOURCE_HELP = "zoo name, model file or folder (a fine-tune's output, or any --from-format), or hf-hub:ORG/NAME[@REV]"


def examples(*commands: str) -> str:
    """An epilog listing example command lines (shown as written: see `cli.HelpFormatter`)."""
    return "examples:\n" + "\n".join(f"  {c}" for c in commands)


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports the flag and the value in one line)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "0 or more")


def table_console(width: int):
    """A rich Console for printing a table: the terminal's own, or `width` columns when the output is piped (rich
    would otherwise assume 80 and wrap rows or cut digits)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=width)


def print_json(document, indent: int | None = None) -> None:
    """`document` on stdout as one strict JSON document (RFC 8259): a NaN or infinite float, which Python's json
    writes as bare NaN / Infinity and JSON.parse, Go, Rust and `jq --strict`-style readers refuse, is null."""
    print(strict_dumps(document, indent=indent), flush=True)


# the reading flags' help, the same under argparse (`add_reading_flags`) and jsonargparse (finetune, pretrain)
TRUST_HELP = "trust the file: allow a full (unsafe) torch.load of checkpoints holding Python objects"
EMA_HELP = ("a training checkpoint's EMA weights (timm's state_dict_ema, torchvision's model_ema) or, --no-ema, its "
            "trained weights (default: the EMA where there is one, as timm's load_checkpoint)")


def add_trust_flag(p) -> None:
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)


def add_reading_flags(p, what: str = "MODEL") -> None:
    """How a verb reads its model, the same on every verb that reads one (`swinzoo.read_checkpoint`'s keywords):
    an error that says "pass --arch" or "--no-ema" must name a flag the verb has."""
    p.add_argument("--from-format", default="auto", choices=FORMAT_CHOICES, help=f"format of {what} (auto: detected)")
    p.add_argument("--arch", metavar="NAME", help=f"zoo name giving {what}'s architecture where the file cannot "
                   "(e.g. bare V2 weights, which do not tell their window)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None, help=EMA_HELP)
    add_trust_flag(p)


def reading_kwargs(args) -> dict:
    """The keywords `add_reading_flags` gives, for `read_checkpoint` and every function that reads a model."""
    return dict(from_format=args.from_format, arch=args.arch, ema=args.ema, trust_checkpoint=args.trust_checkpoint)
