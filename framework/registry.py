"""The plugin registry: plugins of every kind, found through Python entry points.

The core knows five kinds of its own (:data:`CORE_KINDS`): objectives, networks, datasets, metrics and CLI
commands. Any distribution may declare a further kind in the entry-point group ``anyorder.kinds``; the entry
name is the kind (singular) and its value the base class every implementation of that kind must subclass::

    [options.entry_points]
    anyorder.kinds =
        divergence = my_package.divergence:Divergence

The plugins of a kind K are registered under the entry-point group ``anyorder.<K>s``::

    [options.entry_points]
    anyorder.objectives =
        my_objective = my_package.objective_options:MyObjectiveConfig

The entry point names the plugin's *options dataclass*, a light module with no torch import. The dataclass names
its implementation class in the ``implementation`` class variable (``"module:Class"``). Reading and validating a
config therefore imports only the options of the plugins it names; the implementation (and torch) is imported
only when a run is built. Commands are the exception: their entry point names the
:class:`anyorder.command.Command` subclass itself, which takes no options.

The groups are scanned once per process. Nothing is imported by a scan; the base class of a declared kind is
imported only when an implementation of it is checked. A plugin that fails to import, or a kind declared
inconsistently, is reported with its name, distribution and error when it is used, and never hides the other
plugins or kinds.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from anyorder.errors import PluginError

CORE_KINDS: tuple[str, ...] = ("objective", "network", "dataset", "metric", "command")
"""The kinds the core defines, in the order they are listed; declared kinds follow them."""

KINDS: tuple[str, ...] = CORE_KINDS
"""The core kinds (kept for backward compatibility; :meth:`Registry.kinds` also lists the declared ones)."""

KINDS_GROUP = "anyorder.kinds"
"""The entry-point group in which distributions declare new kinds (``kind = module:BaseClass``)."""


def group_of(kind: str) -> str:
    """The entry-point group of the plugins of ``kind``: ``anyorder.<kind>s``."""
    return f"anyorder.{kind}s"


GROUPS: dict[str, str] = {kind: group_of(kind) for kind in CORE_KINDS}
"""Entry-point group of each core kind."""

# The base class every implementation of a core kind must derive from. Resolved lazily: most of these import torch.
_CORE_BASES: dict[str, str] = {
    "objective": "anyorder.objective:Objective",
    "network": "anyorder.network:Network",
    "dataset": "anyorder.data:DiscreteDataModule",
    "metric": "anyorder.metrics:SampleMetric",
    "command": "anyorder.command:Command",
}

# Kinds whose entry points name the implementation class itself rather than an options dataclass. A command
# configures itself through its own argparse arguments, so an options dataclass would only duplicate them.
_DIRECT_KINDS: frozenset[str] = frozenset({"command"})

PROGRAMMATIC = "<register()>"
"""The distribution name shown for plugins added with :func:`register` and kinds added with :func:`declare_kind`."""


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from: its kind, name, target (``module:attr``) and distribution."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        """``distribution version``, as shown in messages."""
        return f"{self.distribution} {self.version}".strip()


@dataclass(frozen=True)
class Plugin:
    """A resolved plugin: its info, its options dataclass and its one-line summary.

    For a kind whose entry points name the implementation directly (``command``), ``config_class`` is that
    implementation class.
    """

    info: PluginInfo
    config_class: type
    summary: str


@dataclass(frozen=True)
class KindInfo:
    """A plugin kind: its name, entry-point group, base class and who declares it.

    ``base`` is the base class's target (``module:Class``); ``declarations`` are the ``anyorder.kinds`` entry points
    (or the :meth:`Registry.declare_kind` call) that declare it, as infos of kind ``"kind"`` (none for a core kind
    unless a distribution wrongly declares it too); ``direct`` is true when entry points name implementation classes
    rather than options dataclasses; ``problem`` is the one-line reason the kind cannot be used, or None.
    """

    name: str
    group: str
    base: str
    declarations: tuple[PluginInfo, ...]
    direct: bool
    problem: str | None

    @property
    def core(self) -> bool:
        """Whether the core defines this kind."""
        return self.name in CORE_KINDS


def _load_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"target {target!r} is not of the form 'module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _target_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else "(no summary)"


def _direct_summary(cls: type) -> str:
    text = getattr(cls, "help", None)
    return text.strip() if isinstance(text, str) and text.strip() else _summary(cls)


class Registry:
    """Entry-point plugins and kinds plus programmatic registrations, scanned once and imported on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scanned_kinds: dict[str, list[PluginInfo]] | None = None
        self._scanned: dict[str, dict[str, list[PluginInfo]]] = {}
        self._programmatic: dict[tuple[str, str], tuple[PluginInfo, type]] = {}
        self._declared: dict[str, type | str] = {}
        self._config_cache: dict[tuple[str, str], Plugin] = {}
        self._impl_cache: dict[tuple[str, str], type] = {}
        self._base_cache: dict[str, type] = {}

    # -- scanning -------------------------------------------------------------------------------------------------
    @staticmethod
    def _read_group(group: str, kind: str) -> dict[str, list[PluginInfo]]:
        found: dict[str, list[PluginInfo]] = {}
        for ep in metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                kind=kind,
                name=ep.name,
                target=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else "?",
                version=dist.version if dist is not None else "",
            )
            claims = found.setdefault(ep.name, [])
            # An editable install can expose one distribution twice; that is not a conflict.
            if all((c.distribution, c.target) != (info.distribution, info.target) for c in claims):
                claims.append(info)
        return found

    def _declarations(self) -> dict[str, list[PluginInfo]]:
        with self._lock:
            if self._scanned_kinds is None:
                self._scanned_kinds = self._read_group(KINDS_GROUP, "kind")
            return self._scanned_kinds

    def _scan(self, kind: str) -> dict[str, list[PluginInfo]]:
        # Group by group, on first use: a kind may be declared (programmatically) after another kind was scanned.
        with self._lock:
            if kind not in self._scanned:
                self._scanned[kind] = self._read_group(group_of(kind), kind)
            return self._scanned[kind]

    def rescan(self) -> None:
        """Forget the scan and every cached import (after installing a plugin distribution in this process)."""
        with self._lock:
            self._scanned_kinds = None
            self._scanned.clear()
            self._config_cache.clear()
            self._impl_cache.clear()
            self._base_cache.clear()

    # -- kinds ----------------------------------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        """Every usable name of a kind: the core kinds, then the declared ones (sorted)."""
        declared = (set(self._declarations()) | set(self._declared)) - set(CORE_KINDS)
        return [*CORE_KINDS, *sorted(declared)]

    def group(self, kind: str) -> str:
        """The entry-point group of ``kind``'s plugins; raises on an unknown kind."""
        return self.kind_info(kind).group

    def kind_info(self, kind: str) -> KindInfo:
        """What is known of ``kind``: group, base, declarations and any problem; raises on an unknown kind."""
        declarations = tuple(self._declarations().get(kind, []))
        if kind in CORE_KINDS:
            problem = None
            if declarations:
                who = "; ".join(f"{d.origin} ({d.target})" for d in declarations)
                problem = (f"plugin kind {kind!r} is a core kind of anyorder, but {who} also declare(s) it in "
                           f"'{KINDS_GROUP}'; remove that entry point from the distribution's setup.cfg")
            return KindInfo(kind, group_of(kind), _CORE_BASES[kind], declarations, kind in _DIRECT_KINDS, problem)
        if kind in self._declared:
            base = self._declared[kind]
            target = base if isinstance(base, str) else _target_of(base)
            declaration = PluginInfo("kind", kind, target, PROGRAMMATIC, "")
            return KindInfo(kind, group_of(kind), target, (declaration,), False, None)
        if not declarations:
            raise PluginError(f"unknown plugin kind {kind!r}; the kinds are: {', '.join(self.kinds())}")
        problem = None
        if len({d.target for d in declarations}) > 1:
            who = "; ".join(f"{d.origin} ({d.target})" for d in declarations)
            problem = (f"plugin kind {kind!r} is declared with different base classes by {len(declarations)} "
                       f"distributions: {who}. Uninstall one of them, or make them agree")
        return KindInfo(kind, group_of(kind), declarations[0].target, declarations, False, problem)

    def _usable_kind(self, kind: str) -> KindInfo:
        kind_info = self.kind_info(kind)
        if kind_info.problem is not None:
            raise PluginError(kind_info.problem)
        return kind_info

    def base_class(self, kind: str) -> type:
        """The class every implementation of ``kind`` must subclass (imports it)."""
        if kind in self._base_cache:
            return self._base_cache[kind]
        kind_info = self._usable_kind(kind)
        declared = self._declared.get(kind)
        if isinstance(declared, type):
            base: Any = declared
        else:
            try:
                base = _load_target(kind_info.base)
            except Exception as exc:
                by = ", ".join(d.origin for d in kind_info.declarations) or "anyorder"
                raise PluginError(
                    f"the base class {kind_info.base!r} of plugin kind {kind!r} (declared by {by}) failed to "
                    f"load: {type(exc).__name__}: {exc}"
                ) from exc
        if not isinstance(base, type):
            raise PluginError(f"the base of plugin kind {kind!r} must be a class, not {base!r} ({kind_info.base})")
        self._base_cache[kind] = base
        return base

    def declare_kind(self, kind: str, base: type | str, *, replace: bool = False) -> None:
        """Declare the plugin kind ``kind`` in this process (for notebooks and tests).

        ``base`` is the class every implementation must subclass, or its target ``"module:Class"``. Plugins of the
        kind are then registered with :meth:`register` or found under the entry-point group ``anyorder.<kind>s``.
        """
        if not kind.isidentifier():
            raise PluginError(f"declare_kind({kind!r}, ...): a kind name must be a Python identifier")
        if kind in CORE_KINDS:
            raise PluginError(f"declare_kind({kind!r}, ...): {kind!r} is a core kind of anyorder")
        if not (isinstance(base, type) or (isinstance(base, str) and ":" in base)):
            raise PluginError(f"declare_kind({kind!r}, ...): the base must be a class or 'module:Class', not {base!r}")
        target = base if isinstance(base, str) else _target_of(base)
        if not replace:
            existing = self.kind_info(kind) if kind in self.kinds() else None
            # Settling a conflict between distributions is a choice, so it takes replace=True as well.
            if existing is not None and (existing.base != target or existing.problem is not None):
                who = ", ".join(d.origin for d in existing.declarations)
                raise PluginError(
                    f"plugin kind {kind!r} is already declared by {who} with base {existing.base!r}; "
                    f"pass replace=True to redeclare it in this process"
                )
        self._declared[kind] = base
        self._forget_kind(kind)

    def undeclare_kind(self, kind: str) -> None:
        """Remove a programmatic kind declaration (the plugins registered for it stay until unregistered)."""
        self._declared.pop(kind, None)
        self._forget_kind(kind)

    def _forget_kind(self, kind: str) -> None:
        self._base_cache.pop(kind, None)
        for cache in (self._config_cache, self._impl_cache):
            for key in [k for k in cache if k[0] == kind]:
                del cache[key]

    # -- lookup ---------------------------------------------------------------------------------------------------
    def _check_kind(self, kind: str) -> None:
        self.kind_info(kind)

    def names(self, kind: str) -> list[str]:
        """Every registered name of ``kind``, sorted."""
        self._check_kind(kind)
        names = set(self._scan(kind)) | {n for (k, n) in self._programmatic if k == kind}
        return sorted(names)

    def claims(self, kind: str, name: str) -> list[PluginInfo]:
        """Every registration of ``kind``/``name``: one normally, two or more on a conflict, none if unknown."""
        self._check_kind(kind)
        if (kind, name) in self._programmatic:
            return [self._programmatic[(kind, name)][0]]
        return list(self._scan(kind).get(name, []))

    def info(self, kind: str, name: str) -> PluginInfo:
        """The single registration of ``kind``/``name``; raises on an unknown or doubly claimed name."""
        claims = self.claims(kind, name)
        if not claims:
            raise PluginError(self._unknown_message(kind, name))
        if len(claims) > 1:
            who = "; ".join(f"{c.origin} ({c.target})" for c in claims)
            raise PluginError(
                f"{kind} plugin {name!r} is claimed by {len(claims)} distributions: {who}. "
                f"Uninstall one of them, or rename the entry point in its setup.cfg."
            )
        return claims[0]

    def _unknown_message(self, kind: str, name: str) -> str:
        available = self.names(kind)
        msg = f"unknown {kind} plugin {name!r}."
        close = difflib.get_close_matches(name, available, n=1)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        msg += f" Available {kind}s: {', '.join(available) if available else '(none)'}."
        msg += f" Third-party plugins register under the entry-point group '{group_of(kind)}'; see `anyorder plugins`."
        return msg

    def get(self, kind: str, name: str) -> Plugin:
        """The plugin's options dataclass (a light import) with its info and summary."""
        key = (kind, name)
        if key in self._config_cache:
            return self._config_cache[key]
        kind_info = self._usable_kind(kind)
        info = self.info(kind, name)
        if key in self._programmatic:
            config_class = self._programmatic[key][1]
        else:
            try:
                config_class = _load_target(info.target)
            except Exception as exc:
                raise PluginError(
                    f"{kind} plugin {name!r} from {info.origin} failed to load ({info.target}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        if kind_info.direct:
            # The entry point names the implementation; its base is light by contract, so check it here.
            self._check_subclass(info, config_class, info.target)
            plugin = Plugin(info=info, config_class=config_class, summary=_direct_summary(config_class))
        else:
            _check_config_class(info, config_class)
            plugin = Plugin(info=info, config_class=config_class, summary=_summary(config_class))
        self._config_cache[key] = plugin
        return plugin

    def _check_subclass(self, info: PluginInfo, impl: Any, target: Any) -> type:
        base = self.base_class(info.kind)
        if not (isinstance(impl, type) and issubclass(impl, base)):
            raise PluginError(
                f"{info.kind} plugin {info.name!r} from {info.origin}: implementation {target!r} must be a subclass "
                f"of {base.__module__}.{base.__qualname__}"
            )
        return impl

    def implementation(self, kind: str, name: str) -> type:
        """The plugin's implementation class (imports it, and torch with it)."""
        key = (kind, name)
        if key in self._impl_cache:
            return self._impl_cache[key]
        plugin = self.get(kind, name)
        if self.kind_info(kind).direct:
            self._impl_cache[key] = plugin.config_class
            return plugin.config_class
        target = getattr(plugin.config_class, "implementation", None)
        try:
            impl = _load_target(target) if isinstance(target, str) else target
        except Exception as exc:
            raise PluginError(
                f"{kind} plugin {name!r} from {plugin.info.origin} failed to load its implementation "
                f"{target!r}: {type(exc).__name__}: {exc}"
            ) from exc
        impl = self._check_subclass(plugin.info, impl, target)
        declared = getattr(impl, "Config", None)
        if declared is not None and declared is not plugin.config_class:
            raise PluginError(
                f"{kind} plugin {name!r}: {impl.__qualname__}.Config is {declared.__qualname__}, but the entry point "
                f"names {plugin.config_class.__qualname__}; they must be the same class"
            )
        self._impl_cache[key] = impl
        return impl

    def status(self, kind: str, name: str, *, import_implementation: bool = True) -> str:
        """``"ok"``, or the one-line reason the plugin cannot be used."""
        try:
            self.get(kind, name)
            if import_implementation:
                self.implementation(kind, name)
        except PluginError as exc:
            return f"error: {exc}"
        return "ok"

    # -- programmatic registration --------------------------------------------------------------------------------
    def register(self, kind: str, name: str, plugin: type, *, replace: bool = False) -> None:
        """Register ``plugin`` under ``kind``/``name`` in this process (for notebooks and tests).

        ``plugin`` is an options dataclass whose ``implementation`` names the class, or an implementation class
        whose ``Config`` attribute is its options dataclass; for ``command``, the command class itself.
        """
        kind_info = self._usable_kind(kind)
        config_class: Any
        if kind_info.direct:
            config_class = plugin
        elif dataclasses.is_dataclass(plugin):
            config_class = plugin
        else:
            config_class = getattr(plugin, "Config", None)
            if config_class is None or not dataclasses.is_dataclass(config_class):
                raise PluginError(
                    f"register({kind!r}, {name!r}, ...): {getattr(plugin, '__qualname__', plugin)!r} is neither an "
                    f"options dataclass nor a class with a dataclass `Config` attribute"
                )
            if not getattr(config_class, "implementation", None):
                config_class.implementation = plugin  # type: ignore[union-attr]
        existing = self.claims(kind, name)
        if existing and not replace:
            raise PluginError(
                f"{kind} plugin {name!r} is already registered by {existing[0].origin}; "
                f"pass replace=True to shadow it in this process"
            )
        info = PluginInfo(kind, name, _target_of(config_class), PROGRAMMATIC, "")
        if kind_info.direct:
            self._check_subclass(info, config_class, info.target)
        else:
            _check_config_class(info, config_class)
        self._programmatic[(kind, name)] = (info, config_class)
        self._config_cache.pop((kind, name), None)
        self._impl_cache.pop((kind, name), None)

    def unregister(self, kind: str, name: str) -> None:
        """Remove a programmatic registration."""
        self._programmatic.pop((kind, name), None)
        self._config_cache.pop((kind, name), None)
        self._impl_cache.pop((kind, name), None)


def _check_config_class(info: PluginInfo, config_class: Any) -> None:
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise PluginError(
            f"{info.kind} plugin {info.name!r} from {info.origin}: the entry point {info.target!r} must name a "
            f"dataclass of options (got {config_class!r})"
        )
    if not getattr(config_class, "implementation", None):
        raise PluginError(
            f"{info.kind} plugin {info.name!r} from {info.origin}: {config_class.__qualname__} must set the class "
            f"variable `implementation` to 'module:Class'"
        )
    if any(f.name == "name" for f in dataclasses.fields(config_class)):
        raise PluginError(
            f"{info.kind} plugin {info.name!r}: its options may not have a field called 'name' (the config uses it "
            f"to select the plugin)"
        )


REGISTRY = Registry()
"""The process-wide registry."""


def register(kind: str, name: str, plugin: type, *, replace: bool = False) -> None:
    """Register a plugin in this process; see :meth:`Registry.register`."""
    REGISTRY.register(kind, name, plugin, replace=replace)


def declare_kind(kind: str, base: type | str, *, replace: bool = False) -> None:
    """Declare a plugin kind in this process; see :meth:`Registry.declare_kind`."""
    REGISTRY.declare_kind(kind, base, replace=replace)
