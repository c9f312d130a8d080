"""Published results name their configs by content hash; a changed or missing config makes a study stale."""

from __future__ import annotations

from pathlib import Path

from clbench.studies import read_study, stale_studies, write_study

REPO = Path(__file__).resolve().parents[2]


def test_a_study_is_stale_when_its_config_changes_or_disappears(tmp_path):
    cfg = tmp_path / "configs" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text("seeds: [0]\n")
    write_study(tmp_path / "results" / "s", command=["clbench run configs/c.yaml"], configs=[cfg],
                host={"cores": 2}, files={"table.md": b"| a |\n"}, repo_root=tmp_path)
    study = read_study(tmp_path / "results" / "s")
    assert study.configs == {"configs/c.yaml": __import__("hashlib").sha256(b"seeds: [0]\n").hexdigest()}
    assert study.files == ["table.md"] and study.host == {"cores": 2}
    assert stale_studies(tmp_path / "results", tmp_path) == []
    cfg.write_text("seeds: [0, 1]\n")
    assert stale_studies(tmp_path / "results", tmp_path) == ["s: configs/c.yaml changed since the numbers were measured (rerun: clbench run configs/c.yaml)"]
    cfg.unlink()
    assert stale_studies(tmp_path / "results", tmp_path) == ["s: names configs/c.yaml, which no longer exists"]


def test_no_published_study_of_the_repository_is_stale():
    assert stale_studies(REPO / "results", REPO) == []
