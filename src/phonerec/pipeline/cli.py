"""What every entry point in steps/ and local/ shares: `<dirs>... [key=value ...]` arguments,
a log file that starts with the command line, the composed config, and clean error exits."""

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path


def _interrupted() -> str:
    return f"{Path(sys.argv[0]).name}: interrupted; rerun the same command to resume"


def _interrupted_quietly(kind, value, traceback) -> None:
    """A Ctrl-C while a step still imports (before run_guarded takes over) is one line too, not a traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print(_interrupted(), file=sys.stderr)
        sys.exit(130)
    sys.__excepthook__(kind, value, traceback)


sys.excepthook = _interrupted_quietly  # before the imports below, which load hydra (and, through them, torch)

from phonerec.base.config import load_config  # noqa: E402
from phonerec.base.errors import RecipeError  # noqa: E402
from phonerec.base.files import is_no_space, no_space_left  # noqa: E402
from phonerec.base.ownership import claim_dir  # noqa: E402

log = logging.getLogger("phonerec")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logging(log_file: Path | None = None, console_level: int = logging.INFO, verbose: bool = False) -> None:
    """Messages from INFO up (`verbose`: from DEBUG up, and the decoder libraries' own output) to the console from
    `console_level` up, and to `log_file`."""
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else console_level)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))  # reruns append: no history lost
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)


def step_main(main, doc: str, positional: list[tuple[str, str]], options: dict[str, dict] | None = None) -> None:
    """Run `main(args, cfg)` as a step: `<positional>... [--log FILE] [options] [key=value ...]`; `options`
    maps a step's own option flags to argparse keyword arguments. Errors exit as run_guarded says; a full disk that
    no atomic write has named is reported against the last positional argument, the dir a step writes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help_text in positional:
        parser.add_argument(name, type=Path, help=help_text)
    parser.add_argument("--log", type=Path, help="log file (the command line is its first line)")
    for flag, kwargs in (options or {}).items():
        parser.add_argument(flag, **kwargs)
    parser.add_argument("overrides", nargs="*", help="hydra overrides, key=value, passed on by run.sh")
    args = parser.parse_intermixed_args()

    log_file, rank = args.log, int(os.environ.get("RANK", "0"))
    if rank > 0:  # torchrun's other processes: each its own log beside rank 0's, and only warnings on the console
        log_file = log_file and log_file.with_name(f"{log_file.stem}.rank{rank}{log_file.suffix}")
    setup_logging(log_file, logging.INFO if rank == 0 else logging.WARNING)
    log.info("Running: %s", shlex.join(sys.argv))
    # Steps take `<in>... <out>`: the last positional argument is what a step writes.
    out_path = getattr(args, positional[-1][0]) if positional else None
    run_guarded(lambda: main(args, load_config(args.overrides)), out_path)


def run_guarded(work, out_path: Path | None = None) -> None:
    """Run `work()`; exit 1 with the message alone for a RecipeError (bad input) or a full disk (naming the file, or
    else `out_path`, what the step writes), with a traceback for anything else; 130 on Ctrl-C, without one."""
    try:
        work()
    except RecipeError as err:
        log.error("%s", err)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("%s", _interrupted())
        sys.exit(130)
    except Exception as err:
        if not is_no_space(err):
            log.exception("%s failed", Path(sys.argv[0]).name)
            sys.exit(1)
        log.error("%s", no_space_left(getattr(err, "filename", None) or out_path or "a file this step writes"))
        sys.exit(1)


def model_tool_parser(doc: str, recordings: bool = True, device: bool = True) -> argparse.ArgumentParser:
    """The command line that steps/transcribe.py, align.py, compute_loglikes.py and export_model.py share: a
    trained model's dir, with `recordings` the audio files, --wav-scp and --data-dir, with `device` --device, and
    --num-threads, --log; each tool adds its own options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "exp_dir",
        type=Path,
        help="a model's experiment dir (with bundle/), a bundle dir, or a recipe's exp dir (exp/<recipe>: the model "
        "and decoder its stage 5 chose on dev, result.json)",
    )
    if recordings:
        parser.add_argument("wavs", type=Path, nargs="*", help="audio files")
        parser.add_argument("--wav-scp", type=Path, help="a wav.scp: <utterance> <audio file> lines")
        parser.add_argument("--data-dir", type=Path, help="a data dir (its wav.scp and utt2spk)")
    if device:
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--log", type=Path, help="log file")
    parser.add_argument("--verbose", action="store_true", help="debug messages, and what the decoder libraries print")
    return parser


def model_tool_main(main, parser: argparse.ArgumentParser) -> None:
    """Run `main(args)` as step_main runs a step: the log starts with the command line, errors exit 1. An
    --out-dir is claimed first (phonerec.base.ownership): one holding files the recipe did not make is refused
    before any work. Options go anywhere among the positional arguments, as people type them."""
    args = parser.parse_intermixed_args()
    setup_logging(args.log, verbose=args.verbose)
    log.info("Running: %s", shlex.join(sys.argv))
    out_dir = getattr(args, "out_dir", None)

    def work():
        import torch

        if out_dir is not None:
            claim_dir(out_dir, "--out-dir")
        torch.set_num_threads(args.num_threads)
        main(args)

    run_guarded(work, out_dir)
