"""`swinzoo list` and `swinzoo info`: thin wrappers over `swinzoo.zoo` and `swinzoo.model_info`."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from swinzoo.commands import add_trust_flag
from swinzoo.sources import FORMAT_CHOICES, model_info
from swinzoo.zoo import ENTRIES


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="table of the zoo")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run_list)
    p = subparsers.add_parser("info", help="config, parameters and GMACs of a zoo name or a checkpoint")
    p.add_argument("model", metavar="NAME|PATH")
    p.add_argument("--json", action="store_true", help="print JSON with keys name, config, params, gmacs")
    p.add_argument("--from-format", default="auto", choices=FORMAT_CHOICES, help="format of PATH (default: auto)")
    add_trust_flag(p)
    p.set_defaults(func=run_info)


def run_list(args) -> int:
    rows = []
    for e in ENTRIES:
        for w in e.weights:
            rows.append(dict(name=f"{e.name}.{w.tag}", default=w.tag == e.default_tag, version=e.version,
                             res=e.img_size, window=e.window_size, params_m=e.params_m, gmacs=e.gmacs, top1=w.top1,
                             classes=w.num_classes,
                             hub=w.hub_repo or w.official_url or f"swinzoo/data/{w.package_file}"))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title="swinzoo zoo: paper params / GMACs / ImageNet-1k top-1 (* = the default weights)")
    for col in ("name", "V", "res", "win", "params M", "GMACs", "top-1", "classes"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for r in rows:
        table.add_row(r["name"] + (" *" if r["default"] else ""), str(r["version"]), str(r["res"]), str(r["window"]),
                      f"{r['params_m']:.1f}", f"{r['gmacs']:.1f}", "-" if r["top1"] is None else f"{r['top1']:.1f}",
                      str(r["classes"]))
    Console().print(table)
    return 0


def run_info(args) -> int:
    info = model_info(args.model, from_format=args.from_format, trust_checkpoint=args.trust_checkpoint)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    console = Console()
    table = Table(title=args.model, show_header=False)
    for key, value in info["config"].items():
        if key != "class_names":
            table.add_row(key, str(value))
    table.add_row("params", f"{info['params']:,}")
    table.add_row("GMACs", f"{info['gmacs']:.3f}")
    for key, value in info.items():
        if key not in ("name", "config", "params", "gmacs"):
            table.add_row(key, str(value))
    console.print(table)
    return 0
