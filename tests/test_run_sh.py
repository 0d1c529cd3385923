"""run.sh: option parsing, override pass-through, and a failing step stopping the pipeline."""

import re
import subprocess

from conftest import REPO, project_env


def run_sh(*args, timeout=120):
    return subprocess.run(
        ["./run.sh", *args], cwd=REPO, env=project_env(), capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_stages_and_options():
    result = run_sh("--help")
    assert result.returncode == 0
    assert "--stop-stage" in result.stdout and "Stage" not in result.stderr
    # The usage line names every option run.sh parses (it lacked --ngpu).
    usage = result.stdout.split("\n\n")[0]
    parsed = set(re.findall(r"^\s+(-[-\w]+)[|)]", (REPO / "run.sh").read_text(), flags=re.MULTILINE)) - {"-h"}
    assert parsed >= {"--stage", "--stop-stage", "--ngpu", "--nnodes", "-m"}
    assert all(option in usage for option in parsed), parsed
    for stage in (
        "0  data preparation",
        "1  features",
        "2  Viterbi training",
        "3  CTC training",
        "4  decoding of dev and test",
        "5  scoring",
        "6  model bundles",
        "7  forced alignment of the test set",
    ):
        assert stage in result.stdout


def test_unknown_option_and_bad_stage_are_refused():
    result = run_sh("--stagee", "1")
    assert result.returncode == 2 and "unknown option --stagee" in result.stderr
    result = run_sh("--stage", "one")
    assert result.returncode == 2 and "must be integers" in result.stderr


def test_a_stop_stage_before_the_start_stage_is_refused_before_anything_is_written(tmp_path):
    result = run_sh("--stage", "3", "--stop-stage", "1", f"paths.data={tmp_path}/data", f"paths.exp={tmp_path}/exp")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["./run.sh: --stop-stage 1 is before --stage 3: no stage to run"]
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_unknown_config_key_fails_before_any_stage(tmp_path):
    result = run_sh(f"paths.data={tmp_path}/data", f"paths.exp={tmp_path}/exp", "corpus.rooot=/x")
    assert result.returncode != 0
    assert "corpus.rooot" in result.stderr
    assert "Stage 0" not in result.stdout
    assert not (tmp_path / "data").exists()


def test_overrides_reach_the_step_and_a_failing_step_stops_the_pipeline(tmp_path):
    # corpus.root reaches stage 0, which fails on it; its log's tail is shown and stage 1 never starts.
    result = run_sh(
        f"paths.data={tmp_path}/data",
        f"paths.exp={tmp_path}/exp",
        f"paths.results={tmp_path}/RESULTS.md",
        f"corpus.root={tmp_path}/no_corpus",
    )
    assert result.returncode == 1
    assert "Stage 0: data preparation" in result.stdout
    assert "Stage 1" not in result.stdout
    log_file = tmp_path / "data" / "log" / "prepare_data.log"
    mark, command = log_file.read_text().splitlines()[:2]
    assert "a new run of this step starts here" in mark and f"corpus.root={tmp_path}/no_corpus" in command
    assert f"The last lines of {tmp_path}/data/log/prepare_data.log (this run's)" in result.stdout
    assert f"corpus.root={tmp_path}/no_corpus: no such directory" in result.stderr

    # A rerun that fails otherwise shows its own lines of the log, which holds both runs, and not the first's.
    result = run_sh(
        f"paths.data={tmp_path}/data",
        f"paths.exp={tmp_path}/exp",
        f"paths.results={tmp_path}/RESULTS.md",
        f"corpus.root={tmp_path}/no_corpus2",
    )
    assert result.returncode == 1 and f"corpus.root={tmp_path}/no_corpus2: no such directory" in result.stderr
    assert f"{tmp_path}/no_corpus: " not in result.stderr and f"{tmp_path}/no_corpus: " in log_file.read_text()


def test_stage_range_selects_stages(tmp_path):
    # Stage 1 alone, with no data prepared: it runs (and fails validating its input); stage 0 does not.
    result = run_sh("--stage", "1", "--stop-stage", "1", f"paths.data={tmp_path}/data", f"paths.exp={tmp_path}/exp")
    assert "Stage 0" not in result.stdout and "Stage 1: features" in result.stdout
    assert result.returncode == 1 and "no such data dir" in result.stderr
    result = run_sh("--stage", "9", f"paths.data={tmp_path}/data", f"paths.exp={tmp_path}/exp")
    assert result.returncode == 0 and "Stage" not in result.stdout


def test_overrides_with_spaces_and_backslashes_are_logged_as_typed(tmp_path):
    # No stage runs (--stage 9), but the config is composed and the locks' loop runs over paths with spaces.
    override = r"corpus.root=/data/a\tb c"
    result = run_sh("--stage", "9", override, f"paths.data={tmp_path}/da ta", f"paths.exp={tmp_path}/e x p")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"overrides: {override} paths.data={tmp_path}/da ta" in result.stdout
