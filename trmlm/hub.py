"""The Hugging Face Hub: a hub id -> a local checkpoint directory (snapshot_download), and push (upload_folder).

huggingface_hub does the work (its cache layout, tokens, revisions); this module only decides
when a name is a hub id, honours HF_HUB_OFFLINE at call time, and turns its errors into one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from trmlm.errors import TRMError

# What a trmlm checkpoint holds (weights, JSON config/metadata, tokenizer, model card). Only these
# are downloaded: a checkpoint is data, and nothing else in a repository is ever read.
CHECKPOINT_FILES = ["*.safetensors", "*.json", "tokenizer.model", "README.md"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but read now (the library reads it at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_hub_id(name: str) -> bool:
    """`user/repo` (one slash, no path syntax); an existing local path always wins."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not Path(name).exists()


def _hf():
    try:
        import huggingface_hub
    except ImportError:
        raise TRMError("the Hugging Face Hub needs huggingface_hub (pip install huggingface_hub)") from None
    return huggingface_hub


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def resolve(name: str | Path, revision: str | None = None) -> Path:
    """A local directory as it is; a hub id -> its snapshot in the Hugging Face cache (downloaded
    unless HF_HUB_OFFLINE is set, in which case the cache alone must hold it)."""
    if isinstance(name, Path) or not is_hub_id(name):
        return Path(name)
    hf = _hf()
    from huggingface_hub import errors

    is_offline = offline()
    try:
        local = hf.snapshot_download(name, revision=revision, allow_patterns=CHECKPOINT_FILES,
                                     cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                     local_files_only=is_offline)
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        if is_offline:
            raise TRMError(f"no local directory {name!r} and the Hub model {name!r} is not in the "
                           "Hugging Face cache (HF_HUB_OFFLINE is set; unset it to download)") from None
        raise TRMError(f"no local directory {name!r} and the Hub could not be reached to download "
                       f"{name!r} (set HF_HUB_OFFLINE=1 to use the cache only)") from None
    except errors.RepositoryNotFoundError:
        raise TRMError(f"no local directory {name!r} and no Hub model {name!r} (or it is private: "
                       "log in with `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise TRMError(f"Hub model {name!r} has no revision {revision!r}") from None
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError) as exc:
        raise TRMError(f"cannot download {name!r} from the Hub: {_first_line(exc)}") from None
    return Path(local)


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload trmlm checkpoint", revision: str | None = None) -> str:
    """Upload a checkpoint directory to the model repository `repo_id` (created if missing);
    returns the commit URL."""
    if not _HUB_ID.match(repo_id):
        raise TRMError(f"not a Hub repository id: {repo_id!r} (expected user/name)")
    if offline():
        raise TRMError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set")
    hf = _hf()
    from huggingface_hub import errors

    api = hf.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=commit_message, revision=revision)
    except errors.OfflineModeIsEnabled:
        raise TRMError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set") from None
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError) as exc:
        raise TRMError(f"cannot push to {repo_id!r}: {_first_line(exc)}") from None
    return str(getattr(info, "commit_url", info))
