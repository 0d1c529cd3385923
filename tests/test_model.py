"""The recurrent acoustic model, every cell: padding changes nothing, the backward direction reads the future,
and the padded per-direction form of torch's cells is exact (equal to a packed bidirectional nn.LSTM, nn.GRU or
nn.RNN with the same weights). The gated-feedback stacks' equations: tests/test_gated_feedback.py."""

import pytest
import torch
from torch import nn

from phonerec.base.schema import CELLS, GF_CELLS
from phonerec.model.recurrent import STANDARD_CELLS, RecurrentAcousticModel
from phonerec.model.time_axis import reverse_index, splice_frames

DIM, OUTPUTS, HIDDEN = 5, 7, 12
LENGTHS = [7, 23, 40, 40]

SETTINGS = {
    "plain": {},
    "projection": {"projection_size": 8},
    "splice": {"splice": 2},
    "subsample": {"splice": 1, "subsample": 3},
}


def make_model(**kwargs) -> RecurrentAcousticModel:
    torch.manual_seed(0)
    args = {"num_layers": 2, "hidden_size": HIDDEN, "dropout": 0.2} | kwargs
    return RecurrentAcousticModel(DIM, OUTPUTS, **args).eval()


def padded_batch(lengths, seed=1, pad_value=0.0):
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, DIM, generator=gen) for n in lengths]
    feats = torch.full((len(lengths), max(lengths), DIM), pad_value)
    for i, seq in enumerate(seqs):
        feats[i, : len(seq)] = seq
    return seqs, feats, torch.tensor(lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_padded_batch_equals_each_utterance_alone(setting, cell):
    if cell in GF_CELLS and setting == "projection":
        pytest.skip("a gated-feedback stack has no projection (refused: test_gated_feedback.py)")
    model = make_model(**SETTINGS[setting], cell=cell)
    seqs, feats, lengths = padded_batch(LENGTHS)
    with torch.no_grad():
        log_probs, out_lengths = model(feats, lengths)
        for i, seq in enumerate(seqs):
            alone, alone_len = model(seq.unsqueeze(0), torch.tensor([len(seq)]))
            assert out_lengths[i] == alone_len[0] == alone.size(1)
            torch.testing.assert_close(log_probs[i, : alone.size(1)], alone[0], atol=1e-6, rtol=0)
    assert torch.isfinite(log_probs).all()  # padded frames included


@pytest.mark.parametrize("cell", CELLS)
def test_backward_direction_reads_the_future_and_never_the_padding(cell):
    model = make_model(cell=cell)
    _, feats, lengths = padded_batch([10, 30])
    with torch.no_grad():
        base, _ = model(feats, lengths)
        changed_last = feats.clone()
        changed_last[0, 9] += 1.0  # the last valid frame of the short utterance
        out_last, _ = model(changed_last, lengths)
        changed_pad = feats.clone()
        changed_pad[0, 10:] = torch.randn(20, DIM) * 100  # its padding
        out_pad, _ = model(changed_pad, lengths)
    # Only the backward direction carries frame 9 to frame 0.
    assert (out_last[0, 0] - base[0, 0]).abs().max() > 1e-7  # a ReLU RNN carries it back weakly
    torch.testing.assert_close(out_last[1], base[1], atol=0, rtol=0)
    torch.testing.assert_close(out_pad[0, :10], base[0, :10], atol=0, rtol=0)
    torch.testing.assert_close(out_pad[1], base[1], atol=0, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_nan_padding_gives_finite_outputs_and_changes_nothing_valid(cell):
    model = make_model(cell=cell)  # no splice: spliced padding frames read valid frames and would hide NaN
    _, feats, lengths = padded_batch([6, 15])
    _, nan_feats, _ = padded_batch([6, 15], pad_value=float("nan"))
    with torch.no_grad():
        base, _ = model(feats, lengths)
        out, _ = model(nan_feats, lengths)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, :6], base[0, :6], atol=0, rtol=0)


def test_reverse_index_and_splice_edges():
    index = reverse_index(torch.tensor([3, 5, 0]), 5)
    assert index.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    feats = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 1).contiguous()
    spliced = splice_frames(feats, torch.tensor([4, 2]), 1)
    assert spliced[0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert spliced[1, :2].tolist() == [[0, 0, 1], [0, 1, 1]]  # the right edge is frame 1, not padding


def test_subsample_shapes_and_lengths():
    model = make_model(subsample=3)
    _, feats, lengths = padded_batch([1, 2, 3, 4, 7, 9])
    with torch.no_grad():
        log_probs, out_lengths = model(feats, lengths)
    assert log_probs.shape == (6, 3, OUTPUTS)
    assert out_lengths.tolist() == [1, 1, 1, 2, 3, 3]
    assert out_lengths.dtype == torch.long


@pytest.mark.parametrize("setting", SETTINGS)
def test_log_probs_are_normalised(setting):
    model = make_model(**SETTINGS[setting])
    _, feats, lengths = padded_batch(LENGTHS)
    with torch.no_grad():
        log_probs, _ = model(feats, lengths)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-5, rtol=0)


def test_replace_output_layer_keeps_the_lstms():
    model = make_model(projection_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("output.")}
    old_output = model.output
    model.replace_output_layer(OUTPUTS + 1)
    assert model.output is not old_output and model.output.out_features == OUTPUTS + 1
    after = model.state_dict()
    assert before.keys() == {k for k in after if not k.startswith("output.")}
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    _, feats, lengths = padded_batch(LENGTHS)
    with torch.no_grad():
        log_probs, _ = model(feats, lengths)
    assert log_probs.shape == (4, 40, OUTPUTS + 1)


@pytest.mark.parametrize("cell", CELLS)
def test_training_is_reproducible_with_the_same_seed(cell):
    _, feats, lengths = padded_batch(LENGTHS)
    results = []
    for _ in range(2):
        model = make_model(cell=cell, num_layers=3).train()
        torch.manual_seed(5)  # dropout masks
        log_probs, _ = model(feats, lengths)
        log_probs[0, :7].sum().backward()
        results.append((log_probs.detach(), [p.grad for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_an_lstm_keeps_the_blstms_parameter_names_and_order():
    """Checkpoints and bundles made before the choice of cell load, and an LSTM draws its weights from the seed
    in the order it did (so its results stay bit for bit)."""
    names = [name for name, _ in make_model().named_parameters()]
    per_direction = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    expected = [f"layers.{k}.{d}_lstm.{w}" for k in range(2) for d in ("forward", "backward") for w in per_direction]
    assert names == [*expected, "output.weight", "output.bias"]
    old_args = {"input_dim": DIM, "num_outputs": OUTPUTS, "num_layers": 2, "hidden_size": HIDDEN, "dropout": 0.2}
    assert RecurrentAcousticModel(**old_args).cell == "lstm"  # a checkpoint's model_args without a cell


@pytest.mark.parametrize("cell", STANDARD_CELLS)
def test_equals_packed_bidirectional_rnn_with_the_same_weights(cell):
    torch.manual_seed(0)
    model = RecurrentAcousticModel(DIM, OUTPUTS, num_layers=1, hidden_size=HIDDEN, cell=cell).eval()
    module, options = STANDARD_CELLS[cell]
    packed_rnn = module(DIM, HIDDEN, batch_first=True, bidirectional=True, **options)
    layer = model.layers[0]
    forward, backward = (getattr(layer, f"{d}_{module.__name__.lower()}") for d in ("forward", "backward"))
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(packed_rnn, name).copy_(getattr(forward, name))
            getattr(packed_rnn, name + "_reverse").copy_(getattr(backward, name))
    _, feats, lengths = padded_batch(LENGTHS)
    with torch.no_grad():
        hidden, out_lengths = model.encode(feats, lengths)
        packed = nn.utils.rnn.pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
        reference, ref_lengths = nn.utils.rnn.pad_packed_sequence(packed_rnn(packed)[0], batch_first=True)
    assert out_lengths.tolist() == ref_lengths.tolist()
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(hidden[i, :n], reference[i, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("states_per_phone", [1, 3])
def test_add_blank_keeps_the_viterbi_models_phone_posteriors(states_per_phone):
    """A Viterbi model of 4 phones x N states turned into a CTC model: each phone's output is the sum of its
    states' posteriors, and the blank (a copy of state 0 with its bias lowered by 1) takes a share of them."""
    torch.manual_seed(0)
    viterbi = RecurrentAcousticModel(DIM, 4 * states_per_phone, num_layers=1, hidden_size=HIDDEN).eval()
    _, feats, lengths = padded_batch(LENGTHS)
    states, _ = viterbi(feats, lengths)
    logits = viterbi.output(viterbi.encode(feats, lengths)[0])
    ctc = RecurrentAcousticModel(DIM, 4 * states_per_phone, num_layers=1, hidden_size=HIDDEN).eval()
    ctc.load_state_dict(viterbi.state_dict())
    ctc.add_blank(copy_of=0, bias_offset=-1.0, pool_states=states_per_phone)
    log_probs, _ = ctc(feats, lengths)
    assert log_probs.shape[-1] == 5
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))
    blank_logit = logits[..., :1] - 1.0
    joint = torch.cat([blank_logit, logits], dim=-1).log_softmax(-1)  # blank + states, normalised together
    phones = joint[..., 1:].reshape(*joint.shape[:2], 4, states_per_phone).logsumexp(-1)
    torch.testing.assert_close(log_probs, torch.cat([joint[..., :1], phones], dim=-1))
    # Without the blank's share, the phone posteriors are the Viterbi model's pooled state posteriors.
    pooled = states.reshape(*states.shape[:2], 4, states_per_phone).logsumexp(-1)
    renormalised = log_probs[..., 1:] - log_probs[..., 1:].logsumexp(-1, keepdim=True)
    torch.testing.assert_close(renormalised, pooled)
    # The CTC model rebuilds from its model_args, as a checkpoint does.
    rebuilt = RecurrentAcousticModel(
        DIM, 4 * states_per_phone + 1, num_layers=1, hidden_size=HIDDEN, pool_states=states_per_phone
    ).eval()
    rebuilt.load_state_dict(ctc.state_dict())
    torch.testing.assert_close(rebuilt(feats, lengths)[0], log_probs)
