"""The `forgetfilter` command: a thin argparse layer over the library API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import ForgetFilterError


def _model_name(a: argparse.Namespace) -> str:
    """--model with --revision attached as ID@REV."""
    return f"{a.model}@{a.revision}" if getattr(a, "revision", None) else a.model


# ---------------------------------------------------------------- data (readers, datasets, mixture)
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check user data files and build the paper's noisy mixtures")
    dsub = p.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="read a data file and report its formats and problems")
    c.add_argument("file", help="JSONL, JSON, CSV or Parquet file")
    c.add_argument("--skip-invalid", action="store_true", help="list bad records, exit 0")
    c.set_defaults(func=_data_check)
    from .options import add_options, mixture_options

    b = dsub.add_parser("build", help="build a noisy mixture, safety set and eval sets")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--data-dir", default=None, help="raw data (default: $FORGETFILTER_DATA)")
    add_options(b.add_argument_group("mixture"), mixture_options(), modes=False)
    b.set_defaults(func=_data_build)


def _data_check(args: argparse.Namespace) -> int:
    from .readers import read_examples

    _, report = read_examples(args.file, skip_invalid=True)
    report.skipped = args.skip_invalid
    print(report.summary())
    if report.problems and not args.skip_invalid:
        raise report.error()
    return 0


def _data_build(args: argparse.Namespace) -> int:
    from .mixture import MixtureConfig, build_mixture
    from .options import flag_settings, mixture_options
    from .paths import data_dir

    cfg = MixtureConfig(**flag_settings(args, mixture_options()))
    manifest = build_mixture(cfg, data_dir(args.data_dir), args.out)
    print(f"built {args.out} (risk={cfg.risk}, n={cfg.n}, R={cfg.unsafe_ratio}, seed={cfg.seed})")
    for name, info in manifest["files"].items():
        parts = ", ".join(f"{k} {v}" for k, v in info["by_source_label"].items())
        print(f"  {name}: {info['n']} ({parts})")
    for name, s in manifest["shortfall"].items():
        print(f"  short: {name}: {s['got']} of {s['wanted']}")
    return 0


# ---------------------------------------------------------------- models and training
def _add_training(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="finetune a causal LM (LoRA or full) on a data file")
    p.add_argument("--model", required=True, help="model dir, hub id, adapter dir or `tiny`")
    p.add_argument("--data", required=True, help="JSONL/JSON/CSV/Parquet prompt-response file")
    p.add_argument("--out", required=True, help="output dir (rerun the same command to resume)")
    from .options import add_options, train_options

    add_options(p.add_argument_group("training settings (TrainConfig fields)"), train_options())
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint (the default)"
    )
    p.add_argument("--no-resume", action="store_true", help="start over, deleting earlier outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-invalid", action="store_true", help="skip bad records in --data")
    p.add_argument("--revision", default=None, help="hub revision of --model (same as ID@REV)")
    p.set_defaults(func=_train)
    p = sub.add_parser("model", help="build the built-in tiny aligned model, export merged models")
    msub = p.add_subparsers(dest="model_command", required=True)
    b = msub.add_parser("build-tiny", help="build the built-in model from the data directory")
    b.add_argument("--out", default=None, help="default: the cache location used for `tiny`")
    b.add_argument("--preset", choices=["micro", "tiny", "small"], default="tiny")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--data-dir", default=None, help="raw data (default: $FORGETFILTER_DATA)")
    b.add_argument("--force", action="store_true", help="rebuild even when already built")
    b.set_defaults(func=_build_tiny)
    e = msub.add_parser("export-merged", help="merge a LoRA adapter into its base model")
    e.add_argument("--model", required=True, help="adapter dir or training output dir")
    e.add_argument("--out", required=True)
    e.set_defaults(func=_export_merged)


def _train(args: argparse.Namespace) -> int:
    from .options import build_train_config, flag_settings, train_options
    from .readers import read_examples
    from .training import train

    records, _ = read_examples(args.data, skip_invalid=args.skip_invalid)
    cfg = build_train_config(flag_settings(args, train_options()))
    if args.no_progress:
        _quiet_library_bars()
    result = train(
        _model_name(args),
        records,
        args.out,
        cfg,
        resume=not args.no_resume,
        progress=not args.no_progress,
    )
    if result.already_complete:
        print(f"{args.out} is already complete ({result.steps} steps); nothing to do")
    elif _is_main_process():
        loss = result.final_loss
        print(f"trained {result.steps} steps, final loss {loss:.4f}: {result.model_dir}")
    return 0


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _build_tiny(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .tiny import build_tiny, ensure_tiny, tiny_model_dir

    out = Path(args.out) if args.out else tiny_model_dir(args.preset, args.seed)
    if (out / "build_info.json").exists() and not args.force:
        print(f"{out} is already built (use --force to rebuild)")
        return 0
    if args.out:
        build_tiny(out, preset=args.preset, seed=args.seed, data_dir=args.data_dir)
    else:  # the cache location: under the same lock as `resolve_model("tiny")`
        ensure_tiny(args.preset, args.seed, data_dir=args.data_dir, force=args.force)
    print(f"built {out}")
    return 0


def _export_merged(args: argparse.Namespace) -> int:
    from .models import export_merged

    print(f"wrote {export_merged(args.model, args.out)}")
    return 0


# ---------------------------------------------------------------- pipeline
def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    from .options import add_run_options

    p = sub.add_parser("run", help="run ForgetFilter (Algorithm 1) end to end")
    p.add_argument(
        "--model",
        default=argparse.SUPPRESS,
        help="aligned model M0: hub id, local dir, .gguf file, `smollm2-135m-instruct` or `tiny` "
        "(the default)",
    )
    p.add_argument("--revision", default=None, help="hub revision of --model (same as ID@REV)")
    p.add_argument("--noisy", required=True, help="the custom finetuning data to filter")
    p.add_argument("--safe", required=True, help="safe examples for the short safety finetune")
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument(
        "--config",
        default=None,
        help="YAML file of RunConfig fields (nested as the dataclasses); flags override it",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--auto", action="store_true", help="choose phi from the score distribution (default)"
    )
    g.add_argument(
        "--threshold", type=float, help="remove examples whose filter score exceeds this phi"
    )
    g.add_argument(
        "--remove-fraction", type=float, help="remove this fraction with the highest filter score"
    )
    p.add_argument(
        "--remove-at-most",
        type=float,
        default=None,
        metavar="N|FRACTION",
        help="a cap the cut never exceeds: a number of examples, or a share of them below 1 "
        "(the summary warns when it binds)",
    )
    p.add_argument(
        "--trusted",
        default=None,
        metavar="FILE",
        help="a sample of your own data known to be clean (any input format): finetuned and "
        "scored with the noisy data, never delivered; the automatic cut then removes at most "
        "--max-false-removal of the clean examples in expectation, and the unsafe share is estimated",
    )
    p.add_argument(
        "--max-false-removal",
        type=float,
        default=None,
        metavar="ALPHA",
        help="with --trusted: the bound on the expected share of clean examples removed "
        "(default 0.05; needs at least 1/ALPHA - 1 trusted examples)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="discard a run made with another model, data, noisy finetune or seed (a "
        "change of only the cut, the safety or the final finetune redoes just those stages)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_run_options(p)
    p.set_defaults(func=_cmd_run)


def run_config_from_args(a: argparse.Namespace):
    """The RunConfig of a `run` command line: the model's preset, then --config, then the flags."""
    from .options import build_run_config, file_settings, flag_settings, threshold_settings

    settings = file_settings(a.config) if a.config else {}
    settings |= flag_settings(a) | threshold_settings(a)
    from_file = settings.pop("model", None)
    model = getattr(a, "model", None) or from_file or "tiny"
    if a.revision:
        model = f"{model}@{a.revision}"
    return build_run_config(model, settings)


def _quiet_library_bars() -> None:
    """Also hide transformers' weight-loading and shard-writing bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _cmd_run(a: argparse.Namespace) -> int:
    from .pipeline import run_forgetfilter

    if a.no_progress:
        _quiet_library_bars()
    cfg = run_config_from_args(a)
    result = run_forgetfilter(
        a.noisy, a.safe, a.out, cfg, trusted=a.trusted, force=a.force, progress=not a.no_progress
    )
    if os.environ.get("RANK", "0") == "0":  # once under torchrun / accelerate launch
        _print_run_summary(result.summary)
    return 0


def _num(value: float | None) -> str:
    """A metric to 3 decimals, or `n/a` when undefined (e.g. AUROC with one class of labels)."""
    return "n/a" if value is None else f"{value:.3f}"


def _print_run_summary(s: dict) -> None:
    from .report import baseline_text

    c, t = s["counts"], s["threshold"]
    print(
        f"input {c['input']}: kept {c['kept']}, removed {c['removed']}, rejected at load {c['rejected_at_load']}"
    )
    print(f"phi = {t['phi']:.4g} ({t['method']}): {t['reason']}")
    if "unsafe_share" in s:
        from .share import describe

        print(describe(s["unsafe_share"]))
    q = s.get("quality")
    if q:
        f = q["forgetting"]
        print(
            f"against hidden labels: precision {_num(f['precision'])} recall {_num(f['recall'])} "
            f"F1 {_num(f['f1'])} AUROC {_num(f['auroc'])} (score: {s['signal']}, {s['normalise']}"
            f"{', neighbours ' + str(s['neighbours']) if s.get('neighbours') else ''})"
        )
        print(baseline_text(q))
    tr = s.get("truncated") or {}
    if tr.get("noisy") or tr.get("safe"):
        print(
            f"truncated to {tr.get('max_length')} tokens: {tr.get('noisy') or 0} noisy and "
            f"{tr.get('safe') or 0} safe records ({tr.get('policy')})"
        )
    if s.get("safe_noisy_overlap"):
        print(
            f"note: {s['safe_noisy_overlap']} safe examples also occur in the noisy set (listed in inputs.json)"
        )
    if s.get("warning"):
        print("warning:", s["warning"])
    if s.get("final_skipped"):
        print("warning:", s["final_skipped"])
    pf = s.get("prompt_format") or {}
    origin = (s.get("model_source") or {}).get("origin")
    if origin:
        print(f"model: {s['model']} ({origin.get('source')}, {origin.get('weights')})")
    if pf:
        print(f"prompt format: {pf['used']} (asked: {pf['requested']})")
    if s.get("screening"):
        print(f"screening: {s['screening']['note']}")
    if s["outputs"].get("cleaned"):
        print(f"cleaned data (your records, your format): {s['outputs']['cleaned']}")
    print(f"audit: {s['outputs']['kept.jsonl']}, {s['outputs']['removed.jsonl']}, summary.json")
    report = Path(s["outputs"]["kept.jsonl"]).parent / "report.html"
    if report.exists():
        print(f"report: {report} (open it in a browser; figures also under report/)")


# ---------------------------------------------------------------- evaluation
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model: bias, toxicity, harm, squad, alpaca")
    p.add_argument("--model", required=True, help="model dir, hub id, run output dir or `tiny`")
    p.add_argument("--suite", default="bias,toxicity,harm,squad,alpaca", help="comma-separated")
    p.add_argument("--data", required=True, help="dir with <suite>.jsonl (or eval/), or one file")
    p.add_argument("--out", required=True, help="results JSON (written atomically)")
    p.add_argument("--revision", default=None, help="hub revision of --model (same as ID@REV)")
    from .options import add_options, eval_options

    add_options(
        p.add_argument_group("evaluation settings (EvalConfig fields)"), eval_options(), modes=False
    )
    p.set_defaults(func=_run_eval)


def _run_eval(a: argparse.Namespace) -> int:
    from .evaluation import evaluate, format_table
    from .io import write_json
    from .options import build_eval_config, eval_options, flag_settings

    cfg = build_eval_config(flag_settings(a, eval_options()))
    if not cfg.progress:
        _quiet_library_bars()
    result = evaluate(_model_name(a), a.suite, a.data, cfg)
    write_json(a.out, result)
    print(format_table(result))
    print(f"wrote {a.out}")
    return 0


# ---------------------------------------------------------------- experiments, report, demo
def _add_experiments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="the paper's experiments with tables, plots and a report")
    p.add_argument(
        "name",
        choices=["dynamics", "compare", "ablate", "interleaved", "report"],
        help="the experiment; `report` rebuilds report.html, tables and plots from results.json",
    )
    p.add_argument(
        "--out", required=True, help="experiment directory (rerun the same command to resume)"
    )
    p.add_argument("--model", default="tiny", help="aligned model M0: HF id, local path or `tiny`")
    p.add_argument("--data-dir", default=None, help="data pack root (default $FORGETFILTER_DATA)")
    p.add_argument(
        "--risk",
        nargs="+",
        choices=["bias", "toxicity", "harm"],
        default=["bias"],
        help="risk(s); compare runs each, the other experiments use the first",
    )
    p.add_argument(
        "--scale",
        choices=["test", "small", "paper"],
        default="small",
        help="small: minutes on a CPU with the tiny model; paper: the paper's sizes",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--methods", default=None, help="compare only: comma-separated subset of methods"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="discard a directory made with another model, scale or seed",
    )
    p.set_defaults(func=_cmd_experiment)
    p = sub.add_parser("demo", help="the whole story on the built-in tiny model, offline")
    p.add_argument("--out", default="forgetfilter-demo", help="demo directory (rerun to resume)")
    p.add_argument("--risk", choices=["bias", "toxicity", "harm", "all"], default="bias")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="discard a demo made with other settings")
    p.set_defaults(func=_cmd_demo)


def _cmd_experiment(a: argparse.Namespace) -> int:
    from .experiments import SCALES, Context, run_experiment

    if a.name == "report":
        from .experiments import regenerate_report

        regenerate_report(a.out)
        print(f"wrote {a.out}/report.html")
        return 0
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip()) if a.methods else None
    ctx = Context(
        a.out,
        model=a.model,
        data_dir=a.data_dir,
        scale=SCALES[a.scale],
        seed=a.seed,
        risks=tuple(a.risk),
        methods=methods,
        force=a.force,
    )
    results = run_experiment(a.name, ctx)
    print(
        f"{a.name}: {results['wall_s_this_invocation']} s; wrote {a.out}/results.json, table.md, "
        "table.csv, plots/ and report.html"
    )
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(a.out, DemoConfig(risk=a.risk, seed=a.seed), force=a.force)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write report.html (and report/*.png) for a finished `forgetfilter run`"
    )
    p.add_argument("run_dir", help="the run's --out directory")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from .run_report import write_run_report

    path = write_run_report(args.run_dir)
    print(f"wrote {path} (open it in a browser; figures also under {path.parent / 'report'})")
    return 0


def _not_yet(name: str) -> int:
    raise ForgetFilterError(f"`forgetfilter {name}` is not yet available")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="forgetfilter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data, _add_training, _add_pipeline, _add_eval, _add_experiments, _add_report):
        add(sub)
    return parser


_MULTI_PROCESS = ("_train", "_cmd_run")  # the commands that share work among launched processes


def _check_launch(args) -> None:
    """Refuse a multi-process launch (torchrun / accelerate launch) of a one-process command."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world != "1" and args.func.__name__ not in _MULTI_PROCESS:
        raise ForgetFilterError(
            f"this command runs in one process, but {world} were launched (WORLD_SIZE); only "
            "`train` and `run` use several: start it with plain `forgetfilter ...`"
        )


def _in_flags(exc: ForgetFilterError, args) -> str:
    """An error as the command line sees it: the fields it names, named by their flags."""
    command = getattr(args, "command", None)
    if command == "data":
        command = f"data {getattr(args, 'data_command', '')}"
    if command in ("run", "train", "eval", "data build"):
        from .options import name_flags

        return name_flags(str(exc), command)
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        _check_launch(args)
        return int(args.func(args) or 0)
    except ForgetFilterError as exc:
        print(f"error: {_in_flags(exc, args)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
