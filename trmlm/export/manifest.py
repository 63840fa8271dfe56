"""The export directory's manifest.json: which graphs, their inputs, the model's shapes (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trmlm.errors import TRMError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# Graph name -> (inputs, outputs). Shapes: B batch, P committed prefix length (dynamic), D width,
# NL layers, H heads, Dh head width, V vocabulary, L puzzle cells, T = puzzle prefix + L.
LM_GRAPHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # initial_state: the fixed (y, z) a token starts from, (B, 1, D) each
    "init": (("token",), ("y", "z")),
    # refine: ONE supervision step of one token (B, 1) at `position` (1,) against the committed
    # prefix_k / prefix_v (NL, B, H, P, Dh); y, z (B, 1, D) in and out
    "refine": (("token", "position", "y", "z", "prefix_k", "prefix_v"), ("y_out", "z_out")),
    # commit_kv: the commit pass of a finished token -> its own (K, V) (NL, B, H, 1, Dh)
    "commit": (("token", "y", "z", "position", "prefix_k", "prefix_v"), ("k", "v")),
    "logits": (("y",), ("logits",)),        # output head: (B, 1, V)
    "halt": (("y",), ("halt_logit",)),      # halt head: (B, 1); halt once sigmoid >= threshold
}
PUZZLE_GRAPHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "init": (("tokens",), ("y", "z")),      # (B, L) -> (B, T, D) each
    # one supervision step: y, z (B, T, D), tokens (B, L), puzzle_ids (B,) ->
    # y, z, logits (B, L, V), halt_logit (B,) (> 0 = halt)
    "step": (("y", "z", "tokens", "puzzle_ids"), ("y_out", "z_out", "logits", "halt_logit")),
}


def graph_file(kind: str, name: str) -> str:
    return f"{kind}_{name}.onnx"


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(export_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The manifest of an export directory; one-line TRMError when it is missing or of another kind."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise TRMError(f"no {MANIFEST} in {export_dir}: not a `trm export` directory")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TRMError(f"corrupt {path}: not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise TRMError(f"{path} is not a version-{FORMAT_VERSION} trm export manifest")
    if kind is not None and manifest.get("kind") != kind:
        raise TRMError(f"{export_dir} holds a {manifest.get('kind')} export, not a {kind} export")
    for name in manifest.get("graphs", {}).values():
        if not (Path(export_dir) / name).is_file():
            raise TRMError(f"{export_dir} is missing {name}")
    return manifest
