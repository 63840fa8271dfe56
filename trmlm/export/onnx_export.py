"""ONNX export (the torch side): small modules that call the model's own methods, one graph each.

Nothing here re-implements the network: every graph is a trace of TRMLanguageModel.initial_state /
refine / commit_kv / logits / halt_logit, or of one call of the puzzle model (one supervision
step), so the export follows the model whatever its internals become. The graphs are checked
against torch on fresh inputs (several prefix lengths) before the export is reported done.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from trmlm.configtools import to_dict
from trmlm.core import RecursionState
from trmlm.errors import TRMError
from trmlm.export.manifest import FORMAT_VERSION, LM_GRAPHS, PUZZLE_GRAPHS, graph_file, write_manifest
from trmlm.lm.model import TRMLanguageModel

TOLERANCE = 1e-4   # max |onnxruntime - torch| accepted for every output of every graph
OPSET = 18
WEIGHTS = "weights.bin"  # every graph's large initializers, each stored once


# -- the LM's per-token pieces --------------------------------------------------------------------
def _prefix(k: Tensor, v: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Stacked (NL, B, H, P, Dh) keys/values -> the model's per-layer list of (K, V)."""
    return [(k[i], v[i]) for i in range(k.shape[0])]


class LMInit(nn.Module):
    def __init__(self, model: TRMLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor) -> tuple[Tensor, Tensor]:
        state = self.model.initial_state(token.shape[0], token.shape[1])
        return state.y, state.z


class LMRefine(nn.Module):
    def __init__(self, model: TRMLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, position: Tensor, y: Tensor, z: Tensor, prefix_k: Tensor,
                prefix_v: Tensor) -> tuple[Tensor, Tensor]:
        x = self.model.embed_tokens(token)  # (B, 1, D)
        new = self.model.refine(RecursionState(y, z), x, position, _prefix(prefix_k, prefix_v),
                                None, grad="none")
        return new.y, new.z


class LMCommit(nn.Module):
    def __init__(self, model: TRMLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, y: Tensor, z: Tensor, position: Tensor, prefix_k: Tensor,
                prefix_v: Tensor) -> tuple[Tensor, Tensor]:
        kvs = self.model.commit_kv(self.model.embed_tokens(token), RecursionState(y, z), position,
                                   _prefix(prefix_k, prefix_v))
        return torch.stack([k for k, _ in kvs]), torch.stack([v for _, v in kvs])  # (NL, B, H, 1, Dh)


class LMLogits(nn.Module):
    def __init__(self, model: TRMLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: Tensor) -> Tensor:
        return self.model.logits(y)


class LMHalt(nn.Module):
    def __init__(self, model: TRMLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: Tensor) -> Tensor:
        return self.model.halt_logit(y)


# -- the puzzle model's supervision step ----------------------------------------------------------
class PuzzleInit(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        state = self.model.initial_state(tokens.shape[0])
        return state.y, state.z


class PuzzleStep(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: Tensor, z: Tensor, tokens: Tensor, puzzle_ids: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model(RecursionState(y, z), tokens, puzzle_ids, grad="none")
        return out.state.y, out.state.z, out.logits, out.halt_logit


# -- sample inputs (batch 2 and a prefix of 3: torch.export specialises sizes 0 and 1) -------------
def _lm_inputs(model: TRMLanguageModel, batch: int, prefix_len: int, seed: int) -> dict[str, dict[str, Tensor]]:
    net = model.cfg.model
    g = torch.Generator().manual_seed(seed)
    D, NL, H, Dh = net.d_model, net.n_layers, net.n_heads, net.head_dim
    token = torch.randint(0, net.vocab_size, (batch, 1), generator=g)
    position = torch.tensor([prefix_len])
    y, z = torch.randn(batch, 1, D, generator=g), torch.randn(batch, 1, D, generator=g)
    pk = torch.randn(NL, batch, H, prefix_len, Dh, generator=g)
    pv = torch.randn(NL, batch, H, prefix_len, Dh, generator=g)
    return {"init": {"token": token},
            "refine": {"token": token, "position": position, "y": y, "z": z, "prefix_k": pk, "prefix_v": pv},
            "commit": {"token": token, "y": y, "z": z, "position": position, "prefix_k": pk, "prefix_v": pv},
            "logits": {"y": y}, "halt": {"y": y}}


def _puzzle_inputs(model: nn.Module, batch: int, seed: int) -> dict[str, dict[str, Tensor]]:
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), generator=g)
    ids = torch.randint(0, cfg.num_puzzle_ids, (batch,), generator=g)
    y = torch.randn(batch, cfg.total_len, cfg.d_model, generator=g)
    z = torch.randn(batch, cfg.total_len, cfg.d_model, generator=g)
    return {"init": {"tokens": tokens}, "step": {"y": y, "z": z, "tokens": tokens, "puzzle_ids": ids}}


def _dynamic_shapes(kind: str, name: str, inputs: dict[str, Tensor]) -> dict[str, Any]:
    batch = torch.export.Dim("B", min=1, max=4096)
    prefix = torch.export.Dim("P", min=0, max=1 << 20)
    shapes: dict[str, Any] = {}
    for arg, t in inputs.items():
        dims: dict[int, Any] = {}
        if arg == "prefix_k" or arg == "prefix_v":
            dims = {1: batch, 3: prefix}
        elif arg != "position":
            dims = {0: batch}
        shapes[arg] = dims or None
    return shapes


@contextlib.contextmanager
def traceable_rope(model: nn.Module) -> Iterator[None]:
    """Rotary.tables checks `int(positions.max())` against the table size: a data-dependent branch
    torch.export cannot trace. Inside this block the same tables are indexed without the check;
    the exported decode loop keeps positions inside the context itself (trmlm/export/ort_lm.py)."""
    rotary = getattr(model, "rotary", None)
    if rotary is None:
        yield
        return
    rotary.tables = lambda positions: (rotary.cos[positions], rotary.sin[positions])
    try:
        yield
    finally:
        del rotary.tables  # the class method again


def _export_graph(module: nn.Module, inputs: dict[str, Tensor], outputs: tuple[str, ...],
                  shapes: dict[str, Any], path: Path) -> None:
    buf = io.StringIO()
    # the exporter logs a warning per missing torchvision op and prints progress lines
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=True, opset_version=OPSET,
                          input_names=list(inputs), output_names=list(outputs),
                          dynamic_shapes=shapes, optimize=True, verbose=False, external_data=False)


def _pack(paths: list[Path], weights_file: Path, min_bytes: int = 1024) -> None:
    """Store every graph's weights once, in one shared file: the exporter writes one transposed
    copy of a weight per call site (f runs T (n + 1) times in a supervision step) and every graph
    holds its own copies. Identical initializers are merged within a graph, initializers of
    min_bytes or more go to `weights_file` (ONNX external data; each distinct tensor once across
    all graphs, a transposed copy of a stored matrix read through a Transpose), and the
    exporter's per-node metadata (stack traces) is dropped."""
    import hashlib

    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import set_external_data

    stored: dict[tuple, tuple[int, int]] = {}
    with weights_file.open("wb") as blob:
        for path in paths:
            model = onnx.load(str(path))
            graph = model.graph
            for node in graph.node:
                del node.metadata_props[:]
                node.doc_string = ""
            keep, rename, transposes = [], {}, []
            seen: dict[tuple, str] = {}
            for t in graph.initializer:
                data = numpy_helper.to_array(t)
                key = (t.data_type, tuple(t.dims), hashlib.sha1(data.tobytes()).hexdigest())
                if key in seen:
                    rename[t.name] = seen[key]
                    continue
                seen[key] = t.name
                if data.nbytes >= min_bytes:
                    flipped = None
                    if data.ndim == 2 and key not in stored:
                        flipped = (t.data_type, data.shape[::-1],
                                   hashlib.sha1(np.ascontiguousarray(data.T).tobytes()).hexdigest())
                    if flipped in stored:
                        # the transpose of a stored weight (a graph that calls f once gets the
                        # exporter's pre-transposed copy): read the stored one, transpose at load
                        # (onnxruntime folds a Transpose of an initializer when it loads the graph)
                        src = numpy_helper.from_array(np.ascontiguousarray(data.T), f"{t.name}.stored")
                        set_external_data(src, weights_file.name, *stored[flipped])
                        src.ClearField("raw_data")
                        src.data_location = onnx.TensorProto.EXTERNAL
                        keep.append(src)
                        transposes.append(onnx.helper.make_node("Transpose", [src.name], [t.name], perm=[1, 0]))
                        continue
                    if key not in stored:
                        stored[key] = (blob.tell(), data.nbytes)
                        blob.write(data.tobytes())
                    offset, length = stored[key]
                    t.CopyFrom(numpy_helper.from_array(data, t.name))  # raw_data form
                    set_external_data(t, weights_file.name, offset, length)
                    t.ClearField("raw_data")
                    t.data_location = onnx.TensorProto.EXTERNAL
                keep.append(t)
            del graph.initializer[:]
            graph.initializer.extend(keep)
            nodes = transposes + list(graph.node)
            del graph.node[:]
            graph.node.extend(nodes)
            for node in graph.node:
                for i, name in enumerate(node.input):
                    if name in rename:
                        node.input[i] = rename[name]
            for value in list(graph.value_info):
                if value.name in rename:
                    graph.value_info.remove(value)
            onnx.save(model, str(path))


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_difference(module: nn.Module, session, inputs: dict[str, Tensor]) -> float:
    """max |onnxruntime - torch| over every output of one graph on `inputs`."""
    with torch.no_grad():
        ref = module(*inputs.values())
    ref = ref if isinstance(ref, tuple) else (ref,)
    wanted = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in wanted})
    return max(float(np.abs(o - r.float().numpy()).max()) if r.numel() else 0.0
               for o, r in zip(got, ref))


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    parity: dict[str, float]      # graph -> max |onnxruntime - torch| over the checks
    bytes: dict[str, int]         # file -> size


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise TRMError(f"ONNX export needs the `export` extra (pip install 'trmlm[export]'): "
                       f"{exc.name} is not installed") from None


def _export_all(kind: str, modules: dict[str, nn.Module], samples: dict[str, dict[str, Tensor]],
                checks: list[dict[str, dict[str, Tensor]]], out_dir: Path) -> tuple[dict, dict]:
    graphs, parity = {}, {}
    spec = LM_GRAPHS if kind == "lm" else PUZZLE_GRAPHS
    paths = {name: out_dir / graph_file(kind, name) for name in modules}
    for name, module in modules.items():
        _export_graph(module, samples[name], spec[name][1], _dynamic_shapes(kind, name, samples[name]),
                      paths[name])
    _pack(list(paths.values()), out_dir / f"{kind}_{WEIGHTS}")
    for name, module in modules.items():  # the packed graphs are the ones checked
        session = _session(paths[name])
        parity[name] = max(max_difference(module, session, c[name]) for c in checks)
        graphs[name] = paths[name].name
    bad = {k: v for k, v in parity.items() if not v <= TOLERANCE}
    if bad:
        name, diff = next(iter(bad.items()))
        raise TRMError(f"the exported {kind} graph '{name}' differs from torch by {diff:.2e} "
                       f"(> {TOLERANCE:g}); export refused")
    return graphs, parity


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        from trmlm.export.manifest import MANIFEST

        if not (out_dir / MANIFEST).is_file():
            raise TRMError(f"{out_dir} is not empty and holds no export; choose another --out")
        if not overwrite:
            raise TRMError(f"{out_dir} already holds an export; pass --overwrite to replace it")
        for p in [*out_dir.glob("*.onnx"), *out_dir.glob(f"*_{WEIGHTS}")]:
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _sizes(out_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}


def export_lm(model: TRMLanguageModel, tokenizer_file: Path, generation: dict[str, Any],
              out_dir: Path, source: str = "", overwrite: bool = False) -> ExportResult:
    """The per-token graphs of a TRM language model + its tokenizer + manifest.json in out_dir."""
    if not isinstance(model, TRMLanguageModel):
        raise TRMError("only TRM language models export (the transformer baselines have no per-token recursion)")
    _require_onnx()
    _prepare_out_dir(out_dir, overwrite)
    model = model.float().eval().cpu()
    modules = {"init": LMInit(model), "refine": LMRefine(model), "commit": LMCommit(model),
               "logits": LMLogits(model), "halt": LMHalt(model)}
    # batch 1 as the decode loop runs it, prefixes of 0 (the first token), 1 and 7 tokens.
    checks = [_lm_inputs(model, b, p, seed) for seed, (b, p) in enumerate([(2, 3), (1, 0), (1, 1), (1, 7)])]
    with traceable_rope(model):
        graphs, parity = _export_all("lm", modules, checks[0], checks, out_dir)
    shutil.copyfile(tokenizer_file, out_dir / tokenizer_file.name)
    net = model.cfg.model
    manifest = {
        "format_version": FORMAT_VERSION, "format": "onnx", "opset": OPSET, "kind": "lm",
        "source": source, "torch_version": torch.__version__, "graphs": graphs, "weights": f"lm_{WEIGHTS}",
        "graph_io": {k: {"inputs": list(v[0]), "outputs": list(v[1])} for k, v in LM_GRAPHS.items()},
        "tokenizer": tokenizer_file.name, "generation": generation, "config": to_dict(model.cfg),
        "shapes": {"n_layers": model.cache_layers, "n_heads": net.n_heads, "head_dim": net.head_dim,
                   "d_model": net.d_model, "vocab_size": net.vocab_size, "context": model.cfg.context,
                   "max_sup_steps": net.max_sup_steps},
        "parity_max_abs_diff": parity,
    }
    write_manifest(out_dir, manifest)
    return ExportResult(Path(out_dir), manifest, parity, _sizes(Path(out_dir)))


def export_puzzle(model: nn.Module, run_config: dict[str, Any], out_dir: Path, source: str = "",
                  overwrite: bool = False) -> ExportResult:
    """The puzzle model's initial state and supervision step as graphs + manifest.json in out_dir."""
    _require_onnx()
    _prepare_out_dir(out_dir, overwrite)
    model = model.float().eval().cpu()
    modules = {"init": PuzzleInit(model), "step": PuzzleStep(model)}
    checks = [_puzzle_inputs(model, b, seed) for seed, b in enumerate([2, 1, 3])]
    with traceable_rope(model):
        graphs, parity = _export_all("puzzle", modules, checks[0], checks, out_dir)
    cfg = model.cfg
    manifest = {
        "format_version": FORMAT_VERSION, "format": "onnx", "opset": OPSET, "kind": "puzzle",
        "source": source, "torch_version": torch.__version__, "graphs": graphs, "weights": f"puzzle_{WEIGHTS}",
        "graph_io": {k: {"inputs": list(v[0]), "outputs": list(v[1])} for k, v in PUZZLE_GRAPHS.items()},
        "task": run_config.get("task"), "config": run_config,
        "shapes": {"seq_len": cfg.seq_len, "total_len": cfg.total_len, "d_model": cfg.d_model,
                   "vocab_size": cfg.vocab_size, "max_sup_steps": cfg.max_sup_steps,
                   "num_puzzle_ids": cfg.num_puzzle_ids},
        "parity_max_abs_diff": parity,
    }
    write_manifest(out_dir, manifest)
    return ExportResult(Path(out_dir), manifest, parity, _sizes(Path(out_dir)))
