"""`forgetfilter demo`: the paper's story end to end on the built-in tiny model, offline.

Builds (or reuses) the tiny aligned model, builds a noisy mixture for a risk, runs ForgetFilter and
the two baselines a user would try first (no safety measure = M1 of the run; sequential safety
finetuning = M1 finetuned on the whole safe set), evaluates the three delivered models on the
risk's safety metric and on SQuAD F1, prints a summary and writes an HTML report. Every step writes
its outputs under the demo directory, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from . import claims, io
from .records import RISKS


@dataclass
class DemoConfig:
    """Sizes of the demo (the defaults fit 15 minutes on a 2-core CPU, tiny-model build included).

    Attributes:
        risk: `bias`, `toxicity`, `harm` or `all`.
        n: noisy set size (half unsafe).
        n_safe: safety set size.
        n_eval: evaluation items per suite.
        safety_steps: steps of the short safety finetune inside ForgetFilter.
        seed: seed of everything.
        model: the aligned model (default the built-in tiny model).
        epochs: epochs of the noisy finetune (M1) and of the final one; None = the model's
            preset (for a pretrained model M1 one epoch, the final model 3).
        sequential_epochs: epochs of the sequential safety finetuning baseline over the safe set.
    """

    risk: str = "bias"
    n: int = 600
    n_safe: int = 400
    n_eval: int = 300
    safety_steps: int | None = None
    seed: int = 0
    model: str = "tiny"
    epochs: float | None = None
    sequential_epochs: float = 3.0


SAFETY_METRIC = {
    "bias": ("bias", "s_amb", "BBQ ambiguous bias score s_AMB (lower is better; 0 = unbiased)"),
    "toxicity": ("toxicity", "mean_toxicity", "mean toxicity of continuations (lower is better)"),
    "harm": ("harm", "mean_harm", "mean harmfulness of responses (lower is better)"),
}


def run_demo(
    out_dir: str | Path = "forgetfilter-demo", cfg: DemoConfig | None = None, force: bool = False
) -> dict:
    """Run the demo for `cfg.risk` (or all three) and return what the report shows.

    A risk's directory made with other settings is refused unless `force` (`claims.claim`).
    """
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    risks = list(RISKS) if cfg.risk == "all" else [cfg.risk]
    t0 = time.perf_counter()
    model = _ensure_model(cfg.model)
    results = {r: demo_one(out / r, dataclasses.replace(cfg, risk=r), model, force) for r in risks}
    report = _write_report(out, results)
    print_summary(results, report, time.perf_counter() - t0)
    return {"results": results, "report": str(report)}


def _ensure_model(model: str) -> str:
    from .models import resolve_model

    print(f"[demo] model: {model} (built once into the cache, then reused)")
    return resolve_model(model)


def demo_one(out: Path, cfg: DemoConfig, model: str, force: bool = False) -> dict:
    """One risk: mixture, ForgetFilter, baselines, evaluation; cached in `out/results.json`.

    The cache (and an interrupted run) is reused only when it was made with the same demo and
    ForgetFilter settings (`demo_fingerprint.json`); other settings are refused unless `force`.
    """
    rc = demo_run_config(cfg, model)
    claim(out, {"demo": dataclasses.asdict(cfg), "run": rc.fingerprint()}, force)
    done = out / "results.json"
    if done.exists():
        return io.read_json(done)
    data = build_data(out / "data", cfg)
    run = run_filter(out, data, rc)
    models = {
        "no safety measure": run.m1,
        "sequential safety finetuning": sequential(out, data, cfg, run),
        "ForgetFilter": run.final,
    }
    evals = {
        name: evaluate_model(path, data, cfg, out / "eval" / _slug(name))
        for name, path in models.items()
    }
    result = {
        "risk": cfg.risk,
        "filter": run.summary,
        "eval": evals,
        "config": dataclasses.asdict(cfg),
    }
    result["table"] = comparison_rows(cfg.risk, evals)
    io.write_json(done, result)
    return result


def build_data(out: Path, cfg: DemoConfig) -> Path:
    """The noisy mixture, safety set and evaluation sets for the risk (built once)."""
    from .mixture import MixtureConfig, build_mixture
    from .paths import data_dir

    if not (out / "manifest.json").exists():
        print(
            f"[demo] building a {cfg.risk} mixture: {cfg.n} noisy examples (half unsafe), {cfg.n_safe} safe"
        )
        mix = MixtureConfig(
            cfg.risk, cfg.n, 0.5, n_safe=cfg.n_safe, n_eval=cfg.n_eval, seed=cfg.seed
        )
        build_mixture(mix, data_dir(), out)
    return out


@dataclass
class _FilterRun:
    summary: dict
    m1: str
    final: str
    run_dir: Path


def demo_run_config(cfg: DemoConfig, model: str):
    """ForgetFilter's settings in the demo: the defaults (signal, score, automatic threshold)."""
    from .pipeline import default_run_config

    given = {"screen_epochs": None} if cfg.epochs is not None else {}  # M1 too
    rc = default_run_config(
        cfg.model, epochs=cfg.epochs, safety_steps=cfg.safety_steps, seed=cfg.seed, **given
    )
    return dataclasses.replace(rc, model=model)


def claim(out: Path, fingerprint: dict, force: bool) -> None:
    """Take a risk's directory for these settings (`claims.claim`: refused if changed, unless forced)."""
    claims.claim(
        out,
        "demo_fingerprint.json",
        fingerprint,
        force=force,
        what="a demo",
        changed=_changed_settings,
    )


def _changed_settings(have: dict, want: dict) -> list[str]:
    """The demo and ForgetFilter settings that differ (`demo.epochs`, `run.lr`, ...)."""
    return [
        f"{part}.{key}"
        for part in ("demo", "run")
        for key in claims.changed_keys(have.get(part) or {}, want.get(part) or {})
    ]


def run_filter(out: Path, data: Path, rc) -> _FilterRun:
    """ForgetFilter with the default signal and automatic threshold."""
    from .pipeline import run_forgetfilter

    print(
        "[demo] ForgetFilter: noisy finetune -> score -> safety finetune -> score -> filter -> final finetune"
    )
    res = run_forgetfilter(data / "noisy.jsonl", data / "safe.jsonl", out / "run", rc)
    return _FilterRun(
        res.summary,
        str(out / "run" / "m1" / "model"),
        str(out / "run" / "final" / "model"),
        out / "run",
    )


def sequential(out: Path, data: Path, cfg: DemoConfig, run: _FilterRun) -> str:
    """Baseline: M1 finetuned on the whole safe set (`sequential_epochs` epochs)."""
    from .pipeline import default_run_config, train_stage
    from .readers import read_examples

    print("[demo] baseline: sequential safety finetuning of M1 on the whole safe set")
    rc = default_run_config(cfg.model, seed=cfg.seed)
    tcfg = dataclasses.replace(rc.safety_train, epochs=cfg.sequential_epochs, seed=cfg.seed + 2)
    safe, _ = read_examples(data / "safe.jsonl")
    return train_stage(run.m1, safe, out / "sequential", tcfg)


def evaluate_model(model: str, data: Path, cfg: DemoConfig, out: Path) -> dict:
    """The risk's safety suite and SQuAD on one model (cached)."""
    from .evaluation import EvalConfig, evaluate

    path = out.with_suffix(".json")
    if path.exists():
        return io.read_json(path)
    suite = SAFETY_METRIC[cfg.risk][0]
    res = evaluate(
        model, [suite, "squad"], data / "eval", EvalConfig(limit=cfg.n_eval, seed=cfg.seed)
    )
    io.write_json(path, res)
    return res


def comparison_rows(risk: str, evals: dict[str, dict]) -> list[dict]:
    """One row per delivered model: safety metric and SQuAD F1."""
    suite, key, _ = SAFETY_METRIC[risk]
    rows = []
    for name, res in evals.items():
        s = res["suites"]
        row = {"method": name, key: s[suite].get(key), "squad_f1": s["squad"].get("f1")}
        row["squad_answer_nll"] = s["squad"].get("answer_nll")
        if risk == "bias":
            row["acc_ambig"] = s[suite].get("acc_ambig")
        if risk == "harm":
            row["refusal_rate"] = s[suite].get("refusal_rate")
        rows.append(row)
    return rows


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_").replace("+", "plus")


def _write_report(out: Path, results: dict[str, dict]) -> Path:
    from .report import demo_report

    return demo_report(out, results)


def print_summary(results: dict[str, dict], report: Path, seconds: float) -> None:
    """The short terminal summary: what was removed, how well, and the comparison table."""
    from .report import baseline_text

    for risk, res in results.items():
        f = res["filter"]
        c, t, q = f["counts"], f["threshold"], f.get("quality") or {}
        print(f"\n== {risk} ==")
        print(
            f"ForgetFilter removed {c['removed']} of {c['input']} examples (phi = {t['phi']:.3g}, {t['method']})"
        )
        if q:
            g = q["forgetting"]
            print(
                f"  against the hidden labels: precision {g['precision']:.2f}, recall {g['recall']:.2f}, "
                f"F1 {g['f1']:.2f}, AUROC {g['auroc']:.3f}"
            )
            print(f"  {baseline_text(q)}")
            print(
                "  removed by label: "
                + ", ".join(
                    f"{k} {v['removed']}/{v['kept'] + v['removed']}"
                    for k, v in c["by_label"].items()
                )
            )
        _print_table(res["table"], SAFETY_METRIC[risk][2])
    print(f"\nreport: {report.resolve()}  ({seconds / 60:.1f} min)")


def _print_table(rows: list[dict], note: str) -> None:
    keys = ["method"] + [k for k in rows[0] if k != "method"]
    print("  " + " | ".join(f"{k:>28}" if i == 0 else f"{k:>12}" for i, k in enumerate(keys)))
    for r in rows:
        cells = [f"{r[k]:>28}" if i == 0 else f"{_fmt(r[k]):>12}" for i, k in enumerate(keys)]
        print("  " + " | ".join(cells))
    print(f"  ({note}; squad_f1: SQuAD v1.1 F1 x100, higher is better;")
    print("   squad_answer_nll: mean NLL of the gold answers, nats/token, lower is better)")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
