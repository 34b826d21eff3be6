"""The ``endprompt`` command line: a thin layer over plain functions (imports stay inside the subcommands so that
``endprompt --help`` is instant)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def demo(out_dir: Path, samples: int = 256, seed: int = 0, steps: int | None = None) -> None:
    """Quick end-to-end check of the foundation at the paper's setting (a=8192, b=20, 8K -> 64K).

    1. For every recipe, the share of relative distances in [0, L-1] its samples expose (union over ``samples``
       samples; Eq. 8-9 for EndPrompt), written to ``out_dir/coverage.csv``.
    2. The bandwidth sigma (Eq. 3) of each RoPE scaling at s = 8.
    3. A tiny random Llama fed an EndPrompt batch with the collator's explicit mask: the terminal segment's logits
       change when the first token changes (it attends to the head across the position jump), and do not without it.
    4. The tiny-cpu preset trained with EndPrompt (``steps``: only that many steps, on 64 documents: a smoke run).
    """
    import numpy as np
    import torch

    from endprompt import bound_tables, modeling
    from endprompt import rope as R
    from endprompt.batching import Collator, model_inputs
    from endprompt.recipe import Recipe

    a, b, L, original = 8192, 20, 65536, 8192
    out_dir.mkdir(parents=True, exist_ok=True)
    coverage = bound_tables.coverage_table(("endprompt", "endprompt-tail", "endprompt-random", "endprompt-pose", "pose",
                                     "full"), a, b, L, samples=samples, seed=seed)
    table = coverage.groupby("recipe", sort=False, as_index=False)["share_observed"].first()
    table.to_csv(out_dir / "coverage.csv", index=False)
    print(f"Share of the relative distances in [0, {L - 1}] seen by {samples} samples of each recipe (a={a}, b={b}):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))

    print(f"\nBandwidth sigma = max inv_freq (Eq. 3) at s = {L // original}, head_dim 128:")
    for rope_type in ("linear", "ntk", "dynamic", "yarn", "llama3"):
        cfg = R.for_extension(rope_type, original, L, rope_theta=500000.0)  # Llama-3's base
        print(f"  {rope_type:<8} sigma = {R.bandwidth(cfg, 128, seq_len=L):.4f}")

    rng = np.random.default_rng(seed)
    docs = [rng.integers(3, 1000, size=2048)]
    cue_ids = [np.arange(3, 14), np.array([1]), np.array([20, 21])]
    model = modeling.build_tiny_llama(seed, vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2,
                                      num_heads=4, num_kv_heads=2,
                                      rope=R.for_extension("linear", original, L, rope_theta=1e4),
                                      max_position_embeddings=L)
    col = Collator(Recipe(name="endprompt", a=512, b=b, target_len=L), pad_token_id=0, cue_ids=cue_ids, seed=seed)
    batch = col([docs[0]])
    seg2 = batch["segment_ids"][0] == 2
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][0, 0] += 1
    with torch.no_grad():
        run = lambda bt, mask: model(**{k: v for k, v in model_inputs(bt).items() if mask or k != "attention_mask"},
                                     use_cache=False).logits[0, seg2]
        with_mask = (run(changed, True) - run(batch, True)).abs().max().item()
        without = (run(changed, False) - run(batch, False)).abs().max().item()
    print(f"\nTiny Llama, EndPrompt batch (positions 0..511 then {L - int(seg2.sum())}..{L - 1}): changing token 0 "
          f"moves the terminal logits by {with_mask:.3g} with the collator's mask, {without:.3g} without")
    if not with_mask > 1e-4:
        raise SystemExit("FAILED: the terminal segment does not attend to the head")

    from endprompt.config import load_config
    from endprompt.train import train

    smoke = [f"optim.max_steps={steps}", "data.max_documents=64"] if steps else []
    cfg = load_config("tiny-cpu", overrides=[f"run.out_dir={out_dir / 'tiny-endprompt'}", "run.resume=false", *smoke])
    print(f"\nTraining the tiny Llama with EndPrompt ({cfg.recipe.a} text tokens + end prompt at "
          f"{cfg.recipe.target_len - cfg.recipe.b}..{cfg.recipe.target_len - 1}, PI x8) on the built-in corpus:")
    result = train(cfg)
    print(f"{result.steps} steps, loss {result.losses[0]:.3f} -> {result.final_loss:.3f}, "
          f"{result.tokens_per_s:.0f} tokens/s; model saved to {result.final_dir}")
    print(f"\nwrote {out_dir / 'coverage.csv'}")


ACCELERATE_CONFIGS = {"ddp": "configs/accelerate/ddp.yaml", "fsdp2": "configs/accelerate/fsdp2.yaml",
                      "deepspeed": "configs/accelerate/deepspeed_zero3.yaml", "auto": "configs/accelerate/ddp.yaml"}


def launch_command(cfg, preset: str | None, config_path: str | None, overrides: list[str]) -> str:
    """The shell command that runs this configuration: plain for one process, ``accelerate launch`` otherwise."""
    source = f"--preset {preset}" if preset else f"--config {config_path}" if config_path else ""
    sets = " ".join(f"--set {o}" for o in overrides)
    args = " ".join(x for x in (source, sets) if x)
    if cfg.run.num_processes * cfg.run.num_machines <= 1 and cfg.run.strategy in ("auto", "ddp"):
        return f"endprompt train {args}"
    conf = ACCELERATE_CONFIGS[cfg.run.strategy]
    return (f"accelerate launch --config_file {conf} --num_processes {cfg.run.num_processes * cfg.run.num_machines} "
            f"--num_machines {cfg.run.num_machines} -m endprompt.cli train {args}")


def train_command(args) -> int:
    from endprompt.config import load_config

    overrides = list(args.set or [])
    if args.recipe:
        overrides.append(f"recipe.name={args.recipe}")
    cfg = load_config(preset=args.preset, path=args.config, overrides=overrides)
    if args.dry_run:
        print("# resolved configuration")
        print(cfg.to_yaml())
        print("# launch command")
        print(launch_command(cfg, args.preset, args.config, overrides))
        return 0
    from endprompt.train import CheckpointError, RunDirLocked, TrainingDiverged, train

    try:
        result = train(cfg)
    except (TrainingDiverged, CheckpointError, RunDirLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"{result.status}: {result.steps}/{result.total_steps} steps, final loss {result.final_loss:.4f}, "
          f"{result.tokens_per_s:.0f} tokens/s; {'model in ' + result.final_dir if result.final_dir else ''}"
          f"{'checkpoint ' + result.checkpoint if result.status == 'stopped' else ''}")
    return 0


def lm_eval_command(args) -> int:
    import json

    from endprompt.evaluate import run_lm_eval

    out = run_lm_eval(args.model, args.tasks.split(","), model_args=args.model_args, include_path=args.include_path,
                      limit=args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lm_eval.json").write_text(json.dumps(out["results"], indent=1, default=str))
    print(json.dumps(out["results"], indent=1, default=str))
    return 0


def _lengths(text: str) -> list[int]:
    """``--lengths``: comma-separated positive integers, checked before any model is loaded."""
    out = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} in {text!r} is not a positive integer; give "
                                             "comma-separated token counts such as 256,512,1024")
        out.append(int(part))
    return out


def eval_command(args) -> int:
    import torch

    from endprompt import plotting
    from endprompt.evaluate import evaluate, save_results, summarize
    from endprompt.modeling import load_causal_lm, resolve_model
    from endprompt.tokenizer import load_tokenizer

    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from endprompt.sharedllm import is_sharedllm_dir, load_sharedllm

    path = resolve_model(args.model)  # a directory, or a model alias converted once into the cache
    # a saved SharedLLM is an architecture that stock from_pretrained cannot load; it evaluates as any causal LM
    load = load_sharedllm if is_sharedllm_dir(path) else load_causal_lm
    model = load(path, dtype=dtype).to(device)
    tokenizer = load_tokenizer(args.tokenizer, path)
    lengths = args.lengths
    table = evaluate(model, tokenizer, args.suite, lengths, num_samples=args.num_samples, seed=args.seed,
                     batch_size=args.batch_size, style=args.style, tasks=args.tasks.split(",") if args.tasks else None,
                     essay_path=args.essay_path, squad_path=args.squad_path, hotpotqa_path=args.hotpotqa_path,
                     model_name=args.name or Path(args.model).name, chat=args.chat)
    csv, _ = save_results(table, args.out)
    print(table.drop(columns=["reason"]).to_string(index=False))
    for _, row in table[table["status"] == "not_run"].drop_duplicates("task").iterrows():
        print(f"not run: {row['task']}: {row['reason']}")
    if table["suite"].isin(["ruler", "synthetic"]).any():
        print(summarize(table).to_string(index=False))
        plotting.save(plotting.plot_score_by_length(table), "eval_score_by_length", args.out)
        plotting.save(plotting.plot_task_bars(table, max(lengths)), "eval_tasks", args.out)
    if (table["task"] == "needle").any():
        plotting.save(plotting.plot_needle_heatmap(table), "eval_needle", args.out)
    if (table["task"] == "perplexity").any():
        plotting.save(plotting.plot_perplexity(table), "eval_perplexity", args.out)
    print(f"wrote {csv} and figures under {args.out}")
    return 0


def real_study_command(args) -> int:
    """``reproduce --preset real-64k``: the paper's lengths on a real checkpoint (`endprompt.real_study`)."""
    from dataclasses import replace

    from endprompt.real_study import REAL_PRESETS, run_real_study

    cfg = REAL_PRESETS[args.preset]
    cfg = replace(cfg, **({"out_dir": str(args.out)} if args.out else {}),
                  **({"methods": tuple(args.methods.split(","))} if args.methods else {}))
    results, costs = run_real_study(cfg)
    real_study_report(cfg, results, costs)
    return 0


def real_study_report(cfg, results, costs) -> list[Path]:
    """Print the real study's scores and costs; draw its figures next to the results."""
    from endprompt import plotting

    fig_dir = Path(cfg.out_dir) / "figures"
    paths = [plotting.save(plotting.plot_score_by_length(results, train_len=cfg.a + cfg.b, target_len=cfg.target_len),
                           f"{cfg.name}_score_by_length", fig_dir),
             plotting.save(plotting.plot_task_bars(results, max(cfg.eval_lengths)), f"{cfg.name}_tasks_at_target",
                           fig_dir)]
    ok = results[(results["status"] == "ok") & (results["metric"] != "digit_accuracy")]
    print(ok.pivot_table(index=["method", "task"], columns="length", values="score").round(1).to_string())
    print(costs.to_string(index=False))
    print(f"results: {cfg.out_dir}/results.csv, {cfg.out_dir}/costs.csv; figures: {', '.join(map(str, paths))}")
    return paths


def reproduce_command(args) -> int:
    import pandas as pd

    from endprompt import plotting, study_tables
    from endprompt.real_study import REAL_PRESETS
    from endprompt.reproduce import collect_study, run_study
    from endprompt.study import PRESETS

    if args.preset in REAL_PRESETS:
        return real_study_command(args)
    if args.preset not in PRESETS:
        raise ValueError(f"unknown study preset {args.preset!r}; presets are: {', '.join([*PRESETS, *REAL_PRESETS])}")
    cfg = PRESETS[args.preset]
    changes = {"out_dir": str(args.out)} if args.out else {}
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.methods:
        changes["methods"] = tuple(args.methods.split(","))
    if args.curve:
        changes["curve"] = tuple(float(f) for f in args.curve.split(","))
    from dataclasses import replace

    cfg = replace(cfg, **changes)
    table = collect_study(cfg, require_all=False) if args.collect else run_study(cfg)
    # the committed study draws into figures/; other presets next to their own results
    fig_dir = None if cfg.name == "study" and not args.figures_in_out else Path(cfg.out_dir) / "figures"
    paths = plotting.study_figures(study_tables.figure_tables(table, cfg.target_len), cfg.L0, cfg.target_len, fig_dir,
                                   prefix=f"02_{cfg.name}")
    if len(cfg.curve) > 1 and (Path(cfg.out_dir) / "curves.csv").exists():
        paths.append(learning_curves(Path(cfg.out_dir), cfg.name, cfg.target_len, fig_dir))
    summary = study_tables.study_table(table, cfg.target_len)
    print(summary.to_string(index=False))
    print(f"\npasskey exact match (%) by length; L0 = {cfg.L0}, target = {cfg.target_len}:")
    print(study_tables.passkey_table(table).to_string(index=False, float_format=lambda v: f"{v:.0f}"))
    print("\nthe paper's claims (paired by seed, Holm over each claim's comparisons; every comparison in claims.csv):")
    print_verdicts(pd.read_csv(Path(cfg.out_dir) / "claims.csv", dtype={"claim": str}))  # collect_study judged them
    print(f"results: {cfg.out_dir}/results.csv; figures: {', '.join(str(p) for p in paths)}")
    return 0


def print_verdicts(judged) -> None:
    """`endprompt.claims.verdicts`, a claim to two lines."""
    from endprompt import claims

    for row in claims.verdicts(judged).to_dict("records"):
        seeds = f"{row['seeds']} seed" + ("" if row["seeds"] == 1 else "s")
        print(f"({row['claim']}) {row['statement']}\n    {row['verdict']} ({seeds}); for: {row['for']}; "
              f"against: {row['against']}")


def claims_command(args) -> int:
    from endprompt.reproduce import judge_study

    print_verdicts(judge_study(args.study))
    print(f"every comparison: {args.study / 'claims.csv'}")
    return 0


def learning_curves(out: Path, name: str, target_len: int, fig_dir: Path | None) -> Path:
    """A study's learning curves at the target (``<out>/curves.csv``): their figure, and where the gold standard ran,
    the fraction of its cost at which each arm matches it (``<out>/cost_to_quality.csv``, printed)."""
    import pandas as pd

    from endprompt import plotting, study_tables

    curves = study_tables.curve_table(pd.read_csv(out / "curves.csv"), target_len)
    path = plotting.save(plotting.plot_learning_curves(curves, target_len), f"02_{name}_learning_curves", fig_dir)
    if "full" in set(curves["method"]):
        reach = study_tables.cost_to_quality(curves, reference="full")
        reach.to_csv(out / "cost_to_quality.csv", index=False)
        print(reach.to_string(index=False))
    return path


def _show_logs() -> None:
    """The library's INFO messages (e.g. "resumed from ...") and warnings on stderr, from the main process only."""
    import logging

    package = logging.getLogger("endprompt")
    if not any(getattr(h, "endprompt_cli", False) for h in package.handlers):  # main() may run twice in a process
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        handler.endprompt_cli = True
        package.addHandler(handler)
    package.setLevel(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING)
    package.propagate = False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="endprompt", description="Context extension of RoPE LMs with short sequences")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="quick end-to-end check of layouts, RoPE scalings and masks")
    p.add_argument("--out", type=Path, default=Path("results/quickcheck"))
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="train only this many steps on 64 documents (smoke run)")
    p = sub.add_parser("train", help="train with a preset or YAML config (see endprompt/presets)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="a preset name: tiny-cpu, llama3-8b-64k, llama2-7b-64k, mistral-7b-64k")
    src.add_argument("--config", help="a YAML file with the sections model, rope, data, recipe, optim, run")
    p.add_argument("--recipe", help="shortcut for --set recipe.name=...")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a field (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the launch command")
    p = sub.add_parser("eval", help="evaluate a local model offline (RULER-style, passkey, needle, perplexity, MQAR)")
    p.add_argument("--model", required=True, help="a local checkpoint directory or a model alias (smollm2-135m)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory or 'byte' (default: the model's)")
    p.add_argument("--suite", default="ruler", help="ruler, synthetic, passkey, needle, perplexity, mqar or all")
    p.add_argument("--lengths", default=[4096], type=_lengths,
                   help="comma-separated context lengths in the model's tokens, e.g. 4096,8192")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    p.add_argument("--num-samples", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", default="ruler", choices=["ruler", "compact"])
    p.add_argument("--chat", action="store_true",
                   help="prompt an instruct model through its chat template (RULER's chat protocol; stops at its "
                        "end of turn)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--essay-path", default=None)
    p.add_argument("--squad-path", default=None)
    p.add_argument("--hotpotqa-path", default=None)
    p.add_argument("--name", default=None, help="model name in the results (default: the directory name)")
    p.add_argument("--out", type=Path, default=Path("results/eval"))
    p = sub.add_parser("lm-eval", help="run lm-evaluation-harness tasks on a local model (local task data only)")
    p.add_argument("--model", required=True, help="a local checkpoint directory")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--model-args", default="", help="lm-eval HFLM arguments, e.g. dtype=bfloat16,max_length=8192")
    p.add_argument("--include-path", default=None, help="a directory of local task YAML files")
    p.add_argument("--limit", type=int, default=None, help="at most this many documents per task")
    p.add_argument("--out", type=Path, default=Path("results/lm_eval"))
    p = sub.add_parser("reproduce", help="the small-scale 8K->64K study (presets demo, study, study-bpe, smoke), or "
                                         "the paper's lengths on SmolLM2-135M for one GPU (real-64k)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--out", type=Path, default=None, help="results directory (default: results/<preset>)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    p.add_argument("--curve", default=None, help="learning curves: comma-separated fractions of the budget at which "
                   "every trained arm is evaluated, ending at 1 (e.g. 0.125,0.25,0.5,1)")
    p.add_argument("--collect", action="store_true",
                   help="train and evaluate nothing: tables and figures from the runs finished so far (a study in "
                        "progress), naming the runs left out")
    p.add_argument("--figures-in-out", action="store_true",
                   help="the study preset: write figures next to the results, not into figures/")
    p = sub.add_parser("claims", help="judge the paper's claims on a study's results.csv (writes claims.csv)")
    p.add_argument("study", type=Path, help="a study's output directory, e.g. results/study")
    args = parser.parse_args(argv)
    _show_logs()
    if args.command == "demo":
        demo(args.out, args.samples, args.seed, args.steps)
        return
    if args.command == "train" and not args.preset and not args.config:
        parser.error("train needs --preset or --config")
    command = {"train": train_command, "eval": eval_command, "lm-eval": lm_eval_command,
               "reproduce": reproduce_command, "claims": claims_command}[args.command]
    try:
        code = command(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: the message names the value and the fix
        print(f"error: {err}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
