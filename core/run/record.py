"""The stored run: what one run of one config measured, as a typed record and as JSON (results/runs/<key>.json).

Records written before a field existed (replay_dropped, model_card, a metric such as turn_overrun) still load: a
missing field takes its empty value. Fields this code does not know are ignored.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

# written for a failed run: what ran and why it failed, no measurement
FAILED_FIELDS = ("model_identity", "model_card", "data_sha256", "resolved_format", "environment", "shared_training",
                 "config", "status", "error", "timings", "finished", "key")


@dataclass(kw_only=True)
class RunRecord:
    # what ran (every record, failed or not); the field order is the order on disk
    model_identity: str = ""  # fingerprint of the model's weights (models.weights_fingerprint)
    model_card: dict = field(default_factory=dict)  # name, kind, licence, licence_url, source (models.model_card)
    data_sha256: str = ""
    resolved_format: str = ""  # chat | plain: config.format with auto resolved for the model
    environment: dict = field(default_factory=dict)  # versions, hardware, precision, code_version, git_commit
    shared_training: bool = False  # one training served several configs that differ only in selection/interpolate
    config: dict  # RunConfig.to_dict() of this run
    status: str  # ok | failed
    error: str | None = None  # why a failed run failed
    # what it measured (finished runs only)
    injection: dict = field(default_factory=dict)  # lora.InjectionReport.to_dict(); targets [] for untrained runs
    strict_error: str | None = None  # the strict injection's error when lora_strict=False let the run go on
    history: list[dict] = field(default_factory=list)  # {"epoch", "split", "loss"}; [] untrained
    best_epoch: int = 0  # lowest validation loss (0 = before training)
    selected_epoch: int = 0  # the checkpoint evaluated: best_epoch or the last epoch, per config.selection
    metrics: dict[str, float | None] = field(default_factory=dict)  # every metric of core/run/metrics.py
    per_fact: dict[str, float] = field(default_factory=dict)  # heldout_recall per fact id
    samples: list[dict] = field(default_factory=list)  # every scored answer (core/run/evaluate.py)
    retention_correct: dict[str, bool] = field(default_factory=dict)  # retention probe id -> answered correctly
    replay: list[dict] = field(default_factory=list)  # {"id", "question", "answer"} trained on (self-replay)
    replay_dropped: list[str] = field(default_factory=list)  # replay ids whose answer never ended
    counts: dict = field(default_factory=dict)  # train_examples, validation_examples
    timings: dict = field(default_factory=dict)  # seconds: load, train, eval, total
    finished: str = ""  # when the run finished, UTC, ISO 8601 to the second ("" in runs stored before it existed)
    throughput: dict = field(default_factory=dict)  # steps, tokens, label_tokens, tokens_per_s
    key: str = ""  # the config key it is stored under

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        """The record as stored; a failed run stores no measurement fields. The values are the record's own (not
        copies): serialise them, do not change them."""
        names = [f.name for f in fields(self)]
        if not self.ok:
            names = [n for n in names if n in FAILED_FIELDS]
        return {n: getattr(self, n) for n in names}

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        values = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                if value is None and f.default_factory is not MISSING:  # null for an empty container
                    value = f.default_factory()
                values[f.name] = value
        values.setdefault("config", {})
        values.setdefault("status", "failed")  # no status: never counted as a finished run
        return cls(**values)

