"""The `tail_loss` signal: the mean NLL of the hardest quarter of a response's tokens.

A per-token statistic for long answers whose unsafe part is a few sentences: the mean over all
tokens dilutes those sentences with the rest of the answer, the tail keeps them. Same forward
pass as `loss`, so it costs the same; an NLL-like signal (M0 is scored as its reference).
"""

from __future__ import annotations

import math

import numpy as np

TAIL_SHARE = 0.25


class TailLoss:
    """Mean NLL of the `TAIL_SHARE` highest-NLL target tokens of each response."""

    name = "tail_loss"
    help = "mean NLL of the hardest quarter of the response's tokens (teacher-forced)"
    kind = "nll"

    def score(self, model, tokenizer, records, options) -> np.ndarray:
        from .inference import nll_kwargs, response_nll

        return response_nll(model, tokenizer, records, **nll_kwargs(options), reduce=tail_mean)


def tail_mean(nll, mask):
    """Per row: the mean of the ceil(`TAIL_SHARE` x n) largest NLLs among its n target tokens."""
    import torch

    counts = mask.sum(1)
    keep = torch.clamp(torch.ceil(counts.float() * TAIL_SHARE).long(), min=1)
    ranked = nll.masked_fill(~mask, -math.inf).sort(dim=1, descending=True).values
    take = torch.arange(ranked.shape[1], device=nll.device)[None, :] < keep[:, None]
    total = ranked.masked_fill(~take | ~torch.isfinite(ranked), 0.0).sum(1)
    return torch.where(counts > 0, total / keep, torch.zeros_like(total))
