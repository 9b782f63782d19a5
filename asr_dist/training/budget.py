"""How long a run trains: total optimizer updates and updates per epoch, fixed when the run starts.

The epoch plan's length varies a little from epoch to epoch (63 or 64 updates) and with the world size it is
resumed on (32 -> 64 updates after a 2 -> 1 rank re-split). Were the budget recomputed at every resume, a
`max_epochs`-bound run would change its total and its decay on resume. So it is computed once, from the first
epoch's plan at the start, saved in every checkpoint (with the trainer's counters) and only re-derived from
the saved updates-per-epoch: the learning rate stays a pure function of the update number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainingBudget:
    steps_per_epoch: int  # optimizer updates in the run's first epoch, on the world size it started on
    total_steps: int  # min(train.max_steps, train.max_epochs x steps_per_epoch)

    @classmethod
    def at_start(cls, train_cfg, batches_in_first_epoch: int) -> "TrainingBudget":
        """`batches_in_first_epoch`: this rank's micro-batches in epoch 0 (len(train_loader) at a fresh start)."""
        return cls.with_epoch_length(train_cfg, max(batches_in_first_epoch // train_cfg.grad_accum, 1))

    @classmethod
    def with_epoch_length(cls, train_cfg, steps_per_epoch: int) -> "TrainingBudget":
        """The budget for the saved epoch length and the current max_steps/max_epochs (they may be raised on
        resume to train longer: both are resume-free keys)."""
        return cls(steps_per_epoch, min(train_cfg.max_steps, train_cfg.max_epochs * steps_per_epoch))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunProgress:
    """What the run has done so far, and its budget: saved in every checkpoint (as the "trainer" state)."""

    budget: TrainingBudget | None = None  # None until the run starts or resumes
    step: int = 0  # optimizer updates done (skipped ones included: their data was consumed)
    skipped_updates: int = 0
    audio_seconds_seen: float = 0.0
    samples_seen: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "skipped_updates": self.skipped_updates,
                "audio_seconds_seen": self.audio_seconds_seen, "samples_seen": self.samples_seen,
                "budget": self.budget.to_dict() if self.budget else None}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.skipped_updates = int(state["skipped_updates"])
        self.audio_seconds_seen = float(state["audio_seconds_seen"])
        self.samples_seen = int(state["samples_seen"])
        saved = state.get("budget")  # None in checkpoints written before the budget was saved
        self.budget = TrainingBudget(**saved) if saved else None
