"""Recurrent layers stepped one frame at a time by their cell functions (CPU streaming).

A causal network streamed hop by hop (HS-TasNet's ``stream_step``) calls its LSTMs and GRUs on
sequences of one frame, batch 1. On CPU, ``nn.LSTM`` then goes through oneDNN's RNN primitive,
which repacks the weights on every call: at HS-TasNet's paper size (a 1000-wide fusion LSTM) one
frame costs ~20 ms per layer, most of a hop's 11.6 ms budget many times over. The same step by the
cell functions (``torch._VF.lstm_cell`` / ``gru_cell``: two matrix-vector products and the gates)
reads each weight once, as the memory bandwidth allows. Same parameters and ``state_dict``,
same values up to float rounding; longer sequences, gradients and other devices take the plain
module's path.
"""

from __future__ import annotations

import torch
from torch import nn

from stemsep.inference.cpu.predicates import cpu_inference_path


def _steppable(rnn: nn.RNNBase, x: torch.Tensor) -> bool:
    """Whether ``x`` is one frame this layer steps by cells: batch-first ``(B, 1, features)``, one
    direction, no projection, no dropout to draw, CPU inference."""
    return (rnn.batch_first and x.dim() == 3 and x.shape[1] == 1 and not rnn.bidirectional
            and getattr(rnn, "proj_size", 0) == 0 and not (rnn.training and rnn.dropout) and cpu_inference_path(x))


def _layer_weights(rnn: nn.RNNBase, layer: int) -> tuple[torch.Tensor, ...]:
    """``(w_ih, w_hh, b_ih, b_hh)`` of ``layer`` (biases None without them)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
    weights = tuple(getattr(rnn, f"{name}_l{layer}") for name in names)
    return weights if rnn.bias else (*weights, None, None)


class StepLSTM(nn.LSTM):
    """``nn.LSTM`` (batch first), one frame at a time by ``lstm_cell`` in CPU inference."""

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        if not _steppable(self, x):
            return super().forward(x, hx)
        if hx is None:
            zeros = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
            hx = (zeros, zeros)
        hiddens, cells = [], []
        step = x[:, 0]
        for layer in range(self.num_layers):
            hidden, cell = torch._VF.lstm_cell(step, (hx[0][layer], hx[1][layer]), *_layer_weights(self, layer))
            hiddens.append(hidden)
            cells.append(cell)
            step = hidden
        return step[:, None], (torch.stack(hiddens), torch.stack(cells))


class StepGRU(nn.GRU):
    """``nn.GRU`` (batch first), one frame at a time by ``gru_cell`` in CPU inference."""

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None):
        if not _steppable(self, x):
            return super().forward(x, hx)
        if hx is None:
            hx = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
        hiddens = []
        step = x[:, 0]
        for layer in range(self.num_layers):
            step = torch._VF.gru_cell(step, hx[layer], *_layer_weights(self, layer))
            hiddens.append(step)
        return step[:, None], torch.stack(hiddens)


RECURRENT = {nn.LSTM: StepLSTM, nn.GRU: StepGRU}
