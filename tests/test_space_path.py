"""run.sh from a checkout whose path holds a space and a non-ASCII letter, writing under paths that hold spaces."""

import hashlib
import subprocess

import pytest
from conftest import REPO, SHARED_FSDD, fsdd_subset, project_env

pytestmark = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="needs ../shared/corpora")


@pytest.mark.slow
def test_a_tiny_run_from_a_clone_under_a_path_with_a_space_and_a_non_ascii_letter(tmp_path):
    # A clone of the committed files, its .venv a link to this checkout's: tools/setup_env.sh finds its stamp (the
    # digest of the requirements) and installs nothing, unless the committed requirements differ from the venv's.
    clone = tmp_path / "dir with space" / "ü"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    (clone / ".venv").symlink_to(REPO / ".venv")
    requirements = (clone / "requirements.txt").read_bytes() + (clone / "requirements-dev.txt").read_bytes()
    stamp = REPO / ".venv" / ".requirements.sha256"
    if not stamp.is_file() or stamp.read_text().strip() != hashlib.sha256(requirements).hexdigest():
        pytest.skip("the committed requirements are not those .venv was set up from")

    root = fsdd_subset(tmp_path / "fsdd", takes=range(2))
    runs = tmp_path / "runs with space"
    env = project_env()
    del env["PYTHONPATH"]  # the clone's path.sh puts its own src/ on the path
    result = subprocess.run(
        [
            "./run.sh",
            "--stop-stage",
            "2",
            f"corpus.root={root}",
            f"paths.data={runs}/da ta",
            f"paths.exp={runs}/e x p",
            f"paths.results={runs}/RESULTS.md",
            "nj=1",
            "model.num_layers=1",
            "model.hidden_size=32",
            "train.num_threads=1",
            "train.viterbi.epochs=1",
            "train.viterbi.realign_epochs=[]",
            "train.speed_perturb=[]",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Done in" in result.stdout
    # The locks sit in the dirs with spaces, and stage 2 trained there.
    assert (runs / "da ta" / "mfcc" / "train" / ".run.lock").is_file()
    assert (runs / "e x p" / "viterbi" / ".run.lock").is_file()
    assert (runs / "e x p" / "viterbi" / "checkpoints" / "epoch-1.pt").is_file()
