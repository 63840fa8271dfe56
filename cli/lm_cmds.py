"""Language-model commands: train-lm, generate, train-tokenizer (eval-lm: eval_lm_cmds.py; calibrate-halt: calibrate_cmds.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from trmlm.cli.common import DeviceOpt, ThreadsOpt, check_output_dir, check_output_file

from trmlm.cli.common import (DeepSpeedOpt, LoggerOpt, NprocOpt, OverwriteOpt, ResumeOpt, configs_dir, err,
                        make_run_logger, out, parallel_setup, prepare_run_dir, user_errors)
from trmlm.configtools import to_dict
from trmlm.errors import TRMError
from trmlm.cli.view_cmds import text_page, text_recorder
from trmlm.logging import require_logger

DEFAULT_PRESET = "lm-shakespeare-cpu"
STEP_COLOURS = ["green", "yellow", "red", "magenta", "blue", "cyan", "bright_green", "bright_yellow",
                "bright_red", "bright_magenta", "bright_blue", "bright_cyan", "white", "grey70", "grey50",
                "grey30"]  # colour of a token that used 1, 2, 3, ... supervision steps


def _preset_path(name: str) -> tuple[str | None, str | None]:
    """A preset name in configs/ or a YAML path -> (preset name, config file)."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return None, name
    if not (configs_dir() / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in configs_dir().glob("lm-*.yaml"))
        raise TRMError(f"unknown preset {name!r} (LM presets: {', '.join(known)})")
    return name, None


class QuietReporter:
    """No progress bar; validation lines still go to stderr."""

    def start(self, total: int) -> None: ...
    def step(self, step: int, metrics: dict) -> None: ...
    def stop(self) -> None: ...

    def message(self, text: str) -> None:
        err.print(text, markup=False, highlight=False, soft_wrap=True)


class RichReporter:
    """Progress bar + messages on stderr (trmlm.lm.train.Reporter)."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=err, transient=False)
        self.task = None

    def start(self, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, info="")

    def step(self, step: int, metrics: dict) -> None:
        info = f"loss {metrics['loss']:.3f}  {metrics['train_seconds']:.0f}s"
        self.progress.update(self.task, completed=step, info=info)

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self.progress.stop()


def _check_text_file(path: Path) -> None:
    """Cheap up-front check of a --data file (before anything is printed or written): it exists,
    holds more than whitespace, and (text files) starts as UTF-8 text."""
    if not path.is_file():
        raise TRMError(f"data file not found: {path}")
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise TRMError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not head.strip():
        raise TRMError(f"data file {path} is empty")
    if path.suffix not in (".json", ".jsonl"):
        import codecs

        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError as exc:
            raise TRMError(f"data file {path} is not UTF-8 text (byte 0x{head[exc.start]:02x} "
                           f"at offset {exc.start})") from None


def train_lm_cmd(
    preset: str = typer.Option(DEFAULT_PRESET, help="Preset in configs/ (lm-tiny, lm-shakespeare-cpu, lm-paper) or a YAML path."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file merged over the preset."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set model.d_model=64 (repeatable)."),
    data: list[str] = typer.Option([], "--data", help="Local text/json/jsonl file (repeatable); default: embedded tiny Shakespeare."),
    task: Optional[str] = typer.Option(None, "--task", help="Built-in reasoning-text task instead of text: add-D, mul-D, arith, hops-K, hops, sudoku-text[-B] (each also -cot: a scratchpad first); see docs/language-model.md."),
    model: Optional[str] = typer.Option(None, "--model", help="trm | transformer | transformer-iso (default: the preset's)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Checkpoint directory (default runs/<preset>-<model>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this train-lm checkpoint's weights and tokenizer (fine-tuning: fresh optimizer and step count; the network settings must match)."),
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    deepspeed: DeepSpeedOpt = None,
    nproc: NprocOpt = 1,
    logger_kind: LoggerOpt = "jsonl",
) -> None:
    """Train the per-token recursive LM (or a transformer baseline) on text.

    Deep supervision as Jacobi sweeps; periodic validation on the held-out last 10% (fast
    parallel estimate and sequential real-cache bits/char), sample text, checkpoints.
    """
    from trmlm.lm.config import load_lm_config
    from trmlm.lm.train import train_from_config

    name, cfg_file = _preset_path(preset)
    overrides = list(set_)
    if model is not None:
        if model not in ("trm", "transformer", "transformer-iso"):
            raise TRMError(f"--model must be trm, transformer or transformer-iso, got {model!r}")
        overrides.append(f"arch={model}")
    files = [f for f in (cfg_file, config) if f]
    cfg = load_lm_config(name, files, overrides, configs_dir())
    for f in data:
        _check_text_file(Path(f))
    if data:
        cfg.data.files = list(data)
    if task is not None:
        cfg.data.task = task
    text_task = None
    if cfg.data.task:
        from trmlm.puzzles.lm_tasks import get_task

        text_task = get_task(cfg.data.task)
    out_path = out_dir or Path("runs") / f"{Path(preset).stem}-{cfg.arch}"
    init = None
    if init_from is not None:
        from trmlm.lm.checkpoint import load_init

        if init_from.resolve() == out_path.resolve():
            raise TRMError(f"--init-from {init_from} is the run's own --out; write the new run elsewhere")
        init = load_init(init_from, cfg, text_task)
    require_logger(logger_kind)
    ds_config = parallel_setup(nproc, deepspeed, cfg.train, prepare=lambda: _prepare_run_dir(
        out_path, resume, overwrite, cfg, deepspeed is not None))
    main_rank = os.environ.get("RANK", "0") == "0"
    quiet = quiet or not main_rank
    n = cfg.model
    err.print(f"[bold]trm train-lm[/bold] arch={cfg.arch} D={n.d_model} layers={n.n_layers} n={n.n_latent} "
              f"T={n.n_cycles} N_sup={n.max_sup_steps} context={n.seq_len} out={out_path}", soft_wrap=True)
    logger = make_run_logger(logger_kind, out_path, resume, out_path.name, to_dict(cfg))
    try:
        trainer, metrics = train_from_config(cfg, out_path, logger, QuietReporter() if quiet else RichReporter(),
                                             resume=resume, deepspeed_config=ds_config, task=text_task,
                                             init=init)
    finally:
        logger.close()
    if not main_rank:
        return
    err.print(f"done: {trainer.step} optimizer steps, {trainer.train_seconds / 60:.1f} min training "
              f"({trainer.train_cpu_seconds / 60:.1f} CPU min), "
              f"{trainer.model.num_parameters():,} parameters; held-out bits/char: sequential "
              f"{metrics.get('bpc_sequential', float('nan')):.3f}, parallel estimate "
              f"{metrics['bpc_parallel']:.3f}"
              + (f"; held-out exact answers {metrics['exact_acc']:.3f}" if "exact_acc" in metrics else "")
              + f"; checkpoint {out_path}", soft_wrap=True)


def _prepare_run_dir(out_path: Path, resume: bool, overwrite: bool, cfg, deepspeed: bool) -> None:
    """prepare_run_dir against what Trainer.resume will compare: the config with the run's own
    tokenizer's vocabulary size, and the model built from it."""
    import dataclasses

    from trmlm.lm.config import lm_config_defaults
    from trmlm.lm.model import build_model
    from trmlm.lm.tokenizer import load_tokenizer

    run_cfg = None
    if resume and not overwrite and (out_path / "train_state" / "latest").is_file():
        vocab = load_tokenizer(out_path).vocab_size
        run_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
    prepare_run_dir(out_path, resume, overwrite, to_dict(run_cfg) if run_cfg else None, deepspeed,
                    (lambda: build_model(run_cfg)) if run_cfg else None, cfg.train, lm_config_defaults())


def _unescape(text: str) -> str:
    """`\\n` and `\\t` typed on a command line as a newline and a tab (`\\\\` = a backslash)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _steps_rows(text: str, steps: list[int]) -> str:
    """Text lines each followed by a line of per-character step digits (for non-terminals);
    step 0 (prompt characters) is blank, 10 or more is '+'."""
    lines, pos = [], 0
    for line in text.split("\n"):
        digits = "".join(" " if s == 0 else str(s) if s < 10 else "+"
                         for s in steps[pos:pos + len(line)])
        lines += [line, digits]
        pos += len(line) + 1
    return "\n".join(lines)


def generate_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory from train-lm."),
    prompt: str = typer.Option(..., "--prompt", help="Text to continue."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Tokens to generate (default 200, at most 1,000,000)."),
    temperature: Optional[float] = typer.Option(None, help="0 = greedy (argmax)."),
    top_k: Optional[int] = typer.Option(None, help="Keep the k most likely tokens (0 = off)."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling mass (1 = off)."),
    repetition_penalty: Optional[float] = typer.Option(None, help="CTRL repetition penalty (1 = off)."),
    stop: list[str] = typer.Option([], "--stop", help="Stop before this string; it is not printed (repeatable; \\n and \\t stand for a newline and a tab)."),
    seed: Optional[int] = typer.Option(None, help="Sampling seed (same seed = same text)."),
    num_samples: Optional[int] = typer.Option(None, help="Independent continuations."),
    halt_threshold: Optional[float] = typer.Option(None, help="Halt a token once sigmoid(q) >= this."),
    min_steps: Optional[int] = typer.Option(None, help="Supervision steps per token at least."),
    max_steps: Optional[int] = typer.Option(None, help="Supervision steps per token at most (default N_sup)."),
    no_halting: bool = typer.Option(False, "--no-halting", help="Fixed unroll: every token gets max steps."),
    show_steps: bool = typer.Option(False, "--show-steps", help="Colour each token by the recursion steps it used."),
    cache: Optional[str] = typer.Option(None, "--cache", help="commit-last (one K/V per token and layer) | per-step (one per cache level: the exact form of training). Default: the checkpoint's own (per-step for a cache_levels model)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, no streaming."),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an interactive page: tokens coloured by their supervision steps, per-step top-5 and halt probability on hover (one self-contained HTML file; a .json name writes the trace, for `trm view`)."),
) -> None:
    """Generate text from a train-lm checkpoint, streaming to stdout.

    Stats (tokens/s, mean recursion steps per token) go to stderr.
    """
    import dataclasses

    from trmlm.lm.checkpoint import load_lm
    from trmlm.lm.generate import Piece, generate
    from trmlm.runtime import resolve_runtime

    if cache is not None and cache not in ("commit-last", "per-step"):
        raise TRMError(f"--cache must be commit-last or per-step, got {cache!r}")
    rt = resolve_runtime(device, "float32", threads)
    lm = load_lm(checkpoint)
    given = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                 repetition_penalty=repetition_penalty, seed=seed, num_samples=num_samples,
                 halt_threshold=halt_threshold, min_steps=min_steps, max_steps=max_steps)
    gcfg = dataclasses.replace(lm.generation, **{k: v for k, v in given.items() if v is not None},
                               stop=[_unescape(s) for s in stop] or lm.generation.stop, no_halting=no_halting,
                               cache=cache or lm.generation.cache)
    model = lm.model.to(rt.device)
    html = check_output_file(html, "--html") if html is not None else None  # before generating
    n_sup = lm.cfg.model.max_sup_steps if lm.cfg.arch == "trm" else 0
    if n_sup:
        gcfg.validate(n_sup)  # a bad option is an error before any warning
        if warning := gcfg.depth_warning(n_sup):
            err.print(f"warning: {warning}", soft_wrap=True)
    # Colour shows the steps on a terminal; under NO_COLOR (no-color.org) the digit rows do.
    colour = show_steps and out.is_terminal and not as_json and not os.environ.get("NO_COLOR")
    samples, char_steps = [], {}
    started: set[int] = set()
    recorder = text_recorder(lm, gcfg) if html is not None else None  # sees every step via the exit rule
    tokenizer, run_cfg = (recorder.tokenizer, recorder.gcfg) if recorder else (lm.tokenizer, gcfg)
    for event in generate(model, tokenizer, prompt, run_cfg):
        if isinstance(event, Piece):
            if as_json:
                continue
            if event.sample not in started:  # echo the prompt before its continuation
                started.add(event.sample)
                sys.stdout.write(prompt)
            char_steps.setdefault(event.sample, []).extend(event.steps)
            if colour:
                t = Text()
                for ch, s in zip(event.text, event.steps):
                    t.append(ch, style=STEP_COLOURS[min(s, len(STEP_COLOURS)) - 1] if s else None)
                out.print(t, end="")
            else:
                sys.stdout.write(event.text)
            sys.stdout.flush()
            continue
        samples.append(event)
        if not as_json:
            if event.sample not in started:
                sys.stdout.write(prompt)
            sys.stdout.write("\n")
            if show_steps and not colour:
                sys.stdout.write("--- steps per character (token) ---\n"
                                 + _steps_rows(prompt + event.text, [0] * len(prompt) + char_steps.get(event.sample, []))
                                 + "\n")
            if event.sample + 1 < gcfg.num_samples:
                sys.stdout.write("---\n")
            sys.stdout.flush()
        rate = event.tokens / max(event.seconds, 1e-9)
        mean_steps = sum(event.token_steps) / max(len(event.token_steps), 1)
        err.print(f"sample {event.sample}: {event.tokens} tokens in {event.seconds:.2f}s "
                  f"({rate:.1f} tokens/s), mean steps/token {mean_steps:.2f}"
                  + (f" of max {gcfg.max_steps or n_sup}" if n_sup else " (no recursion: baseline)")
                  + f", stop: {event.reason}", soft_wrap=True)
    if colour and n_sup:
        legend = Text("steps: ")
        for s in range(1, (gcfg.max_steps or n_sup) + 1):
            legend.append(f"{s} ", style=STEP_COLOURS[min(s, len(STEP_COLOURS)) - 1])
        err.print(legend)
    if recorder is not None:
        text_page(html, recorder, prompt, samples, lm, gcfg, str(checkpoint))
    if as_json:
        out_obj = {"prompt": prompt, "checkpoint": str(checkpoint), "arch": lm.cfg.arch,
                   "generation": to_dict(gcfg),
                   "samples": [{"text": s.text, "tokens": s.tokens, "token_steps": s.token_steps,
                                "seconds": round(s.seconds, 4),
                                "tokens_per_s": round(s.tokens / max(s.seconds, 1e-9), 2),
                                "mean_steps": sum(s.token_steps) / max(len(s.token_steps), 1),
                                "stop_reason": s.reason} for s in samples]}
        sys.stdout.write(json.dumps(out_obj) + "\n")


def train_tokenizer_cmd(
    data: list[str] = typer.Option([], "--data", help="Local text/json/jsonl file (repeatable); default: embedded tiny Shakespeare."),
    kind: str = typer.Option("bpe", "--kind", help="bpe (HF byte-level BPE) | sentencepiece | char."),
    vocab_size: int = typer.Option(8000, help="Vocabulary size (bpe / sentencepiece)."),
    out_dir: Path = typer.Option(Path("runs/tokenizer"), "--out", help="Directory for tokenizer.json / tokenizer.model."),
) -> None:
    """Train a tokenizer (byte-level BPE, sentencepiece or char) on local text or the embedded corpus.

    Use it with `trm train-lm --set data.tokenizer_path=DIR/tokenizer.json`.
    """
    from trmlm.lm.config import DataConfig
    from trmlm.lm.data import load_text
    from trmlm.lm.tokenizer import save_tokenizer, train_tokenizer

    if vocab_size < 1:
        raise TRMError("--vocab-size must be >= 1")
    check_output_dir(out_dir)
    text = load_text(DataConfig(files=list(data)))
    tok = train_tokenizer(kind, text, vocab_size)
    path = save_tokenizer(tok, out_dir)
    sample = text[:100_000]
    out.print(f"{tok.kind} tokenizer, {tok.vocab_size} tokens, "
              f"{len(sample) / max(len(tok.encode(sample)), 1):.2f} chars/token -> {path}")


def register(app: typer.Typer) -> None:
    from trmlm.cli.calibrate_cmds import calibrate_halt_cmd
    from trmlm.cli.eval_lm_cmds import eval_lm_cmd

    app.command("train-lm")(user_errors(train_lm_cmd))
    app.command("generate")(user_errors(generate_cmd))
    app.command("eval-lm")(user_errors(eval_lm_cmd))
    app.command("train-tokenizer")(user_errors(train_tokenizer_cmd))
    app.command("calibrate-halt")(user_errors(calibrate_halt_cmd))
