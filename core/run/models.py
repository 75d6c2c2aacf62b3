"""Resolve a model spec to a (model, tokenizer) pair: the embedded GGUF models, tiny-qwen2, or any hub id / folder.

How the embedded models are fetched, converted and cached is core/run/model_cache.py; this file turns a spec into
loaded weights, says where and in which precision they compute, and describes a spec for the stored run.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from core.run.model_cache import EMBEDDED, CacheCorrupted, ModelError, cache_dir, heal_embedded, verify_folder

TINY = "tiny-qwen2"
KNOWN = (*EMBEDDED, TINY)


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


PRECISION_CHOICES = ("auto", "fp32", "bf16")


def add_precision_argument(parser) -> None:
    parser.add_argument("--precision", choices=PRECISION_CHOICES, help=(
        "auto (default): bf16 mixed precision on a GPU and on a CPU with bf16 in hardware (AVX512-BF16, AMX), else "
        "fp32; fp32 or bf16 force it. Part of every run's key: runs in another precision are not reused. run_all.py "
        "on the published results/ takes, when none is given, the precision its stored runs record"))


def mixed_for(choice: str | None) -> bool | None:
    """--precision as pick_precision's `mixed`: auto (or none given) lets the hardware decide (None), bf16 forces
    mixed precision (True), fp32 forbids it (False). The choice is passed along explicitly to every place a run
    computes (executors, Ray workers, `hiahia`), never through the environment."""
    if choice is None or choice == "auto":
        return None
    if choice not in PRECISION_CHOICES:
        raise ModelError(f"--precision {choice!r} is not a precision: use one of {', '.join(PRECISION_CHOICES)}")
    return choice == "bf16"


# Tests only: "0" makes this machine's CPU count as one without bf16 hardware (the path every CPU without it takes:
# fp32 when --precision is auto), "1" as one with it. It stands in for the hardware, not for the user's choice, and
# reaches subprocesses and Ray workers (which forward HIAHIA_TEST_* variables) alike.
CPU_BF16_TEST = "HIAHIA_TEST_CPU_BF16"
CPUINFO = "/proc/cpuinfo"


def cpu_bf16_native(cpuinfo: str | os.PathLike = CPUINFO) -> bool:
    """True when the CPU multiplies bf16 in hardware (the avx512_bf16 or amx_bf16 flag). Where that cannot be read
    (not Linux), False: bf16 emulated in software is slower than fp32."""
    if str(cpuinfo) == CPUINFO and os.environ.get(CPU_BF16_TEST) in ("0", "1"):
        return os.environ[CPU_BF16_TEST] == "1"
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(device: str = "cpu", trains_all_weights: bool = False, mixed: bool | None = None) -> Precision:
    """bf16 autocast over fp32 trainable weights, frozen weights stored in bf16 (fp32 when every weight trains),
    on a GPU with bf16 and on a CPU that computes bf16 in hardware (AVX512-BF16, AMX); plain fp32 elsewhere.
    On a 2-core AMD EPYC with AVX512-BF16, mixed precision trained 1.3x and answered 2x faster than fp32
    (benchmarks/RESULTS.md). `mixed` (--precision through mixed_for) True or False overrides the hardware's choice."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    dev = torch.device(device)
    if mixed is None:
        mixed = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_bf16_native()
    if not mixed:
        return Precision(dev, torch.float32, None)
    return Precision(dev, torch.float32 if trains_all_weights else torch.bfloat16, torch.bfloat16)


def weights_fingerprint(spec: str) -> str:
    """A string that changes when the weights behind `spec` change (part of a run's cache key)."""
    if spec in EMBEDDED:
        return f"{spec}:{EMBEDDED[spec].gguf_sha256[:12]}"
    if Path(spec).is_dir():
        cfg = Path(spec) / "config.json"
        digest = hashlib.sha256(cfg.read_bytes()).hexdigest()[:12] if cfg.exists() else "nocfg"
        return f"{Path(spec).resolve()}:{digest}"
    return spec


def model_card(spec: str) -> dict:
    """What a run records about its model for the report: name, kind, licence (with its URL) and source."""
    if spec in EMBEDDED:
        e = EMBEDDED[spec]
        return {"name": e.source.split(" (")[0].split("/")[-1], "kind": e.kind, "licence": e.licence,
                "licence_url": e.licence_url, "source": e.source}
    if spec == TINY:
        return {"name": "random 2-layer Qwen2 (unit-test model)", "kind": "chat template, untrained", "licence": "-",
                "licence_url": None, "source": "built in code (core/run/models.py)"}
    return {"name": spec, "kind": "-", "licence": "the model's own", "licence_url": None,
            "source": "Hugging Face hub id or local folder"}


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
        model, tok = heal_embedded(EMBEDDED[spec], cache_dir(cache), lambda folder: _load_verified(folder, dtype))
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
        heal_embedded(EMBEDDED[spec], cache_dir(cache), verify_folder)
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


TINY_CORPUS = Path(__file__).resolve().parent / "tiny_corpus.txt"


def tiny_tokenizer():
    """A byte-level BPE trained offline on a fixed text shipped beside this file (a snapshot of the knowledge file,
    so editing data/ never changes the test model), with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [TINY_CORPUS.read_text(encoding="utf-8")]
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
