"""The plugin registry: objectives, networks, datasets and metrics found through Python entry points.

A plugin is registered under one of four entry-point groups::

    [options.entry_points]
    anyorder.objectives =
        my_objective = my_package.objective_options:MyObjectiveConfig

The entry point names the plugin's *options dataclass*, a light module with no torch import. The dataclass names
its implementation class in the ``implementation`` class variable (``"module:Class"``). Reading and validating a
config therefore imports only the options of the plugins it names; the implementation (and torch) is imported
only when a run is built.

The groups are scanned once per process. Nothing is imported by a scan. A plugin that fails to import is reported
with its name, distribution and error when it is used, and never hides the other plugins.
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

KINDS: tuple[str, ...] = ("objective", "network", "dataset", "metric", "divergence")
"""The plugin kinds, in the order they are listed."""

GROUPS: dict[str, str] = {kind: f"anyorder.{kind}s" for kind in KINDS}
"""Entry-point group of each kind."""

# The base class every implementation of a kind must derive from. Resolved lazily: these modules import torch.
_BASES: dict[str, str] = {
    "objective": "anyorder.objective:Objective",
    "network": "anyorder.network:Network",
    "dataset": "anyorder.data:DiscreteDataModule",
    "metric": "anyorder.metrics:SampleMetric",
    "divergence": "anyorder.divergence:Divergence",
}

PROGRAMMATIC = "<register()>"
"""The distribution name shown for plugins added with :func:`register`."""


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
    """A resolved plugin: its info, its options dataclass and (once loaded) its implementation class."""

    info: PluginInfo
    config_class: type
    summary: str


def _load_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"target {target!r} is not of the form 'module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else "(no summary)"


class Registry:
    """Entry-point plugins plus programmatic registrations, scanned once and imported on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scanned: dict[str, dict[str, list[PluginInfo]]] | None = None
        self._programmatic: dict[tuple[str, str], tuple[PluginInfo, type]] = {}
        self._config_cache: dict[tuple[str, str], Plugin] = {}
        self._impl_cache: dict[tuple[str, str], type] = {}

    # -- scanning -------------------------------------------------------------------------------------------------
    def _scan(self) -> dict[str, dict[str, list[PluginInfo]]]:
        with self._lock:
            if self._scanned is None:
                found: dict[str, dict[str, list[PluginInfo]]] = {kind: {} for kind in KINDS}
                for kind, group in GROUPS.items():
                    for ep in metadata.entry_points(group=group):
                        dist = getattr(ep, "dist", None)
                        info = PluginInfo(
                            kind=kind,
                            name=ep.name,
                            target=ep.value,
                            distribution=dist.metadata["Name"] if dist is not None else "?",
                            version=dist.version if dist is not None else "",
                        )
                        claims = found[kind].setdefault(ep.name, [])
                        # An editable install can expose one distribution twice; that is not a conflict.
                        if all((c.distribution, c.target) != (info.distribution, info.target) for c in claims):
                            claims.append(info)
                self._scanned = found
            return self._scanned

    def rescan(self) -> None:
        """Forget the scan and every cached import (after installing a plugin distribution in this process)."""
        with self._lock:
            self._scanned = None
            self._config_cache.clear()
            self._impl_cache.clear()

    # -- lookup ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in GROUPS:
            raise PluginError(f"unknown plugin kind {kind!r}; the kinds are: {', '.join(KINDS)}")

    def names(self, kind: str) -> list[str]:
        """Every registered name of ``kind``, sorted."""
        self._check_kind(kind)
        names = set(self._scan()[kind]) | {n for (k, n) in self._programmatic if k == kind}
        return sorted(names)

    def claims(self, kind: str, name: str) -> list[PluginInfo]:
        """Every registration of ``kind``/``name``: one normally, two or more on a conflict, none if unknown."""
        self._check_kind(kind)
        if (kind, name) in self._programmatic:
            return [self._programmatic[(kind, name)][0]]
        return list(self._scan()[kind].get(name, []))

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
        msg += f" Third-party plugins register under the entry-point group '{GROUPS[kind]}'; see `anyorder plugins`."
        return msg

    def get(self, kind: str, name: str) -> Plugin:
        """The plugin's options dataclass (a light import) with its info and summary."""
        key = (kind, name)
        if key in self._config_cache:
            return self._config_cache[key]
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
        _check_config_class(info, config_class)
        plugin = Plugin(info=info, config_class=config_class, summary=_summary(config_class))
        self._config_cache[key] = plugin
        return plugin

    def implementation(self, kind: str, name: str) -> type:
        """The plugin's implementation class (imports it, and torch with it)."""
        key = (kind, name)
        if key in self._impl_cache:
            return self._impl_cache[key]
        plugin = self.get(kind, name)
        target = getattr(plugin.config_class, "implementation", None)
        try:
            impl = _load_target(target) if isinstance(target, str) else target
        except Exception as exc:
            raise PluginError(
                f"{kind} plugin {name!r} from {plugin.info.origin} failed to load its implementation "
                f"{target!r}: {type(exc).__name__}: {exc}"
            ) from exc
        base = _load_target(_BASES[kind])
        if not (isinstance(impl, type) and issubclass(impl, base)):
            raise PluginError(
                f"{kind} plugin {name!r} from {plugin.info.origin}: implementation {target!r} must be a subclass "
                f"of {base.__module__}.{base.__qualname__}"
            )
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
        whose ``Config`` attribute is its options dataclass.
        """
        self._check_kind(kind)
        config_class: Any
        if dataclasses.is_dataclass(plugin):
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
        module = getattr(config_class, "__module__", "?")
        info = PluginInfo(kind, name, f"{module}:{config_class.__qualname__}", PROGRAMMATIC, "")
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
