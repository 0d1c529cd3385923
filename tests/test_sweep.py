"""./run.sh -m: hydra multiruns of the recipe (phonerec.pipeline.sweep, steps/sweep.py)."""

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ONE_POINT_GRIDS, REPO, SHARED_FSDD, free_port, fsdd_subset, project_env, run_sh, tiny_run
from omegaconf import OmegaConf

from phonerec.base.errors import RecipeError
from phonerec.data.data_dir import read_table
from phonerec.model.recurrent import RecurrentAcousticModel, num_parameters
from phonerec.pipeline.sweep import check_job_name, hydra_quoted, thread_shares, write_sweep_table

needs_fsdd = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora")


def test_jobs_side_by_side_share_the_threads_and_nj_and_a_job_alone_keeps_them():
    cfg = OmegaConf.create({"train": {"num_threads": 8}, "decode": {"num_threads": 4}, "nj": 3})
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    joblib.n_jobs = 2
    assert thread_shares(cfg, joblib, jobs=6) == ["train.num_threads=4", "decode.num_threads=2", "nj=1"]
    joblib.n_jobs = 4
    assert thread_shares(cfg, joblib, jobs=2) == ["train.num_threads=4", "decode.num_threads=2", "nj=1"]  # 2 at once
    assert thread_shares(cfg, joblib, jobs=1) == []
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert thread_shares(cfg, basic, jobs=6) == []


def test_job_names_and_paths_as_overrides():
    with pytest.raises(RecipeError, match="needs a swept key"):
        check_job_name("", ["corpus.root=/data"])
    with pytest.raises(RecipeError, match="more than a file name may have"):
        check_job_name("model.hidden_size=128," * 20, [])
    check_job_name("train.seed=0", ["train.seed=0"])
    assert hydra_quoted("exp/sweep/a=1,b=[2]") == "'exp/sweep/a=1,b=[2]'"
    assert hydra_quoted("it's") == '"it\'s"'


@needs_fsdd
def test_jobs_that_differ_in_feature_settings_get_a_feature_dir_each_made_before_the_jobs(tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(1))
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp"), "features.kaldi.num_ceps=13,11"]
    result = run_sh("-m", "--stop-stage", "1", *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.count("prepare already done with these settings") == 1  # made once, by the first
    for ceps in (13, 11):
        feats = tmp_path / "data" / f"mfcc-features.kaldi.num_ceps={ceps}" / "train"
        assert f"num_ceps: {ceps}" in (feats / "config.yaml").read_text()
    sweep = json.loads((tmp_path / "exp" / "sweep" / "sweep.json").read_text())
    assert [job["name"] for job in sweep["jobs"]] == ["features.kaldi.num_ceps=13", "features.kaldi.num_ceps=11"]
    assert [job["dirs"] for job in sweep["jobs"]] == [
        ["features.name='mfcc-features.kaldi.num_ceps=13'"],
        ["features.name='mfcc-features.kaldi.num_ceps=11'"],
    ]
    # The same jobs with another shared setting: their dirs were run with other settings, so it is refused.
    result = run_sh("-m", "--stop-stage", "1", *overrides, "train.grad_clip=1.0")
    assert result.returncode == 1
    assert "was run by an earlier sweep with other settings (train.grad_clip: - then, 1.0 now)" in result.stderr
    # A bad value anywhere in the sweep: refused by the config's checks before anything runs.
    result = run_sh("-m", f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp2"), "model.hidden_size=32,-1")
    assert result.returncode == 1 and "hidden_size" in result.stderr
    assert not (tmp_path / "exp2").exists()


def run(command: list[str], timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env or project_env(), capture_output=True, text=True, timeout=timeout)


def spread(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def per(run_dir: Path, model: str, split: str, decoder: str) -> float:
    return json.loads((run_dir / model / f"decode_{split}_{decoder}" / "per.json").read_text())["total"]["per"]


@needs_fsdd
@pytest.mark.slow
def test_a_seed_sweep_runs_each_job_in_its_own_dir_after_the_shared_stages_and_resumes(tmp_path):
    """Two seeds by hydra's basic launcher (sweep=seeds), then by the joblib launcher side by side: the same figures
    (one training thread each either way); a rerun skips every stage of every job; the seed table."""
    root = fsdd_subset(tmp_path / "fsdd", takes=range(1))
    short = ["models=[viterbi]", "train.viterbi.epochs=2", "decode.decoders=[greedy]"]

    def sweep(exp, *launcher):
        overrides = [f"corpus.root={root}", *tiny_run(tmp_path, exp), *short, "sweep=seeds", "train.seed=0,1"]
        return run_sh("-m", "--stop-stage", "5", *overrides, *launcher)

    serial = sweep(tmp_path / "exp")
    assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]
    assert serial.stdout.count("Stage 0: data preparation") == 1 and serial.stdout.count("Stage 1: features") == 1
    jobs = sorted(d for d in (tmp_path / "exp" / "seeds").iterdir() if d.is_dir())
    assert [d.name for d in jobs] == ["train.seed=0", "train.seed=1"]  # named by what the jobs do not share
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert job.name in overrides and "model.hidden_size=32" in overrides
        result = json.loads((job / "result.json").read_text())
        assert f"job {job.name}: dev PER {result['per']['dev']:.2f}% (to the sweeper)" in serial.stdout
        assert (job / "RESULTS.md").is_file()
    table = (tmp_path / "RESULTS_seeds.md").read_text()
    assert "seeds 0 1 (train.seed), 1 training threads" in table and "Command: `./run.sh -m " in table
    pers = [per(job, "viterbi", split, "greedy") for split in ("dev", "test") for job in jobs]
    row = next(line for line in table.splitlines() if line.startswith("| viterbi | frame argmax"))
    assert row.endswith(f"| {spread(pers[:2])} | {spread(pers[2:])} |")

    again = sweep(tmp_path / "exp")
    assert again.returncode == 0
    assert again.stderr.count("train already done with these settings") == 2
    assert "epoch 1:" not in again.stderr

    side_by_side = sweep(tmp_path / "exp2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert side_by_side.returncode == 0, side_by_side.stdout[-3000:] + side_by_side.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in side_by_side.stdout + side_by_side.stderr
    for job in jobs:
        twin = tmp_path / "exp2" / "seeds" / job.name
        assert per(job, "viterbi", "test", "greedy") == per(twin, "viterbi", "test", "greedy")


@needs_fsdd
@pytest.mark.slow
def test_a_job_that_fails_leaves_the_others_and_the_table_and_the_sweep_ends_with_its_error(tmp_path):
    """A job whose training diverges (Adam at lr 1e36: parameters near float32's largest, an infinite loss in epoch
    2): the other job finishes, the table holds it and lists the failed one with its error, the sweep exits 1 with
    that error; a rerun resumes the failed job alone."""
    root = fsdd_subset(tmp_path / "fsdd", takes=range(1))
    short = ["models=[viterbi]", "train.viterbi.epochs=2", "train.viterbi.realign_epochs=[]"]
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp"), *short, "decode.decoders=[greedy]"]
    overrides.append("sweep_name=lr")
    result = run_sh("-m", "--stop-stage", "5", *overrides, "train.viterbi.lr=1e36,1e-3")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    error = "viterbi: epoch 2: the training loss is inf: training diverged"
    assert "1 job(s) of the sweep failed (the others finished): train.viterbi.lr=1e+36: job" in result.stderr
    assert error in result.stderr.splitlines()[-1]
    sweep = tmp_path / "exp" / "lr"
    assert error in json.loads((sweep / "train.viterbi.lr=1e+36" / "failed.json").read_text())["error"]
    assert (sweep / "train.viterbi.lr=0.001" / "result.json").is_file()
    table = (tmp_path / "RESULTS_lr.md").read_text()
    assert "| train.viterbi.lr=0.001 |" in table and "| train.viterbi.lr=1e+36 |" not in table
    assert table.split("## Failed jobs")[1].count("- `train.viterbi.lr=1e+36`: job train.viterbi.lr=1e+36: ") == 1

    again = run_sh("-m", "--stop-stage", "5", *overrides, "train.viterbi.lr=1e36,1e-3")
    assert again.returncode == 1 and again.stderr.count("train already done with these settings") == 1
    assert again.stdout.count("job train.viterbi.lr=1e+36 failed") == 1


@needs_fsdd
@pytest.mark.slow
def test_leave_one_speaker_out_holds_out_each_training_speaker_and_never_uses_test(tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(3), speakers=("george", "jackson", "nicolas", "theo"))
    short = ["train.viterbi.epochs=2", "train.ctc.epochs=2", "train.compare_ctc_inits=[]", "decode.decoders=[greedy]"]
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp"), *short]
    result = run(["./run_loso.sh", "--stop-stage=5", *overrides])  # (stages 6-8 of each fold: not this test's)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (tmp_path / "data" / "mfcc").exists()  # the recipe's own split is only prepared, to read its speakers

    pers = []
    for held, trained_on in (("george", "jackson"), ("jackson", "george")):
        data = tmp_path / "data" / f"corpus.held_out_speaker={held}"
        speakers = {split: set(read_table(data / split / "utt2spk").values()) for split in ("train", "dev", "test")}
        assert speakers == {"train": {trained_on}, "dev": {held}, "test": {"theo"}}  # nicolas in no fold
        job = tmp_path / "exp" / "loso" / f"corpus.held_out_speaker={held},train.seed=0"
        pers.append(per(job, "ctc", "dev", "greedy"))
    table = (tmp_path / "RESULTS_loso.md").read_text()
    assert "folds (george, jackson)" in table and "| test: theo % |" in table
    row = next(line for line in table.splitlines() if line.startswith("| ctc | CTC best path | PER |"))
    assert row.split(" | ")[3] == spread(pers)

    # A split with one training speaker has nothing to leave out.
    one = fsdd_subset(tmp_path / "one", takes=range(1))
    result = run(["./run_loso.sh", f"corpus.root={one}", *tiny_run(tmp_path / "one", tmp_path / "one" / "exp")])
    assert result.returncode == 1 and "leaving one out needs at least 2" in result.stderr


@needs_fsdd
@pytest.mark.slow
def test_the_criteria_sweep_tables_each_variant_over_its_seeds(tmp_path):
    root = fsdd_subset(tmp_path / "fsdd", takes=range(3))
    short = ["train.viterbi.epochs=2", "train.ctc.epochs=2", "decode.decoders=[greedy,lm]", *ONE_POINT_GRIDS]
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp"), *short, "sweep=criteria"]

    result = run_sh("-m", "--stop-stage", "5", *overrides, "criterion=ce,fullsum_prior_learned")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = tmp_path / "exp" / "criteria"
    assert (sweep / "criterion=ce,train.seed=0" / "ctc" / "best.pt").is_file()
    learned = sweep / "criterion=fullsum_prior_learned,train.seed=0"
    assert not (learned / "ctc").exists()  # the Viterbi model alone
    table = (tmp_path / "RESULTS_criteria.md").read_text()
    assert next(line for line in table.splitlines() if line.startswith("| ce | 0 |"))  # its CTC model's row
    assert "| fullsum_prior_learned | `train.viterbi.criterion=fullsum train.viterbi.fullsum_prior_scale=1.0" in table

    # A second seed of one variant: its table holds that variant's two seeds (the first seed's run is skipped).
    result = run_sh("-m", "--stop-stage", "5", *overrides, "criterion=fullsum_prior_learned", "train.seed=0,1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.count("train already done with these settings") == 1
    seeds = [sweep / f"criterion=fullsum_prior_learned,train.seed={s}" for s in (0, 1)]
    config = (seeds[1] / "viterbi" / "config.yaml").read_text()
    assert "criterion: fullsum" in config and "transitions: learned" in config and "seed: 1" in config
    table = (tmp_path / "RESULTS_criteria.md").read_text()
    assert (tmp_path / "RESULTS_criteria.png").is_file()
    row = next(line for line in table.splitlines() if line.startswith("| fullsum_prior_learned |"))
    cells = row.split(" | ")
    assert cells[3] == "0 1" and cells[12] == spread([per(d, "viterbi", "test", "lm") for d in seeds])
    bad = run_sh("-m", *overrides, "criterion=mmi")
    assert bad.returncode == 1 and "criterion/mmi" in bad.stderr


@needs_fsdd
@pytest.mark.slow
def test_the_cells_sweep_trains_and_decodes_every_cell_at_the_lstms_parameter_count(tmp_path):
    """Every cell but the LSTM (every other pipeline test runs it) through stages 2-5 of a tiny run, by the cells
    sweep; then a gated-feedback model's bundle (stage 6) transcribes and aligns a recording."""
    exp = tmp_path / "exp"
    root = fsdd_subset(tmp_path / "fsdd", takes=range(1))  # 10 utterances per split
    short = ["train.viterbi.epochs=2", "train.ctc.epochs=1", "decode.decoders=[greedy]", "decode.splits=[dev]"]
    # Two layers: a gated-feedback stack's feedback runs between layers.
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, exp), *short, "model.num_layers=2"]
    cells = ["gru", "rnn_tanh", "rnn_relu", "gf_rnn_vector", "gf_gru_scalar", "gf_lstm_scalar"]
    result = run_sh("-m", "--stop-stage", "5", *overrides, "sweep=cells", f"cell={','.join(cells)}", "train.seed=0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "RESULTS_cells.md").read_text()
    assert (tmp_path / "RESULTS_cells.png").is_file() and "# Recurrent cells: fsdd" in table
    for name in cells:
        run_dir = exp / "cells" / f"cell={name},train.seed=0"
        summary = json.loads((run_dir / "viterbi" / "train_summary.json").read_text())
        args = summary["model_args"]
        assert args["cell"] == name.removesuffix("_scalar").removesuffix("_vector")
        assert args["gf_gate"] == ("vector" if name.endswith("_vector") else "scalar")
        lstm = RecurrentAcousticModel(**{**args, "cell": "lstm", "hidden_size": 32})  # tiny_run's size
        assert args["hidden_size"] != 32 and abs(summary["parameters"] / num_parameters(lstm) - 1) < 0.05
        ctc = torch.load(run_dir / "ctc" / "best.pt", map_location="cpu", weights_only=False)
        assert ctc["model_args"]["cell"] == args["cell"] and ctc["model_args"]["hidden_size"] == args["hidden_size"]
        for model in ("viterbi", "ctc"):
            assert json.loads((run_dir / model / "decode_dev_greedy" / "per.json").read_text())["total"]["utts"] == 10
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.split(" | ")[2] == f"{args['hidden_size']} ({summary['parameters']})"
    # The gated-feedback LSTM's bundle, made by stage 6 of its job (the sweep again, for that job alone, which leaves
    # the table as it was), transcribes and aligns a new speaker's recording.
    run_dir = exp / "cells" / "cell=gf_lstm_scalar,train.seed=0"
    stage_6 = [
        "-m",
        "--stage",
        "6",
        "--stop-stage",
        "6",
        *overrides,
        "sweep=cells",
        "cell=gf_lstm_scalar",
        "train.seed=0",
    ]
    bundle = run_sh(*stage_6)
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr[-3000:]
    assert (tmp_path / "RESULTS_cells.md").read_text() == table
    recording = SHARED_FSDD / "recordings" / "7_jackson_10.wav"
    for script, args in (("transcribe.py", [recording]), ("align.py", [recording, "seven"])):
        out_dir = tmp_path / script
        step = run(["python", f"steps/{script}", str(run_dir / "ctc"), *map(str, args), "--out-dir", str(out_dir)])
        assert step.returncode == 0, step.stderr
        assert (out_dir / "phones.ctm").read_text().strip()


SLURM_DAEMONS = ("munged", "slurmctld", "slurmd")


def _kill_tree_of(marker: str, parents: bool = True) -> None:
    """SIGKILL the processes whose command line holds `marker`, their descendants and (`parents`) their parents: all
    stopped first, so that none sees another die and acts on it (a parent writing a result as its child fails)."""
    table = [line.split(maxsplit=2) for line in subprocess.run(
        ["ps", "-eww", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True
    ).stdout.splitlines()]  # fmt: skip
    parent = {int(pid): int(ppid) for pid, ppid, *_ in table}
    found = {int(pid) for pid, _, *args in table if args and marker in args[0]}
    doomed = found | ({parent[pid] for pid in found} if parents else set())
    while True:
        more = {pid for pid, ppid in parent.items() if ppid in doomed} - doomed
        if not more:
            break
        doomed |= more
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in doomed - {os.getpid()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@pytest.fixture
def slurm_cluster():
    """A one-node Slurm cluster on this machine (Debian's slurmctld, slurmd and munge), its own SLURM_CONF and
    munge socket in a dir of its own; its daemons ended by their pids. Jobs are tracked by process group
    (proctrack/pgid): with proctrack/linuxproc a requeued job's processes were not signalled here and ran on. The
    environment to submit to it, or None with the reason it cannot start here."""
    missing = [daemon for daemon in SLURM_DAEMONS if shutil.which(daemon, path="/usr/sbin:/usr/bin") is None]
    if missing:
        yield None, f"no {', '.join(missing)} (Debian: apt-get install slurmctld slurmd slurm-client munge)"
        return
    root = Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp"))  # short: munge's socket path must fit in 108 bytes
    for sub in ("spool", "state", "log"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    user, host = getpass.getuser(), socket.gethostname().split(".")[0]
    ports = [free_port(), free_port()]
    conf = root / "slurm.conf"
    conf.write_text(
        f"ClusterName=phonerec\nSlurmctldHost={host}\nSlurmUser={user}\nSlurmdUser={user}\n"
        f"SlurmctldPort={ports[0]}\nSlurmdPort={ports[1]}\nAuthType=auth/munge\nCredType=cred/munge\n"
        f"AuthInfo=socket={root}/munge.socket\nStateSaveLocation={root}/state\nSlurmdSpoolDir={root}/spool\n"
        f"SlurmctldPidFile={root}/slurmctld.pid\nSlurmdPidFile={root}/slurmd.pid\n"
        f"SlurmctldLogFile={root}/log/slurmctld.log\nSlurmdLogFile={root}/log/slurmd.log\n"
        "ProctrackType=proctrack/pgid\nTaskPlugin=task/none\nMpiDefault=none\nJobRequeue=1\nKillWait=2\n"
        "JobAcctGatherType=jobacct_gather/none\nSchedulerType=sched/backfill\nSelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_CPU\nReturnToService=2\n"
        f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN\n"
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
    )
    env = {**project_env(), "SLURM_CONF": str(conf)}
    pid_files = [root / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    commands = [
        ["munged", "--force", f"--key-file={key}", f"--socket={root}/munge.socket", f"--pid-file={pid_files[0]}",
         f"--log-file={root}/log/munged.log", f"--seed-file={root}/munge.seed"],
        ["slurmctld", "-f", str(conf)],
        ["slurmd", "-f", str(conf)],
    ]  # fmt: skip
    reason = None
    for command in commands:
        started = subprocess.run(command, env=env, capture_output=True, text=True)
        if started.returncode != 0:
            reason = f"{command[0]} did not start (exit {started.returncode}): {started.stderr.strip()[-300:]}"
            break
    deadline = time.time() + 30
    while reason is None and "idle" not in run(["sinfo", "-h", "-o", "%T"], env=env).stdout:
        if time.time() > deadline:
            reason = "the node did not come up in 30 s: " + (root / "log" / "slurmd.log").read_text()[-300:]
        time.sleep(0.5)
    try:
        yield (env if reason is None else None), reason
    finally:
        if reason is None:  # the jobs cancelled and their step daemons ended before the daemons that started them
            run(["scancel", "--full", f"--user={user}"], env=env)
            deadline = time.time() + 15
            while run(["squeue", "-h"], env=env).stdout.strip() and time.time() < deadline:
                time.sleep(0.2)
            _kill_tree_of(f"slurmd -f {conf}", parents=False)
        for pid_file in reversed(pid_files):
            if pid_file.is_file():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


@needs_fsdd
@pytest.mark.slow
def test_a_seed_sweep_on_slurm_resumes_a_requeued_job_and_writes_its_table(tmp_path, slurm_cluster):
    """Two seeds as Slurm jobs (hydra/launcher=slurm: hydra-submitit-launcher) on a one-node cluster started here;
    the first job requeued by Slurm while it trains (as a preemption would) resumes from its checkpoint. Where Slurm
    cannot start, the same sweep by submitit's local executor (hydra/launcher=submitit_local), without the requeue."""
    env, reason = slurm_cluster
    root = fsdd_subset(tmp_path / "fsdd", takes=range(3))
    # Epochs of a second or so, all of them run: the requeue lands while the first job trains.
    short = [
        "models=[viterbi]",
        "train.viterbi.epochs=6",
        "train.viterbi.realign_epochs=[3]",
        "train.viterbi.patience=null",
    ]
    short += ["decode.decoders=[greedy]", "model.hidden_size=256", "model.num_layers=2"]
    overrides = [f"corpus.root={root}", *tiny_run(tmp_path, tmp_path / "exp"), *short, "sweep=seeds", "train.seed=0,1"]
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10"]
    if env is None:
        print(f"Slurm cannot start here ({reason}): submitit's local executor instead")
        launcher, env = ["hydra/launcher=submitit_local"], project_env()
    sweep = subprocess.Popen(
        ["./run.sh", "-m", "--stop-stage", "5", *overrides, *launcher],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    job_dir = tmp_path / "exp" / "seeds" / "train.seed=0"
    if launcher[0] == "hydra/launcher=slurm":
        deadline = time.time() + 300
        while not (job_dir / "viterbi" / "checkpoints" / "epoch-1.pt").is_file():
            assert sweep.poll() is None and time.time() < deadline, "no job was seen training"
            time.sleep(0.1)
        # Every running job requeued, as a preemption of the node would: the seed-0 job among them, mid-training.
        running = [line.split() for line in run(["squeue", "-h", "-o", "%i %T"], env=env).stdout.splitlines()]
        requeued = [job for job, state in running if state == "RUNNING"]
        assert run(["scontrol", "requeue", ",".join(requeued)], env=env).returncode == 0
        # Slurm sends SIGTERM, which a job's run.sh ignores, then SIGKILL after KillWait; here (a sandbox) that
        # SIGKILL never reached the job's processes, which ran on to the end: they are killed as it would kill them.
        _kill_tree_of(f"paths.exp='{job_dir}'")
        for job in requeued:  # Slurm holds a requeued job back a while (its BeginTime): started at once here
            while "PENDING" not in run(["squeue", "-h", "-j", job, "-o", "%T"], env=env).stdout:
                time.sleep(0.2)
            run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env)
    try:
        output, _ = sweep.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        _kill_tree_of(f"corpus.root={root} ", parents=False)  # the sweep and its jobs, not this test
        raise
    assert sweep.returncode == 0, output[-4000:]
    jobs = sorted(d for d in (tmp_path / "exp" / "seeds").iterdir() if d.is_dir() and d.name != ".submitit")
    assert len(jobs) == 2 and all((job / "result.json").is_file() for job in jobs)
    assert "seeds 0 1 (train.seed)" in (tmp_path / "RESULTS_seeds.md").read_text()
    if launcher[0] == "hydra/launcher=slurm":
        log = (job_dir / "viterbi" / "log" / "train.log").read_text()
        assert "resuming from" in log, log[-3000:]


def _finished_job(job_dir: Path, per: float, epochs: int = 3) -> None:
    """What a job's stages 2-5 leave that the tables read: the Viterbi model's greedy decodes and its summary."""
    for split in ("dev", "test"):
        decode_dir = job_dir / "viterbi" / f"decode_{split}_greedy"
        decode_dir.mkdir(parents=True)
        (decode_dir / "per.json").write_text(json.dumps({"total": {"per": per + (split == "test")}}))
        (decode_dir / "decoder.json").write_text(json.dumps({"decoder": "frame argmax"}))
    history = [{"epoch": e, "valid_per": per + epochs - e, "valid_loss": 1.0 / e} for e in range(1, epochs + 1)]
    summary = {"best": {"epoch": epochs, "per": per}, "history": history, "epochs": epochs, "train_seconds": 30.0}
    summary |= {"frames_per_second": 1000.0, "model_args": {"hidden_size": 128}, "parameters": 4321}
    (job_dir / "viterbi" / "train_summary.json").write_text(json.dumps(summary))


def _write_table(tmp_path: Path, sweep_name: str, jobs: dict[str, list[str]], fixed: list[str], params=None):
    """write_sweep_table on jobs (dir name -> overrides) made by _finished_job, as hydra would hand it the sweep's
    config; the table's text."""
    sweep_dir = tmp_path / "exp" / sweep_name
    record = {"jobs": [{"name": name, "overrides": [*fixed, *job], "dirs": []} for name, job in jobs.items()]}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    free = list(OmegaConf.load(REPO / "conf" / "config.yaml").hydra.job.config.override_dirname.exclude_keys)
    config = OmegaConf.create(
        {
            "sweep_name": sweep_name,
            "hydra": {
                "sweep": {"dir": str(sweep_dir)},
                "job": {"config": {"override_dirname": {"exclude_keys": free + [o.split("=")[0] for o in fixed]}}},
                "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
                "sweeper": {"params": params or {}},
            },
        }
    )
    write_sweep_table(config)
    return (tmp_path / f"RESULTS_{sweep_name}.md").read_text()


def test_one_table_writer_for_seeds_folds_and_variants(tmp_path):
    """The sweep's table on finished job dirs: over seeds alone the seed table, over held-out speakers the
    leave-one-speaker-out one, over a conf/sweep comparison's variants (a config group's choices, their settings
    spelled out from its files) the variants side by side, each figure the mean (min-max) of its jobs'."""
    fixed = [
        "recipe=timit_sample",
        "models=[viterbi]",
        "decode.decoders=[greedy]",
        f"paths.results={tmp_path}/RESULTS.md",
    ]
    for seed, per in ((0, 40.0), (1, 42.0)):
        _finished_job(tmp_path / "exp" / "seeds" / f"train.seed={seed}", per)
    table = _write_table(tmp_path, "seeds", {f"train.seed={s}": [f"train.seed={s}"] for s in (0, 1)}, fixed)
    assert table.startswith("# Seed ranges: timit_sample") and "seeds 0 1 (train.seed)" in table
    assert "| viterbi | frame argmax | PER | 41.00 (40.00-42.00) | 42.00 (41.00-43.00) |" in table

    jobs = {}
    for criterion, per in (("ce", 50.0), ("fullsum", 40.0)):
        for seed in (0, 1):
            name = f"criterion={criterion},train.seed={seed}"
            _finished_job(tmp_path / "exp" / "criteria" / name, per + seed)
            jobs[name] = [f"criterion={criterion}", f"train.seed={seed}"]
    table = _write_table(tmp_path, "criteria", jobs, fixed, {"criterion": "ce,fullsum", "train.seed": "0"})
    assert table.startswith("# Training criteria: timit_sample") and "Target: the ce variant's best" in table
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    settings = "train.viterbi.criterion=fullsum train.viterbi.fullsum_prior_scale=0.0 hmm.transitions=none"
    assert rows["fullsum"][1:4] == [f"`{settings} models=[viterbi]`", "128 (4321)", "0 1"]
    assert rows["fullsum"][9] == "40.50 (40.00-41.00)" and rows["ce"][9] == "50.50 (50.00-51.00)"  # dev PER argmax

    fixed = ["models=[viterbi]", "decode.decoders=[greedy]", f"paths.results={tmp_path}/RESULTS.md", "train.seed=0"]
    for speaker, per in (("george", 10.0), ("jackson", 20.0)):
        _finished_job(tmp_path / "exp" / "loso" / f"corpus.held_out_speaker={speaker}", per)
    jobs = {f"corpus.held_out_speaker={s}": [f"corpus.held_out_speaker={s}"] for s in ("george", "jackson")}
    table = _write_table(tmp_path, "loso", jobs, fixed, {"train.seed": "0"})
    assert "folds (george, jackson)" in table and "| test: theo % |" in table
    assert "| viterbi | frame argmax | PER | 15.00 (10.00-20.00) | 16.00 (11.00-21.00) |" in table

    # Cells side by side over the folds (./run_loso.sh cell=lstm,gru); a fold that failed is listed, not counted.
    jobs = {}
    for cell, per in (("lstm", 30.0), ("gru", 20.0)):
        for speaker in ("george", "jackson", "nicolas"):
            name = f"cell={cell},corpus.held_out_speaker={speaker}"
            jobs[name] = [f"cell={cell}", f"corpus.held_out_speaker={speaker}"]
            if (cell, speaker) == ("gru", "nicolas"):
                (tmp_path / "exp" / "loso_cells" / name).mkdir(parents=True)
                (tmp_path / "exp" / "loso_cells" / name / "failed.json").write_text('{"error": "it diverged"}')
            else:
                _finished_job(tmp_path / "exp" / "loso_cells" / name, per + (speaker == "jackson"))
    table = _write_table(tmp_path, "loso_cells", jobs, fixed, {"train.seed": "0"})
    assert table.startswith("# Recurrent cells: fsdd") and "the recipe's dev speakers (theo) its test set" in table
    assert "Target: the lstm variant's best Viterbi dev PER (fold george, free phone loop" in table
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["variant"][3] == "folds" and rows["gru"][3] == "george jackson"
    assert rows["lstm"][3] == "george jackson nicolas" and rows["lstm"][9] == "30.33 (30.00-31.00)"
    assert rows["gru"][9] == "20.50 (20.00-21.00)"
    assert "## Failed jobs" in table and "- `cell=gru,corpus.held_out_speaker=nicolas`: it diverged" in table
