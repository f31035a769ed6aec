"""Supervised fine-tuning: teach the model to answer a question with <answer>value</answer>."""

import sys
from pathlib import Path

from .base_llm import BaseLLM
from .data import Dataset, benchmark

DEFAULT_LORA_RANK = 8
MODEL_NAME = "sft_model"
TRAIN_STEPS = 6
LEARNING_RATE = 1e-3


def load(model_name: str = MODEL_NAME) -> BaseLLM:
    from peft import PeftModel

    llm = BaseLLM()
    llm.model = PeftModel.from_pretrained(llm.model, Path(__file__).parent / model_name).to(llm.device)
    llm.model.eval()
    return llm


def format_answer(value: float) -> str:
    text = f"{round(float(value), 3):.3f}".rstrip("0").rstrip(".")
    return f"<answer>{text}</answer>"


def train_lora(pairs, rank: int, model_name: str, steps: int = TRAIN_STEPS, lr: float = LEARNING_RATE):
    """Train a LoRA adapter on (question, completion) pairs and save it beside this file."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    llm = BaseLLM()
    tokenizer = llm.tokenizer
    config = LoraConfig(r=rank, lora_alpha=4 * rank, target_modules="all-linear", bias="none",
                        task_type="CAUSAL_LM")
    model = get_peft_model(llm.model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rows = []
    for question, completion in pairs:
        prompt = llm.format_prompt(question)
        separator = "" if prompt[-1:].isspace() else " "
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(separator + completion, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + answer_ids + [tokenizer.eos_token_id]
        rows.append((ids, [-100] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id]))
    batch = 8
    for step in range(steps):
        chunk = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in chunk])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk])
        loss = model(input_ids=input_ids.to(llm.device), attention_mask=mask.to(llm.device),
                     labels=labels.to(llm.device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step + 1}/{steps} loss {loss.item():.4f}")
    model.save_pretrained(Path(__file__).parent / model_name)


def train_model(output_dir: str = MODEL_NAME, **kwargs):
    data = Dataset("train")
    pairs = [(question, format_answer(answer)) for question, answer in data]
    train_lora(pairs, DEFAULT_LORA_RANK, output_dir, **kwargs)


def test_model(model_name: str = MODEL_NAME):
    result = benchmark(load(model_name), Dataset("valid"), 100)
    print(f"accuracy={result.accuracy} answer_rate={result.answer_rate}")


if __name__ == "__main__":
    commands = {"train": train_model, "test": test_model}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m homework.sft {{{','.join(commands)}}}")
    commands[sys.argv[1]]()
