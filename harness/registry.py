"""Method discovery: the modules of `methods/` plus the `harness.methods` entry-point group.

The contract (`harness.api`) only holds the `register` decorator and the names it collected; this
module is what imports the plug-ins, so no arrow runs from the contract to its plug-ins.
`check_hparams` validates `--hp METHOD.KEY=VALUE` overrides before any work starts.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from harness.api import REGISTERED, AdaptationMethod, register
from harness.errors import BadInput

_discovered = False


def discover(refresh: bool = False) -> None:
    """Import every module of the `methods` package and every `harness.methods` entry point."""
    global _discovered
    if _discovered and not refresh:
        return
    import methods as pkg

    if not getattr(pkg, "HARNESS_METHODS", False):   # e.g. a methods/ folder in the working directory
        where = getattr(pkg, "__file__", None) or ", ".join(getattr(pkg, "__path__", [])) or "?"
        raise BadInput(f"the `methods` package found first ({where}) is not the harness's: another methods/ "
                       "folder shadows it; run from another folder")
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"{pkg.__name__}.{info.name}")
            except Exception as e:   # noqa: BLE001 - a broken plug-in is the user's file: name it, one line
                line = f", line {e.lineno}" if isinstance(e, SyntaxError) else ""
                why = (e.msg if isinstance(e, SyntaxError) else str(e)).splitlines() or [""]
                raise BadInput(f"methods/{info.name}.py{line} cannot be imported ({type(e).__name__}: "
                               f"{why[0]}); fix or remove it") from None
    for ep in entry_points(group="harness.methods"):
        try:
            obj = ep.load()
        except Exception as e:   # noqa: BLE001 - a broken installed plug-in: one line, as a broken file
            why = (str(e).splitlines() or [""])[0]
            raise BadInput(f"entry point harness.methods:{ep.name} ({ep.value}) cannot be loaded "
                           f"({type(e).__name__}: {why}); fix or uninstall it") from None
        if isinstance(obj, type) and issubclass(obj, AdaptationMethod) and obj.name not in REGISTERED:
            register(obj)
    _discovered = True


def all_methods() -> dict[str, type[AdaptationMethod]]:
    """Every registered method by name, sorted."""
    discover()
    return dict(sorted(REGISTERED.items()))


def get_method(name: str) -> type[AdaptationMethod]:
    """The method class called `name`; an unknown name is bad input naming the known ones."""
    methods = all_methods()
    if name not in methods:
        raise BadInput(f"unknown method '{name}' (known: {', '.join(methods)})")
    return methods[name]


def check_hparams(methods: list[str], overrides: dict[str, dict[str, Any]]) -> None:
    """Unknown methods, and overrides of unknown or mistyped hyper-parameters, are bad input."""
    for m in methods:
        get_method(m)
    for m, hp in overrides.items():
        if m not in methods:
            get_method(m)   # an unknown method is named as one first
            raise BadInput(f"--hp {m}.…: method '{m}' is not part of this run ({', '.join(methods)})")
        defaults = get_method(m).hparams
        unknown = sorted(set(hp) - set(defaults))
        if unknown:
            known = f"known: {', '.join(defaults)}" if defaults else f"{m} takes no hyper-parameters"
            raise BadInput(f"--hp {m}.{unknown[0]}: unknown hyper-parameter ({known})")
        for k, v in hp.items():
            want = type(defaults[k])
            ok = isinstance(v, want) or (want is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok or (isinstance(v, float) and not math.isfinite(v)):
                kind = "true or false" if want is bool else f"a finite {want.__name__}"
                raise BadInput(f"--hp {m}.{k}={v!r}: expected {kind} (default {defaults[k]!r})")
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            # a step size or batch must stay positive; a weight, rate or count that defaults to >= 0 may
            # be switched off (0) but never turned negative
            positive = k in ("lr", "batch_size", "uratio") or k.endswith("_lr")
            if k == "momentum" and num and not 0 <= v < 1:   # 1 or more makes SGD's velocity grow
                raise BadInput(f"--hp {m}.{k}={v!r}: must be in [0, 1) (default {defaults[k]!r})")
            if num and ((positive and v <= 0) or (defaults[k] >= 0 and v < 0)):
                raise BadInput(f"--hp {m}.{k}={v!r}: must be {'> 0' if positive else '>= 0'} "
                               f"(default {defaults[k]!r})")
        merged = {**defaults, **hp}
        if merged.get("nesterov") and not merged.get("momentum", 1):
            raise BadInput(f"--hp {m}.momentum=0: Nesterov momentum needs momentum > 0 "
                           f"(set {m}.nesterov=False too)")
