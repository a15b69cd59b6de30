"""``sepkit models``: the pretrained models shipped in pretrained/.

``sepkit models list`` prints one line per model; ``sepkit models show NAME``
prints its config and model card.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "models",
        help="list the pretrained models or show one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="one line per model")
    show = sub.add_parser("show", help="config and model card of one model")
    show.add_argument("name", metavar="NAME")
    return p


def run(args) -> int:
    from ..pretrained import list_models, model_info

    if args.action == "list":
        names = list_models()
        if not names:
            print("no pretrained models found")
            return 0
        print(f"{'name':<32} {'kind':<13} {'rate Hz':>8} {'ch':>4} {'src':>4} {'MB':>6}")
        for name in names:
            try:
                info = model_info(name)
            except (ValueError, OSError) as err:
                # One broken folder must not hide the others (audit): its row says why.
                print(f"{name:<32} unreadable: {err}")
                continue
            rate = info.get("sample_rate")
            # A source model serves any number of channels and sources (>= 1 each).
            anyk = "any" if info.get("kind") == "source_model" else "?"
            print(
                f"{name:<32} {str(info.get('kind', '?')):<13} "
                f"{('-' if rate is None else f'{rate:g}'):>8} {info.get('n_channels', anyk):>4} "
                f"{info.get('n_sources', anyk):>4} {info.get('size_bytes', 0) / 2**20:>6.2f}"
            )
        return 0
    info = model_info(args.name)
    card = info.pop("card")
    print(json.dumps(info, indent=2))
    if card:
        print()
        print(card.rstrip())
    return 0
