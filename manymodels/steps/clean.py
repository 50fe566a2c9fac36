"""mm clean: remove step outputs, safely.

Only the folders and files mm itself writes for the chosen step are removed,
together with the run records of that step (which would otherwise point at
artefacts that no longer exist). The user's raw input, anything else in the
datastore folder, and anything a symlink points to outside it are never
touched. Without ``yes`` it is a dry run that lists what would go.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import Config
from ..console import Terminal
from ..errors import MMError
from ..runner.options import RunOptions
from ..runner.session import Session, open_session
from ..store.datastore import Datastore

STEPS = ("split", "train", "forecast", "all")


@dataclass
class CleanResult:
    step: str
    dry_run: bool
    entries: list[dict] = field(default_factory=list)
    total_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def clean(
    config: Config,
    terminal: Terminal | None = None,
    *,
    step: str = "all",
    yes: bool = False,
    options: RunOptions | None = None,
    session: Session | None = None,
    **option_fields,
) -> CleanResult:
    """Remove the outputs of ``step`` (a dry run unless ``yes``); of the options, only ``wait`` matters."""
    if step not in STEPS:
        raise MMError(f"--step {step!r} is not a step", f"use one of {', '.join(STEPS)}")
    store = Datastore(config.datastore)
    if not store.exists():
        return CleanResult(step, not yes)
    if not store.is_datastore():
        raise MMError(
            f"{store.root} is not an mm datastore (no .mm/datastore.json), refusing to delete anything in it",
            "check 'datastore' in the config",
        )
    with open_session(config, terminal, RunOptions.of(options, **option_fields), session) as s:
        found = s.store.step_entries(step)
        for rel in found:  # every entry is checked before the first is removed (and in a dry run): all or nothing
            s.store.check_removable(rel)
        entries = [{"path": str(s.store.files.location(rel)), "bytes": s.store.entry_size(rel)} for rel in found]
        result = CleanResult(step, not yes, entries, sum(e["bytes"] for e in entries))
        if yes:
            for rel in found:
                s.store.remove_entry(rel)
        return result
