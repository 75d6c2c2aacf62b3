"""Benchmark worker "trainer": transformers.Trainer + peft on the same fixed batches and LoRA initialisation."""
from __future__ import annotations

import tempfile
import time

from benchmarks.common import PeakRSS, batch_hash, batch_stats, info, model_shape, say, setup


def lora_target_names(model, targets) -> list[str]:
    """The module paths the project's injector wraps, in its order (same matching rule as core.run.lora)."""
    from torch import nn

    try:
        from core.run.lora import _matcher

        _, match = _matcher(targets)
    except ImportError:  # same rule, if the private helper is renamed
        targets = list(targets)

        def match(name):
            return any(name == t or name.endswith("." + t) for t in targets)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and match(n)]


def peft_adapter(torch, model, cfg, seed: int) -> tuple:
    """peft's LoRA on the project's targets, starting from exactly the project's adapter: A as the project's injector
    draws it (same seed, same module order), B zero. Returns (peft model, target names, scaling, trainable)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    from core.run.lora import LoRALinear

    names = lora_target_names(model, cfg.lora_targets)
    torch.manual_seed(seed)
    init = {n: LoRALinear(model.get_submodule(n), cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                          cfg.use_rslora).lora_A.detach().clone() for n in names}
    regex = len(cfg.lora_targets) == 1 and any(c in cfg.lora_targets[0] for c in "*[]()|\\^$+?")
    peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          target_modules=cfg.lora_targets[0] if regex else list(cfg.lora_targets),
                          lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", use_rslora=cfg.use_rslora)
    pm = get_peft_model(model, peft_cfg)
    inner = pm.base_model.model
    wrapped = {n for n, m in inner.named_modules() if isinstance(m, LoraLayer)}
    if wrapped != set(names):
        raise SystemExit(f"peft wrapped {sorted(wrapped ^ set(names))[:4]} differently from the project's injector")
    scaling = None
    with torch.no_grad():
        for n in names:
            layer = inner.get_submodule(n)
            layer.lora_A["default"].weight.copy_(init[n])
            layer.lora_B["default"].weight.zero_()
            scaling = layer.scaling["default"]
    return pm, names, scaling, sum(p.numel() for p in pm.parameters() if p.requires_grad)


def fixed_batches(torch, batches, pad_id: int) -> tuple:
    """The benchmark's batches as a dataset read in order and a collator that pads them as core.run.train.collate
    does; the collator records each batch's hash in the returned list."""
    from core.run.examples import IGNORE

    flat = [e for b in batches for e in b]
    seen_hashes: list[str] = []

    class Examples(torch.utils.data.Dataset):
        def __len__(self):
            return len(flat)

        def __getitem__(self, i):
            return {"input_ids": flat[i].input_ids, "labels": flat[i].labels}

    def pad_collator(features):
        """Right padding: pad id / -100 / attention mask 0 (the same tensors core.run.train.collate builds)."""
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        seen_hashes.append(batch_hash([f["input_ids"] for f in features]))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return Examples(), pad_collator, seen_hashes


def trainer_classes(torch):
    """Trainer reading the dataset in order, and a callback timing every step."""
    from transformers import Trainer, TrainerCallback

    class SequentialTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    class Clock(TrainerCallback):
        begin = None
        begins: list = []
        ends: list = []

        def on_train_begin(self, a, state, control, **kw):
            Clock.begin = time.perf_counter()

        def on_step_begin(self, a, state, control, **kw):
            Clock.begins.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            Clock.ends.append(time.perf_counter())

    return SequentialTrainer, Clock


def worker_trainer(args) -> dict:
    env = setup(args)
    torch, model, cfg, batches, tok = env["torch"], env["model"], env["cfg"], env["batches"], env["tok"]
    from transformers import TrainingArguments

    shape = model_shape(model)
    pm, names, scaling, trainable = peft_adapter(torch, model, cfg, args.seed)
    dataset, pad_collator, seen_hashes = fixed_batches(torch, batches, tok.pad_token_id)
    SequentialTrainer, Clock = trainer_classes(torch)
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as out_dir:
        targs = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=args.batch_size, max_steps=len(batches),
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=cfg.grad_clip, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
            seed=args.seed, remove_unused_columns=False, train_sampling_strategy="sequential",
            dataloader_num_workers=0, dataloader_pin_memory=False, label_names=["labels"],
            disable_tqdm=args.no_progress,
        )
        trainer = SequentialTrainer(model=pm, args=targs, train_dataset=dataset, data_collator=pad_collator,
                                    callbacks=[Clock()])
        say(f"trainer: transformers.Trainer + peft, {len(batches)} steps of batch {args.batch_size}, "
            f"optim={getattr(targs.optim, 'value', targs.optim)}, {torch.get_num_threads()} torch threads")
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            trainer.train()
        wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    optim = getattr(targs.optim, "value", targs.optim)
    steady = (Clock.ends[-1] - Clock.begins[1]) if len(Clock.begins) > 1 else None
    return dict(path=f"transformers.Trainer + peft ({optim})", steady_s=steady, losses=losses, step_hashes=seen_hashes,
                wall_s=wall, loop_s=(Clock.ends[-1] - Clock.begin) if Clock.ends else wall,
                memory=mem.to_dict(), shape=shape, lora={"matched": len(names), "trainable_params": trainable,
                                                          "scaling": scaling},
                load_s=env["load_s"], stats=batch_stats(batches), **info(torch))
