"""Which code produced a run: a hash of core/run/ (what a run executes), not of the commit or the plan."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.run import version


@pytest.fixture()
def checkout(tmp_path, monkeypatch):
    """A git checkout with core/run/ (what a run executes), other parts of core/, ablations/, data/ and a README."""
    for name, text in {"core/run/train.py": "lr = 1\n", "core/run/tiny_corpus.txt": "words\n",
                       "core/report/render.py": "page = 1\n", "core/study/plan.py": "plan = 1\n",
                       "ablations/a/ablation.yaml": "title: a\n", "data/hiahia.yaml": "facts: []\n",
                       "README.md": "read me\n", ".gitignore": "__pycache__/\n.*.swp\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    monkeypatch.setattr(version, "ROOT", tmp_path)
    monkeypatch.setattr(version, "RUN_PACKAGE", tmp_path / "core" / "run")

    def code_version() -> str:
        version.code_version.cache_clear()
        return version.code_version()

    yield tmp_path, code_version, lambda: subprocess.run([*git, "commit", "-qam", "x", "--allow-empty"],
                                                         cwd=tmp_path, check=True)
    version.code_version.cache_clear()


def test_code_version_hashes_what_a_run_executes_not_the_commit_or_the_plan(checkout):
    root, code_version, commit = checkout
    first = code_version()
    assert len(first) == 16 and version.folder_files(root / "core" / "run") == ["tiny_corpus.txt", "train.py"]
    commit()  # a new commit with the same content
    (root / "README.md").write_text("changed\n")
    (root / "core" / "report" / "render.py").write_text("page = 2\n")  # presents runs, decides none
    (root / "core" / "study" / "plan.py").write_text("plan = 2\n")  # plans runs, decides none
    (root / "ablations" / "a" / "ablation.yaml").write_text("title: b\n")  # the plan, not code
    (root / "data" / "hiahia.yaml").write_text("facts: [x]\n")  # keyed by its own sha256
    (root / "core" / "run" / "__pycache__").mkdir()
    (root / "core" / "run" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"cache")
    (root / "core" / "run" / ".train.py.swp").write_text("an editor's file")
    assert code_version() == first
    assert not version.git_commit().endswith("+dirty")
    (root / "core" / "run" / "train.py").write_text("lr = 2\n")
    assert code_version() != first and version.git_commit().endswith("+dirty")


def test_the_same_code_has_the_same_version_without_git(checkout, tmp_path_factory, monkeypatch):
    """A Ray worker's copy has no .git: the version is computed from the files alone."""
    root, code_version, _ = checkout
    here = code_version()
    copy = tmp_path_factory.mktemp("worker")
    shutil.copytree(root / "core", copy / "core")
    monkeypatch.setattr(version, "ROOT", copy)
    monkeypatch.setattr(version, "RUN_PACKAGE", copy / "core" / "run")
    assert code_version() == here and version.git_commit() == "unknown"


def test_a_run_imports_nothing_outside_core_run():
    """core/run/ must hold everything a run executes: a module outside it that a run imported could change results
    without changing the code version (core/paths.py only names folders)."""
    out = subprocess.run([sys.executable, "-c", "import sys, core.run.recipe; print(' '.join(sorted(m for m in "
                          "sys.modules if m.startswith('core'))))"], cwd=version.ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    outside = [m for m in out if not m.startswith("core.run") and m not in ("core", "core.paths")]
    assert "core.run.recipe" in out and outside == []


def test_a_run_records_the_cpu_model_and_its_bf16_instructions(tmp_path):
    from core.run.recipe import cpu_identity, environment

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16 "
                    "amx_tile\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    assert cpu_identity(str(info)) == {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
                                       "cpu_bf16": ["amx_bf16", "avx512_bf16"]}
    assert cpu_identity(str(tmp_path / "absent")) == {}
    recorded = environment("cpu")
    assert recorded["torch_threads"] >= 1 and recorded["code_version"]
    assert ("cpu_model" in recorded) == Path("/proc/cpuinfo").exists()
