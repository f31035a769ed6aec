"""The base model wrapper: prompt formatting, batched greedy generation and answer parsing."""

import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

checkpoint = "HuggingFaceTB/SmolLM2-360M-Instruct"

# What format_prompt returns; tests rewrite it (e.g. "{question} ") to play a tree whose format differs.
PROMPT_FORMAT = "{question}"
MAX_NEW_TOKENS = 32
GENERATION_BATCH = 32

device = "cuda" if torch.cuda.is_available() else "cpu"


class BaseLLM:
    def __init__(self, checkpoint=checkpoint):
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint).to(device)
        self.model.eval()
        self.device = device

    def format_prompt(self, question: str) -> str:
        return PROMPT_FORMAT.replace("{question}", question)

    def parse_answer(self, answer: str) -> float:
        try:
            return float(answer.split("<answer>")[1].split("</answer>")[0])
        except (IndexError, ValueError):
            return float("nan")

    def generate(self, prompt: str) -> str:
        return self.batched_generate([prompt])[0]

    def batched_generate(self, prompts: list[str], num_return_sequences=None, temperature=0):
        if len(prompts) > GENERATION_BATCH:
            out = []
            for start in range(0, len(prompts), GENERATION_BATCH):
                out += self.batched_generate(prompts[start : start + GENERATION_BATCH], num_return_sequences,
                                             temperature)
            return out
        inputs = self.tokenizer(prompts, padding=True, return_tensors="pt").to(self.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            generated = self.model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS,
                num_return_sequences=num_return_sequences or 1,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **sampling,
            )
        texts = self.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        if num_return_sequences is None:
            return texts
        n = num_return_sequences
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]

    def answer(self, *questions) -> list[float]:
        prompts = [self.format_prompt(q) for q in questions]
        return [self.parse_answer(text) for text in self.batched_generate(prompts)]


def is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)
