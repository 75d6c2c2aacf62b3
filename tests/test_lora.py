"""LoRA layer maths and the injector: no-op at init, merge, peft equivalence, strict misses."""
import pytest
import torch

from core.run.lora import (
    InjectionError,
    LoRALinear,
    export_peft,
    inject_lora,
    load_adapter,
    lora_modules,
    merge_all,
    save_adapter,
    unmerge_all,
)

QWEN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _ids(tok):
    return tok("hiahia has a grey cat", return_tensors="pt")["input_ids"]


def _randomise_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)


def test_lora_is_exact_noop_at_init(tiny):
    model, tok = tiny
    before = model(_ids(tok)).logits
    report = inject_lora(model, QWEN_TARGETS, r=4, alpha=8)
    assert len(report.matched) == 2 * 7
    assert torch.equal(model(_ids(tok)).logits, before)


def test_only_lora_weights_train(tiny):
    model, _ = tiny
    report = inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert report.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    q, v = model.model.layers[0].self_attn.q_proj.base, model.model.layers[0].self_attn.v_proj.base
    per_layer = 4 * (q.in_features + q.out_features) + 4 * (v.in_features + v.out_features)
    assert report.trainable_params == 2 * per_layer


def test_merged_and_unmerged_forward_agree(tiny):
    model, tok = tiny
    plain = model(_ids(tok)).logits
    inject_lora(model, QWEN_TARGETS, r=4, alpha=8)
    _randomise_b(model)
    unmerged = model(_ids(tok)).logits
    assert not torch.allclose(unmerged, plain, atol=1e-4)  # the adapter does something
    merge_all(model)
    merged = model(_ids(tok)).logits
    unmerge_all(model)
    again = model(_ids(tok)).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, unmerged, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rslora", [False, True])
def test_scaling(rslora):
    layer = LoRALinear(torch.nn.Linear(8, 8), r=16, alpha=32, use_rslora=rslora)
    assert layer.scaling == pytest.approx(32 / 4 if rslora else 2.0)


def test_outputs_equal_peft_lora(tiny):
    peft = pytest.importorskip("peft")
    from core.run.models import load

    model, tok = tiny
    inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=16)
    _randomise_b(model)
    ours = model(_ids(tok)).logits

    ref, _ = load("tiny-qwen2")
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    ref = peft.get_peft_model(ref, cfg)
    with torch.no_grad():
        for name, m in lora_modules(model).items():
            target = ref.base_model.model.get_submodule(name)
            target.lora_A["default"].weight.copy_(m.lora_A)
            target.lora_B["default"].weight.copy_(m.lora_B)
    torch.testing.assert_close(ref(_ids(tok)).logits, ours, atol=1e-5, rtol=1e-5)


def test_exported_adapter_loads_in_peft(tiny, tmp_path):
    peft = pytest.importorskip("peft")
    from core.run.models import load

    model, tok = tiny
    inject_lora(model, QWEN_TARGETS, r=4, alpha=8, use_rslora=True)
    _randomise_b(model)
    ours = model(_ids(tok)).logits
    export_peft(model, tmp_path / "adapter")
    base, _ = load("tiny-qwen2")
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter")
    torch.testing.assert_close(loaded(_ids(tok)).logits, ours, atol=1e-5, rtol=1e-5)


def test_exported_adapter_config_records_the_dropout_trained_with(tiny, tmp_path):
    import json

    model, _ = tiny
    inject_lora(model, ["q_proj"], r=2, alpha=4, dropout=0.1)
    config = json.loads((export_peft(model, tmp_path / "adapter") / "adapter_config.json").read_text())
    assert config["lora_dropout"] == 0.1 and config["r"] == 2 and config["target_modules"] == ["q_proj"]


def test_adapter_save_load_roundtrip(tiny, tmp_path):
    from core.run.models import load

    model, tok = tiny
    inject_lora(model, ["q_proj"], r=2, alpha=4)
    _randomise_b(model)
    save_adapter(model, tmp_path / "a.safetensors")
    other, _ = load("tiny-qwen2")
    inject_lora(other, ["q_proj"], r=2, alpha=4)
    load_adapter(other, tmp_path / "a.safetensors")
    torch.testing.assert_close(other(_ids(tok)).logits, model(_ids(tok)).logits)


def test_strict_miss_names_pattern_and_real_paths(tiny):
    model, _ = tiny
    with pytest.raises(InjectionError) as err:
        inject_lora(model, r"transformer\.h\.\d+\.attn\.c_attn", r=4, alpha=8)
    msg = str(err.value)
    assert r"transformer\.h\.\d+\.attn\.c_attn" in msg
    assert "model.layers.0.self_attn.q_proj" in msg


def test_non_strict_miss_trains_nothing(tiny, caplog):
    model, _ = tiny
    report = inject_lora(model, r"transformer\.h\.\d+\.attn\.c_attn", r=4, alpha=8, strict=False)
    assert report.trainable_params == 0 and report.matched == []
    assert "injected nowhere" in caplog.text


def test_unmerge_restores_base_weights_exactly(tiny):
    model, _ = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inject_lora(model, QWEN_TARGETS, r=4, alpha=8)
    _randomise_b(model)
    for _ in range(3):
        merge_all(model)
        unmerge_all(model)
    after = {n.replace(".base.", "."): p for n, p in model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(after[n], before[n]) for n in before)
