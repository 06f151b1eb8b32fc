"""swinzoo's environment variables, the values each takes, and the check the CLI runs before any command.

Where each is read stays where it acts (`swinzoo.models.cpu_gemm` reads SWINZOO_CPU_GEMM and SWINZOO_PACK_WEIGHTS,
`swinzoo.models.fast_path` SWINZOO_CPU_ATTENTION, at import, with a warning for a bad value, as a library must not
exit its caller); the CLI refuses a bad value up front (`check_environment`), so a typo is one `error:` line, exit 2,
instead of the default run silently.
The table users read is docs/scripting.md#environment-variables; a test holds it to `DOCUMENTED` here.
"""

from __future__ import annotations

import os
import warnings

from swinzoo.errors import DEBUG_ENV, DEBUG_OFF, DEBUG_ON, SwinzooError

HUB_TIMEOUT_ENV = "SWINZOO_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 10.0
CACHE_ENV = "SWINZOO_CACHE"

# the variables with a fixed set of values (compared lower-cased; empty is the same as unset); the modules that
# read them hold their own names and tuples (a test holds them equal)
CHOICES: dict[str, tuple[str, ...]] = {
    "SWINZOO_CPU_GEMM": ("auto", "onednn", "aten"),
    "SWINZOO_PACK_WEIGHTS": ("0", "1"),
    "SWINZOO_CPU_ATTENTION": ("auto", "eager", "sdpa"),
    "SWINZOO_MALLOC": ("keep", "default"),
}
MEANING = {
    "SWINZOO_CPU_GEMM": "the library of fp32 products on the CPU",
    "SWINZOO_PACK_WEIGHTS": "0 keeps one copy of eval-mode Linear weights",
    "SWINZOO_CPU_ATTENTION": "how inference computes attention on the CPU",
    "SWINZOO_MALLOC": "default leaves glibc's malloc as it is",
}
DEFAULTS = {"SWINZOO_CPU_GEMM": "auto", "SWINZOO_PACK_WEIGHTS": "1", "SWINZOO_CPU_ATTENTION": "auto",
            "SWINZOO_MALLOC": "keep"}
# every variable a user may set; swinzoo sets others for the processes it starts (named _SWINZOO_*)
DOCUMENTED = (DEBUG_ENV, HUB_TIMEOUT_ENV, CACHE_ENV, *CHOICES)


def environment_choice(name: str) -> str:
    """A library module's reading of one of `CHOICES` at import: the value lower-cased, else its default (unset or
    empty, or not one of the values: then with a warning naming the variable, as a library must not exit its
    caller)."""
    raw = os.environ.get(name, "").lower()
    if raw and raw not in CHOICES[name]:
        warnings.warn(f"{name}={raw!r} is not one of {', '.join(CHOICES[name])}: using {DEFAULTS[name]!r}",
                      stacklevel=2)
        return DEFAULTS[name]
    return raw or DEFAULTS[name]


def hub_timeout() -> float:
    """Seconds to wait to connect and for each answer: `SWINZOO_HUB_TIMEOUT`, default 10."""
    raw = os.environ.get(HUB_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise SwinzooError(f"{HUB_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; unset it for the default "
                           f"({DEFAULT_HUB_TIMEOUT:g})")
    return value


def check_environment() -> None:
    """Every SWINZOO_* variable with a fixed set of values holds one of them (the first that does not is a
    `SwinzooError` naming the variable, its values and its default)."""
    raw = os.environ.get(DEBUG_ENV, "").strip()
    if raw and raw.lower() not in DEBUG_ON + DEBUG_OFF:
        raise SwinzooError(f"{DEBUG_ENV}={raw!r} is not one of 0, 1 (or false/true, no/yes, off/on): 1 shows "
                           "tracebacks instead of one-line errors; unset it for the default (0)")
    for name, values in CHOICES.items():
        raw = os.environ.get(name, "")  # unstripped, as the modules reading them compare it
        if raw and raw.lower() not in values:
            raise SwinzooError(f"{name}={raw!r} is not one of {', '.join(values)} ({MEANING[name]}); unset it for "
                               f"the default ({DEFAULTS[name]})")
    hub_timeout()
