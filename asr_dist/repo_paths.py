"""Files the repository ships (configs/...) found from any folder.

An accelerate config names its DeepSpeed JSON as `configs/deepspeed/zero2.json`, relative to wherever
`accelerate launch` was started; a train config may do the same in `train.deepspeed_config`. A relative path
is taken from the current folder when it exists there, else from the repository root, so the commands of the
README work from the repository root and from any other folder alike.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def repo_file(path: str | Path) -> Path:
    """`path` itself when absolute or present from the current folder, else REPO_ROOT/path if that exists."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    in_repo = REPO_ROOT / given
    return in_repo if in_repo.exists() else given
