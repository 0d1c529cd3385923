"""The recipe's RESULTS.md (stage 5), from its decode dirs, training summaries and re-alignment rounds."""

import json
import logging
import os
import platform
import subprocess
from datetime import date
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from phonerec.base.config import REPO_ROOT
from phonerec.base.files import write_json_atomic, write_png_atomic, write_text_atomic
from phonerec.base.ownership import GENERATED_LINE, check_generated_file
from phonerec.base.schema import SPEED_PERTURBED_TRAIN, SPLITS
from phonerec.decoding.decoders import decoder_metric
from phonerec.hmm.align_eval import ACCURACY_KEYS
from phonerec.inference import RESULT_FILE

log = logging.getLogger(__name__)


def generated_by(tool: str) -> str:
    """The start of the line every results table holds near its top, which marks it as the recipe's own."""
    return f"{GENERATED_LINE}{tool}`"


def write_report(path: Path, lines: list[str]) -> None:
    """A results table (RESULTS*.md): never over a file the recipe did not write, such as a tracked README."""
    check_generated_file(path, "a results file")
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_results(cfg: DictConfig, data_dir: Path, exp_dir: Path, results_path: Path, command: str) -> None:
    """RESULTS.md of the recipe from its decode dirs and training summaries."""
    feats = Path(data_dir) / cfg.features.name
    lines = [
        f"# Results: {cfg.recipe_name}",
        "",
        f"{generated_by('run.sh')} (stage 5) on {date.today().isoformat()}: git {git_hash()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {cfg.train.num_threads} training threads, "
        f"{platform.machine()} CPU ({os.cpu_count()} cores).",
        "",
        f"Command: `{command}`",
        *_seed_table_link(results_path),
        *_result_lines(exp_dir),
        "",
        f"## Phone error rate (checkpoint: {cfg.decode.checkpoint})",
        "",
        "| model | decode | split | utts | PER % | Corr | Sub | Del | Ins | N |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    word_rows, closest_rows = [], []
    for model in cfg.models:
        for name in cfg.decode.decoders:
            for split in cfg.decode.splits:
                decode_dir = exp_dir / model / f"decode_{split}_{name}"
                metric = decoder_metric(name)
                if not (decode_dir / f"{metric}.json").is_file():
                    continue
                decoder = _decoder(decode_dir, cfg.decode.splits[0])
                if metric == "per":
                    total = json.loads((decode_dir / "per.json").read_text())["total"]
                    counts = " | ".join(str(total[k]) for k in ("corr", "sub", "del", "ins", "n"))
                    lines.append(f"| {model} | {decoder} | {split} | {total['utts']} | {total['per']:.2f} | {counts} |")
                    if (decode_dir / "per_closest.json").is_file():
                        total = json.loads((decode_dir / "per_closest.json").read_text())["total"]
                        counts = " | ".join(str(total[k]) for k in ("corr", "sub", "del", "ins", "n"))
                        closest_rows.append(
                            f"| {model} | {decoder} | {split} | {total['utts']} | {total['per']:.2f} | {counts} |"
                        )
                else:
                    r = json.loads((decode_dir / "wer.json").read_text())
                    counts = " | ".join(str(r[k]) for k in ("sub", "del", "ins", "n"))
                    word_rows.append(
                        f"| {model} | {decoder} | {split} | {r['utts']} | {r['wer']:.2f} | {r['ser']:.2f} | {counts} |"
                    )
    if closest_rows:
        lines += [
            "",
            "## Phone error rate against the closest pronunciation of each word",
            "",
            "The table above scores against each word's first pronunciation in the lexicon (the data dir's text);",
            "this one against the pronunciation of each word that is closest to the hypothesis",
            "(hmm.pronunciations=variants).",
            "",
            "| model | decode | split | utts | PER % | Corr | Sub | Del | Ins | N |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *closest_rows,
        ]
    if word_rows:
        lines += [
            "",
            "## Word error rate (lexicon-constrained word decoding)",
            "",
            "| model | decode | split | utts | WER % | SER % | Sub | Del | Ins | N |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *word_rows,
        ]
    lines += [
        "",
        "## Training",
        "",
        "| model | epochs | best epoch | best dev PER % | train time s | frames/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model in cfg.models:
        summary_path = exp_dir / model / "train_summary.json"
        if summary_path.is_file():
            s = json.loads(summary_path.read_text())
            lines.append(
                f"| {model} | {s['epochs']} | {s['best']['epoch']} | {s['best']['per']:.2f} | "
                f"{s['train_seconds']:.0f} | {s['frames_per_second']:.0f} |"
            )
    lines += _ctc_init_comparison(cfg, exp_dir, results_path)
    rounds = sorted((exp_dir / "viterbi" / "ali").glob("iter*/stats.json"), key=lambda p: int(p.parent.name[4:]))
    if rounds:
        lines += [
            "",
            "## Viterbi re-alignment rounds",
            "",
            "| round | train frames changed % | train log-lik/frame | dev frame acc % | dev PER % |",
            "|---:|---:|---:|---:|---:|",
        ]
        for path in rounds:
            r = json.loads(path.read_text())
            if r["round"] == 0:
                continue
            lines.append(
                f"| {r['round']} | {r['changed_frames_percent']:.2f} | {r['train_loglik_per_frame']:.3f} | "
                f"{r['dev_frame_accuracy']:.2f} | {r['dev_per']:.2f} |"
            )
    accuracy_rows = []
    for path in rounds:
        for name, acc in json.loads(path.read_text()).get("alignment_accuracy", {}).items():
            round_ = int(path.parent.name[4:])
            accuracy_rows.append((f"Viterbi round {round_}" + (" (flat start)" if round_ == 0 else ""), name, acc))
    for model, what in (("viterbi", "Viterbi model, forced"), ("ctc", "CTC model, forced_align")):
        for split in cfg.decode.splits:
            path = exp_dir / model / f"decode_{split}_greedy" / "alignment_accuracy.json"
            if path.is_file():
                accuracy = json.loads(path.read_text())
                source = accuracy.get("checkpoint")  # which checkpoint aligned
                label = f"{what} ({source['file']}, epoch {source['epoch']})" if source else what
                accuracy_rows.append((label, split, accuracy))
    if accuracy_rows:
        lines += [
            "",
            "## Alignment accuracy against the hand-labelled phone boundaries",
            "",
            "Inner boundaries only; a boundary between frames t-1 and t lies halfway between their windows' middles, "
            "at t x frame shift + (frame length - frame shift) / 2.",
            "",
            "| alignment | set | boundaries | within 10 ms % | within 20 ms % | within 50 ms % | "
            "mean error ms | frame agreement % |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for what, name, a in accuracy_rows:
            figures = " | ".join("n/a" if a[k] is None else f"{a[k]:.1f}" for k in ACCURACY_KEYS)
            lines.append(f"| {what} | {name} | {a['matched_boundaries']} | {figures} |")
    speed_perturbed = bool(cfg.train.speed_perturb)
    feature_splits = (*SPLITS, SPEED_PERTURBED_TRAIN) if speed_perturbed else SPLITS
    stage_times = [
        ("0 data preparation", _seconds(Path(data_dir) / "prepare.seconds")),
        (
            f"0 speed perturbation ({SPEED_PERTURBED_TRAIN})",
            _seconds(Path(data_dir) / SPEED_PERTURBED_TRAIN / "speed_perturb.seconds") if speed_perturbed else None,
        ),
        (
            f"1 features ({', '.join(feature_splits)})",
            _sum([_seconds(feats / s / "features.seconds") for s in feature_splits]),
        ),
        ("2 Viterbi training", _seconds(exp_dir / "viterbi" / "train.seconds")),
        ("3 CTC training", _seconds(exp_dir / "ctc" / "train.seconds")),
        (
            "3 CTC training from the other inits (train.compare_ctc_inits)",
            _sum([_seconds(d / "train.seconds") for d in ctc_runs(cfg, exp_dir).values() if d.name != "ctc"]),
        ),
        ("4 decoding", _sum([_seconds(p) for p in exp_dir.glob("*/decode_*/decode.seconds")])),
    ]
    lines += ["", "## Time per stage (work only, without Python start-up)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in stage_times if seconds is not None]
    write_report(results_path, lines)
    log.info("wrote %s", results_path)


def choose_result(cfg: DictConfig, exp_dir: Path) -> dict | None:
    """The recipe's result across both training phases: the model and phone decoder of the lowest PER on dev (the
    first of decode.splits; ties go to the earlier model of `models`, then to the decoder name first in order, as
    the bundle's default phone decoder is chosen), with its figure on every split; None before any phone decoder is
    scored on dev."""
    tune_split = cfg.decode.splits[0]
    ranked = []
    for m, model in enumerate(cfg.models):
        for name in cfg.decode.decoders:
            if decoder_metric(name) != "per":
                continue
            scored = {}
            for split in cfg.decode.splits:
                path = exp_dir / model / f"decode_{split}_{name}" / "per.json"
                if path.is_file():
                    scored[split] = json.loads(path.read_text())["total"]["per"]
            if tune_split in scored:
                ranked.append((scored[tune_split], m, name, model, scored))
    if not ranked:
        return None
    _, _, name, model, scored = min(ranked, key=lambda r: r[:3])
    title = _decoder(exp_dir / model / f"decode_{tune_split}_{name}", tune_split)
    return {"chosen_on": tune_split, "model": model, "decoder": name, "title": title, "per": scored}


def write_result(cfg: DictConfig, exp_dir: Path) -> None:
    """<exp>/result.json (choose_result), which RESULTS.md states and phonerec.inference.load_model(<exp>) follows
    to the chosen model's bundle; removed where nothing is scored on dev yet."""
    result = choose_result(cfg, exp_dir)
    if result is not None:
        write_json_atomic(exp_dir / RESULT_FILE, result)
    else:
        (exp_dir / RESULT_FILE).unlink(missing_ok=True)


def _result_lines(exp_dir: Path) -> list[str]:
    path = exp_dir / RESULT_FILE
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    figures = ", ".join(f"{split} {per:.2f}" for split, per in result["per"].items())
    return [
        "",
        "## The recipe's result",
        "",
        f"**{result['model']}** model, decoded by **{result['title']}**: PER % {figures}. Chosen on "
        f"{result['chosen_on']} among every model and phone decoder below (the lowest {result['chosen_on']} PER); "
        f'`phonerec.inference.load_model("{exp_dir}")` and the model tools given `{exp_dir}` load this model '
        "and decoder.",
    ]


def sweep_table_path(results_path: Path, sweep_name: str) -> Path:
    """Where a sweep (./run.sh -m, conf/sweep/) writes its table: RESULTS_<sweep_name>.md beside RESULTS.md (the seed
    sweep's RESULTS_seeds.md, the criteria's RESULTS_criteria.md, ...)."""
    return results_path.with_name(f"{results_path.stem}_{sweep_name}.md")


def _seed_table_link(results_path: Path) -> list[str]:
    table = sweep_table_path(results_path, "seeds")
    if not table.is_file():
        return []
    return [
        "",
        f"Each figure here is one run; its spread over seeds (`./run.sh -m sweep=seeds`): "
        f"[{table.name}]({table.name}).",
    ]


def write_seed_table(
    cfg: DictConfig, seed_dirs: dict[int, Path], out_path: Path, command: str, failed: dict[str, str] | None = None
) -> None:
    """The mean and min-max over seeds (a sweep over train.seed: one exp dir per seed) of every model and decoder's
    PER or WER on each split, of the training figures and of the CTC initialisation comparison."""
    about = (
        f"{generated_by('run.sh -m')} on {date.today().isoformat()}: git {git_hash()}, seeds "
        f"{' '.join(map(str, seed_dirs))} (train.seed), {cfg.train.num_threads} training threads. Each cell: mean "
        f"(min-max) over the {len(seed_dirs)} seeds."
    )
    splits = {split: split for split in cfg.decode.splits}
    title = f"Seed ranges: {cfg.recipe_name}"
    _write_spread_table(cfg, seed_dirs, out_path, title, about, splits, command, failed)


def write_loso_table(
    cfg: DictConfig,
    fold_dirs: dict[str, Path],
    test_speakers: str,
    out_path: Path,
    command: str,
    failed: dict[str, str] | None = None,
):
    """The mean and min-max over the folds of a leave-one-speaker-out sweep (corpus.held_out_speaker: one exp dir
    per held-out training speaker), as the seed table: dev is each fold's held-out speaker, test the recipe's dev
    speakers (test_speakers)."""
    about = (
        f"{generated_by('run.sh -m')} on {date.today().isoformat()}: git {git_hash()}, {cfg.train.num_threads} "
        f"training threads. {_folds_text(test_speakers)} Each cell: mean (min-max) over the {len(fold_dirs)} "
        f"folds ({', '.join(map(str, fold_dirs))})."
    )
    splits = {"dev": "dev: held-out speaker", "test": f"test: {test_speakers}"}
    splits = {split: splits.get(split, split) for split in cfg.decode.splits}
    title = f"Leave one training speaker out: {cfg.recipe_name}"
    _write_spread_table(cfg, fold_dirs, out_path, title, about, splits, command, failed)


def _folds_text(test_speakers: str) -> str:
    """What a leave-one-speaker-out table's folds are, its test set the recipe's dev speakers (test_speakers)."""
    return (
        "Each fold trains on all training speakers but one, the held-out speaker is its dev set (which picks the best "
        f"epoch and tunes the decoders) and the recipe's dev speakers ({test_speakers}) its test set; the recipe's "
        "test speakers are in no fold."
    )


def _write_spread_table(
    cfg, run_dirs: dict, out_path: Path, title: str, about: str, splits: dict, command: str, failed: dict | None
):
    """Mean and min-max over run_dirs (each an exp dir of the recipe) of every model and decoder's PER or WER on
    each split (splits: decode split -> its column's name) and of the training figures; the jobs that `failed`
    (job name -> error), which the figures leave out."""
    n = len(run_dirs)

    def spread(values: list[float]) -> str:
        if len(values) < n:
            return "n/a"
        return f"{sum(values) / n:.2f} ({min(values):.2f}-{max(values):.2f})"

    lines = [
        f"# {title}",
        "",
        about,
        "",
        f"Command: `{command}`",
        "",
        "| model | decoder | metric | " + " | ".join(f"{name} %" for name in splits.values()) + " |",
        "|---|---|---|" + "---:|" * len(splits),
    ]
    for model in cfg.models:
        for name in cfg.decode.decoders:
            metric = decoder_metric(name)
            keys = ("per",) if metric == "per" else ("wer", "ser")
            figures = {(split, key): [] for split in splits for key in keys}
            decoder_title = None
            for exp_dir in run_dirs.values():
                for split in splits:
                    result = exp_dir / model / f"decode_{split}_{name}" / f"{metric}.json"
                    if result.is_file():
                        data = json.loads(result.read_text())
                        data = data["total"] if metric == "per" else data
                        for key in keys:
                            figures[(split, key)].append(data[key])
                        decoder_title = json.loads((result.parent / "decoder.json").read_text())["decoder"]
            if decoder_title is None:
                continue
            for key in keys:
                cells = " | ".join(spread(figures[(split, key)]) for split in splits)
                lines.append(f"| {model} | {decoder_title} | {key.upper()} | {cells} |")
        # The forced alignment against hand labels, where the sets have them (TIMIT), as RESULTS.md shows it.
        within, aligned_with = {split: [] for split in splits}, set()
        for exp_dir in run_dirs.values():
            for split in splits:
                path = exp_dir / model / f"decode_{split}_greedy" / "alignment_accuracy.json"
                if path.is_file():
                    accuracy = json.loads(path.read_text())
                    within[split].append(accuracy["within_20ms"])
                    aligned_with.add(accuracy.get("checkpoint", {}).get("file", "?"))
        if any(within.values()):
            cells = " | ".join(spread(within[split]) for split in splits)
            what = f"forced alignment ({', '.join(sorted(aligned_with))})"
            lines.append(f"| {model} | {what} | boundaries within 20 ms | {cells} |")
    lines += [
        "",
        "## Training",
        "",
        "| run | epochs | best epoch | best dev PER % | dev PER after epoch 1 % |",
        "|---|---:|---:|---:|---:|",
    ]
    runs = ["viterbi", *[m for m in cfg.models if m != "viterbi"]]
    runs += [d.name for d in ctc_runs(cfg, Path()).values() if d.name != "ctc"]
    for run in runs:
        summaries = [
            json.loads((d / run / "train_summary.json").read_text())
            for d in run_dirs.values()
            if (d / run / "train_summary.json").is_file()
        ]
        if not summaries:
            continue
        init = f" (init {cfg.train.ctc.init})" if run == "ctc" else ""
        lines.append(
            f"| {run}{init} | {spread([s['epochs'] for s in summaries])} | "
            f"{spread([s['best']['epoch'] for s in summaries])} | {spread([s['best']['per'] for s in summaries])} | "
            f"{spread([s['history'][0]['valid_per'] for s in summaries])} |"
        )
    write_report(out_path, lines + _failed_jobs(failed))
    log.info("wrote %s", out_path)


def ctc_runs(cfg: DictConfig, exp_dir: Path) -> dict[str, Path]:
    """The CTC runs of stage 3 by init: exp_dir/ctc (train.ctc.init), then exp_dir/ctc_<init> for each other init of
    train.compare_ctc_inits (run.sh skips the one equal to train.ctc.init, as this does)."""
    runs = {cfg.train.ctc.init: exp_dir / "ctc"}
    for init in cfg.train.compare_ctc_inits:
        runs.setdefault(init, exp_dir / f"ctc_{init}")
    return runs


def _ctc_init_comparison(cfg: DictConfig, exp_dir: Path, results_path: Path) -> list[str]:
    """The CTC runs of stage 3 side by side, one per init (ctc, and ctc_<init> for train.compare_ctc_inits), as a
    table and as a plot of dev PER per epoch (<results>_ctc_init.png beside RESULTS.md, and in TensorBoard)."""
    runs = ctc_runs(cfg, exp_dir)
    summaries = {
        i: json.loads((d / "train_summary.json").read_text())
        for i, d in runs.items()
        if (d / "train_summary.json").is_file()
    }
    viterbi_summary = exp_dir / "viterbi" / "train_summary.json"
    if len(summaries) < 2 or not viterbi_summary.is_file():
        return []
    target = json.loads(viterbi_summary.read_text())["best"]["per"]
    lines = [
        "",
        "## CTC initialisation",
        "",
        "CTC training from each init, on the same data and settings. Target: the Viterbi model's best dev PER "
        f"(free phone loop), {target:.2f}. Epochs to target and to within 2 points of the run's own best count from 1; "
        "losses are the last epoch's.",
        "",
        "| init | exp dir | dev PER after epoch 1 % | epochs to target | epochs to within 2 of best | best dev PER % "
        "(epoch) | epochs run | final train loss | final dev loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for init, summary in summaries.items():
        history = summary["history"]
        pers = [r["valid_per"] for r in history]
        to_target = next((r["epoch"] for r in history if r["valid_per"] <= target), None)
        near_best = next(r["epoch"] for r in history if r["valid_per"] <= summary["best"]["per"] + 2)
        lines.append(
            f"| {init} | {runs[init].name} | {pers[0]:.2f} | {to_target if to_target else 'not reached'} | "
            f"{near_best} | {summary['best']['per']:.2f} ({summary['best']['epoch']}) | {len(history)} | "
            f"{history[-1]['train_loss']:.3f} | {history[-1]['valid_loss']:.3f} |"
        )
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    for init, summary in summaries.items():
        ax.plot([r["epoch"] for r in summary["history"]], [r["valid_per"] for r in summary["history"]], label=init)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="Viterbi model, greedy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("CTC epoch")
    ax.set_ylabel("dev PER % (greedy)")
    ax.set_ylim(0, min(105, max(max(r["valid_per"] for r in s["history"]) for s in summaries.values()) + 5))
    ax.set_title(f"{cfg.recipe_name}: CTC dev PER per epoch by initialisation")
    ax.legend()
    figure.tight_layout()
    png = results_path.with_name(f"{results_path.stem}_ctc_init.png")
    write_png_atomic(png, figure, dpi=80)
    with SummaryWriter(str(exp_dir / "tensorboard")) as writer:
        writer.add_figure("ctc_init/dev_per", figure)
    return [*lines, "", f"![CTC dev PER per epoch by initialisation]({png.name})"]


def git_hash() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
        # (untracked files do not count: the tables and runs a checkout writes are untracked)
        changed = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(changed, cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _seconds(path: Path) -> float | None:
    return float(path.read_text()) if path.is_file() else None


def _decoder(decode_dir: Path, tuned_on: str) -> str:
    """A decoder and, for a tuned one, the values it was given, from decode_dir/decoder.json, and how many grid
    points of the tuning set's tuning.json (decode_<tuned_on>_<name>, beside decode_dir) scored as well as the
    chosen one."""
    chosen = json.loads((decode_dir / "decoder.json").read_text())
    values = ", ".join(f"{k} {v:g}" for k, v in chosen.items() if k != "decoder")
    if not values:
        return chosen["decoder"]
    name = decode_dir.name.split("_", 2)[2]
    tuning_json = decode_dir.parent / f"decode_{tuned_on}_{name}" / "tuning.json"
    ties = ""
    if tuning_json.is_file():
        grid = json.loads(tuning_json.read_text())["grid"]
        metric = next(k for k in grid[0] if k not in chosen)  # the first figure, the one tuning minimised
        best = min(point[metric] for point in grid)
        tied = sum(abs(point[metric] - best) < 1e-9 for point in grid)
        ties = f", {tied} of {len(grid)} grid points tie" if tied > 1 else ""
    return f"{chosen['decoder']} ({values}; tuned on {tuned_on}{ties})"


def _sum(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


# The comparisons of conf/sweep/, by the config group they sweep: (the table's title, the reference variant, whose
# seed 0's best Viterbi dev PER is the target, and what its plot compares). Another sweep's reference is its first
# variant.
COMPARISONS = {
    "criterion": ("Training criteria", "ce", "the Viterbi stage's criteria"),
    "cell": ("Recurrent cells", "lstm", "the recurrent cells"),
}


def write_comparison_table(
    cfg: DictConfig,
    variants: dict[str, list[tuple[int, Path]]],
    settings: dict[str, str],
    out_path: Path,
    command: str,
    sweep_name: str,
    swept: list[str],
    failed: dict[str, str] | None = None,
    test_speakers: str | None = None,
) -> None:
    """The variants of a sweep side by side (each variant's (seed, exp dir) runs, or with `test_speakers` its
    leave-one-speaker-out (held-out speaker, exp dir) folds, whose test set is those speakers; its settings; the
    keys it sweeps, a conf/sweep/ comparison's group as COMPARISONS names it):
    per variant, the mean (min-max) over its seeds of the epochs its Viterbi model took to reach the target (the
    reference variant's best dev PER, seed 0's or its lowest seed's, by the free phone loop that validates every
    epoch; the frame argmax's PER is no measure of progress, as it rises while the model sharpens), its best epoch,
    seconds per epoch, training frames per second, dev and test PER of each Viterbi decoder, the forced alignment's
    accuracy where the test set has hand labels, and its CTC model's; its model's hidden size and parameters (its
    first seed's); a plot of every variant's first seed's dev PER (free phone loop) and dev loss per epoch
    (<out_path>.png); and the jobs that `failed` (job name -> error), which the figures leave out."""
    first = next(iter(variants))
    known = COMPARISONS.get(swept[0]) if len(swept) == 1 else None
    title, reference, plotted = known or (f"Sweep {sweep_name}", first, "the variants")
    reference = reference if reference in variants else first
    reference_runs = dict(variants[reference])
    target_seed = 0 if 0 in reference_runs else min(reference_runs)
    target_file = reference_runs[target_seed] / "viterbi" / "train_summary.json"
    target = json.loads(target_file.read_text())["best"]["per"] if target_file.is_file() else None

    def spread(values: list, digits: int = 2) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        if len(values) == 1:
            return f"{values[0]:.{digits}f}" if isinstance(values[0], float) else str(values[0])
        return f"{sum(values) / len(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    def per(run: Path, split: str, decoder: str) -> float | None:
        path = run / f"decode_{split}_{decoder}" / "per.json"
        return json.loads(path.read_text())["total"]["per"] if path.is_file() else None

    def summary(run: Path) -> dict | None:
        path = run / "train_summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def to_target(history: list[dict]) -> int | None:
        if target is None:
            return None
        return next((r["epoch"] for r in history if r["valid_per"] <= target), None)

    target_text = f"n/a (no {reference} run)" if target is None else f"{target:.2f}"
    run = "seed" if test_speakers is None else "fold"
    folds = "" if test_speakers is None else f"Leave one training speaker out. {_folds_text(test_speakers)} "
    lines = [
        f"# {title}: {cfg.recipe_name}",
        "",
        f"{generated_by('run.sh -m')} on {date.today().isoformat()}: git {git_hash()}, "
        f"{cfg.train.num_threads} training threads. {folds}Each cell: one {run}, or the mean (min-max) over the "
        f"{run}s listed. Target: the {reference} variant's best Viterbi dev PER ({run} {target_seed}, free phone "
        f"loop, as every epoch is validated), {target_text}; an epoch reaches it when its dev PER is no higher (- "
        "where none does). Dev PER picks each model's best epoch and tunes the hybrid decoder; test is decoded once. "
        "Seconds per epoch include validation and re-alignment; frames/s is the training pass's.",
        "",
        f"Command: `{command}`",
        "",
        f"| variant | settings | hidden (parameters) | {run}s | epochs to target | best epoch | epochs run | "
        "s / epoch | frames/s | dev PER % argmax | test PER % argmax | dev PER % hybrid + LM | "
        "test PER % hybrid + LM | test alignment within 20 ms % |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ctc_lines = []
    for name, seeds in variants.items():
        viterbi = [(s, d / "viterbi", summary(d / "viterbi")) for s, d in seeds]
        viterbi = [(s, d, m) for s, d, m in viterbi if m is not None]
        if not viterbi:
            continue
        accuracy = []
        for _, d, _ in viterbi:
            path = d / "decode_test_greedy" / "alignment_accuracy.json"
            accuracy.append(json.loads(path.read_text())["within_20ms"] if path.is_file() else None)
        reached = [to_target(m["history"]) for _, _, m in viterbi]
        reached_text = "-" if not any(reached) else spread(reached) + ("" if all(reached) else f" (not all {run}s)")
        size = viterbi[0][2].get("parameters")  # (summaries written before it was recorded lack it)
        size_text = f"{viterbi[0][2]['model_args']['hidden_size']} ({size})" if size else "n/a"
        lines.append(
            f"| {name} | `{settings[name] or '(the recipe)'}` | {size_text} | "
            f"{' '.join(str(s) for s, _, _ in viterbi)} | "
            f"{reached_text} | "
            + _run_cells(viterbi, spread, per, ("epochs",), ("dev", "greedy"), ("test", "greedy"), ("dev", "lm"))
            + f" | {spread([per(d, 'test', 'lm') for _, d, _ in viterbi])} | {spread(accuracy)} |"
        )
        ctc = [(s, d / "ctc", summary(d / "ctc")) for s, d in seeds]
        ctc = [(s, d, m) for s, d, m in ctc if m is not None]
        if ctc:
            decodes = (("dev", "greedy"), ("test", "greedy"), ("dev", "lm"), ("test", "lm"))
            seed_list = " ".join(str(s) for s, _, _ in ctc)
            ctc_lines.append(f"| {name} | {seed_list} | " + _run_cells(ctc, spread, per, (), *decodes) + " |")
    if ctc_lines:
        lines += [
            "",
            "CTC from each variant's Viterbi model (train.ctc.init as the recipe sets it):",
            "",
            f"| variant | {run}s | best epoch | s / epoch | frames/s | dev PER % greedy | test PER % greedy | "
            "dev PER % beam + LM | test PER % beam + LM |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *ctc_lines,
        ]
    figure = Figure(figsize=(11, 4))
    per_ax, loss_ax = figure.subplots(1, 2)
    highest = 100.0  # (a free phone loop's PER passes 100% with insertions: the axis goes as high as the curves)
    for name, seeds in variants.items():
        first = summary(seeds[0][1] / "viterbi")
        if first is None:
            continue
        epochs = [r["epoch"] for r in first["history"]]
        per_ax.plot(epochs, [r["valid_per"] for r in first["history"]], label=name)
        highest = max(highest, *(r["valid_per"] for r in first["history"]))
        loss_ax.plot(epochs, [r["valid_loss"] for r in first["history"]], label=name)
    for ax, what in ((per_ax, "dev PER % (free phone loop)"), (loss_ax, "dev loss per frame")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Viterbi-stage epoch")
        ax.set_ylabel(what)
    per_ax.set_ylim(0, highest + 5)
    per_ax.legend(fontsize=8)
    figure.suptitle(f"{cfg.recipe_name}: {plotted}, {run} {min(s for v in variants.values() for s, _ in v)}")
    figure.tight_layout()
    png = out_path.with_suffix(".png")
    write_png_atomic(png, figure, dpi=80)
    lines += ["", f"![dev PER and loss per epoch by variant]({png.name})"]
    write_report(out_path, lines + _failed_jobs(failed))
    log.info("wrote %s", out_path)


def _failed_jobs(failed: dict[str, str] | None) -> list[str]:
    """A sweep table's section on the jobs that failed (job name -> its error), which its figures leave out."""
    if not failed:
        return []
    lines = ["", "## Failed jobs", "", "Left out of every figure above; a rerun of the sweep resumes them.", ""]
    return lines + [f"- `{name}`: {error}" for name, error in failed.items()]


def _run_cells(runs, spread, per, extra: tuple[str, ...], *decodes: tuple[str, str]) -> str:
    """A comparison table's cells for (seed, run dir, train summary) runs: best epoch, the summaries' `extra` keys,
    seconds per epoch, training frames per second, then the PER of each (split, decoder) of `decodes`."""
    cells = [spread([m["best"]["epoch"] for _, _, m in runs])]
    cells += [spread([m[key] for _, _, m in runs]) for key in extra]
    cells.append(spread([m["train_seconds"] / max(m["epochs"], 1) for _, _, m in runs]))
    cells.append(spread([m["frames_per_second"] for _, _, m in runs], digits=0))
    cells += [spread([per(d, split, decoder) for _, d, _ in runs]) for split, decoder in decodes]
    return " | ".join(cells)
