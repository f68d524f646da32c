"""The `head_loss` signal: the mean NLL of the first tokens of a response.

Safety alignment lives mostly in an answer's opening: an aligned model refuses or complies within
its first few tokens, and finetuning that breaks or restores the alignment moves those tokens'
likelihood most. The mean over a whole answer dilutes them with the rest of it; this signal reads
only the first `HEAD_TOKENS` target tokens. Records are cut after them before the forward pass,
so it costs one pass over the prompts plus those tokens. An NLL-like signal (M0 is scored as its
reference).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

HEAD_TOKENS = 16


class HeadLoss:
    """Mean NLL of each response's first `HEAD_TOKENS` target tokens (teacher-forced)."""

    name = "head_loss"
    help = f"mean NLL of the first {HEAD_TOKENS} tokens of the response (teacher-forced)"
    kind = "nll"

    def score(self, model, tokenizer, records, options) -> np.ndarray:
        from .inference import nll_kwargs, response_nll

        kwargs = nll_kwargs(options)
        return response_nll(model, tokenizer, records, **kwargs, keep=keep_head)


def keep_head(encoded: Sequence, n: int | None = None) -> list:
    """Each encoded record cut right after its first `n` target tokens (`HEAD_TOKENS`)."""
    return [_cut(e, HEAD_TOKENS if n is None else n) for e in encoded]


def _cut(e, n: int):
    if e.spans is None:
        end = min(len(e.input_ids), e.label_start + n)
        return dataclasses.replace(e, input_ids=e.input_ids[:end])
    spans, left = [], n
    for start, stop in e.spans:
        take = min(stop - start, left)
        if take <= 0:
            break
        spans.append((start, start + take))
        left -= take
    end = spans[-1][1] if spans else e.label_start
    return dataclasses.replace(e, input_ids=e.input_ids[:end], spans=tuple(spans))
