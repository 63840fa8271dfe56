"""The ARC voting evaluator: oracle predictions score 100%, a known wrong set its known score."""

import json

import numpy as np

from trmlm.puzzles.arc.augment import ArcAug, IDENTITY
from trmlm.puzzles.arc.encode import encode
from trmlm.puzzles.arc.vote import pass_at_k, submission, vote, write_submission

A = np.array([[1, 2], [3, 4]], np.uint8)
B = np.array([[5]], np.uint8)
C = np.array([[6, 6, 6]], np.uint8)
AUGS = [IDENTITY, ArcAug(1, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9)), ArcAug(5, (0, 9, 8, 7, 6, 5, 4, 3, 2, 1))]
TRUTHS = {("t1", 0): A, ("t1", 1): B, ("t2", 0): C}


def rows(answers: dict, q=None):
    """One row per (test output, augmentation): the model answered `answers[key][a]` (original frame)."""
    keys, augs, toks, qs = [], [], [], []
    for key, per_aug in answers.items():
        for a, grid in enumerate(per_aug):
            keys.append(key)
            augs.append(AUGS[a])
            toks.append(encode(AUGS[a].apply(grid)))
            qs.append(0.0 if q is None else q[key][a])
    return keys, augs, np.stack(toks), np.array(qs)


def test_oracle_scores_100():
    ranked = vote(*rows({k: [v] * 3 for k, v in TRUTHS.items()}))
    assert pass_at_k(ranked, TRUTHS, (1, 2, 3)) == {"pass@1": 1.0, "pass@2": 1.0, "pass@3": 1.0,
                                                    "n_tasks": 2, "n_test_outputs": 3}
    assert ranked[("t1", 0)][0].votes == 3


def test_known_wrong_set_known_score():
    wrong = np.array([[9]], np.uint8)
    answers = {
        ("t1", 0): [A, wrong, wrong],  # wrong wins 2-1: pass@1 0, pass@2 1
        ("t1", 1): [wrong, wrong, wrong],  # never right
        ("t2", 0): [C, C, wrong],      # right at rank 1
    }
    ranked = vote(*rows(answers))
    # per task: t1 = mean(0, 0) @1, mean(1, 0) @2; t2 = 1 -> over tasks: @1 0.5, @2 0.75
    scores = pass_at_k(ranked, TRUTHS, (1, 2))
    assert scores["pass@1"] == 0.5 and scores["pass@2"] == 0.75


def test_ties_broken_by_halting_confidence():
    # one vote each: the more confident halting head (q_halt 2.0 > -3.0) ranks first
    keys, augs, toks, qs = rows({("t2", 0): [C, B]}, q={("t2", 0): [-3.0, 2.0]})
    ranked = vote(keys, augs, toks, qs)
    assert [c.grid.tolist() for c in ranked[("t2", 0)]] == [B.tolist(), C.tolist()]
    assert ranked[("t2", 0)][0].confidence > 0.8


def test_submission_format(tmp_path):
    ranked = vote(*rows({("t1", 0): [A, A, B], ("t2", 0): [C, C, C]}))
    sub = submission(ranked, {"t1": 2, "t2": 1})
    assert sub["t1"][0] == {"attempt_1": A.tolist(), "attempt_2": B.tolist()}
    assert sub["t1"][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}  # no prediction: placeholders
    assert sub["t2"] == [{"attempt_1": C.tolist(), "attempt_2": [[0]]}]
    path = write_submission(tmp_path / "submission.json", sub)
    assert json.loads(path.read_text()) == sub
