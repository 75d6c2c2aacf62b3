"""Which code produced a run: a hash of the content that decides results, not of the commit."""
import subprocess
from pathlib import Path

import pytest

from core import version


@pytest.fixture()
def checkout(tmp_path, monkeypatch):
    """A git checkout with one file in each deciding folder, one label file and one file outside them."""
    for name, text in {"core/train.py": "lr = 1\n", "core/report.py": "page = 1\n", "ablations/a/ablation.yaml": "title: a\n",
                       "data/hiahia.yaml": "facts: []\n", "data/labels/recall.csv": "id,label\n",
                       "ablations/a/README.md": "# a\n",
                       "README.md": "read me\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    monkeypatch.setattr(version, "ROOT", tmp_path)

    def code_version() -> str:
        version.code_version.cache_clear()
        return version.code_version()

    yield tmp_path, code_version, lambda: subprocess.run([*git, "commit", "-qam", "x", "--allow-empty"],
                                                         cwd=tmp_path, check=True)
    version.code_version.cache_clear()


def test_code_version_hashes_the_deciding_content_not_the_commit(checkout):
    root, code_version, commit = checkout
    first = code_version()
    assert len(first) == 16 and version.deciding_files() == ["ablations/a/ablation.yaml", "core/train.py",
                                                              "data/hiahia.yaml"]
    commit()  # a new commit with the same content
    (root / "README.md").write_text("changed\n")  # outside core/, ablations/, data/
    (root / "core" / "report.py").write_text("page = 2\n")  # presents runs, decides none
    (root / "data" / "labels" / "recall.csv").write_text("id,label\nx,1\n")  # labels decide no run
    (root / "ablations" / "a" / "README.md").write_text("# a, measured\n")  # documentation decides no run
    assert code_version() == first
    assert not version.git_commit().endswith("+dirty")
    (root / "core" / "train.py").write_text("lr = 2\n")
    assert code_version() != first and version.git_commit().endswith("+dirty")


def test_the_run_modules_are_exactly_what_a_run_imports():
    """RUN_MODULES must list core.run's import closure: a module a run executes but the hash skipped would let
    changed results keep the old code version."""
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, core.run; print(' '.join(sorted(m.split('.', 1)[1] "
                          "for m in sys.modules if m.startswith('core.'))))"], cwd=version.ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == sorted(version.RUN_MODULES)


def test_a_run_records_the_cpu_model_and_its_bf16_instructions(tmp_path):
    from core.run import cpu_identity, environment

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16 "
                    "amx_tile\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    assert cpu_identity(str(info)) == {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
                                       "cpu_bf16": ["amx_bf16", "avx512_bf16"]}
    assert cpu_identity(str(tmp_path / "absent")) == {}
    recorded = environment("cpu")
    assert recorded["torch_threads"] >= 1 and recorded["code_version"]
    assert ("cpu_model" in recorded) == Path("/proc/cpuinfo").exists()
