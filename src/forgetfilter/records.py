"""The one example record used everywhere: id, prompt, response and metadata.

`label` is ground truth for evaluation only. Filtering code receives `Example.for_filtering()`
views or reads only `id`, `prompt` and `response`; a test greps the filtering modules for `.label`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RISKS = ("bias", "toxicity", "harm")
LABELS = ("unsafe", "safe", "task")


@dataclass(frozen=True)
class Example:
    """One prompt/response pair with its provenance.

    Attributes:
        id: stable unique identifier.
        prompt: the user turn (without any model-specific template).
        response: the target assistant turn.
        source: where it came from (`bbq`, `squad`, `alpaca`, `decodingtrust`, a file name, ...).
        risk: `bias` | `toxicity` | `harm` | None.
        label: `unsafe` | `safe` | `task` | None (ground truth, evaluation only).
        meta: extra fields needed by evaluation (e.g. BBQ options), never by filtering.
    """

    id: str
    prompt: str
    response: str
    source: str | None = None
    risk: str | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `meta` is omitted when empty."""
        d: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "response": self.response,
            "source": self.source,
            "risk": self.risk,
            "label": self.label,
        }
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        """Inverse of `to_dict` (no validation: use `forgetfilter.readers` for user files)."""
        return cls(
            id=str(d["id"]),
            prompt=d["prompt"],
            response=d["response"],
            source=d.get("source"),
            risk=d.get("risk"),
            label=d.get("label"),
            meta=d.get("meta") or {},
        )


PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def render_prompt(prompt: str) -> str:
    """The text a model sees before the response (the same in training, scoring and evaluation)."""
    return PROMPT_TEMPLATE.format(prompt=prompt)
