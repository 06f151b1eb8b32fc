"""One module per CLI verb; each exposes `register(subparsers)`. Shared argument types below."""

import argparse


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


def add_trust_flag(p) -> None:
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="trust the file: allow a full (unsafe) torch.load of checkpoints holding Python objects")
