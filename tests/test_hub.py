"""Hugging Face Hub: load by hub id from huggingface_hub's own cache layout (offline), push through
upload_folder, HF_HUB_OFFLINE honoured; the generated model card of every checkpoint directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trmlm
from trmlm import hub, modelcard
from trmlm.cli.main import app
from trmlm.errors import TRMError

SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def sudoku_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sudoku") / "ckpt"
    res = CliRunner().invoke(app, ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def populate_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """What snapshot_download leaves behind: blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>,
    refs/main holding the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / digest)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so that "user/..." is no local path
    return cache


def test_load_hub_id_from_the_local_cache_offline(sudoku_ckpt, offline_cache):
    import huggingface_hub

    solver = trmlm.load(sudoku_ckpt, device="cpu")
    published = solver.save_pretrained(offline_cache.parent / "published")
    snapshot = populate_hf_cache(offline_cache, "someone/tiny-sudoku", published)
    # huggingface_hub itself reads the layout as a cached repo with these files
    info = huggingface_hub.scan_cache_dir(offline_cache)
    (repo,) = info.repos
    assert repo.repo_id == "someone/tiny-sudoku"
    assert {f.file_name for rev in repo.revisions for f in rev.files} >= {"model.safetensors", "config.json"}

    from_hub = trmlm.load("someone/tiny-sudoku", device="cpu")
    assert isinstance(from_hub, trmlm.PuzzleSolver)
    assert from_hub.solve(SUDOKU).halt_logits == solver.solve(SUDOKU).halt_logits
    assert hub.resolve("someone/tiny-sudoku") == snapshot
    assert hub.resolve("someone/tiny-sudoku", revision=COMMIT) == snapshot


def test_lm_from_the_local_cache_offline(lm_ckpt, offline_cache):
    gen = trmlm.load(lm_ckpt, device="cpu")
    populate_hf_cache(offline_cache, "someone/tiny-lm", gen.save_pretrained(offline_cache.parent / "lm"))
    from_hub = trmlm.load("someone/tiny-lm", device="cpu")
    assert from_hub.generate("ROMEO:", 12, temperature=0) == gen.generate("ROMEO:", 12, temperature=0)


def test_offline_and_not_cached_is_one_line(offline_cache):
    with pytest.raises(TRMError) as exc:
        trmlm.load("someone/not-downloaded")
    message = str(exc.value)
    assert "HF_HUB_OFFLINE" in message and "someone/not-downloaded" in message and "\n" not in message


def test_local_paths_win_over_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id("user/repo") and hub.is_hub_id("org-1/model.v2")
    (tmp_path / "user" / "repo").mkdir(parents=True)
    assert not hub.is_hub_id("user/repo")  # an existing directory is a path
    for not_an_id in ("a/b/c", "../x", "/abs/path", "plain", "runs/", "user/repo/"):
        assert not hub.is_hub_id(not_an_id)
    assert hub.resolve("plain") == Path("plain")  # load() then says "checkpoint not found: plain"


def test_push_to_hub_uploads_the_checkpoint_folder(sudoku_ckpt, monkeypatch, tmp_path):
    """push_to_hub = save_pretrained + create_repo + upload_folder (huggingface_hub.HfApi, faked here)."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            calls.append(("create_repo", repo_id, private, exist_ok, repo_type))

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message, revision):
            folder = Path(folder_path)
            calls.append(("upload_folder", repo_id, sorted(p.name for p in folder.iterdir())))
            card = (folder / "README.md").read_text()
            assert f'trmlm.load("{repo_id}")' in card and "license: mit" in card
            shutil.copytree(folder, tmp_path / "uploaded")
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    url = solver.push_to_hub("someone/tiny-sudoku", private=True, token="hf_x")
    assert url == "https://huggingface.co/someone/tiny-sudoku/commit/abc"
    assert calls[0] == ("init", "hf_x")
    assert calls[1] == ("create_repo", "someone/tiny-sudoku", True, True, "model")
    assert calls[2] == ("upload_folder", "someone/tiny-sudoku",
                        ["README.md", "config.json", "meta.json", "model.safetensors"])
    assert trmlm.load(tmp_path / "uploaded", device="cpu").solve(SUDOKU).text == solver.solve(SUDOKU).text


def test_push_is_refused_offline_and_for_bad_ids(sudoku_ckpt, monkeypatch):
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TRMError, match="HF_HUB_OFFLINE is set"):
        solver.push_to_hub("someone/tiny-sudoku")
    with pytest.raises(TRMError, match="not a Hub repository id"):
        solver.push_to_hub("not an id")


def test_training_writes_a_model_card(sudoku_ckpt, lm_ckpt):
    for ckpt, task_line, metric, params_key in ((sudoku_ckpt, "| task | sudoku |", "exact_acc", "params"),
                                                (lm_ckpt, "| task | language model |", "bpc_sequential", "parameters")):
        card = (ckpt / "README.md").read_text()
        meta = json.loads((ckpt / "meta.json").read_text())
        config = json.loads((ckpt / "config.json").read_text())
        assert card.startswith("---\nlicense: mit\nlibrary_name: trmlm\n")
        assert task_line in card
        assert f"| parameters | {meta[params_key]:,} |" in card
        assert f"| {metric} | {meta['metrics'][metric]:.4f} |" in card  # the measured value, as saved
        hw = meta["provenance"]["hardware"]
        assert f"Hardware: {hw['device']} ({hw['cpu']}), {hw['cores']} CPU cores" in card
        assert meta["provenance"]["command"] and meta["provenance"]["command"] in card
        assert json.dumps(config, indent=1, sort_keys=True) in card
        assert "## License" in card


def test_model_card_pieces():
    assert modelcard.command_line(["/x/.venv/bin/trm", "train-lm", "--preset", "lm tiny"]) == "trm train-lm --preset 'lm tiny'"
    assert modelcard.command_line(["/x/trmlm/__main__.py", "solve"]) == "trm solve"
    assert modelcard.command_line(["/x/cli/main.py", "train-puzzle", "maze"]) == "trm train-puzzle maze"
    card = modelcard.render({"task": "maze", "model": {"d_model": 8}}, {}, weights_numel=123)
    assert "| parameters | 123 |" in card and "No metrics were recorded" in card
    assert "Hardware: not recorded" in card and "The command was not recorded." in card


@pytest.mark.network
@pytest.mark.skipif(not os.environ.get("TRMLM_HUB_TEST_REPO"),
                    reason="set TRMLM_HUB_TEST_REPO=user/repo (and log in) to push to and pull from the real Hub")
def test_real_push_and_pull(sudoku_ckpt, tmp_path, monkeypatch):
    repo = os.environ["TRMLM_HUB_TEST_REPO"]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    solver.push_to_hub(repo, private=True)
    pulled = trmlm.load(repo, device="cpu")
    assert pulled.solve(SUDOKU).text == solver.solve(SUDOKU).text
