"""`forgetfilter run`'s options, generated from the configuration dataclasses: one source of truth.

Every field of `pipeline.RunConfig`, its `training.TrainConfig`s (noisy, safety, final), their
`models.LoraSettings` and its `thresholds.ThresholdConfig` can be set by a flag or by a YAML file
(`--config run.yaml`) holding the same fields, nested as the dataclasses are:

    model: smollm2-135m-instruct
    normalise: relative+learning
    noisy_train: {lr: 0.001, epochs: 1, lora: {r: 16}}
    safety_train: {lr: 0.0005}
    threshold: {method: fraction, fraction: 0.05}

Settings apply in this order, each over the one before: the model's preset
(`pipeline.default_run_config`), the file, the flags. The flags: `--FIELD` for a field of
`RunConfig`; for a training field, `--FIELD` sets the noisy finetune (and the final one) and, except
for `lr`, `epochs` and `max_steps`, the safety finetune too, while `--safety-FIELD` sets the safety
finetune alone; `--lora-FIELD` for LoRA; `--auto`, `--threshold`, `--remove-fraction` for the cut.
The noisy finetune that produces the scores (M1) runs `--screen-epochs` epochs or `--screen-steps`
steps where set (a pretrained model's preset: one epoch), the delivered model `--epochs`.
The final (delivered) finetune follows the noisy one unless it is given settings of its own:
`--final-FIELD`, or `--screen-model`, which gives the filtering stages the screen model's preset
and the final finetune the target's. Plain flags other than `lr`, `epochs`, `max_steps`, the LoRA
and finetune-mode flags reach the final finetune too.
Help texts and choices come from the dataclasses' docstrings and field metadata.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Training fields that only the noisy (and final) finetune takes from a plain flag.
NOISY_ONLY = ("lr", "epochs", "max_steps")
# Fields no flag sets: stage seeds follow `RunConfig.seed`, the safety finetune's length follows
# `safety_steps`, and the safety finetune trains the noisy finetune's adapter (its LoRA settings).
NOT_FLAGS = {"model", "noisy_train.seed", "safety_train.seed", "final_train.seed", "threshold.seed"}
SAFETY_SKIPPED = ("epochs", "max_steps", "lora", "prompt_format", "assistant_turns", "report_to")
# `final_train` fields without a `--final-` flag (they follow the noisy finetune's flags or the run).
FINAL_SKIPPED = ("seed", "report_to")
# Flags kept under their established names.
RENAMED = {"final": "--no-final"}


@dataclass(frozen=True)
class Option:
    """One flag and the configuration fields it sets."""

    flag: str
    paths: tuple[str, ...]
    type: Any
    help: str
    choices: tuple | None = None
    required: bool = False


def field_docs(cls: type) -> dict[str, str]:
    """Per-field help from a dataclass's Google-style `Attributes:` docstring section."""
    doc = cls.__doc__ or ""
    if "Attributes:" not in doc:
        return {}
    docs: dict[str, str] = {}
    current = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"^\s{4,8}(\w+): (.*)$", line)
        if m and (current is None or len(line) - len(line.lstrip()) <= 8):
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the scalar type, whether it is a tuple of str) behind Optional[...] and tuple[...]."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return str, True
    return hint, False


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (also behind Optional[...]), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field, type]]:
    """(dotted path, type hint, field, owner class) of every non-dataclass field, recursively."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _dataclass_of(hint):
            out += _leaves(_dataclass_of(hint), f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", hint, f, cls))
    return out


def run_options() -> list[Option]:
    """Every flag of `forgetfilter run` that sets a configuration field."""
    from .pipeline import RunConfig

    options: list[Option] = []
    shared: dict[str, list[str]] = {}
    for path, hint, f, owner in _leaves(RunConfig):
        if path in NOT_FLAGS or path.startswith("threshold."):
            continue
        parts = path.split(".")
        help_text = field_docs(owner).get(f.name, "")
        choices = f.metadata.get("choices")
        choices = choices() if callable(choices) else choices
        if len(parts) == 1:
            options.append(
                Option(RENAMED.get(path, "--" + _dash(path)), (path,), hint, help_text, choices)
            )
            continue
        stage, rest = parts[0], ".".join(parts[1:])
        if stage == "safety_train":
            if parts[1] in SAFETY_SKIPPED:
                continue
            options.append(Option("--safety-" + _dash(rest), (path,), hint, help_text, choices))
        if stage == "final_train" and parts[1] not in FINAL_SKIPPED:
            flag = "--final-" + _dash(rest.replace("lora.", "lora-"))
            options.append(Option(flag, (path,), hint, help_text, choices))
        if stage == "noisy_train":
            shared.setdefault(rest, []).append(path)
            if parts[1] not in NOISY_ONLY and parts[1] != "lora":
                shared[rest].append(f"safety_train.{rest}")
                if parts[1] != "finetune":
                    shared[rest].append(f"final_train.{rest}")
            flag = "--" + _dash(rest.replace("lora.", "lora-"))
            options.append(Option(flag, tuple(shared[rest]), hint, help_text, choices))
    return options


def train_options() -> list[Option]:
    """Every flag of `forgetfilter train`: one per `TrainConfig` field (`--lora-FIELD` for LoRA)."""
    from .training import TrainConfig

    options = []
    for path, hint, f, owner in _leaves(TrainConfig):
        choices = f.metadata.get("choices")
        choices = choices() if callable(choices) else choices
        flag = "--" + _dash(path.replace("lora.", "lora-"))
        options.append(Option(flag, (path,), hint, field_docs(owner).get(f.name, ""), choices))
    return options


# `eval`: fields set otherwise (--suite takes a comma list) or not from the command line (dicts),
# and flags kept under their established names.
EVAL_SKIPPED = ("suites", "max_new_tokens", "self_correction_cues")
EVAL_RENAMED = {
    "outputs_path": "--outputs",
    "classifier_data_dir": "--data-dir",
    "progress": "--no-progress",
}


def eval_options() -> list[Option]:
    """Every flag of `forgetfilter eval` that sets an `EvalConfig` field."""
    from .evaluation import EvalConfig

    options = []
    docs = field_docs(EvalConfig)
    for path, hint, f, _ in _leaves(EvalConfig):
        if path in EVAL_SKIPPED:
            continue
        choices = f.metadata.get("choices")
        flag = EVAL_RENAMED.get(path, "--" + _dash(path))
        options.append(Option(flag, (path,), hint, docs.get(f.name, ""), choices))
    return options


def mixture_options() -> list[Option]:
    """Every flag of `forgetfilter data build`: one per `MixtureConfig` field."""
    from .mixture import MixtureConfig

    docs = field_docs(MixtureConfig)
    return [
        Option(
            "--" + _dash(path),
            (path,),
            hint,
            docs.get(f.name, ""),
            f.metadata.get("choices"),
            required=f.default is dataclasses.MISSING,
        )
        for path, hint, f, _ in _leaves(MixtureConfig)
    ]


def build_eval_config(settings: dict[str, Any]):
    """`EvalConfig()` with `settings` (field -> value) applied."""
    from .evaluation import EvalConfig

    return build_config(EvalConfig(), settings)


def _dash(name: str) -> str:
    return name.replace("_", "-").replace(".", "-")


def add_run_options(parser: argparse.ArgumentParser) -> list[Option]:
    """Add `run`'s generated flags (default: unset, so the preset and the file show through)."""
    group = parser.add_argument_group(
        "settings (each flag sets a configuration field; the defaults depend on the model, "
        "see `forgetfilter.options`)"
    )
    return add_options(group, run_options())


def add_options(group, options: list[Option], modes: bool = True) -> list[Option]:
    """Add generated flags, plus (with `modes`) `--full`/`--lora` for the finetuning mode."""
    for opt in options:
        kind, is_tuple = _base_type(opt.type)
        text = f"turn off: {opt.help}" if opt.flag.startswith("--no-") else opt.help
        text = text.replace("%", "%%")
        kw: dict[str, Any] = {"dest": _dest(opt), "default": argparse.SUPPRESS, "help": text}
        if opt.required:
            kw["required"] = True
        if kind is not bool and not opt.choices:
            kw["metavar"] = opt.paths[0].rsplit(".", 1)[-1].upper()
        if kind is bool:
            kw["action"] = "store_false" if opt.flag.startswith("--no-") else "store_true"
        else:
            kw["type"] = kind
            if is_tuple:
                kw["nargs"] = "+"
            if opt.choices:
                kw["choices"] = list(opt.choices)
        group.add_argument(opt.flag, **kw)
    if not modes:
        return options
    group.add_argument(
        "--full",
        dest="opt:full",
        action="store_true",
        default=argparse.SUPPRESS,
        help="full finetuning (same as --finetune full)",
    )
    group.add_argument(
        "--lora",
        dest="opt:full",
        action="store_false",
        default=argparse.SUPPRESS,
        help="LoRA finetuning (same as --finetune lora)",
    )
    return options


def _dest(opt: Option) -> str:
    return "opt:" + opt.flag.lstrip("-")


def flag_settings(args: argparse.Namespace, options: list[Option] | None = None) -> dict[str, Any]:
    """The dotted fields set by the flags given on the command line (`run`'s by default)."""
    given = vars(args)
    options = run_options() if options is None else options
    out: dict[str, Any] = {}
    for opt in options:
        if _dest(opt) in given:
            value = given[_dest(opt)]
            value = tuple(value) if isinstance(value, list) else value
            out |= dict.fromkeys(opt.paths, value)
    if "opt:full" in given:
        mode = "full" if given["opt:full"] else "lora"
        modes = [
            p
            for opt in options
            for p in opt.paths
            if p.endswith("finetune") and not p.startswith("final_train.")
        ]
        out |= dict.fromkeys(modes, mode)
    return out


def build_train_config(settings: dict[str, Any]):
    """`TrainConfig()` with `settings` (dotted field -> value) applied."""
    from .training import TrainConfig

    return build_config(TrainConfig(), settings)


def build_config(start: Any, settings: dict[str, Any]) -> Any:
    """A copy of the dataclass `start` with `settings` (dotted field -> value) applied, rebuilt
    from scratch so that its checks (`__post_init__`) run on the result."""
    base = dataclasses.asdict(start)
    inherits = getattr(type(start), "INHERITS", {})
    # settings of an unset config that inherits from another go last, after the one it copies
    for path, value in sorted(settings.items(), key=lambda kv: kv[0].split(".")[0] in inherits):
        node = base
        *parents, leaf = path.split(".")
        if parents and base.get(parents[0]) is None and parents[0] in inherits:
            base[parents[0]] = copy.deepcopy(base[inherits[parents[0]]])
        for p in parents:
            node = node[p]
        node[leaf] = value
    return _build(type(start), base)


THRESHOLD_FLAGS = {
    "threshold.threshold": "--threshold",
    "threshold.fraction": "--remove-fraction",
    "threshold.max_remove": "--remove-at-most",
    "threshold.max_false_removal": "--max-false-removal",
    "threshold.method": "--auto/--threshold/--remove-fraction",
}
#: Arguments of the library's entry points (not config fields) that errors name, by command.
ARGUMENT_FLAGS = {
    "run": {"force=True": "--force", "resume=False": "--force"},
    "train": {"resume=False": "--no-resume"},
}


def flag_names(command: str) -> dict[str, str]:
    """Field path -> the flag that sets it in `command` (`run`, `train`, `eval` or `data build`).

    A `run` flag that sets the noisy finetune's field also answers for its bare name
    (`batch_size` -> `--batch-size`), which is how training's own checks name it.
    """
    tables = {
        "run": run_options,
        "train": train_options,
        "eval": eval_options,
        "data build": mixture_options,
    }
    options = tables[command]()
    names: dict[str, str] = dict(THRESHOLD_FLAGS) if command == "run" else {}
    names.update(ARGUMENT_FLAGS.get(command, {}))
    for opt in options:
        for path in opt.paths:
            names.setdefault(path, opt.flag)
            bare = path.split(".", 1)[1] if path.startswith("noisy_train.") else path
            names.setdefault(bare, opt.flag)
    return names


def name_flags(message: str, command: str) -> str:
    """`message` with every backticked field path replaced by `command`'s flag for it."""
    names = flag_names(command)
    return re.sub(r"`([\w.=]+)`", lambda m: names.get(m.group(1), m.group(0)), message)


def threshold_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The cut given by --threshold, --remove-fraction or --auto, and the cap of
    --remove-at-most (nothing when none is given)."""
    out: dict[str, Any] = {}
    if getattr(args, "remove_at_most", None) is not None:
        out["threshold.max_remove"] = args.remove_at_most
    if getattr(args, "max_false_removal", None) is not None:
        out["threshold.max_false_removal"] = args.max_false_removal
    if getattr(args, "threshold", None) is not None:
        return out | {"threshold.method": "threshold", "threshold.threshold": args.threshold}
    if getattr(args, "remove_fraction", None) is not None:
        return out | {"threshold.method": "fraction", "threshold.fraction": args.remove_fraction}
    if getattr(args, "auto", False):
        return out | {"threshold.method": "auto"}
    return out


def file_settings(path: str | Path) -> dict[str, Any]:
    """The dotted fields of a YAML (or JSON) config file, checked against the dataclasses."""
    import yaml

    from .pipeline import RunConfig

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of RunConfig fields")
    known = {p for p, *_ in _leaves(RunConfig)}
    groups = {p.rsplit(".", 1)[0] for p in known if "." in p}
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for key, value in d.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and name in groups:
                walk(value, name + ".")
            elif name in known:
                flat[name] = tuple(value) if isinstance(value, list) else value
            else:
                raise ConfigError(f"{path}: unknown field {name!r}")

    walk(data, "")
    return flat


def build_run_config(model: str, settings: dict[str, Any]):
    """The model's preset RunConfig with `settings` (dotted field -> value) applied, validated."""
    from .pipeline import default_run_config

    # without --normalise (--neighbours), the signal's default (None), not the preset's resolved one
    preset = default_run_config(model, screen_model=settings.get("screen_model"))
    unset = {"normalise": None, "neighbours": None}
    return build_config(preset, {**unset, "model": model, **settings})


def _build(cls: type, data: dict) -> Any:
    """A dataclass from a nested dict (as `dataclasses.asdict` writes it)."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = data[f.name]
        inner = _dataclass_of(hints[f.name])
        if inner and value is not None:
            value = _build(inner, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad settings for {cls.__name__}: {exc}") from None
