"""Stage markers and the output-dir lock."""

import subprocess
import sys

import pytest
from conftest import project_env

from phonerec.base.errors import RecipeError
from phonerec.base.ownership import exclusive
from phonerec.pipeline.markers import clear_done, is_done, mark_done, read_digest


def test_done_marker_round_trip(tmp_path):
    assert not is_done(tmp_path, "features", "abc")
    mark_done(tmp_path, "features", "abc", seconds=1.25)
    assert is_done(tmp_path, "features", "abc") and not is_done(tmp_path, "features", "abd")
    assert read_digest(tmp_path, "features") == "abc"
    assert (tmp_path / "features.seconds").read_text().strip() == "1.2"
    clear_done(tmp_path, "features")
    with pytest.raises(RecipeError, match="has not finished"):
        read_digest(tmp_path, "features")


def test_a_second_run_on_the_same_dir_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from phonerec.base.ownership import exclusive\nwith exclusive({str(tmp_path)!r}):\n"
            "    print('held', flush=True)\n    input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=project_env(),
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RecipeError, match=f"in use by another run \\(pid {holder.pid}\\)"):
        with exclusive(tmp_path):
            pass
    holder.communicate("\n", timeout=30)
    with exclusive(tmp_path):  # free again once the holder is gone
        pass
