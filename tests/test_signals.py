"""Signals to run.sh: SIGTERM or SIGINT to run.sh alone, or a Ctrl-C in its terminal, during training stops the
step too (no process of it left, its lock free), with one line and exit 143 or 130; the same command resumes."""

import fcntl
import os
import pty
import signal
import subprocess
import termios
import threading
from pathlib import Path

import pytest
from conftest import REPO, SHARED_FSDD, fsdd_subset, project_env, run_sh, tiny_run, wait_for

pytestmark = [
    pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora"),
    pytest.mark.slow,
]

STOPPED = "stopped in stage 2; rerun the same command to resume"
EPOCHS = 100


def _step_processes(exp: Path) -> list[str]:
    """The processes whose command line names `exp` (the step's own dir)."""
    found = subprocess.run(["pgrep", "-af", str(exp)], capture_output=True, text=True)
    return found.stdout.splitlines()


def _default_sigint() -> None:
    """SIGINT back to its default in run.sh, as a terminal starts a command: a process started in the background of
    a shell without job control (`(cmd &)`, nohup, some CI runners) ignores it, and bash cannot trap a signal it
    was started ignoring, so run.sh would run on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_run_sh(how: str, args: list[str], exp: Path) -> tuple[int, str]:
    """./run.sh `args`, stopped once stage 2 has written its first checkpoint: by SIGTERM or SIGINT to run.sh's pid
    alone, or by a Ctrl-C typed into the pseudo-terminal run.sh runs in (SIGINT to its whole process group)."""
    if how == "ctrl-c":
        master, terminal = pty.openpty()
        process = subprocess.Popen(
            ["./run.sh", *args],
            cwd=REPO,
            env=project_env(),
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
            preexec_fn=lambda: (_default_sigint(), fcntl.ioctl(0, termios.TIOCSCTTY, 0)),  # Ctrl-C goes to its group
        )
        os.close(terminal)
        chunks = []

        def read():  # the terminal's output, read as it comes so that the run never blocks on a full buffer
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every process holding the terminal has ended
                    return
                if not chunk:
                    return
                chunks.append(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        wait_for(exp / "viterbi" / "checkpoints" / "epoch-1.pt", process)
        os.write(master, b"\x03")
        returncode = process.wait(timeout=120)
        reader.join(timeout=30)
        os.close(master)
        return returncode, b"".join(chunks).decode(errors="replace")
    process = subprocess.Popen(
        ["./run.sh", *args],
        cwd=REPO,
        env=project_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    # The output is read after the run ends: a pipe's buffer holds far more than this run prints.
    wait_for(exp / "viterbi" / "checkpoints" / "epoch-1.pt", process)
    process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Stages 0-1 once for the module: a dir with the corpus copy and paths.data."""
    base = tmp_path_factory.mktemp("signals")
    root = fsdd_subset(base / "fsdd", takes=range(2))
    result = run_sh("--stop-stage", "1", f"corpus.root={root}", *tiny_run(base, base / "exp"))
    assert result.returncode == 0, result.stdout + result.stderr
    return base


@pytest.mark.parametrize(("how", "code"), [("sigterm", 143), ("sigint", 130), ("ctrl-c", 130)])
def test_a_signal_to_run_sh_stops_the_step_and_a_rerun_resumes(features, tmp_path, how, code):
    exp = tmp_path / "exp"
    overrides = [
        f"corpus.root={features}/fsdd",
        *tiny_run(features, exp),
        # An epoch of this tiny run takes 0.04 s: enough of them that the signal, sent at the first checkpoint, lands
        # during training however busy the machine is.
        f"train.viterbi.epochs={EPOCHS}",
        "train.viterbi.patience=null",
        "train.viterbi.realign_epochs=[]",
    ]
    args = ["--stage", "2", "--stop-stage", "2", *overrides]
    returncode, output = _stop_run_sh(how, args, exp)
    assert returncode == code, output
    assert output.count(STOPPED) == 1 and "Traceback" not in output, output
    assert _step_processes(exp) == []
    assert not (exp / "viterbi" / "checkpoints" / f"epoch-{EPOCHS}.pt").exists()

    # The same command is not refused (no lock left held) and resumes from the checkpoint.
    result = run_sh(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming from" in result.stderr and "Done in" in result.stdout
    assert (exp / "viterbi" / "checkpoints" / f"epoch-{EPOCHS}.pt").is_file()
