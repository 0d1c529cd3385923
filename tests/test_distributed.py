"""Training in several processes (phonerec.training.distributed) on this CPU, with the gloo backend: one
DistributedDataParallel step gives the gradient that one process computes on the union of the ranks' batches;
each rank's share of the batches; the device and precision settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO, free_port, project_env
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel

from phonerec.base.errors import RecipeError
from phonerec.data.dataset import Example, collate
from phonerec.hmm.align import Topology
from phonerec.hmm.transitions import Transitions
from phonerec.model.device import Autocast, in_precision, resolve_device
from phonerec.model.recurrent import RecurrentAcousticModel
from phonerec.training import distributed
from phonerec.training.ctc import CTCTask
from phonerec.training.viterbi_ce import ViterbiTask

NUM_PHONES, STATES, DIM = 5, 2, 6  # the blank (or none), silence and 3 phones; 2 HMM states each


def _examples() -> list[Example]:
    """Five utterances of different lengths and labels, for two ranks' unequal batches (3 and 2)."""
    generator = torch.Generator().manual_seed(0)
    lengths, labels = [23, 17, 30, 12, 26], [[2, 3], [4], [2, 4, 3], [3], [4, 2]]
    return [
        Example(f"u{k}", "spk", torch.randn(n, DIM, generator=generator), phones, None)
        for k, (n, phones) in enumerate(zip(lengths, labels, strict=True))
    ]


def _model(outputs: int, cell: str = "lstm") -> RecurrentAcousticModel:
    torch.manual_seed(0)
    return RecurrentAcousticModel(DIM, outputs, num_layers=2, hidden_size=8, dropout=0.0, cell=cell).double()


def _task(criterion: str, examples: list[Example], model, exp_dir):
    """The recipe's own task and its loss: CE on the flat-start alignment, the full sum with learned
    transitions (parameters beside the model), or CTC (a mean per utterance)."""
    tcfg = OmegaConf.create({"ctc": {"loss": "torch"}, "batch_frames": 1000, "max_batch_utts": 8})
    if criterion == "ctc":
        return CTCTask(examples, [], tcfg, model, {}, None)
    vcfg = OmegaConf.create(
        {"criterion": criterion, "use_priors": False, "fullsum_prior_scale": 0.0, "init_alignment": None}
    )
    transitions = Transitions(Topology(NUM_PHONES, STATES).num_states, learn=True).double()
    task = ViterbiTask(
        exp_dir, Topology(NUM_PHONES, STATES), examples, [], vcfg, tcfg, {}, None, True, None, (0.01, 0.0),
        transitions, train_transitions=True,
    )  # fmt: skip
    task.start(model)
    return task


def _gradients(task, model, examples, forward=None) -> dict[str, torch.Tensor]:
    feats, lengths = collate(examples)
    loss, weight = task.loss(forward or model, feats.double(), lengths, examples)
    distributed.global_mean(loss, weight).backward()
    distributed.average_gradients(task.parameters())
    named = [*model.named_parameters(), *(("task." + str(k), p) for k, p in enumerate(task.parameters()))]
    return {name: p.grad.clone() for name, p in named if p.grad is not None}


def _rank_step(rank: int, world: int, port: int, criterion: str, cell: str, tmp: str) -> None:
    os.environ |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    _step(criterion, cell, tmp)


def _step(criterion: str, cell: str, tmp: str) -> None:
    """One DDP step of this process (its rank from the environment) on its share of the examples."""
    torch.set_num_threads(1)
    examples = _examples()
    with distributed.process_group("cpu"):
        rank = distributed.rank()
        model = _model(NUM_PHONES if criterion == "ctc" else (NUM_PHONES - 1) * STATES, cell)
        task = _task(criterion, examples, model, Path(tmp) / f"rank{rank}")
        mine = examples[:3] if rank == 0 else examples[3:]  # unequal shares: frames 70 vs 38, utterances 3 vs 2
        grads = _gradients(task, model, mine, DistributedDataParallel(model))
        torch.save(grads, Path(tmp) / f"grads{rank}.pt")


@pytest.mark.parametrize(
    ("criterion", "cell"), [("ce", "lstm"), ("fullsum", "lstm"), ("ctc", "lstm"), ("ctc", "gf_lstm")]
)
def test_one_ddp_step_gives_the_gradient_of_one_process_on_the_union(criterion, cell, tmp_path):
    port = free_port()
    context = mp.get_context("spawn")
    workers = [context.Process(target=_rank_step, args=(r, 2, port, criterion, cell, str(tmp_path))) for r in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
        assert w.exitcode == 0
    _check_against_one_process(criterion, cell, tmp_path)


def test_two_torchrun_launches_meet_as_two_machines_and_give_the_gradient_of_one_process(tmp_path):
    """run.sh --nnodes 2 as two machines would start it: two torchrun launches, one process each, meeting at a
    c10d rendezvous on 127.0.0.1 (the first hosting it, as machine 0 does)."""
    port = free_port()
    launches = [
        subprocess.Popen(
            [
                "torchrun",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-conf",
                f"is_host={str(node == 0).lower()}",
                "--rdzv-id",
                "test",
                "--",
                __file__,
                "ctc",
                "gf_lstm",
                str(tmp_path),
            ],
            cwd=REPO,
            env=project_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    for launch in launches:
        output, _ = launch.communicate(timeout=300)
        assert launch.returncode == 0, output[-3000:]
    _check_against_one_process("ctc", "gf_lstm", tmp_path)


def _check_against_one_process(criterion: str, cell: str, tmp_path: Path) -> None:
    found = {rank: torch.load(tmp_path / f"grads{rank}.pt") for rank in (0, 1)}

    model = _model(NUM_PHONES if criterion == "ctc" else (NUM_PHONES - 1) * STATES, cell)
    examples = _examples()
    task = _task(criterion, examples, model, tmp_path / "one")
    union = _gradients(task, model, examples)
    assert union.keys() == found[0].keys() == found[1].keys()
    assert any(k.startswith("task.") for k in union) == (criterion == "fullsum")  # the transitions' gradient
    for name, grad in union.items():
        assert grad.abs().max() > 0, name
        for rank in (0, 1):
            torch.testing.assert_close(found[rank][name], grad, rtol=1e-6, atol=1e-9, msg=f"{name}, rank {rank}")


def test_each_rank_takes_an_equal_share_of_the_batches(monkeypatch):
    batches = [[k] for k in range(7)]
    shares = []
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        shares.append(distributed.shard(batches))
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sorted(b[0] for s in shares for b in s) == [0, 0, 1, *range(1, 7)]  # padded with the first batches
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.shard(batches) == batches


def test_the_threads_are_shared_between_the_ranks_of_a_machine(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.threads_per_rank(2) == 1 and distributed.threads_per_rank(1) == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.threads_per_rank(2) == 2
    monkeypatch.setenv("WORLD_SIZE", "4")  # two machines, two ranks each: each rank half of its machine's threads
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.threads_per_rank(8) == 4


def test_a_device_that_is_not_there_is_a_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(RecipeError, match="train.device=gpu: expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="sees no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(RecipeError, match="each process then takes the GPU of its local rank"):
            resolve_device("cuda:0", world_size=2)


@pytest.mark.parametrize("cell", ["lstm", "gf_gru"])
def test_bf16_autocasts_the_model_and_returns_float32_posteriors(cell):
    model = _model(4, cell).float()
    assert in_precision(model, torch.device("cpu"), "fp32") is model  # fp32: the plain model, nothing wrapped
    wrapped = in_precision(model, torch.device("cpu"), "bf16")
    assert isinstance(wrapped, Autocast) and wrapped.state_dict().keys() == {f"model.{k}" for k in model.state_dict()}
    feats, lengths = collate(_examples())
    log_probs, _ = wrapped(feats, lengths)
    reference, _ = model(feats, lengths)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs, reference, atol=0.1, rtol=0.05)  # bfloat16's 8 bits of mantissa
    with pytest.raises(RecipeError, match="train.precision=fp16"):
        in_precision(model, torch.device("cpu"), "fp16")


if __name__ == "__main__":  # one rank of the two-machine test, started by torchrun: criterion, cell, output dir
    _step(*sys.argv[1:])
