"""Input ablation on the demo world: the full U-Net vs the same U-Net without the prior,
without the static features and without the coarse states (``train.drop_inputs``).

Each variant is trained on a 3 x 3 degree demo world with the demo's recipe (10 x 60
steps; ``INPUT_DROPOUT``, the input groups zeroed in a share of the training samples,
less any group the variant drops) once per training seed in ``SEEDS`` (same world,
split and steps; the seed changes initialisation, data order and masks), and scored on
the test blocks and test years in three conditions:

* *teacher-forced* and *rollout*: ``run_evaluate`` (prior = the observed previous
  year, or the model's own previous prediction);
* *prior hidden*: the same years and pixels predicted with no prior at all (all prior
  channels 0, as in the ``p_none`` share of training samples): what the coarse and
  static inputs give on their own.

Writes ``benchmarks/results/ablation.json`` (ours = the full model's mean
teacher-forced mIoU, reference = the best ablated variant's) and ``docs/ablation.md``.

``python -m benchmarks.bench_ablation --dropout-check`` instead trains the full model
with and without ``INPUT_DROPOUT`` for ``DROPOUT_CHECK_SEEDS`` and prints the table
quoted in ``docs/ablation.md`` (about 12 minutes; writes nothing).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data.demo_cube import demo_workspace, split_path  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "ablation.md"
TRAIN = {"epochs": 10, "steps_per_epoch": 60, "val_batches": 2}
EVALUATE = {"gbm_samples": 20000, "gbm_max_iter": 20}
# The recipe every variant is trained with (as in config/demo.yaml).
INPUT_DROPOUT = {"static": 0.5}
# Training seeds (the world and split are those of the demo config's seed, 42).
SEEDS = (42, 1)
DROPOUT_CHECK_SEEDS = (42, 1, 2, 3, 4, 5)
VARIANTS = {"full": [], "no prior": ["prior"], "no static": ["static"],
            "no coarse": ["coarse"]}
# condition -> key of a row's per-seed values
CONDITIONS = {"teacher-forced": "miou", "rollout": "rollout_miou", "prior hidden": "hidden_miou"}

def prior_hidden_scores(config, *, model_dir: Path, years: list[int]) -> dict:
    """Scores of the model predicting ``years`` with no prior, on the test-block land."""
    from ai4land.evaluate.rollout import unet_year
    from ai4land.evaluate.scores import ModelScores
    from ai4land.grid import Window
    from ai4land.io.cube import Cube
    from ai4land.models import load_model
    from ai4land.samples.features import codes_to_index
    from ai4land.split import load_split

    cube = Cube.from_config(config)
    split = load_split(split_path(config))
    classes = list(config.classes.predicted)
    whole = Window(0, 0, *cube.fine_grid.shape)
    test_blocks = [b for b in split.blocks if b.role == "test"]
    labels = np.full(cube.fine_grid.shape, -1, dtype="int64")  # as run_evaluate builds them
    for i, block in enumerate(test_blocks):
        labels[split.block_window(block).slices] = i
    labels[~cube.land_mask_window(whole)] = -1
    model, _ = load_model(model_dir)
    scores = ModelScores(classes=classes, blocks=[{"id": b.id, "row": b.row, "col": b.col}
                                                  for b in test_blocks],
                         calibration_bins=config.evaluate.calibration_bins)
    for year in years:
        codes, _ = unet_year(config, cube=cube, model=model, scenario=cube.scenario_for_year(year),
                             year=year, prior=None)
        scores.add(year=year, target=codes_to_index(cube.target_window(year, whole), classes),
                   prediction=codes_to_index(codes, classes),
                   previous=codes_to_index(cube.target_window(year - 1, whole), classes),
                   labels=labels, conservation_mae=float("nan"))
    report = scores.report()
    return {k: report[k] for k in ("miou", "oa", "kappa", "fom_change", "n_pixels")}


def train_and_score(base, directory: Path, *, seed: int, drop_inputs: list[str],
                    input_dropout: dict) -> dict:
    """Train one model on the demo workspace of ``base`` and score it in every condition."""
    from ai4land.evaluate import run_evaluate
    from ai4land.train import run_training

    config = base.model_copy(update={"seed": seed, "train": base.train.model_copy(
        update={"drop_inputs": drop_inputs, "input_dropout": input_dropout})})
    start = time.perf_counter()
    run_training(config, output_dir=directory, split_path=split_path(config))
    train_s = time.perf_counter() - start
    metrics = run_evaluate(config, model_dir=directory, split_path=split_path(config),
                           output=directory / "metrics.json")
    years = list(metrics["split"]["test_years"])
    hidden = prior_hidden_scores(config, model_dir=directory, years=years)
    unet = metrics["models"]["unet"]
    if hidden["n_pixels"] != unet["n_pixels"]:
        raise AssertionError(f"prior hidden scored {hidden['n_pixels']} pixels, "
                             f"teacher-forced {unet['n_pixels']}")
    return {
        **{k: unet[k] for k in ("miou", "oa", "kappa", "fom_change")},
        "rollout_miou": metrics["models"]["unet_rollout"]["miou"],
        "hidden_miou": hidden["miou"], "hidden_oa": hidden["oa"],
        "hidden_fom_change": hidden["fom_change"],
        "train_s": train_s, "score_s": time.perf_counter() - start - train_s,
        "split": metrics["split"],
        "baselines": {b: {k: metrics["models"][b][k] for k in ("miou", "oa")}
                      for b in ("coarse_majority", "persistence")},
    }


def _workspace(directory: Path):
    return demo_workspace(directory, overrides={"train": TRAIN, "evaluate": EVALUATE})


def _cell(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"**{mean:.3f}** ({', '.join(f'{v:.3f}' for v in values)})"


def _findings(rows: dict, params: dict) -> list[str]:
    """Plain statements read off the measured rows, one per condition and input group."""
    out = []
    full = rows["full"]
    n = len(params["seeds"])
    for condition, key in CONDITIONS.items():
        parts = []
        for name in ("no prior", "no static", "no coarse"):
            gaps = [f - a for f, a in zip(full[key], rows[name][key], strict=True)]
            mean = float(np.mean(gaps))
            group = name.removeprefix("no ")
            if condition == "prior hidden" and group == "prior":
                group = "training with a prior"
            if all(g > 0 for g in gaps):
                verdict = f"{group} helps (+{mean:.3f}, in each of the {n} seeds)"
            elif all(g < 0 for g in gaps):
                verdict = f"{group} *hurts* ({mean:.3f}, in each of the {n} seeds)"
            else:
                verdict = f"{group}: no consistent effect ({mean:+.3f}, sign varies by seed)"
            parts.append(verdict)
        out.append(f"* **{condition}** (full minus ablated, mean mIoU): " + "; ".join(parts) + ".")
    return out


def _table(rows: dict, params: dict) -> str:
    dropout = ", ".join(f"{g} {p}" for g, p in params["input_dropout"].items())
    seeds = params["seeds"]
    lines = [
        "# Input ablation on the demo world",
        "",
        "Generated by `python -m benchmarks bench_ablation`. The default demo U-Net, trained "
        f"{params['train']['epochs']} x {params['train']['steps_per_epoch']} steps (batch "
        f"{params['batch_size']}) on a {params['bbox']} degree demo world (world and split of "
        f"seed 42), once with every input and once without each input group "
        "(`train.drop_inputs`: the model zeroes those channels, in training and at "
        "prediction). Every variant uses the demo's `train.input_dropout` "
        f"({dropout}: that group is zeroed in that share of the training samples) unless it "
        f"drops the group, and is trained once per training seed {list(seeds)}. Scored on "
        f"the {params['test_pixels']} land pixels of the test blocks in the test years "
        f"{params['test_years']}:",
        "",
        "* *teacher-forced*: `ai4land evaluate`, the prior is the observed previous year;",
        "* *rollout*: `ai4land evaluate`, the prior is the model's own previous prediction "
        "(from the observed year before the first test year);",
        "* *prior hidden*: the same years predicted with no prior at all (every prior "
        "channel 0, as in the `prior_mask.p_none` share of training samples): what the "
        "coarse and static inputs give on their own.",
        "",
        f"Cells: mean mIoU over the seeds in bold, then per seed {tuple(seeds)}.",
        "",
        "| inputs | teacher-forced mIoU | rollout mIoU | prior hidden mIoU | "
        "teacher-forced OA | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {_cell(r['miou'])} | {_cell(r['rollout_miou'])} "
                     f"| {_cell(r['hidden_miou'])} | {np.mean(r['oa']):.3f} "
                     f"| {np.mean(r['train_s']):.0f} |")
    lines += [
        "",
        f"Baselines on the same pixels: coarse majority mIoU "
        f"{params['coarse_majority']['miou']:.3f} (OA {params['coarse_majority']['oa']:.3f}); "
        f"persistence (this year = last year) mIoU {params['persistence']['miou']:.3f} "
        f"(OA {params['persistence']['oa']:.3f}). Whole benchmark: {params['total_s']:.0f} s.",
        "",
        "## What the numbers show",
        "",
        *_findings(rows, params),
        "",
        _notes(rows, params),
    ]
    return "\n".join(lines)


# The reading of the table (numbers filled in from this run) and the measured
# --dropout-check table. Keep the wording in step with the numbers when rerunning.
NOTES = """\
In plain words:

* **The prior carries most of the skill.** Without it mIoU is {no_prior:.3f}, below the
  coarse-majority baseline ({coarse_majority:.3f}).
* **The coarse states matter when the prior is hidden:** {full_hidden:.3f} with them,
  {no_coarse_hidden:.3f} without. Even so, with the prior hidden no variant beats the
  coarse-majority baseline ({coarse_majority:.3f}): the single-year skill of these short
  runs is no more than what the coarse states give by themselves.
* **With the observed prior shown, this table does not show that the coarse or static
  inputs help.** The full model ({full_tf:.3f} teacher-forced, {full_ro:.3f} rollout) is
  below the models without static features ({no_static_tf:.3f}, {no_static_ro:.3f}) and
  without coarse states ({no_coarse_tf:.3f}, {no_coarse_ro:.3f}), and every variant is
  below persistence ({persistence:.3f}): most of the teacher-forced skill is copying the
  prior, and a model with fewer other inputs may simply learn to copy it sooner (a
  reading, not tested here). Much
  of the mean gap comes from one seed: the full model scored {full_tf_0:.3f} with seed
  {seed_0} and {full_tf_1:.3f} with seed {seed_1}, where the models without static or
  coarse inputs are {gap_1_lo:.3f} to {gap_1_hi:.3f} better. Its spread over six seeds
  (0.669 to 0.940, below) is wider than these gaps, so two seeds cannot say whether the static and coarse inputs cost skill
  here or merely add nothing.
* **The static features show no measurable help in any condition.** With the prior
  hidden: {full_hidden:.3f} with, {no_static_hidden:.3f} without. The demo world's classes do
  follow terrain; a likely reason (not tested here) is where the test blocks are:
  farthest point sampling spreads them to the region's edges, and two of the four lie
  at terrain extremes (mean elevation +1.7 sd, mean clay +1.8 sd; about 15 % of their
  static values outside the 1-99 % range of the training blocks' values).

### Why every variant is trained with `input_dropout: {{static: 0.5}}`

`python -m benchmarks.bench_ablation --dropout-check`: the full model trained without ->
with the static group zeroed in half of the training samples, mIoU on the same test
pixels, per training seed (measured 2026-11-25 on 2 cores):

{dropout_check}

The dropout lifts the full model in five of six seeds teacher-forced and in rollout
(mean 0.755 -> 0.861 and 0.693 -> 0.803) and lowers it slightly with the prior hidden
(0.361 -> 0.330), presumably because the model leans less on terrain: that helps on
unseen terrain when the prior is there and costs a little when it is not. The previous
version of this table (no input dropout, seed 42 only; rerun bit for bit for this page)
had teacher-forced full 0.753, no static 0.945, no coarse 0.764, no prior 0.268, and
with the prior hidden full 0.332, no static 0.347, no coarse 0.161, no prior 0.268.
"""
DROPOUT_CHECK_TABLE = """\
| seed | teacher-forced | rollout | prior hidden |
|---|---|---|---|
| 42 | 0.753 -> 0.669 | 0.691 -> 0.632 | 0.332 -> 0.332 |
| 1 | 0.838 -> 0.940 | 0.790 -> 0.901 | 0.364 -> 0.347 |
| 2 | 0.730 -> 0.937 | 0.662 -> 0.899 | 0.425 -> 0.371 |
| 3 | 0.770 -> 0.921 | 0.684 -> 0.871 | 0.407 -> 0.331 |
| 4 | 0.760 -> 0.926 | 0.701 -> 0.881 | 0.307 -> 0.288 |
| 5 | 0.677 -> 0.775 | 0.627 -> 0.635 | 0.329 -> 0.314 |
| mean | 0.755 -> 0.861 | 0.693 -> 0.803 | 0.361 -> 0.330 |"""


def _notes(rows: dict, params: dict) -> str:
    mean = {name: {k: float(np.mean(r[k])) for k in CONDITIONS.values()}
            for name, r in rows.items()}
    seeds = params["seeds"]
    second = [rows[n]["miou"][1] for n in ("no static", "no coarse")]
    return NOTES.format(
        no_prior=mean["no prior"]["miou"], coarse_majority=params["coarse_majority"]["miou"],
        persistence=params["persistence"]["miou"],
        full_tf=mean["full"]["miou"], full_ro=mean["full"]["rollout_miou"],
        full_hidden=mean["full"]["hidden_miou"],
        no_static_tf=mean["no static"]["miou"], no_static_ro=mean["no static"]["rollout_miou"],
        no_static_hidden=mean["no static"]["hidden_miou"],
        no_coarse_tf=mean["no coarse"]["miou"], no_coarse_ro=mean["no coarse"]["rollout_miou"],
        no_coarse_hidden=mean["no coarse"]["hidden_miou"],
        full_tf_0=rows["full"]["miou"][0], full_tf_1=rows["full"]["miou"][1],
        seed_0=seeds[0], seed_1=seeds[1], dropout_check=DROPOUT_CHECK_TABLE,
        gap_1_lo=min(second) - rows["full"]["miou"][1],
        gap_1_hi=max(second) - rows["full"]["miou"][1],
    )


def _collect(results: list[dict]) -> dict:
    keys = ("miou", "oa", "kappa", "fom_change", "rollout_miou", "hidden_miou", "hidden_oa",
            "hidden_fom_change", "train_s", "score_s")
    return {k: [r[k] for r in results] for k in keys}


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ai4land-ablation-") as tmp:
        tmp = Path(tmp)
        base = _workspace(tmp)
        rows, last = {}, None
        for name, dropped in VARIANTS.items():
            dropout = {g: p for g, p in INPUT_DROPOUT.items() if g not in dropped}
            results = []
            for seed in SEEDS:
                last = train_and_score(base, tmp / f"{name.replace(' ', '_')}_{seed}", seed=seed,
                                       drop_inputs=dropped, input_dropout=dropout)
                results.append(last)
                print(name, seed, {k: round(v, 3) for k, v in last.items()
                                   if isinstance(v, float)},
                      f"{time.perf_counter() - started:.0f} s", flush=True)
            rows[name] = {"drop_inputs": dropped, "input_dropout": dropout, **_collect(results)}
    params = {"bbox": "3 x 3", "train": TRAIN, "input_dropout": INPUT_DROPOUT,
              "batch_size": base.train.batch_size, "seeds": list(SEEDS),
              "test_years": list(last["split"]["test_years"]),
              "test_pixels": last["split"]["test_pixels"], "conditions": list(CONDITIONS),
              "rows": rows, **last["baselines"],
              "total_s": round(time.perf_counter() - started)}
    DOC.write_text(_table(rows, params))
    full = float(np.mean(rows["full"]["miou"]))
    ablated = {k: float(np.mean(rows[k]["miou"])) for k in ("no prior", "no static", "no coarse")}
    best = max(ablated, key=ablated.get)
    write_result(
        "ablation", metric="test_miou", ours=full, reference=ablated[best],
        reference_name=f"best ablation ({best}), mean of seeds {list(SEEDS)}",
        target="every ablation below the full model (teacher-forced, mean of seeds)",
        meets_target=all(v < full for v in ablated.values()), params=params,
        higher_is_better=True,
    )


def dropout_check() -> None:
    """The full model with and without ``INPUT_DROPOUT``, per seed (prints a table)."""
    with tempfile.TemporaryDirectory(prefix="ai4land-dropout-") as tmp:
        tmp = Path(tmp)
        base = _workspace(tmp)
        lines, pairs = [], []
        for seed in DROPOUT_CHECK_SEEDS:
            pair = [train_and_score(base, tmp / f"{seed}_{i}", seed=seed, drop_inputs=[],
                                    input_dropout=dropout)
                    for i, dropout in enumerate(({}, INPUT_DROPOUT))]
            pairs.append(pair)
            lines.append(f"| {seed} | " + " | ".join(
                f"{pair[0][k]:.3f} -> {pair[1][k]:.3f}" for k in CONDITIONS.values()) + " |")
            print(lines[-1], flush=True)
    lines.append("| mean | " + " | ".join(
        f"{np.mean([p[0][k] for p in pairs]):.3f} -> {np.mean([p[1][k] for p in pairs]):.3f}"
        for k in CONDITIONS.values()) + " |")
    print("| seed | teacher-forced | rollout | prior hidden |\n|---|---|---|---|\n"
          + "\n".join(lines))


if __name__ == "__main__":
    dropout_check() if "--dropout-check" in sys.argv[1:] else main()
