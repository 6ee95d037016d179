"""Where a Hugging Face teacher checkpoint comes from: a local folder or a hub id, and what goes wrong finding it.

One answer to "is this spec a folder or a hub id" (`locate`), used by the loader (`HFTeacher.from_pretrained`) and by
the teacher-feature cache's identity alike, so both read a spec the same way. Offline (forced by HF_HUB_OFFLINE or
detected by a quick TCP probe) means cache-only, so an offline machine fails in seconds instead of after the hub
client's retries; every load failure reaches the user as one line that says what to do. A checkpoint's identity is
read without loading it: the revision of a hub id in the local Hugging Face cache, the tower depths from its config.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from compress.errors import UserError, find_cause

# The CLIP-family model types a teacher may be, in the order messages list them (compress.teachers.hf maps each to
# its transformers class).
MODEL_TYPES = ("altclip", "chinese_clip", "clip")
TYPES_TEXT = ", ".join(MODEL_TYPES)
HUB_PROBE_TIMEOUT_S = 3.0


def locate(spec: str) -> tuple[str, bool]:
    """(source, is_local): an existing folder is local (its `~`-expanded path); a spec that could be a hub repo id
    is the hub's; a file, or a missing path that cannot be a repo id, is a one-line UserError."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                f"teacher {spec!r} is a file; pass the checkpoint folder (config.json, weights, tokenizer) "
                f"of a supported model type ({TYPES_TEXT})"
            )
        return str(path), True
    if not could_be_repo_id(spec):
        raise UserError(
            f"teacher folder {spec!r} does not exist; pass an existing checkpoint folder or a hub id "
            f"(e.g. BAAI/AltCLIP) of a supported model type ({TYPES_TEXT})"
        )
    return spec, False


def could_be_repo_id(spec: str) -> bool:
    """`org/name` or `name` that the hub accepts as a repo id (never a path that starts like one)."""
    if spec.startswith((".", "~", "/")) or "\\" in spec or spec.count("/") > 1:
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def offline_forced() -> bool:
    """HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE, re-read now: huggingface_hub only reads them at import."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return hub_constants.is_offline_mode() or any(
        (f or "").strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Cheap TCP probe of the hub endpoint, so an offline machine fails in seconds, not after minutes of retries."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct probe proves nothing; let the hub client try
    url = urlparse(hub_constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores timeouts; the join does not
    thread.start()
    thread.join(timeout)
    return bool(ok)


def load_error(spec: str, local: bool, offline: bool, exc: BaseException) -> UserError:
    """The one-line UserError for a checkpoint that failed to load from a folder, the hub, or the local cache."""
    cause = first_line(exc)
    if local:
        return UserError(
            f"could not load teacher from folder {spec!r} ({cause}); expected a Hugging Face checkpoint folder "
            f"(config.json, weights, tokenizer) of a supported model type: {TYPES_TEXT}"
        )
    if not offline and find_cause(exc, (RepositoryNotFoundError, GatedRepoError)) is not None:
        return UserError(
            f"teacher {spec!r} was not found on the Hugging Face hub or is gated ({cause}); pass the hub id or "
            f"local checkpoint folder of a supported model type ({TYPES_TEXT})"
        )
    return UserError(
        f"could not download teacher {spec!r} from the Hugging Face hub (no network, or not cached) and no local "
        f"folder has that name; download it elsewhere with `hf download {spec} --local-dir DIR` (older "
        f"huggingface_hub: `huggingface-cli download`), copy DIR here and pass that local folder instead [{cause}]"
    )


def first_line(exc: BaseException) -> str:
    """An exception's first non-blank line (its type name when it has none), at most 200 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def cached_revision(spec: str) -> str:
    """The revision of hub id `spec` that the local Hugging Face cache holds (nothing is downloaded); a one-line
    UserError when it was never downloaded."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # noqa: BLE001 - an odd cache layout counts as not downloaded
        found = None
    if not isinstance(found, str):
        raise UserError(
            f"teacher {spec!r} is neither a local folder nor downloaded to the Hugging Face cache, so the teacher "
            f"cache cannot be matched to it; download it (`hf download {spec}`) or pass its local folder"
        )
    return Path(found).parent.name


def tower_depths(source: str, spec: str) -> tuple[int, int]:
    """(vision blocks, text blocks) from the checkpoint's config.json, read locally only (`source` as `locate`
    returns it); a one-line UserError when it cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        vision_layers = int(config.vision_config.num_hidden_layers)
        text_layers = int(config.text_config.num_hidden_layers)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is the user's folder
        raise UserError(f"teacher {spec!r}: cannot read its config.json ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return vision_layers, text_layers
