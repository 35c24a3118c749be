"""Command-line options generated from the dataclasses the library uses (in the spirit of ``HfArgumentParser``).

A command function declares a parameter typed with a dataclass (``options: ScoreOptions``); the
:func:`generated_options` decorator replaces it, in the signature typer reads, by one option per field,
and hands the function the dataclass instance built from what the user typed. So an option is declared
once, as a field with ``metadata``, and its flag, type, default and help follow from it:

- flag ``--field-name`` (plus an optional suffix), ``--x/--no-x`` for ``bool`` fields;
- type from the annotation (``str``, ``int``, ``float``, ``bool``, ``Path``, ``list[...]``, ``X | None``);
- ``metadata``: ``help``; ``choices`` (or ``cli_choices`` where the CLI allows fewer than the library);
  ``cli_default`` where the CLI's default differs; ``min`` (checked, naming the flag; shown unless 0 or 1, the
  bounds a count or amount goes without saying); ``escapes``
  (backslash escapes are read: ``--separator '\\n'`` means a newline, as users expect);
- a field whose type is a dataclass (or ``X | None``, or that names one in ``flatten``) is flattened into
  that dataclass's fields, and left at its default if none of them is given.

Every generated option defaults to ``None`` internally and the help shows the field's default, so the
command can tell what the user set: a parameter named ``explicit`` receives ``{option name: value}`` of the
options given (``fluxprm score`` lets a model's trained segmentation win over defaults not given).
"""

from __future__ import annotations

import inspect
import math
import types
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping, Optional, Union, get_args, get_origin, get_type_hints

import typer

__all__ = ["Expand", "choices", "generated_options", "option_names", "read_escapes", "show_escapes"]

_SCALARS = (str, int, float, bool, Path)


@dataclass(frozen=True)
class Expand:
    """How one dataclass parameter becomes options: a flag suffix (``--id-field`` from ``FieldMap.id``),
    metadata merged over the fields' own (keyed by field name), and fields left out.

    ``of=Cls`` on a ``dict`` parameter generates ``Cls``'s options but passes only ``{field: value}`` of those
    the user gave, without building ``Cls``: for a config that layers a file under the flags (``fluxprm train``).
    """

    suffix: str = ""
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    of: type | None = None


@dataclass(frozen=True)
class _Option:
    kwarg: str                 # the keyword typer passes (unique in the command)
    path: tuple[str, ...]      # where the value goes: ("steps", "separator")
    flag: str                  # "--separator"
    meta: Mapping[str, Any]
    parameter: inspect.Parameter


def choices(name: str, values: Iterable[str]) -> Any:
    """A ``str`` Enum of ``values``: typer's portable way to show ``a|b|c`` and refuse anything else."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[misc]


def read_escapes(text: str) -> str:
    """``'\\n\\n'`` typed on a command line → two newlines; other characters are kept as they are."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def show_escapes(text: str) -> str:
    """A string default as one would type it: ``'\\n\\n'`` is shown as ``\\n\\n``, not as two blank lines."""
    return repr(text)[1:-1] if text else "''"


def _default(f: Field, meta: Mapping[str, Any]) -> Any:
    if "cli_default" in meta:
        return meta["cli_default"]
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]


def _show_default(value: Any, flag: str, escapes: bool = False) -> str | None:
    """The default as one would type it: escaped where the option reads escapes, or where it holds characters
    a terminal cannot show (newlines); elsewhere as it is, since ``\\boxed{}`` typed to an option that does not
    read escapes means two backslashes."""
    if value is None:
        return None
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    if isinstance(value, str):
        return show_escapes(value) if escapes or not value.isprintable() else value or "''"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or None
    return str(value)


def _required(tp: Any) -> Any:
    """``X | None`` → ``X``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _nested(tp: Any, meta: Mapping[str, Any]) -> type | None:
    """The dataclass a field is flattened into: ``metadata["flatten"]`` (a class, or True), or its own type."""
    flatten = meta.get("flatten")
    cls = flatten if isinstance(flatten, type) else _required(tp)
    return cls if isinstance(cls, type) and is_dataclass(cls) and flatten is not False else None


def _base_type(tp: Any, where: str) -> Any:
    """The option's type; refuses types a command line cannot spell."""
    tp = _required(tp)
    if tp in _SCALARS or (get_origin(tp) is list and get_args(tp) and get_args(tp)[0] in _SCALARS):
        return tp
    raise TypeError(f"{where}: no command-line option for type {tp!r}; exclude the field or flatten it")


def _options(cls: type, spec: Expand, path: tuple[str, ...] = ()) -> list[_Option]:
    hints = get_type_hints(cls)
    made: list[_Option] = []
    for f in fields(cls):
        if f.name in spec.exclude or not f.init:
            continue
        meta = {**f.metadata, **spec.metadata.get(f.name, {})}
        tp = hints[f.name]
        nested = _nested(tp, meta)
        if nested is not None:
            made += _options(nested, spec, path + (f.name,))
            continue
        tp = _base_type(tp, f"{cls.__name__}.{f.name}")
        name = f.name + spec.suffix.lstrip("-").replace("-", "_")
        flag = "--" + name.replace("_", "-")
        allowed = meta.get("cli_choices") or meta.get("choices")
        enum = choices(f"{cls.__name__}_{f.name}", allowed) if allowed else None
        help_text = meta.get("help", "")
        if get_origin(tp) is list:
            help_text += " Repeat the flag for several values."
        shown = _show_default(_default(f, meta), flag, bool(meta.get("escapes")))
        facts = [f"default: {shown}"] if shown is not None else []
        if meta.get("min") not in (None, 0, 1):  # checked in _build; said where a user could not guess it
            facts.append(f"minimum: {meta['min']}")
        if facts:
            help_text += f"  [{'; '.join(facts)}]"
        decls = (f"{flag}/--no-{flag[2:]}",) if tp is bool else (flag,)
        option = typer.Option(*decls, help=help_text, show_default=False)
        param = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                  annotation=Annotated[Optional[enum or tp], option])
        made.append(_Option(name, path + (f.name,), flag, meta, param))
    return made


def _construct(cls: type, values: dict[tuple[str, ...], Any]) -> Any:
    """``cls(**values)``, nested dataclasses built from their own values; unset fields keep their defaults."""
    kwargs: dict[str, Any] = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        nested = {p[1:]: v for p, v in values.items() if p[0] == f.name and len(p) > 1}
        if nested:
            kwargs[f.name] = _construct(_nested(hints[f.name], f.metadata), nested)  # type: ignore[arg-type]
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def _build(cls: type, options: list[_Option], kwargs: dict[str, Any], construct: bool = True
           ) -> tuple[Any, dict[str, Any]]:
    """Pop this group's options from ``kwargs``; return the dataclass (or, without ``construct``, the dict of
    the fields given) and ``{option name: value}`` of the options given."""
    values: dict[tuple[str, ...], Any] = {}
    explicit: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for opt in options:
        value = kwargs.pop(opt.kwarg)
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, (list, tuple)):
            value = list(value) or None
        if isinstance(value, str) and opt.meta.get("escapes"):
            try:
                value = read_escapes(value)
            except UnicodeDecodeError as exc:
                raise typer.BadParameter(f"bad backslash escape in {value!r} ({exc.reason})",
                                         param_hint=opt.flag) from None
        if isinstance(value, float) and not math.isfinite(value):  # `--max-wait-ms inf`: no option means "nan"
            raise typer.BadParameter(f"must be a finite number, got {value}", param_hint=opt.flag)
        if value is not None and "min" in opt.meta and value < opt.meta["min"]:
            raise typer.BadParameter(f"must be >= {opt.meta['min']}, got {value}", param_hint=opt.flag)
        if value is not None:
            explicit[opt.kwarg] = given[opt.path[-1]] = value
        elif "cli_default" in opt.meta:
            value = opt.meta["cli_default"]
        if value is not None:
            values[opt.path] = value
    if not construct:
        return given, explicit
    try:
        return _construct(cls, values), explicit
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None


def _expansion(annotation: Any) -> tuple[type, Expand] | None:
    """The dataclass (and how) a parameter's options come from, or None for an ordinary parameter."""
    spec = Expand()
    if get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        spec = next((e for e in extras if isinstance(e, Expand)), spec)
    cls = spec.of or annotation
    return (cls, spec) if isinstance(cls, type) and is_dataclass(cls) else None


def generated_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """A typer command whose dataclass-typed parameters are spread into one option per field (see module doc)."""
    signature = inspect.signature(func, eval_str=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[_Option], bool]] = {}
    for p in signature.parameters.values():
        expansion = _expansion(p.annotation)
        if p.name == "explicit":
            continue
        if expansion is None:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        cls, spec = expansion
        groups[p.name] = (cls, _options(cls, spec), spec.of is None)
        params += [o.parameter for o in groups[p.name][1]]
    names = [p.name for p in params]
    if len(names) != len(set(names)):
        raise TypeError(f"{func.__name__}: two options share a name: "
                        f"{sorted({n for n in names if names.count(n) > 1})}")

    def command(**kwargs: Any) -> Any:
        explicit: dict[str, Any] = {}
        for name, (cls, options, construct) in groups.items():
            kwargs[name], given = _build(cls, options, kwargs, construct)
            explicit.update(given)
        if "explicit" in signature.parameters:
            kwargs["explicit"] = explicit
        return func(**kwargs)

    command.__name__, command.__qualname__ = func.__name__, func.__qualname__
    command.__doc__, command.__module__ = func.__doc__, func.__module__
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def option_names(cls: type, spec: Expand | None = None) -> list[str]:
    """The flags generated for ``cls`` (for tests and docs): ``["--separator", "--min-chars", ...]``."""
    return [o.flag for o in _options(cls, spec or Expand())]
