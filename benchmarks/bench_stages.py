#!/usr/bin/env python3
"""Wall time and peak memory of each stage of a recipe: ./run.sh --stage N --stop-stage N for N = 0..5, each
under GNU time, into a fresh --work dir. Peak memory is the largest resident set of any one process of the
stage (GNU time's %M: the maximum over the processes it waited for), not the sum over parallel jobs.

  . ./path.sh && python benchmarks/bench_stages.py recipe=timit_sample corpus.root=../shared/corpora/timit_sample

Prints a markdown table; record it in benchmarks/RESULTS.md."""

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ["data preparation", "features", "Viterbi training", "CTC training", "decoding", "scoring"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_stages")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    overrides = [
        f"paths.data={args.work}/data",
        f"paths.exp={args.work}/exp",
        f"paths.results={args.work}/RESULTS.md",
        *args.overrides,
    ]
    print(f"overrides: {' '.join(args.overrides)}")
    print("| stage | what | wall s | peak RSS MiB |\n|---:|---|---:|---:|")
    total = 0.0
    for stage, name in enumerate(STAGES):
        report = args.work / f"time.{stage}"
        command = ["/usr/bin/time", "-o", str(report), "-f", "%e %M", "./run.sh", "--stage", str(stage)]
        result = subprocess.run([*command, "--stop-stage", str(stage), *overrides], cwd=REPO, capture_output=True)
        if result.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{result.stderr.decode()[-3000:]}")
        seconds, kib = report.read_text().split()[-2:]
        total += float(seconds)
        print(f"| {stage} | {name} | {float(seconds):.0f} | {int(kib) / 1024:.0f} |", flush=True)
    print(f"| | all | {total:.0f} | |")


if __name__ == "__main__":
    main()
