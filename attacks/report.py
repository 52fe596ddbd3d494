"""One report format for every attack: JSON with metrics, 95 % bootstrap intervals, settings and examples."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attacks.threat import THREAT_MODELS

__all__ = ["AttackReport"]


@dataclass
class AttackReport:
    attack: str
    metrics: dict[str, dict[str, float]]  # name -> {"value", "ci_low", "ci_high", "n"} (attacks.scoring.summarize)
    settings: dict = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.attack not in THREAT_MODELS:
            raise ValueError(f"unknown attack {self.attack!r}; known: {sorted(THREAT_MODELS)}")
        for name, m in {**self.metrics, **self.baselines}.items():
            missing = {"value", "ci_low", "ci_high", "n"} - set(m)
            if missing:
                raise ValueError(f"metric {name!r} lacks {sorted(missing)}")

    @property
    def threat_model(self) -> str:
        return THREAT_MODELS[self.attack]

    def to_dict(self) -> dict:
        return {**asdict(self), "threat_model": self.threat_model}

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> AttackReport:
        doc = json.loads(Path(path).read_text())
        doc.pop("threat_model", None)
        return cls(**doc)

    def table(self) -> str:
        rows = [f"{self.attack}: {self.threat_model}", f"{'metric':<28}{'value':>9}{'95% CI':>20}{'n':>7}"]
        for label, block in (("", self.metrics), ("baseline: ", self.baselines)):
            for name, m in block.items():
                rows.append(f"{label + name:<28}{m['value']:>9.4f}   [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
                            f"{m['n']:>7}")
        return "\n".join(rows)
