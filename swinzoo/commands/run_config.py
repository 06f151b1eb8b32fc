"""Which Trainer options a `swinzoo finetune` / `pretrain` command gives, and the config `--print-config` prints.

A Trainer option applies when it is given, on the command line or in a --config file, whatever its value:
`--trainer.gradient_clip_val null` turns the recipe's clipping off although null is Lightning's default, so the
options cannot be told from the parser's defaults by value. They are what the parser finds without its defaults.
For the same reason the printed config holds the given Trainer options only and lists the others as comments:
written out as keys, Lightning's defaults would come back through --config as given, and override the recipe."""

from __future__ import annotations

import yaml

from swinzoo.errors import SwinzooError
from swinzoo.train.options import as_plain, is_plain

# what `--print-config=FLAGS` may ask of jsonargparse's dump (skip_null: its older name for skip_unset)
PRINT_FLAGS = {"skip_default": "skip_default", "skip_unset": "skip_unset", "skip_null": "skip_unset"}


def print_request(argv: list[str], verb: str) -> tuple[list[str], dict | None]:
    """argv without `--print_config[=FLAGS]` (normalise_argv's spelling of --print-config), and the `dump`
    keywords it asks for; None when it is not there."""
    rest, request = [], None
    for arg in argv:
        name, _, flags = arg.partition("=")
        if name != "--print_config":
            rest.append(arg)
            continue
        request = {}
        for flag in filter(None, flags.split(",")):
            if flag not in PRINT_FLAGS:
                raise SwinzooError(f"swinzoo {verb}: --print-config={flags}: {flag!r} is not a flag; give "
                                   "--print-config alone, or with skip_default, skip_unset")
            request[PRINT_FLAGS[flag]] = True
    return rest, request


def given_trainer(given, parser) -> dict:
    """The Trainer options in `given` (the parse without defaults), as plain data. A callback or logger holds the
    init_args given only: its class fills in the rest when it is built, some of which YAML and run.json cannot
    hold (StochasticWeightAveraging's device is a torch.device).

    A config that lists every plain Trainer argument is a --print-config file of an earlier version, which wrote
    them all at their defaults: there only the values that differ from Lightning's count as given."""
    trainer = as_plain(given.get("trainer") or {})
    defaults = as_plain(parser.get_defaults().as_dict().get("trainer") or {})
    plain = {k for k, v in defaults.items() if is_plain(v) and v is not None}
    if isinstance(trainer, dict) and plain and plain <= set(trainer):  # not a mapping: refused later, in one line
        # by type as well: limit_val_batches=1 (one batch) is not the default 1.0 (all batches)
        trainer = {k: v for k, v in trainer.items() if v != defaults.get(k) or type(v) is not type(defaults.get(k))}
    return trainer


def printed_config(parser, cfg, given, flags: dict) -> str:
    """The merged config as YAML, its Trainer options the given ones (`flags` do not drop them: given, they
    apply), then every other Trainer argument with Lightning's default, commented out."""
    rest = cfg.clone()
    if "trainer" in rest:
        del rest["trainer"]
    text = parser.dump(rest, skip_unset=False, **flags)
    trainer = {}
    if given.get("trainer"):
        shown = rest.clone()
        shown["trainer"] = given["trainer"]
        trainer = yaml.safe_load(parser.dump(shown, skip_unset=False))["trainer"]
        text += yaml.safe_dump({"trainer": trainer}, sort_keys=False, default_flow_style=False, allow_unicode=True)
    defaults = as_plain(parser.get_defaults().as_dict().get("trainer") or {})
    others = {k: v for k, v in defaults.items() if k not in trainer and is_plain(v)}
    if not others:
        return text
    listed = yaml.safe_dump(others, sort_keys=False, default_flow_style=False).splitlines()
    return (text + "# the other lightning.Trainer arguments, at Lightning's defaults (or the recipe's: clipping,\n"
            "# accumulation); to set one, give it under trainer:\n" + "".join(f"#   {line}\n" for line in listed))
