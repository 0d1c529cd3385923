"""Where training computes (`train.device`) and in what precision (`train.precision`).

train.device: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. Under torchrun (several
processes, phonerec.training.distributed) `cuda` means the GPU of each process's LOCAL_RANK. It serves training,
re-alignment, the full sum, the validation and decoding posteriors and forced alignment alike; the searches of
the decoders run on the CPU. The device is not hashed into a stage's digest: like the thread count it changes
the last bits only, and a run started on one device resumes on another (checkpoints are loaded to the CPU first).

train.precision: fp32, or bf16, the model's forward under torch.autocast (on CUDA its matrix products in
bfloat16; on the CPU torch's CPU autocast, which is slower there than fp32 and serves to check the code path).
The model's log-softmax, the losses and the HMM recursions stay in float32 (`Autocast`). With fp32 nothing is
wrapped, so the CPU path and its bitwise determinism are those of a plain model.

Nothing here initialises CUDA unless the device asks for it.
"""

import torch
from torch import nn

from phonerec.base.errors import RecipeError
from phonerec.base.schema import DEVICE_SPEC, DEVICES, PRECISIONS


def resolve_device(spec: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The torch device train.device names, checked: a clear error for a GPU that is not there."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    match = DEVICE_SPEC.fullmatch(spec)
    if match is None:
        raise RecipeError(f"train.device={spec}: expected {DEVICES}")
    if not torch.cuda.is_available():
        raise RecipeError(
            f"train.device={spec}: torch {torch.__version__} sees no CUDA GPU; use train.device=cpu (or auto)"
        )
    if match.group(1) is not None and world_size > 1:
        raise RecipeError(
            f"train.device={spec} with {world_size} processes: give train.device=cuda, each process then takes the "
            "GPU of its local rank"
        )
    index = int(match.group(1)) if match.group(1) is not None else local_rank
    if index >= torch.cuda.device_count():
        raise RecipeError(f"train.device={spec}: GPU {index} asked for, torch sees {torch.cuda.device_count()}")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise RecipeError(f"train.precision={precision}: expected one of {', '.join(PRECISIONS)}")


def describe(device: torch.device, precision: str) -> str:
    """What the log says of where a run computes."""
    where = "CPU" if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{where}, {precision}"


class Autocast(nn.Module):
    """`model`'s forward under torch.autocast in bfloat16, its log-posteriors returned in float32 (for the
    losses and the HMM recursions that follow). The model inside keeps its own state_dict keys."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device_type = model, device.type

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            log_probs, out_lengths = self.model(feats, lengths)
        return log_probs.float(), out_lengths


def in_precision(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """The model as training calls it: itself for fp32, under autocast for bf16."""
    check_precision(precision)
    return model if precision == "fp32" else Autocast(model, device)


def model_device(model: nn.Module) -> torch.device:
    """The device a model's parameters are on (where its inputs must go)."""
    return next(model.parameters()).device
