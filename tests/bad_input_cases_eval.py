"""The bad-input table's last rows (tests/bad_input_cases.py gathers them into `CASES`):
evaluation, tokenizers, benchmarks, halting calibration and LM initialisation."""

from __future__ import annotations

from bad_input_workspace import LM, S, TRAIN_LM, Case, _no_out, _png_reported, write

CSV_BAD = "a,b\n1,2\n"

EVAL_CASES = [
    Case("e01_limit0", "eval-puzzle --limit 0 (was 'accuracy 0.0000')", ["eval-puzzle", "sudoku", "--checkpoint", S,
         "--limit", "0"], needle="--limit must be >= 1", fast=True),
    Case("e02_limit_neg", "eval-puzzle --limit -1", ["eval-puzzle", "sudoku", "--checkpoint", S, "--limit", "-1"],
         needle="--limit must be >= 1"),
    Case("e03_source_missing", "eval-puzzle --source of a missing path", ["eval-puzzle", "sudoku", "--checkpoint", S,
         "--source", "/nonexistent/dir"], needle="/nonexistent/dir"),
    Case("e04_source_badcsv", "eval-puzzle --source CSV with another header", ["eval-puzzle", "sudoku",
         "--checkpoint", S, "--source", "bad.csv"], needle="header lacks", setup=write("bad.csv", CSV_BAD)),
    Case("e05_evallm_tokens0", "eval-lm --tokens 0 (control: parallel estimate only)", ["eval-lm", "--checkpoint",
         LM, "--tokens", "0", "--parallel-tokens", "64"], 0),
    Case("e06_evallm_batch0", "eval-lm --batch 0 (was a ValueError)", ["eval-lm", "--checkpoint", LM, "--batch", "0"],
         needle="--batch must be >= 1", fast=True),
    Case("e07_tok_kind_bad", "train-tokenizer --kind wordpiece", ["train-tokenizer", "--kind", "wordpiece", "--out",
         "t"], needle="unknown tokenizer 'wordpiece'"),
    Case("e08_tok_vocab0", "train-tokenizer --vocab-size 0", ["train-tokenizer", "--vocab-size", "0", "--out", "t"],
         needle="--vocab-size must be >= 1"),
    Case("e09_bench_nomode", "bench without a mode", ["bench", "--out", "b"],
         needle="choose at least one of --adaptive-compute, --decode, --train-step"),
    Case("e10_bench_badthresh", "bench --thresholds a,b", ["bench", "--adaptive-compute", "--checkpoint", LM,
         "--thresholds", "a,b", "--out", "b"], needle="--thresholds takes comma-separated numbers"),
    Case("e11_evallm_data_empty", "eval-lm --data of an empty file", ["eval-lm", "--checkpoint", LM, "--data",
         "empty.txt"], needle="empty", setup=write("empty.txt", "")),
    Case("e12_trainlm_data_empty", "train-lm --data of an empty file", [*TRAIN_LM, "--data", "empty.txt", "--out",
         "r"], needle="data file empty.txt is empty", setup=write("empty.txt", "")),
    Case("e13_trainlm_data_binary", "train-lm --data of binary bytes", [*TRAIN_LM, "--data", "bin.dat", "--out", "r"],
         needle="is not UTF-8 text", setup=write("bin.dat", bytes(range(128, 256)) * 16)),
    Case("e14_png_dir", "eval-puzzle --png pngdir (control: writes and reports pngdir.png)",
         ["eval-puzzle", "sudoku", "--checkpoint", S, "--png", "pngdir", "--json"], 0, check=_png_reported),
    Case("e15_calib_puzzle", "a puzzle checkpoint to calibrate-halt", ["calibrate-halt", "--checkpoint", S,
         "--out", "cal"], needle="is a puzzle checkpoint"),
    Case("e16_calib_same_out", "calibrate-halt --out the checkpoint itself (its halting head would be lost)",
         ["calibrate-halt", "--checkpoint", LM, "--out", LM], needle="--out must differ from --checkpoint", fast=True),
    Case("e17_calib_margin", "calibrate-halt --margin -1", ["calibrate-halt", "--checkpoint", LM, "--out", "cal",
         "--margin", "-1"], needle="margin must be >= 0"),
    Case("e18_init_puzzle", "train-lm --init-from a puzzle checkpoint", [*TRAIN_LM, "--init-from", S, "--out", "r"],
         needle="is a puzzle checkpoint"),
    Case("e19_init_other_net", "train-lm --init-from a checkpoint of another width",
         [*TRAIN_LM, "--init-from", LM, "--set", "model.d_model=48", "--out", "r"], needle="its model.d_model is"),
    Case("e20_calib_pick_word", "calibrate-halt --pick-threshold 0.9,high", ["calibrate-halt", "--checkpoint", LM,
         "--out", "cal", "--pick-threshold", "0.9,high"], needle="--pick-threshold: 'high' is not a number", fast=True),
    Case("e21_calib_pick_range", "calibrate-halt --pick-threshold 0.9,1.5", ["calibrate-halt", "--checkpoint", LM,
         "--out", "cal", "--pick-threshold", "0.9,1.5"], needle="thresholds lie in (0, 1), got 1.5"),
    Case("e22_calib_pick_commas", "calibrate-halt --pick-threshold ' , '", ["calibrate-halt", "--checkpoint", LM,
         "--out", "cal", "--pick-threshold", " , "], needle="a comma list of thresholds"),
    Case("e23_calib_pick_tolerance", "calibrate-halt --pick-tolerance 1", ["calibrate-halt", "--checkpoint", LM,
         "--out", "cal", "--pick-threshold", "0.9", "--pick-tolerance", "1"], needle="--pick-tolerance must lie in [0, 1)"),
    Case("e24_calib_pick_problems", "calibrate-halt --pick-problems 0", ["calibrate-halt", "--checkpoint", LM,
         "--out", "cal", "--pick-threshold", "0.9", "--pick-problems", "0"], needle="--pick-problems must be >= 1"),
    Case("e25_calib_pick_text", "calibrate-halt --pick-threshold on a checkpoint trained on text (no problems to "
         "decode)", ["calibrate-halt", "--checkpoint", LM, "--out", "cal", "--pick-threshold", "0.9"],
         needle="decodes a task's validation problems", check=_no_out("cal")),
]
