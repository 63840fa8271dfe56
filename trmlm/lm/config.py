"""LM config: the TRM network (nested TRMConfig), per-token halting, data/tokenizer and the train loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trmlm.config import TRMConfig, TrainConfig
from trmlm.errors import TRMError
from trmlm.configtools import apply_overrides, from_dict, load_yaml, merge, to_dict

Arch = Literal["trm", "transformer", "transformer-iso"]


def _default_model() -> TRMConfig:
    # Causal LM use of the TRM network: attention mixer, no puzzle prefix, seq_len = context.
    return TRMConfig(vocab_size=256, seq_len=256, mixer="attention", pos_encoding="rope",
                     puzzle_emb_len=0)


def _default_train() -> TrainConfig:
    # LM defaults (the puzzle-paper values of TrainConfig, e.g. batch 768 / wd 1.0, do not fit an
    # LM); puzzle_emb_* fields are unused here. Softmax CE so that bits/char is a true likelihood.
    return TrainConfig(batch_size=32, lr=1e-3, warmup_steps=100, weight_decay=0.1, ema_decay=0.0,
                       loss="softmax", halt_loss_weight=0.5, grad_clip=1.0, train_steps=2000,
                       eval_every=200, eval_size=2048, eval_batch_size=16, log_every=20)


@dataclass
class HaltConfig:
    """Per-token halting (docs/language-model.md)."""

    # Training label of the halt head q (docs/language-model.md, "Halting"): "correct" =
    # 1[argmax is right]; "improvement" = step s+1 stops lowering this token's loss (Ouro);
    # "final" = this step's loss is within the margin of the full-depth loss (stopping here
    # costs nothing measurable against running all N_sup steps).
    target: Literal["correct", "improvement", "final"] = "correct"
    threshold: float = 0.5        # inference: halt after a supervision step when sigmoid(q) >= this
    min_steps: int = 1            # inference: supervision steps at least
    max_steps: int = 0            # inference: at most; 0 = N_sup
    improvement_scale: float = 50.0    # Ouro: continue = sigmoid(scale (max(0, CE_{s-1}-CE_s) - margin))
    improvement_margin: float = 0.005  # (also the scale/margin of "final", against CE_{N_sup})

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("halt.threshold must lie in [0, 1]")
        if self.min_steps < 1 or self.max_steps < 0:
            raise ValueError("halt.min_steps must be >= 1 and halt.max_steps >= 0")


@dataclass
class DataConfig:
    """Where the text comes from and how it is tokenized."""

    files: list[str] = field(default_factory=list)  # local .txt/.json/.jsonl; empty = embedded corpus
    hub_dataset: str = ""          # a Hugging Face hub id (online users only)
    text_field: str = "text"       # column holding the text (json / hub datasets)
    tokenizer: Literal["char", "bpe", "sentencepiece"] = "char"
    tokenizer_path: str = ""       # an existing tokenizer file; empty = train one on the train split
    vocab_size: int = 2000         # for bpe / sentencepiece training
    val_fraction: float = 0.1      # held-out split = the last fraction of the text
    # A built-in reasoning-text task instead of files (trmlm.lm.tasks: add-D, mul-D, arith, ...,
    # sudoku-text*): problems are generated without end from train.seed; held-out problems
    # from task_eval_seed, kept out of training wherever the problem space allows.
    task: str = ""
    task_eval_seed: int = 1_000_003
    task_eval_problems: int = 300  # held-out problems scored (greedy, real cache) at each validation
    # A second held-out set for reported figures (tuning looks at the first one only); its
    # problems are kept out of training too.
    task_test_seed: int = 2_000_003
    task_test_problems: int = 500
    loss_on: Literal["all", "target"] = "all"  # "target": CE only where the next token is a target's

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("data.val_fraction must lie in (0, 1)")
        if self.task_eval_problems < 1:
            raise ValueError("data.task_eval_problems must be >= 1")


@dataclass
class LMConfig:
    """The per-token recursive LM (arch trm) or a baseline transformer, plus its training recipe."""

    arch: Arch = "trm"
    model: TRMConfig = field(default_factory=_default_model)   # f, n, T, N_sup; seq_len = context L
    halt: HaltConfig = field(default_factory=HaltConfig)
    # What the commit pass reads (model.commit_input). "x": the token alone, so the cache is a causal
    # pass of f over the embeddings, independent of every token's states, depth and exit.
    commit_input: Literal["x+y+z", "x+y", "y", "x"] = "x+y+z"
    commit_grad: bool = True       # backprop through the commit pass (its input y^(s-1) is detached)
    # Training cache: "previous_step" = step s reads the commit of y^(s-1) (docs/language-model.md);
    # "final_sweep" = a first no-grad pass of N_sup previous-step sweeps gives approximately
    # final states, and every step reads their commit, as every inference step reads the final
    # committed prefix (costs one extra forward pass per batch; see docs/language-model.md).
    # "mixed": each batch one or the other with probability 1/2 (keeps both dynamics trained).
    # With commit_input "x" every choice reads the same cache (the tokens' commit): no extra pass runs.
    train_cache: Literal["previous_step", "final_sweep", "mixed"] = "previous_step"
    cache_sweeps: int = 0          # no-grad sweeps of the final_sweep pass; 0 = N_sup
    # Cache levels of the step-synchronous (per-step) cache, for a cache that reads states
    # (commit_input other than "x"), train_cache previous_step: supervision step s reads the
    # commit of the earlier tokens' states after min(s - 1, k - 1) steps. 0 = N_sup levels (step s
    # reads y^(s-1), the previous-step scheme). k = 2: step 1 reads the tokens' commit, every later
    # step (past N_sup too) reads their states after one step; the decoder keeps two (K, V) per
    # token and layer, whatever the depth. A checkpoint with k > 0 is scored with that decoder.
    cache_levels: int = 0
    cache_halting: bool = False    # final_sweep pass halts tokens like inference (learned q) so
                                   # every step reads the states decoding will commit
    # "per_step": an optimizer step after every supervision step (the puzzle TRM's deep
    # supervision; a batch is used N_sup times); "per_batch": the N_sup step losses summed,
    # one optimizer step per batch; "sampled": one optimizer step per batch at a supervision step
    # s drawn uniformly from 1..N_sup, steps 1..s-1 run without grad (they only make the state
    # step s starts from): every depth is trained in expectation at about one step's cost.
    updates: Literal["per_step", "per_batch", "sampled"] = "per_step"
    # per_batch only: the gradient of step s's loss also flows through the committed cache into
    # the earlier tokens' states of step s-1 (straight-through: the cache keeps its value), so
    # earlier tokens learn to hand later ones what they need.
    cross_grad: bool = False
    # Weight of supervision step s's cross-entropy (mean 1 over the N_sup steps): "equal" (the
    # puzzle TRM); "linear" (w_s proportional to s: early steps are drafts, the last counts most);
    # "last" (only step N_sup is trained; steps 1..N_sup-1 run without grad, as refinement warm-up).
    step_weights: Literal["equal", "linear", "last"] = "equal"
    # step_weights=last only: each batch runs a depth drawn uniformly from train_depth_min..N_sup
    # and trains its last step (the steps before it run without grad), so the trained step starts
    # from states of every depth below N_sup, as decoding past a shallower exit, or test-time depth
    # past N_sup, will; 0 = always N_sup. The trained step's weight stays N_sup ("last"'s).
    train_depth_min: int = 0
    # Intermediate answers (tasks that write them: `hops`, the arithmetic rungs): supervision step
    # s is trained toward the task's answer after s units of work (hops: the letter after s hops,
    # f^s(x); add-D: step 1 the column sums without carries; mul-D: a * (b mod 10^s)) instead of the
    # final one; the last step always toward the final answer. The scratchpad's content as
    # per-step targets, so the work happens in depth and nothing extra is generated or cached.
    step_targets: bool = False
    # updates=per_batch only: after the N_sup steps, k ~ U{0..hold_steps-1} more steps without grad,
    # then one more step trained toward the final answer (weight of step N_sup), so the states of
    # depths N_sup+1..N_sup+hold_steps are taught to keep the answer: test-time depth past N_sup
    # (--max-steps) then holds instead of drifting. 0 = off.
    hold_steps: int = 0
    # hold_steps only from this fraction of the run on (its steps or its time budget, whichever
    # is nearer its end, as train.lr_decay_frac reads it): the answer is learned first at the
    # plain cost per batch, then kept past N_sup. 0 = from the start.
    hold_from: float = 0.0
    # "loss": training refines only the positions that carry cross-entropy (data.loss_on target),
    # gathered per row, at (loss positions / L) of the refinement cost. With the token cache
    # (commit_input "x") the others' states reach nothing: exact. With cache_levels the others keep
    # their initial state, committed as such (a token-only entry), in training and in decoding,
    # which refines the last prompt token and the generated ones. "cached" (cache_levels k >= 2):
    # every position is refined for the k - 1 steps whose states the cache stores, the positions
    # with loss to full depth: the model "all" trains (a position without loss is read by later
    # tokens only through its first k - 1 steps), at less of its cost; decoding refines a prompt
    # token before the last for those k - 1 steps.
    refine_on: Literal["all", "loss", "cached"] = "all"
    iso_layers: int = 0            # transformer-iso depth; 0 = model.effective_depth = T (n+1) layers
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_default_train)
    budget_clock: Literal["wall", "cpu"] = "wall"  # train.max_minutes of wall or process-CPU time
    parallel_eval_tokens: int = 8192   # held-out tokens for the fast parallel estimate
    sample_tokens: int = 200       # text sampled at each validation (0 = none)
    sample_prompt: str = "ROMEO:"

    def __post_init__(self) -> None:
        if self.model.mixer != "attention" or self.model.puzzle_emb_len != 0:
            raise ValueError("the LM needs model.mixer=attention and model.puzzle_emb_len=0")
        if self.model.pos_encoding != "rope":
            raise ValueError("the LM uses RoPE (model.pos_encoding=rope): positions come from the cache")
        if self.iso_layers < 0:
            raise ValueError("iso_layers must be >= 0")
        if self.cache_sweeps < 0:
            raise ValueError("cache_sweeps must be >= 0")
        if self.cache_levels and (not 1 <= self.cache_levels <= self.model.max_sup_steps
                                  or self.commit_input == "x" or self.train_cache != "previous_step"
                                  or self.updates == "sampled"):
            raise ValueError(f"cache_levels={self.cache_levels} needs 1 <= cache_levels <= model.max_sup_steps "
                             f"({self.model.max_sup_steps}), a commit_input that reads states (not x), "
                             "train_cache=previous_step and updates per_step or per_batch")
        if self.cross_grad and self.updates != "per_batch":
            raise ValueError("cross_grad needs updates=per_batch (the gradient crosses supervision steps)")
        if self.refine_on == "loss" and ((self.commit_input != "x" and not self.cache_levels)
                                         or self.data.loss_on != "target" or self.updates == "sampled"):
            raise ValueError("refine_on=loss needs commit_input=x (a cache no state reaches) or cache_levels "
                             "(the others' states stay initial in training and decoding), "
                             "data.loss_on=target and updates per_step or per_batch (refine_on=all otherwise)")
        if self.refine_on == "cached" and (self.cache_levels < 2 or self.data.loss_on != "target"
                                           or self.updates == "sampled"):
            raise ValueError("refine_on=cached needs cache_levels >= 2 (its prompt positions are refined for "
                             "the cache_levels - 1 steps the cache stores), data.loss_on=target and updates "
                             "per_step or per_batch")
        if self.train_depth_min and (self.step_weights != "last" or self.updates == "sampled"
                                     or not 1 <= self.train_depth_min <= self.model.max_sup_steps):
            raise ValueError(f"train_depth_min={self.train_depth_min} needs step_weights=last, updates "
                             f"per_step or per_batch, and 1 <= train_depth_min <= model.max_sup_steps "
                             f"({self.model.max_sup_steps})")
        if self.hold_steps < 0 or (self.hold_steps and self.updates != "per_batch"):
            raise ValueError(f"hold_steps={self.hold_steps} needs to be >= 0, and updates=per_batch when > 0 "
                             "(the hold step's loss joins the batch's one update)")
        if not 0.0 <= self.hold_from < 1.0 or (self.hold_from and not self.hold_steps):
            raise ValueError(f"hold_from={self.hold_from} needs to lie in [0, 1), and hold_steps > 0 when > 0")
        if self.step_targets and (self.updates == "sampled" or self.step_weights == "last"):
            raise ValueError("step_targets needs updates per_step or per_batch and step_weights equal or "
                             "linear (the intermediate answers are targets of the earlier steps)")
        if self.updates == "sampled" and self.step_weights != "equal":
            raise ValueError("step_weights applies to updates per_step / per_batch (sampled trains one step per batch)")
        if self.updates == "sampled" and self.halt.target == "final" and self.train_cache != "final_sweep":
            raise ValueError("updates=sampled with halt.target=final needs train_cache=final_sweep "
                             "(its states are the full-depth reference of the halt labels)")

    @property
    def context(self) -> int:
        return self.model.seq_len

    @property
    def depth_iso(self) -> int:
        """transformer-iso blocks: the layers one TRM supervision step applies, T (n + 1) layers."""
        return self.iso_layers or self.model.effective_depth

    @property
    def decodes_per_step(self) -> bool:
        """Whether its own decoder is the step-synchronous one (a TRM trained with cache_levels)."""
        return self.arch == "trm" and self.cache_levels > 0

    @property
    def unscored_steps(self) -> int | None:
        """The supervision steps a position without loss gets (a prompt token before the last):
        None = as many as any other (refine_on all), 0 (loss), cache_levels - 1 (cached)."""
        return unscored_steps(self.refine_on, self.cache_levels)

    @property
    def max_steps(self) -> int:
        return self.halt.max_steps or self.model.max_sup_steps


def unscored_steps(refine_on: str, cache_levels: int) -> int | None:
    """LMConfig.unscored_steps from the two keys (also read from an export's manifest)."""
    return {"all": None, "loss": 0, "cached": cache_levels - 1}[refine_on]


def lm_config_defaults() -> dict[str, Any]:
    """Every field's default, as a run config dict: what a field missing from a run saved before
    it existed stands for when that run is resumed (check_same_run)."""
    return to_dict(LMConfig())


def lm_config_from_dict(data: dict[str, Any], where: str = "") -> LMConfig:
    """Strict load; keys left out keep LMConfig's defaults (also inside nested sections).
    Key names in errors are the ones a user types (`model.d_model`, `train.lr`)."""
    if not isinstance(data, dict):
        raise TRMError(f"{where or 'config'}: expected a mapping, got {data!r}")
    return from_dict(LMConfig, merge(to_dict(LMConfig()), data), where)


def load_lm_config(preset: str | None, config_files: list[str], overrides: list[str],
                   configs_dir: Path) -> LMConfig:
    """preset YAML (configs/<name>.yaml), then user YAML files on top, then --set overrides."""
    data: dict[str, Any] = {}
    if preset:
        data = load_yaml(configs_dir / f"{preset}.yaml")
    for name in config_files:
        data = merge(data, load_yaml(name))
    return lm_config_from_dict(apply_overrides(data, overrides))
