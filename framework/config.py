"""Run configuration: typed schemas from dataclasses, a YAML file plus ``key=value`` overrides.

A run config has fixed sections (``train``, ``optim``, ``scheduler``, ``sample``, ``eval``, ``logger``,
``trainer``) and plugin sections (``objective``, ``network``, ``data`` and the list ``metrics``). A plugin section
holds ``name`` (the entry-point name) and the options of that plugin, validated against the plugin's options
dataclass. Validation imports only those options modules: a typo fails in a fraction of a second, before torch or
Lightning is imported.

An option may list the values it accepts (``opt(..., choices=(...))``); validation checks them for every section,
fixed or plugin, with one message. Every other check of a plugin's options lives in its dataclass's
``__post_init__``. :func:`check_implementations` then imports every plugin's implementation (and Lightning, to check
``trainer.*``), for commands that are about to build a run.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from anyorder.errors import ConfigError, PluginError
from anyorder.registry import REGISTRY


def opt(default: Any, help: str, *, choices: Sequence[Any] | None = None, **kwargs: Any) -> Any:
    """A documented option: ``field(default=...)`` whose help text ``anyorder config --explain`` prints.

    ``choices`` are the only values the option accepts; validation refuses any other with one message that lists them.
    """
    metadata_ = {"help": help, **kwargs.pop("metadata", {})}
    if choices is not None:
        choices = tuple(choices)
        if default not in choices:
            raise ValueError(f"opt(): the default {default!r} is not one of the choices {choices}")
        metadata_["choices"] = choices
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata_, **kwargs)
    return field(default=default, metadata=metadata_, **kwargs)


def plugin_field(kind: str, help: str, default: dict[str, Any] | None = None) -> Any:
    """An option that is itself a plugin section (``{name: ..., **options}``), e.g. a second network.

    ``default={}`` makes the section optional: an empty section is valid and means "not set" to the plugin.
    """
    value = default if default is not None else {"name": "???"}  # OmegaConf's marker of a mandatory value
    return field(default_factory=lambda: dict(value), metadata={"help": help, "plugin": kind})


def choice_error(key_path: str, value: Any, choices: Sequence[Any]) -> str:
    """The message for an option ``key_path`` whose ``value`` is not among its ``choices``."""
    listed = ", ".join(str(c) for c in choices)
    hint = _did_you_mean(str(value), [str(c) for c in choices])
    return f"{key_path} must be one of {listed} (got {value!r}).{hint}"


def check_choices(cls: type, values: Any, key_path: str = "") -> None:
    """Raise :class:`ConfigError` if an option of the dataclass ``cls`` that has ``choices`` holds another value.

    ``values`` is a mapping or an instance of ``cls``; ``key_path`` (e.g. ``objective``) prefixes the option names.
    """
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices is None:
            continue
        if isinstance(values, Mapping):
            if f.name not in values:
                continue
            value = values[f.name]
        else:
            value = getattr(values, f.name)
        if value not in choices:
            raise ConfigError(choice_error(f"{key_path}.{f.name}" if key_path else f.name, value, choices))


@dataclass
class PluginConfig:
    """Base class of plugin options. Subclasses set ``implementation`` to ``'module:Class'``.

    A subclass puts its checks in ``__post_init__``, calling ``super().__post_init__()`` first.
    """

    implementation: ClassVar[Any] = None

    def __post_init__(self) -> None:
        # Validation checks the choices first, naming the key path; this covers options built directly in code.
        check_choices(type(self), self)


# ---------------------------------------------------------------------------------------------------------------
# Fixed sections
# ---------------------------------------------------------------------------------------------------------------

SCHEDULE_NAMES = ("constant", "cosine", "linear")
LOGGER_NAMES = ("wandb", "csv", "tensorboard", "none")


@dataclass
class TrainConfig:
    """How long and how to train."""

    max_steps: int = opt(1000, "optimizer steps to train for")
    global_batch_size: int = opt(64, "examples per optimizer step, over all devices and accumulation micro-steps")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this value; 0 disables clipping")
    ema_decay: float = opt(0.0, "decay of the EMA of the weights (e.g. 0.999); 0 disables EMA")
    val_every_n_steps: int = opt(500, "validate (and save `best`) every N optimizer steps")
    ckpt_every_n_steps: int = opt(500, "write the `last` checkpoint every N optimizer steps")
    log_every_n_steps: int = opt(50, "log training metrics every N optimizer steps")
    limit_val_batches: int = opt(0, "validation batches per rank; 0 means the whole validation split")
    val_batch_size: int = opt(0, "global validation batch size; 0 means the training global_batch_size")
    test_at_end: bool = opt(True, "evaluate the test split with the final weights after training (eval/test-final.json)")
    monitor: str = opt("val/nll", "metric that selects the `best` checkpoint (lower is better)")
    compile: bool = opt(False, "torch.compile the networks (costs ~20 s at start; pays off on GPUs)")
    detect_anomaly: bool = opt(False, "torch.autograd anomaly detection (slow; for debugging)")
    init_from: str = opt("", "fine-tune: start from another run's weights (and EMA), given as RUN or RUN:last or "
                             "RUN:best; the optimizer, schedule and step counter start fresh. '' trains from scratch")


@dataclass
class OptimConfig:
    """The optimizer: any class in ``torch.optim``."""

    name: str = opt("AdamW", "a class in torch.optim, e.g. AdamW, Adam, SGD")
    lr: float = opt(3e-4, "peak learning rate")
    weight_decay: float = opt(0.0, "decoupled weight decay, applied to matrices only (not to norms, biases, embeddings)")
    betas: list[float] = opt([0.9, 0.95], "Adam betas")
    eps: float = opt(1e-8, "Adam epsilon")
    extra: dict[str, Any] = opt({}, "further keyword arguments for the optimizer class, e.g. {momentum: 0.9}")


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: linear warm-up, then a decay shape."""

    name: str = opt("cosine", "decay shape after warm-up", choices=SCHEDULE_NAMES)
    warmup_steps: int = opt(0, "linear warm-up steps from 0 to the peak lr")
    min_lr_ratio: float = opt(0.1, "final lr as a fraction of the peak (cosine, linear)")


@dataclass
class SampleConfig:
    """Sampling settings used at validation (sample tables) and by ``anyorder sample``."""

    num_val_samples: int = opt(8, "samples drawn and logged as a table at each validation (0 disables)")
    num_final_samples: int = opt(0, "samples drawn after training into samples/final.txt, scored with the run's metrics "
                                    "and the dataset's suite, and drawn when the dataset can (0 disables)")
    temperature: float = opt(1.0, "softmax temperature")
    top_k: int = opt(0, "keep the k most likely tokens; 0 disables")
    top_p: float = opt(1.0, "nucleus sampling mass; 1.0 disables")
    max_len: int = opt(0, "maximum generated length; 0 means the dataset's maximum length")
    batch_size: int = opt(64, "samples generated per batch and device")
    use_ema: bool = opt(True, "sample with the EMA weights when the run has them")
    steps: int = opt(0, "network calls per batch for objectives that generate several variables per call (any-order "
                        "objectives; `anyorder sample --steps`); 0 means one variable per call")


@dataclass
class EvalConfig:
    """Settings of ``anyorder evaluate``."""

    split: str = opt("test", "split to evaluate", choices=("train", "val", "test"))
    batch_size: int = opt(64, "global evaluation batch size")
    use_ema: bool = opt(True, "evaluate the EMA weights when the run has them")
    steps: int = opt(0, "report the NLL of generation in this many network calls, for objectives that support a step "
                        "budget (`anyorder evaluate --steps`); 0 means one variable per call")


@dataclass
class LoggerConfig:
    """Where metrics go: wandb (default), csv, tensorboard or none."""

    name: str = opt("wandb", "where metrics go", choices=LOGGER_NAMES)
    project: str = opt("anyorder", "W&B project")
    entity: str | None = opt(None, "W&B entity (team or user); None uses your default")
    tags: list[str] = opt([], "extra W&B tags; the objective, network and dataset names are always added")
    mode: str = opt("auto", "W&B mode: auto (online with an API key, else offline) | online | offline | disabled",
                    choices=("auto", "online", "offline", "disabled"))


@dataclass
class RunConfig:
    """A complete run: the plugins, and how to train, sample, evaluate and log."""

    PLUGIN_SECTIONS: ClassVar[dict[str, str]] = {"objective": "objective", "network": "network", "data": "dataset"}

    name: str | None = opt(None, "run name; default <data>-<objective>-<time>")
    seed: int = opt(0, "seed of every random choice in the run (data order, init, dropout, objective draws)")
    output_dir: str = opt("runs", "parent directory of run directories")
    objective: Any = plugin_field("objective", "the training objective (an anyorder.objectives plugin)")
    network: Any = plugin_field("network", "the network (an anyorder.networks plugin)")
    data: Any = plugin_field("dataset", "the dataset (an anyorder.datasets plugin)")
    metrics: Any = opt([], "sample metrics (anyorder.metrics plugins), each {name: ..., **options}")
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: dict[str, Any] = opt({}, "keyword arguments passed to lightning.Trainer (devices, strategy, precision, ...)")


_SECTION_CLASSES: dict[str, type] = {
    "train": TrainConfig, "optim": OptimConfig, "scheduler": SchedulerConfig, "sample": SampleConfig,
    "eval": EvalConfig, "logger": LoggerConfig,
}

# Trainer arguments that anyorder sets itself, and the option that replaces each.
_OWNED_TRAINER_KEYS = {
    "max_steps": "train.max_steps",
    "max_epochs": "train.max_steps",
    "gradient_clip_val": "train.grad_clip",
    "gradient_clip_algorithm": "train.grad_clip",
    "logger": "logger.name",
    "callbacks": "a callback plugin in your own objective",
    "enable_checkpointing": "train.ckpt_every_n_steps",
    "default_root_dir": "output_dir",
    "val_check_interval": "train.val_every_n_steps",
    "check_val_every_n_epoch": "train.val_every_n_steps",
    "log_every_n_steps": "train.log_every_n_steps",
    "limit_val_batches": "train.limit_val_batches",
    "use_distributed_sampler": "nothing (anyorder shards data itself, without padding duplicates)",
    "detect_anomaly": "train.detect_anomaly",
}


# ---------------------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------------------


def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    # OmegaConf appends full_key/object_type lines; the first line is the useful part.
    return str(exc).strip().splitlines()[0]


def parse_overrides(overrides: list[str]) -> DictConfig:
    """``["a.b=1", "c=[x,y]"]`` as a config; a malformed item is a ConfigError naming it."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=100)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {_omegaconf_message(exc)}") from exc


def load_yaml(path: str | Path) -> DictConfig:
    """Read a YAML config file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load, override and validate a run config. Imports only the options modules of the named plugins.

    Overrides merge into the file, except where one selects another plugin for a plugin section (``data.name=...``,
    ``objective.divergence.name=...``) or replaces a whole section (``network={name: ..., ...}``): that section then
    holds only what the overrides give, since the file's options belong to the plugin it named.
    """
    source = str(path) if path is not None else "<overrides>"
    raw = load_yaml(path) if path is not None else OmegaConf.create()
    parsed = parse_overrides(list(overrides))
    whole = {item.split("=", 1)[0].strip() for item in overrides}
    file_plain = OmegaConf.to_container(raw, resolve=False)
    override_plain = OmegaConf.to_container(parsed, resolve=False)
    assert isinstance(file_plain, dict) and isinstance(override_plain, dict)
    merged = dict(file_plain)
    for key, value in override_plain.items():
        kind = RunConfig.PLUGIN_SECTIONS.get(str(key))
        if kind is None:
            merged[key] = _merge(merged.get(key), value)
        else:
            merged[key] = _override_plugin_section(kind, merged.get(key), value, str(key), whole)
    try:
        combined = OmegaConf.create(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: cannot apply the overrides {list(overrides)}: {_omegaconf_message(exc)}") from exc
    return validate(combined, source=source)


def _merge(old: Any, new: Any) -> Any:
    # OmegaConf.merge's rule on plain containers: mappings merge key by key, anything else is replaced.
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return new


def _override_plugin_section(kind: str, old: Any, new: Any, key_path: str, whole: set[str]) -> Any:
    """The plugin section ``old`` (from the file) with the overrides ``new`` applied."""
    if isinstance(old, str):
        old = {"name": old}
    if key_path in whole or not isinstance(old, dict) or not isinstance(new, dict):
        return new
    name = new.get("name", old.get("name"))
    if name != old.get("name"):
        return new
    merged = _merge(old, new)
    if not isinstance(name, str):
        return merged
    try:
        cls = REGISTRY.get(kind, name).config_class
    except PluginError:
        return merged  # validation reports the unknown plugin, with its did-you-mean
    for f in dataclasses.fields(cls):
        nested_kind = f.metadata.get("plugin")
        if nested_kind and f.name in new:
            merged[f.name] = _override_plugin_section(nested_kind, old.get(f.name), new[f.name],
                                                      f"{key_path}.{f.name}", whole)
    return merged


def validate(raw: DictConfig | dict[str, Any], source: str = "<config>") -> DictConfig:
    """Validate a raw run config against the schema and the options of every plugin it names."""
    try:
        plain = OmegaConf.to_container(OmegaConf.create(raw), resolve=True) if not isinstance(raw, dict) else raw
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: cannot resolve the config: {_omegaconf_message(exc)}") from exc
    assert isinstance(plain, dict)
    valid_top = _field_names(RunConfig)
    for key in plain:
        if key not in valid_top:
            raise ConfigError(
                f"{source}: unknown top-level key {key!r}.{_did_you_mean(str(key), valid_top)} "
                f"Valid keys: {', '.join(valid_top)}"
            )
    plain = dict(plain)
    for key, kind in RunConfig.PLUGIN_SECTIONS.items():
        if key not in plain:
            raise ConfigError(
                f"{source}: the config has no {key!r} section; add `{key}: {{name: ...}}` naming one of the "
                f"{kind} plugins: {', '.join(REGISTRY.names(kind))}"
            )
        plain[key] = validate_plugin_section(kind, plain[key], key, source)
    metrics = plain.get("metrics", [])
    if not isinstance(metrics, list):
        raise ConfigError(f"{source}: 'metrics' must be a list of {{name: ..., **options}} sections")
    plain["metrics"] = [validate_plugin_section("metric", m, f"metrics[{i}]", source) for i, m in enumerate(metrics)]
    trainer = plain.get("trainer", {}) or {}
    if not isinstance(trainer, dict):
        raise ConfigError(f"{source}: 'trainer' must be a mapping of lightning.Trainer arguments")
    check_trainer_keys(trainer, source)

    schema = OmegaConf.structured(RunConfig)
    for section in ("train", "optim", "scheduler", "sample", "eval", "logger"):
        value = plain.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {section!r} must be a mapping")
        section_cls = _SECTION_CLASSES[section]
        valid = _field_names(section_cls)
        for key in value:
            if key not in valid:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}'.{_did_you_mean(str(key), valid)} "
                    f"Valid keys of {section!r}: {', '.join(valid)}"
                )
    try:
        cfg = OmegaConf.merge(schema, plain)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: invalid value for {key!r}: {_omegaconf_message(exc)}") from exc
    assert isinstance(cfg, DictConfig)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{source}: missing mandatory values: {', '.join(missing)}")
    for section, section_cls in _SECTION_CLASSES.items():
        _check_choices_of(section_cls, cfg[section], section, source)
    _check_consistency(cfg, source)
    return cfg


def _check_choices_of(cls: type, values: Any, key_path: str, source: str) -> None:
    try:
        check_choices(cls, values, key_path)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def validate_plugin_section(kind: str, section: Any, key_path: str, source: str) -> dict[str, Any]:
    """Check one ``{name: ..., **options}`` section against its plugin's options; return it with defaults filled."""
    if isinstance(section, str):
        section = {"name": section}
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise ConfigError(
            f"{source}: {key_path!r} must be a mapping with a 'name' naming a {kind} plugin "
            f"(one of: {', '.join(REGISTRY.names(kind))})"
        )
    name = section["name"]
    plugin = REGISTRY.get(kind, name)  # PluginError: unknown (with did-you-mean), conflict, or import failure
    cls = plugin.config_class
    valid = _field_names(cls)
    options = {k: v for k, v in section.items() if k != "name"}
    where = f"{kind} plugin {name!r} ({plugin.info.origin})"
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{source}: unknown key '{key_path}.{key}' for {where}.{_did_you_mean(str(key), valid)} "
                f"Valid keys: {', '.join(valid) if valid else '(none)'}"
            )
    for f in dataclasses.fields(cls):
        nested_kind = f.metadata.get("plugin")
        if nested_kind:
            default = f.default_factory() if f.default_factory is not MISSING else {}  # type: ignore[misc]
            value = options.get(f.name, default)
            if isinstance(value, str):
                value = {"name": value}
            if isinstance(value, dict) and isinstance(default, dict):
                if not value and not default:
                    options[f.name] = {}  # an optional nested plugin, not set
                    continue
                value = {**default, **value} if value.get("name", default.get("name")) == default.get("name") else value
            options[f.name] = validate_plugin_section(nested_kind, value, f"{key_path}.{f.name}", source)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), options)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(
            f"{source}: invalid value for '{key_path}.{key}' of {where}: {_omegaconf_message(exc)}"
        ) from exc
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(
            f"{source}: {where} needs a value for: {', '.join(f'{key_path}.{m}' for m in missing)}"
        )
    _check_choices_of(cls, merged, key_path, source)
    try:
        OmegaConf.to_object(merged)  # runs the options' __post_init__ checks
    except ConfigError as exc:
        raise ConfigError(f"{source}: '{key_path}' of {where}: {exc}") from exc
    except (ValueError, TypeError, OmegaConfBaseException) as exc:
        raise ConfigError(f"{source}: invalid options for '{key_path}' of {where}: {exc}") from exc
    out = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(out, dict)
    return {"name": name, **out}


def _check_consistency(cfg: DictConfig, source: str) -> None:
    if cfg.train.max_steps <= 0:
        raise ConfigError(f"{source}: train.max_steps must be positive (got {cfg.train.max_steps})")
    if cfg.train.global_batch_size <= 0:
        raise ConfigError(f"{source}: train.global_batch_size must be positive")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"{source}: train.ema_decay must be in [0, 1) (got {cfg.train.ema_decay})")
    if not 0.0 < cfg.sample.top_p <= 1.0:
        raise ConfigError(f"{source}: sample.top_p must be in (0, 1] (got {cfg.sample.top_p})")
    if cfg.sample.temperature <= 0:
        raise ConfigError(f"{source}: sample.temperature must be positive (got {cfg.sample.temperature})")
    at_least = {
        "train.val_every_n_steps": 1, "train.ckpt_every_n_steps": 1, "train.log_every_n_steps": 1,
        "train.limit_val_batches": 0, "train.val_batch_size": 0, "scheduler.warmup_steps": 0,
        "sample.batch_size": 1, "sample.num_val_samples": 0, "sample.num_final_samples": 0, "sample.max_len": 0,
        "sample.top_k": 0, "sample.steps": 0, "eval.batch_size": 1, "eval.steps": 0,
    }
    for key, low in at_least.items():
        value = OmegaConf.select(cfg, key)
        if value < low:
            raise ConfigError(f"{source}: {key} must be at least {low} (got {value})")
    if not (math.isfinite(cfg.optim.lr) and cfg.optim.lr > 0):
        raise ConfigError(f"{source}: optim.lr must be a positive number (got {cfg.optim.lr})")
    if not 0.0 <= cfg.scheduler.min_lr_ratio <= 1.0:
        raise ConfigError(f"{source}: scheduler.min_lr_ratio must be in [0, 1] (got {cfg.scheduler.min_lr_ratio})")
    if not str(cfg.train.monitor).startswith("val/"):
        raise ConfigError(f"{source}: train.monitor must name a validation value such as val/nll "
                          f"(got {cfg.train.monitor!r})")
    _check_trainer_values(cfg, source)


# The precision values lightning.Trainer accepts (Lightning 2.x), so a typo fails before Lightning is imported.
_PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
               "transformer-engine", "transformer-engine-float16")


def _check_trainer_values(cfg: DictConfig, source: str) -> None:
    trainer = cfg.get("trainer") or {}
    precision = trainer.get("precision")
    if precision is not None and str(precision) not in _PRECISIONS:
        raise ConfigError(f"{source}: trainer.precision {precision!r} is not one of {', '.join(_PRECISIONS)}")
    devices = trainer.get("devices", "auto")
    count = None
    if isinstance(devices, int) or (isinstance(devices, str) and devices.strip().lstrip("-").isdigit()):
        count = int(devices)
        if count == 0 or count < -1:
            raise ConfigError(f"{source}: trainer.devices must be a positive number, -1 (all) or 'auto' "
                              f"(got {devices})")
    elif isinstance(devices, ListConfig | list):
        count = len(devices)
        if count == 0:
            raise ConfigError(f"{source}: trainer.devices is an empty list; give device indices, a count or 'auto'")
    accumulate = int(trainer.get("accumulate_grad_batches", 1))
    if accumulate < 1:
        raise ConfigError(f"{source}: trainer.accumulate_grad_batches must be at least 1 (got {accumulate})")
    if count is not None and count > 0:
        shards = count * int(trainer.get("num_nodes", 1)) * accumulate
        if cfg.train.global_batch_size % shards:
            raise ConfigError(
                f"{source}: train.global_batch_size={cfg.train.global_batch_size} does not divide into {shards} "
                f"equal parts (devices x num_nodes x accumulate_grad_batches); use a multiple of {shards}"
            )



def check_trainer_keys(trainer: Mapping[str, Any], source: str) -> None:
    """Reject trainer keys that anyorder sets itself (no Lightning import; :func:`check_trainer_arguments` does the
    rest)."""
    for key in trainer:
        if key in _OWNED_TRAINER_KEYS:
            raise ConfigError(
                f"{source}: 'trainer.{key}' is set by anyorder; use {_OWNED_TRAINER_KEYS[key]} instead"
            )


def check_trainer_arguments(trainer: Mapping[str, Any], source: str = "config") -> None:
    """Raise :class:`ConfigError` for a ``trainer`` key that ``lightning.Trainer`` does not take (imports Lightning)."""
    import lightning

    params = inspect.signature(lightning.Trainer).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a Trainer taking **kwargs names no set of keys to check against
    valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    allowed = [k for k in valid if k not in _OWNED_TRAINER_KEYS]
    for key in trainer:
        if key not in valid:
            raise ConfigError(
                f"{source}: unknown key 'trainer.{key}': lightning.Trainer has no such argument."
                f"{_did_you_mean(str(key), allowed)} Valid keys: {', '.join(allowed)}"
            )


class PluginSection(NamedTuple):
    """One plugin section of a validated config: its kind, key path (``objective.divergence``), the section
    (``{name: ..., **options}``) and its nesting depth (0 for objective, network, data and metrics)."""

    kind: str
    key_path: str
    section: dict[str, Any]
    depth: int


def plugin_sections(cfg: DictConfig | Mapping[str, Any]) -> list[PluginSection]:
    """Every plugin section of a validated run config, each followed by the plugin sections nested in it.

    Order: objective, network, data, metrics; an empty optional nested section (a plugin not set) is left out.
    """
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(plain, dict)
    top = [(kind, key, plain[key]) for key, kind in RunConfig.PLUGIN_SECTIONS.items()]
    top += [("metric", f"metrics[{i}]", m) for i, m in enumerate(plain.get("metrics") or [])]
    out: list[PluginSection] = []

    def visit(kind: str, key_path: str, section: Any, depth: int) -> None:
        if isinstance(section, str):
            section = {"name": section}
        if not section:
            return
        out.append(PluginSection(kind, key_path, section, depth))
        for f in dataclasses.fields(REGISTRY.get(kind, section["name"]).config_class):
            nested_kind = f.metadata.get("plugin")
            if nested_kind:
                visit(nested_kind, f"{key_path}.{f.name}", section.get(f.name), depth + 1)

    for kind, key_path, section in top:
        visit(kind, key_path, section, 0)
    return out


def check_implementations(cfg: DictConfig, source: str = "config") -> None:
    """Import the implementation of every plugin of a validated config and check ``trainer.*`` against Lightning.

    Raises the registry's :class:`PluginError` for a plugin whose implementation cannot be imported, and
    :class:`ConfigError` for an unknown trainer argument: both before a run directory is created.
    """
    for ps in plugin_sections(cfg):
        REGISTRY.implementation(ps.kind, ps.section["name"])
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True) if "trainer" in cfg else {}
    assert isinstance(trainer, dict)
    check_trainer_arguments({str(k): v for k, v in trainer.items()}, source)


def to_yaml(cfg: DictConfig | ListConfig) -> str:
    """The resolved config as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def plugin_options(kind: str, section: dict[str, Any] | DictConfig) -> Any:
    """The typed options instance of a validated plugin section."""
    plain = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else section
    assert isinstance(plain, dict)
    plugin = REGISTRY.get(kind, plain["name"])
    options = {k: v for k, v in plain.items() if k != "name"}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(plugin.config_class), options))


def explain(cls: type, prefix: str = "") -> list[str]:
    """``key: type = default  # help`` lines for a dataclass of options."""
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:
            default = repr(f.default_factory())
        else:
            default = "<required>"
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if "plugin" in f.metadata:
            typ = f"{f.metadata['plugin']} plugin"
        help_ = f.metadata.get("help", "")
        if "choices" in f.metadata:
            help_ += f" [choices: {', '.join(str(c) for c in f.metadata['choices'])}]"
        lines.append(f"{prefix}{f.name}: {typ} = {default}  # {help_}")
    return lines


def explain_plugins(cfg: DictConfig) -> list[str]:
    """Comment lines describing the plugins of a validated config: for each plugin section, the selected plugin
    (key path, kind, name, origin, summary) and its options; nested plugin sections follow, indented."""
    lines = []
    for ps in plugin_sections(cfg):
        plugin = REGISTRY.get(ps.kind, ps.section["name"])
        indent = "    " * ps.depth
        lines.append(f"# {indent}{ps.key_path}: {ps.kind} {plugin.info.name!r} from {plugin.info.origin}: "
                     f"{plugin.summary}")
        lines += explain(plugin.config_class, prefix=f"#   {indent}")
    return lines
