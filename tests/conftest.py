"""Fixtures made by the tests: small audio files, fake corpus trees, a loopback HTTP server, the project's
environment, and every path through an alignment graph."""

import functools
import hashlib
import http.server
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_FSDD = REPO.parent / "shared" / "corpora" / "fsdd"


def write_wav(path: Path, seconds: float = 0.3, rate: int = 8000, seed: int = 0, freq: float = 440.0) -> Path:
    """A tone with a little noise, int16 RIFF."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = 8000 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 300, t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.int16), rate, subtype="PCM_16")
    return path


def make_fsdd_copy(root: Path, speakers=("george", "theo", "nicolas"), digits=range(10), takes=range(3)) -> Path:
    """A fake FSDD copy (root/recordings/...) and its sha256 manifest; returns the manifest path."""
    lines = []
    for s_index, speaker in enumerate(speakers):
        for digit in digits:
            for take in takes:
                rel = f"recordings/{digit}_{speaker}_{take}.wav"
                write_wav(
                    root / rel,
                    seconds=0.2 + 0.02 * take,
                    seed=digit * 100 + take + 1000 * s_index,
                    freq=200 + 50 * digit + 10 * s_index,
                )
                lines.append(f"{hashlib.sha256((root / rel).read_bytes()).hexdigest()}  {rel}")
    manifest = root.parent / f"{root.name}.sha256"
    manifest.write_text("\n".join(sorted(lines, key=lambda line: line.split()[1])) + "\n")
    return manifest


def graph_paths(graph, states_per_phone: int, frames: int) -> list[list[int]]:
    """Every node sequence of `frames` frames an alignment graph (phonerec.hmm.align.Graph) allows, by enumeration:
    the reference the batched Viterbi and forward-backward are tested against."""
    n, size = states_per_phone, len(graph.states)
    starts = [0] + ([n] if all(graph.optional[:n]) else [])
    ends = {size - 1} | ({size - n - 1} if all(graph.optional[size - n :]) else set())

    def successors(j):
        nxt = [j, j + 1]
        jump = j + n + 1
        if jump < size and all(graph.optional[j + 1 : jump]) and not graph.optional[j]:
            if graph.skip_between_equal or graph.states[jump] != graph.states[j]:
                nxt.append(jump)
        return [k for k in nxt if k < size]

    paths = []

    def extend(path):
        if len(path) == frames:
            if path[-1] in ends:
                paths.append(path)
            return
        for k in successors(path[-1]):
            extend(path + [k])

    for j in starts:
        extend([j])
    return paths


def path_transition_score(graph, states_per_phone: int, path: list[int], transitions) -> float:
    """The transition log-probability of one node path (phonerec.hmm.transitions.Transitions, as the module
    docstring of phonerec.hmm.align states it), counted arc by arc: the reference for the graphs' weights."""
    n, size, opt = states_per_phone, len(graph.states), graph.optional
    lp = transitions.log_probs()
    loop, forward = lp.loop.tolist(), lp.forward.tolist()
    sil, nosil = lp.silence.item(), lp.no_silence.item()
    score = sil if opt[path[0]] else (nosil if path[0] == n and all(opt[:n]) else 0.0)
    for prev, node in zip(path[:-1], path[1:], strict=True):
        state = graph.states[prev]
        if node == prev:
            score += loop[state]
        elif node == prev + 1:
            score += forward[state] + (sil if opt[node] and not opt[prev] else 0.0)
        else:  # the jump over an optional block
            score += forward[state] + nosil
    last = path[-1]
    return score + forward[graph.states[last]] + (nosil if last == size - n - 1 and all(opt[size - n :]) else 0.0)


def project_env() -> dict:
    """The environment path.sh sets, for steps run as subprocesses."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pytest_collection_modifyitems(items):
    # The slow tests first (stable: in file order otherwise): tools/run_tests.sh's workers then share them from the
    # start, instead of one worker running the last of them alone while the other has finished.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Two cores: the test process and the step processes it starts get one thread each.
    import torch

    torch.set_num_threads(1)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on a loopback port."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fsdd_subset(root, takes, speakers=("george", "nicolas", "theo")):
    """A copy holding some takes of some speakers (train george, dev theo, test nicolas), as links to the shared
    recordings."""
    (root / "recordings").mkdir(parents=True)
    for speaker in speakers:
        for digit in range(10):
            for take in takes:
                name = f"{digit}_{speaker}_{take}.wav"
                (root / "recordings" / name).symlink_to(SHARED_FSDD / "recordings" / name)
    return root


# Tuned decoders with one grid point each.
ONE_POINT_GRIDS = [
    "decode.ctc_beam.lm_weights=[0.5]",
    "decode.ctc_beam.insertion_bonuses=[1]",
    "decode.hybrid.acoustic_scales=[0.5]",
    "decode.hybrid.insertion_bonuses=[0]",
    "decode.words.lm_weights=[1]",
    "decode.words.word_scores=[0]",
]


def tiny_run(tmp_path, exp):
    """Overrides for a whole run that takes seconds: paths under tmp_path, a one-layer model, 3 Viterbi epochs, no
    speed perturbation."""
    return [
        f"paths.data={tmp_path}/data",
        f"paths.exp={exp}",
        f"paths.results={tmp_path}/RESULTS.md",
        "nj=1",
        "model.num_layers=1",
        "model.hidden_size=32",
        "train.num_threads=1",
        "decode.num_threads=1",
        "train.viterbi.epochs=3",
        "train.viterbi.realign_epochs=[1,2]",  # within the 3 epochs (phonerec.base.schema.check_config)
        "train.speed_perturb=[]",
    ]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a rendezvous's, a test cluster's daemons')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sh(*args):
    """./run.sh with the project's environment, its output captured."""
    return subprocess.run(["./run.sh", *args], cwd=REPO, env=project_env(), capture_output=True, text=True, timeout=600)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Until `path` exists, while `process` runs (5 minutes at most)."""
    deadline = time.time() + 300
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path} was written"
        assert time.time() < deadline, f"no {path}"
        time.sleep(0.02)


def kill_run_sh_when(path, *args) -> None:
    """./run.sh `args`, killed (SIGKILL, its whole process group) as soon as `path` exists."""
    process = subprocess.Popen(
        ["./run.sh", *args],
        cwd=REPO,
        env=project_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(Path(path), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def readme_short_path(exp: str) -> list[list[str]]:
    """The commands of the README's short path (the code block after its `<!-- short path` marker) that use the
    model dirs under `exp` (exp/fsdd, exp/timit_sample): each `python steps/...` line, continuations joined, as
    an argument list without comments."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("<!-- short path") :].split("```")[1]
    lines = block.replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if line.startswith("python steps/")]
    return [c for c in commands if c[2] == exp or c[2].startswith(exp + "/")]


def run_short_path(exp_name: str, exp: Path, out: Path) -> list[subprocess.CompletedProcess]:
    """readme_short_path(exp_name)'s commands run as written, in the repository, with `exp` (a test's run) in
    place of exp_name and --out-dir under `out`."""
    results = []
    for command in readme_short_path(exp_name):
        args = [str(exp) + a.removeprefix(exp_name) if a.startswith(exp_name) else a for a in command]
        args = [str(out / a) if k and args[k - 1] == "--out-dir" else a for k, a in enumerate(args)]
        results.append(subprocess.run(args, cwd=REPO, env=project_env(), capture_output=True, text=True))
    return results
