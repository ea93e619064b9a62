"""Shared base for every typed configuration schema: frozen, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """A frozen pydantic model that rejects unknown keys (so ``+framework.typo=1`` is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
