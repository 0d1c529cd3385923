"""`./run.sh -m`: a hydra multirun of the recipe, run by hydra's sweeper and launcher (steps/sweep.py is the
@hydra.main app), so that any of hydra's launcher or sweeper plugins runs it.

Each job runs run.sh's stages from 2 on (run.sh stays the one stage driver) with the job's overrides, in its own
exp dir under hydra.sweep.dir (<paths.exp>/<sweep_name>), named by hydra from the job's overrides
(hydra.job.override_dirname) but those every job shares and those conf/config.yaml leaves out (where files go,
thread counts: `naming_override`), with its RESULTS.md there and its own phone LMs (paths.lm); it returns the
dev PER of the result stage 5 chose (<job dir>/result.json), which an optimising sweeper minimises. A job that
fails (a training that diverges) leaves its error in its dir: the other jobs go on, the table lists it, and the
sweep ends with the errors of those that failed (exit 1); a rerun resumes them. Stages 0-1
are shared: `SweepCallback` runs them once before any job is launched, so that no two jobs race for the
exclusive lock on paths.data. Jobs that differ in data or feature settings (stages 0 or 1) get data or feature
dirs of their own, named by those settings (<paths.data>/<key=value,...>, <features.name>-<key=value,...>),
each made once before the jobs. A sweeper that chooses its jobs as it goes (not hydra's basic one) cannot know
them up front: its jobs share the data and features of the overrides that sweep nothing, and a job that would
need others is refused. A rerun of the sweep skips every job's finished stages, as run.sh does.

Jobs that a launcher runs side by side on one machine (hydra's joblib launcher) share its cores: each job's
train.num_threads, decode.num_threads and nj are the configured ones divided by the jobs running at once. A Slurm
job (hydra-submitit-launcher, conf/hydra/launcher/slurm.yaml) trains on its gpus_per_node GPUs, and on its nodes
machines (run.sh --nnodes); requeued, it resumes where it stopped."""

import codecs
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from phonerec.base.config import CONF_DIR, REPO_ROOT, StageKeys, load_config, repo_path
from phonerec.base.errors import RecipeError
from phonerec.base.files import write_json_atomic
from phonerec.base.ownership import claim_dir
from phonerec.inference import RESULT_FILE
from phonerec.pipeline.cli import run_guarded
from phonerec.pipeline.results import sweep_table_path, write_comparison_table, write_loso_table, write_seed_table
from phonerec.pipeline.stage_keys import FEATURES, PREPARE, SCORE, SPEED_PERTURB

log = logging.getLogger(__name__)

# run.sh's options that steps/sweep.py passes on to the callback and the jobs (which a remote launcher runs in
# another process: the environment goes with them)
OPTIONS_ENV = "PHONEREC_SWEEP_OPTIONS"
# In hydra.sweep.dir: the sweep's jobs (their dir names and overrides, as the basic sweeper launches them; none for
# another sweeper) and the data and feature settings the shared stages ran with, which every job is checked against
SWEEP_FILE = "sweep.json"
# In a job's dir: its error, where its run.sh failed (a job of hydra's basic sweeper); a rerun of the job removes it
FAILED_FILE = "failed.json"
# The settings of the shared stages: (the setting that names their dir, their stage keys)
SHARED = {"data": ("paths.data", PREPARE | SPEED_PERTURB), "features": ("features.name", FEATURES)}
THREAD_KEYS = ("train.num_threads", "decode.num_threads", "nj")
# An error line of run.sh or a step: `<time> ERROR [<file>:<line>] <text>` (logging), `ERROR: <text>`, `<time>
# (run.sh:<line>) ERROR: <text>`
ERROR_LINE = re.compile(r"^(?P<head>.*?)\bERROR\b(?: \[[^]]*\])?:? (?P<text>.*)$", re.MULTILINE)


def sweep_options() -> dict:
    """run.sh's --stage, --stop-stage and --ngpu of this sweep, and its other arguments (as given)."""
    return json.loads(os.environ.get(OPTIONS_ENV, '{"stage": 0, "stop_stage": 100, "ngpu": 1, "arguments": []}'))


def _say(message: str) -> None:
    """A line on the console as run.sh prints its own (the sweep's jobs log through run.sh's steps)."""
    print(f"{datetime.now():%Y-%m-%dT%H:%M:%S} (sweep) {message}", flush=True)


def sweep_jobs(config: DictConfig) -> tuple[list[list[str]], bool]:
    """The overrides of every job, as hydra's basic sweeper will launch them (hydra.sweeper.params and the command
    line's overrides), and True; for another sweeper, which chooses its jobs as it goes, the overrides that sweep
    nothing, and False."""
    arguments = [f"{key}={value}" for key, value in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*arguments, *config.hydra.overrides.task])
    if config.hydra.sweeper._target_ != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return [[override.input_line for override in overrides if not override.is_sweep_override()]], False
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch], True


def naming_override(arguments: list[str]) -> str:
    """The override of hydra.job.config.override_dirname.exclude_keys that names a sweep's jobs by what varies
    between them: conf/config.yaml's keys, and those of the command line's overrides that every job shares (that
    sweep nothing and that hydra.sweeper.params, set by conf/sweep/, does not name). A job's dir name then holds its
    swept settings alone (`model.hidden_size=128,train.seed=0`), not the shared ones too, which would soon pass the
    255 bytes a file name may have; SweepCallback refuses a job whose dir an earlier sweep ran with other shared
    settings."""
    overrides = OverridesParser.create().parse_overrides(arguments)
    fixed = [o for o in overrides if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose(config_name="config", overrides=[o.input_line for o in fixed], return_hydra_config=True)
    params = set(OmegaConf.select(config, "hydra.sweeper.params") or {})
    keys = list(config.hydra.job.config.override_dirname.exclude_keys)
    keys += [o.get_key_element() for o in fixed if not o.is_hydra_override() and o.get_key_element() not in params]
    return "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(map(hydra_quoted, keys)) + "]"


def check_job_name(name: str, overrides: list[str]) -> None:
    """A job's dir name (hydra.job.override_dirname) must name a dir of its own that the filesystem can hold."""
    if not name:
        raise RecipeError(
            f"a job of overrides {' '.join(overrides) or '(none)'} gets no dir of its own (hydra.job.override_dirname "
            "is empty): a sweep needs a swept key (key=a,b); without one, run ./run.sh without -m"
        )
    if len(name.encode()) > 255:
        raise RecipeError(
            f"a job's dir name, its overrides ({name[:80]}...), is {len(name.encode())} bytes, more than a file name "
            "may have (255): leave the settings every job shares to a config file (conf/local/default.yaml), or add "
            "their keys to hydra.job.config.override_dirname.exclude_keys"
        )


def hydra_quoted(value: str) -> str:
    """A value as a quoted string of hydra's override grammar (a job dir's name holds '=' and ',')."""
    for quote in "'\"":
        if quote not in value and not value.endswith("\\"):
            return f"{quote}{value}{quote}"
    raise RecipeError(f"{value}: a path with both quote characters, or ending in a backslash, cannot be an override")


def _dir_of(cfg: DictConfig, stage: str) -> str:
    """The dir that stage 0 ("data") or 1 ("features") of a job's config writes."""
    return cfg.paths.data if stage == "data" else f"{cfg.paths.data}/{cfg.features.name}"


def _shared_settings(cfg: DictConfig) -> dict[str, list[str]]:
    """What a job needs of the shared stages: per stage, [the dir it writes, the digest of its settings] (a list,
    as sweep.json gives it back)."""
    return {name: [_dir_of(cfg, name), keys.digest(cfg)] for name, (_, keys) in SHARED.items()}


def _differing_keys(keys: StageKeys, configs: list[DictConfig]) -> list[str]:
    """The leaf keys of a stage's view on which the configs differ."""
    flat = [_flatten(OmegaConf.to_container(keys.view(cfg))) for cfg in configs]
    return sorted(key for key in set().union(*flat) if len({json.dumps(f.get(key)) for f in flat}) > 1)


def _flatten(tree, key: str = "") -> dict:
    """A nested dict as {dotted key: leaf}."""
    if isinstance(tree, dict) and tree:
        return {k: v for name, sub in tree.items() for k, v in _flatten(sub, f"{key}.{name}" if key else name).items()}
    return {key: tree}


class SweepCallback(Callback):
    """Before the launcher starts any job: every job's config composed and checked, the sweep dir claimed, and
    stages 0-1 run once for each data and feature setting of the sweep (run.sh --stop-stage 1). After each job: the
    figure it returned to the sweeper, in the log."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # (hydra turns a callback's exception into a warning and goes on: run_guarded exits instead)
        run_guarded(lambda: self._run_shared_stages(config))

    def _run_shared_stages(self, config: DictConfig) -> None:
        options = sweep_options()
        jobs, known = sweep_jobs(config)
        configs = [load_config(job) for job in jobs]  # a bad override fails here, before anything runs
        naming = config.hydra.job.config.override_dirname
        parser = OverridesParser.create()
        names = [get_overrides_dirname(parser.parse_overrides(job), **naming) for job in jobs]
        for name, job in zip(names, jobs, strict=True):
            if known:  # (another sweeper's jobs are named as it makes them: each checks its own, run_job)
                check_job_name(name, job)
        # Jobs that differ in the settings of stage 0 (1) within one paths.data (feature dir) get a data (feature)
        # dir each, named by the settings they differ in, so that no job's stages 0-1 overwrite another's.
        dirs: list[list[str]] = [[] for _ in jobs]
        for name, (key, keys) in SHARED.items():
            hashed = StageKeys(keys.hashed)
            groups: dict[str, list[int]] = {}
            for i, cfg in enumerate(configs):
                groups.setdefault(_dir_of(cfg, name), []).append(i)
            separated = False
            for members in groups.values():
                if len({keys.digest(configs[i]) for i in members}) == 1:
                    continue
                separated = True
                differing = _differing_keys(hashed, [configs[i] for i in members])
                for i in members:
                    flat = _flatten(OmegaConf.to_container(hashed.view(configs[i])))
                    label = ",".join(f"{k}={flat.get(k)}" for k in differing).replace("/", "_")
                    value = OmegaConf.select(configs[i], key)
                    value = f"{value}/{label}" if name == "data" else f"{value}-{label}"
                    dirs[i].append(f"{key}={hydra_quoted(value)}")
            if separated:  # the configs with their own dirs, which the next stage's groups are made from
                configs = [load_config(job + extra) for job, extra in zip(jobs, dirs, strict=True)]
        needs = [_shared_settings(cfg) for cfg in configs]
        history = _check_history(repo_path(config.hydra.sweep.dir), names if known else [], jobs if known else [])
        claim_dir(repo_path(config.paths.exp), "paths.exp")
        sweep_dir = claim_dir(repo_path(config.hydra.sweep.dir), "hydra.sweep.dir")
        named = [
            {"name": name, "overrides": job, "dirs": extra} for name, job, extra in zip(names, jobs, dirs, strict=True)
        ]
        record = {"jobs": named if known else None, "shared": needs, "history": history}
        write_json_atomic(sweep_dir / SWEEP_FILE, record)
        if options["stage"] > 1:
            return
        representatives = {
            json.dumps(need, sort_keys=True): job + extra for need, job, extra in zip(needs, jobs, dirs, strict=True)
        }
        for job in representatives.values():
            stop = min(options["stop_stage"], 1)
            _say(f"shared stages {options['stage']}-{stop}, once for the sweep's {len(jobs)} job(s)")
            _run_sh(["--stage", str(options["stage"]), "--stop-stage", str(stop), *job], "the shared stages")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        run_guarded(lambda: self._end_sweep(config))

    def _end_sweep(self, config: DictConfig) -> None:
        """The table (where stage 5 ran), then the jobs that failed, as the sweep's error."""
        options = sweep_options()
        if options["stage"] <= 5 <= options["stop_stage"]:
            write_sweep_table(config)
        sweep_dir = repo_path(config.hydra.sweep.dir)
        failed = failed_jobs(sweep_dir, json.loads((sweep_dir / SWEEP_FILE).read_text()))
        if failed:
            raise RecipeError(
                f"{len(failed)} job(s) of the sweep failed (the others finished): "
                + "; ".join(f"{name}: {error}" for name, error in failed.items())
            )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if job_return.status == JobStatus.COMPLETED and job_return.return_value is not None:
            _say(f"job {config.hydra.job.override_dirname}: dev PER {job_return.return_value:.2f}% (to the sweeper)")


def _check_history(sweep_dir: Path, names: list[str], jobs: list[list[str]]) -> dict[str, dict[str, str]]:
    """Every job this sweep dir has held, with its settings (its overrides but those of conf/config.yaml's
    exclude_keys: where files go, thread counts), this sweep's added; a job whose dir an earlier sweep ran with
    other settings (those every job shares, which its name leaves out) is refused before anything runs."""
    sweep_file = sweep_dir / SWEEP_FILE
    history = json.loads(sweep_file.read_text()).get("history", {}) if sweep_file.is_file() else {}
    free = set(OmegaConf.load(CONF_DIR / "config.yaml").hydra.job.config.override_dirname.exclude_keys)
    for name, job in zip(names, jobs, strict=True):
        settings = {key: value for key, value in map(_key_value, job) if key not in free}
        before = history.setdefault(name, settings)
        if before != settings:
            differ = sorted(key for key in {*before, *settings} if before.get(key) != settings.get(key))
            shown = ", ".join(f"{key}: {before.get(key, '-')} then, {settings.get(key, '-')} now" for key in differ)
            raise RecipeError(
                f"{sweep_dir / name} was run by an earlier sweep with other settings ({shown}): give this sweep "
                f"a dir of its own (sweep_name=<name>: <paths.exp>/<name>/; or another paths.exp), or remove that "
                "job's dir. Nothing was run"
            )
    return history


def _run_sh(arguments: list[str], what: str, slurm: bool = False) -> None:
    """./run.sh with these arguments, its stderr passed on as it comes; where it fails, a RecipeError with its last
    error line. In a Slurm job (`slurm`) it ignores SIGTERM, as submitit's own process does: Slurm sends it before
    it kills a job it preempts or requeues, and a run.sh stopped by it would end the job as failed; killed (SIGKILL,
    KillWait seconds later), the requeued job resumes where it stopped."""
    ignore_term = (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)) if slurm else None
    process = subprocess.Popen(["./run.sh", *arguments], cwd=REPO_ROOT, preexec_fn=ignore_term, stderr=subprocess.PIPE)
    decoder, tail = codecs.getincrementaldecoder("utf-8")("replace"), ""
    while chunk := os.read(process.stderr.fileno(), 1 << 16):  # (not by lines: progress bars redraw with \r)
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        tail = (tail + text)[-(1 << 16) :]
    status = process.wait()
    if status != 0:
        raise RecipeError(f"{what}: ./run.sh failed (exit {status}): {_last_error(tail)}; rerun the sweep to resume")


def _last_error(output: str) -> str:
    """The last error line of run.sh's stderr, its step's (a logged ERROR, or `ERROR: ...`) before run.sh's own
    (`(run.sh:N) ERROR: step failed: ...`), without the time and source of the line."""
    errors = list(ERROR_LINE.finditer(output))
    steps = [m for m in errors if "(run.sh:" not in m.group("head")]
    return (steps or errors)[-1].group("text").strip() if errors else "its error above"


def failed_jobs(sweep_dir: Path, sweep: dict) -> dict[str, str]:
    """The jobs of the sweep (sweep.json's) whose run.sh failed: job name -> its error (FAILED_FILE)."""
    failed = {}
    for job in sweep["jobs"] or []:
        record = sweep_dir / job["name"] / FAILED_FILE
        if record.is_file():
            failed[job["name"]] = json.loads(record.read_text())["error"]
    return failed


def _parallel_jobs(launcher: DictConfig, jobs: int | None) -> int:
    """How many of the sweep's jobs run at once on this machine: the joblib launcher's n_jobs (joblib's
    negative counts from the cores), at most the jobs there are (where known); 1 for any other launcher (one job a
    machine)."""
    if not _launcher_is(launcher, "JoblibLauncher"):
        return 1
    n = int(launcher.n_jobs)
    if n < 0:
        n = (os.cpu_count() or 1) + 1 + n
    return max(1, min(n, jobs or n))


def thread_shares(cfg: DictConfig, launcher: DictConfig, jobs: int | None) -> list[str]:
    """The thread counts of a job that shares the machine with others (overrides; none for a job alone)."""
    n = _parallel_jobs(launcher, jobs)
    if n == 1:
        return []
    return [f"{key}={max(1, int(OmegaConf.select(cfg, key)) // n)}" for key in THREAD_KEYS]


def _launcher_is(launcher: DictConfig, name: str) -> bool:
    """Whether hydra's launcher is the plugin class `name` (JoblibLauncher, SlurmLauncher)."""
    return str(launcher.get("_target_", "")).endswith(name)


def machine_options(launcher: DictConfig, ngpu: int) -> list[str]:
    """run.sh's --ngpu for a job, and --nnodes, --node-rank and --rdzv-endpoint for one on several machines: a
    Slurm job (hydra-submitit-launcher) trains in gpus_per_node processes (where set); one of nodes > 1 runs on
    each of its machines, machine k as --node-rank k, the rendezvous on the job's first machine."""
    if not _launcher_is(launcher, "SlurmLauncher"):
        return ["--ngpu", str(ngpu)]
    if launcher.tasks_per_node != 1:
        raise RecipeError(
            f"hydra.launcher.tasks_per_node={launcher.tasks_per_node}: run.sh starts a job's training processes "
            "itself (gpus_per_node of them on each machine): set it to 1"
        )
    arguments = ["--ngpu", str(launcher.gpus_per_node or ngpu)]
    if launcher.nodes > 1:
        names = ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]]
        first = subprocess.run(names, capture_output=True, text=True, check=True).stdout.split()[0]
        port = 20000 + int(os.environ["SLURM_JOB_ID"]) % 20000  # the job's own, whatever else runs there
        arguments += ["--nnodes", str(launcher.nodes), "--node-rank", os.environ["SLURM_NODEID"]]
        arguments += ["--rdzv-endpoint", f"{first}:{port}"]
    return arguments


def _threads_per_job(cfg: DictConfig, launcher: DictConfig, jobs: int | None) -> int:
    """train.num_threads as each job of the sweep runs it."""
    shares = dict(map(_key_value, thread_shares(cfg, launcher, jobs)))
    return int(shares.get("train.num_threads", cfg.train.num_threads))


def run_job(cfg: DictConfig) -> float | None:
    """One job of the sweep: run.sh's stages 2 to --stop-stage with the job's overrides in its own exp dir; returns
    the dev PER of the result stage 5 chose (None where stage 5 is not run)."""
    hydra = HydraConfig.get()
    options = sweep_options()
    job_dir = Path(hydra.runtime.output_dir)
    sweep_dir = repo_path(hydra.sweep.dir)
    overrides = list(hydra.overrides.task)
    check_job_name(hydra.job.override_dirname, overrides)
    sweep_file = sweep_dir / SWEEP_FILE
    sweep = json.loads(sweep_file.read_text())
    named = {job["name"]: job["dirs"] for job in sweep["jobs"] or []}
    dirs = named.get(hydra.job.override_dirname, [])  # the job's own data or feature dir, where it has one
    need = _shared_settings(load_config(overrides + dirs))
    if need not in sweep["shared"]:
        raise RecipeError(
            f"job {job_dir.name}: its data or feature settings (stages 0-1) are not those the sweep's shared stages "
            f"ran with ({sweep_file}): a sweeper that chooses data or feature settings as it goes cannot share them; "
            "leave them out of the sweep"
        )
    if options["stop_stage"] < 2:
        return None
    job = [
        *overrides,
        *dirs,
        *thread_shares(cfg, hydra.launcher, sweep["jobs"] and len(sweep["jobs"])),
        f"paths.exp={hydra_quoted(str(job_dir))}",
        f"paths.results={hydra_quoted(str(job_dir / 'RESULTS.md'))}",
        f"paths.lm={hydra_quoted(str(job_dir / 'lm'))}",  # its own: jobs may run side by side
    ]
    first = max(options["stage"], 2)
    _say(f"job {job_dir.name}: stages {first}-{options['stop_stage']} -> {job_dir}")
    arguments = ["--stage", str(first), "--stop-stage", str(options["stop_stage"])]
    arguments += machine_options(hydra.launcher, options["ngpu"])
    failed = job_dir / FAILED_FILE
    failed.unlink(missing_ok=True)
    try:
        _run_sh([*arguments, *job], f"job {job_dir.name}", slurm=_launcher_is(hydra.launcher, "SlurmLauncher"))
    except RecipeError as err:
        if sweep["jobs"] is None:  # a sweeper that chooses as it goes takes a failed job as its own
            raise
        # (raised, hydra's basic sweeper would end the sweep on it without on_multirun_end: no table of the others)
        write_json_atomic(failed, {"error": str(err)})
        _say(f"job {job_dir.name} failed; the sweep goes on, and its table lists it: {err}")
        return None
    if os.environ.get("SLURM_NODEID", "0") != "0":  # a machine of a job on several: machine 0 returns its figure
        return None
    result = job_dir / RESULT_FILE
    if options["stop_stage"] < 5 or not result.is_file():
        return None
    chosen = json.loads(result.read_text())
    return chosen["per"][chosen["chosen_on"]]


SEED_KEY = "train.seed"
FOLD_KEY = "corpus.held_out_speaker"  # the leave-one-speaker-out sweep's (conf/sweep/loso.yaml)


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def write_sweep_table(config: DictConfig) -> None:
    """The table of a finished sweep (the basic sweeper's jobs), <paths.results without .md>_<sweep_name>.md, from
    its jobs' decode dirs and training summaries: over seeds alone, the seed table (mean and min-max of every model
    and decoder); over held-out speakers (corpus.held_out_speaker), the leave-one-speaker-out table; over other
    settings (over seeds, or over held-out speakers), the comparison of the variants (phonerec.pipeline.results):
    the settings that vary, and those hydra.sweeper.params names (a comparison of conf/sweep/ with one variant
    given is still one). Jobs that failed are listed with their errors, not counted. Hydra's sweep dir holds the
    jobs; a rerun with --stage 5 writes the table again."""
    sweep_dir = repo_path(config.hydra.sweep.dir)
    sweep = json.loads((sweep_dir / SWEEP_FILE).read_text())
    if sweep["jobs"] is None:
        log.info("no table: the sweeper chose its jobs as it went (see its own results)")
        return
    excluded = set(config.hydra.job.config.override_dirname.exclude_keys)
    jobs = [
        (sweep_dir / job["name"], dict(kv for kv in map(_key_value, job["overrides"]) if kv[0] not in excluded))
        for job in sweep["jobs"]
    ]
    keys = list(dict.fromkeys(key for _, settings in jobs for key in settings))
    varying = [key for key in keys if len({settings.get(key) for _, settings in jobs}) > 1]
    failed = failed_jobs(sweep_dir, sweep)
    jobs = [(job_dir, settings) for job_dir, settings in jobs if job_dir.name not in failed]
    if not jobs:
        log.warning("no table: every job of the sweep failed")
        return
    params = set(OmegaConf.select(config, "hydra.sweeper.params") or {})
    variant_keys = [key for key in keys if (key in varying or key in params) and key not in (SEED_KEY, FOLD_KEY)]
    first = jobs[0][1]
    full = load_config(sweep["jobs"][0]["overrides"])
    OmegaConf.update(full, "train.num_threads", _threads_per_job(full, config.hydra.launcher, len(jobs)))
    cfg = SCORE.view(full)
    out_path = sweep_table_path(Path(cfg.paths.results), config.sweep_name)
    options = sweep_options()
    stages = ["--stage", str(options["stage"])] if options["stage"] else []
    stages += ["--stop-stage", str(options["stop_stage"])] if options["stop_stage"] < 100 else []
    stages += ["--ngpu", str(options["ngpu"])] if options["ngpu"] > 1 else []
    command = shlex.join(["./run.sh", "-m", *stages, *options.get("arguments", [])])

    def seed(settings: dict) -> int:
        return int(settings.get(SEED_KEY, first.get(SEED_KEY, cfg.train.seed)))

    if not variant_keys and FOLD_KEY in varying:
        label = "{fold}, seed {seed}" if SEED_KEY in varying else "{fold}"
        folds = {label.format(fold=settings[FOLD_KEY], seed=seed(settings)): job_dir for job_dir, settings in jobs}
        write_loso_table(cfg, folds, ", ".join(full.corpus.dev_speakers), out_path, command, failed)
    elif not variant_keys:
        write_seed_table(cfg, {seed(settings): job_dir for job_dir, settings in jobs}, out_path, command, failed)
    elif FOLD_KEY in varying and SEED_KEY in varying:
        log.warning("no table: the sweep varies the held-out speaker, the seed and other settings at once")
    else:
        folds = FOLD_KEY in varying  # each variant's runs: its folds, else its seeds
        variants: dict[str, list[tuple[int | str, Path]]] = {}
        described: dict[str, str] = {}
        for job_dir, settings in jobs:
            name = " ".join(_variant_name(key, settings.get(key, "")) for key in variant_keys)
            variants.setdefault(name, []).append((settings[FOLD_KEY] if folds else seed(settings), job_dir))
            described[name] = " ".join(_described(key, settings.get(key, "")) for key in variant_keys)
        variants = {name: sorted(runs) for name, runs in variants.items()}
        test_speakers = ", ".join(full.corpus.dev_speakers) if folds else None
        write_comparison_table(
            cfg, variants, described, out_path, command, config.sweep_name, variant_keys, failed, test_speakers
        )
    log.info("the sweep's table: %s", out_path)


def _variant_name(key: str, value: str) -> str:
    """A variant's name in the table: a config group's choice by itself (`ce`), any other setting as key=value."""
    return value if (CONF_DIR / key).is_dir() else f"{key}={value}"


def _described(key: str, value: str) -> str:
    """A variant's settings: a config group's choice as the settings its file makes, any other as key=value."""
    path = CONF_DIR / key / f"{value}.yaml"
    if not path.is_file():
        return f"{key}={value}"
    settings = _flatten({k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k != "defaults"})
    return " ".join(
        f"{k}=[{','.join(map(str, v))}]" if isinstance(v, list) else f"{k}={v}" for k, v in settings.items()
    )
