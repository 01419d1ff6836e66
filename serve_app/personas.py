"""Agent personas (``agents.yaml``): which avatar, voice, rate and preset an agent_type uses."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from wav2lip.errors import InvalidSettings
from wav2lip.options import PRESETS

from .schemas import AVATAR_ID_PATTERN


class Persona(BaseModel):
    description: str = ""
    avatar: str = Field("default", pattern=AVATAR_ID_PATTERN)
    voice: str
    rate: float = Field(1.0, ge=0.5, le=2.0)
    preset: str = "balanced"

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {sorted(PRESETS)}")
        return value


class Personas(BaseModel):
    default_agent: str
    agents: dict[str, Persona]

    @model_validator(mode="after")
    def _default_exists(self):
        if self.default_agent not in self.agents:
            raise ValueError(f"default_agent {self.default_agent!r} is not among the agents")
        return self

    def get(self, agent_type: str | None) -> Persona:
        name = agent_type or self.default_agent
        if name not in self.agents:
            raise InvalidSettings(f"unknown agent_type {name!r}; known agent types: {', '.join(sorted(self.agents))}")
        return self.agents[name]


def load_personas(path: str | Path) -> Personas:
    """Validated personas from a YAML file (a broken file fails at start, not per request)."""
    return Personas(**yaml.safe_load(Path(path).read_text()))
