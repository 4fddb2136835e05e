"""`TranslationTrainer` groups training batches by the longer side of each pair (transformers groups by `input_ids`):
the decoder runs one step per target token, so target padding costs as much as real target tokens."""

import torch
from datasets import Dataset
from test_time_budget import collate, tiny_model
from transformers import Seq2SeqTrainingArguments

from hf_gru_attn.training import TranslationTrainer


def test_length_grouped_batches_are_grouped_by_the_longer_side(tmp_path):
    generator = torch.Generator().manual_seed(5)
    pairs = []
    for i in range(256):  # source and target lengths unrelated, as in translation with different word orders
        source_length, target_length = 1 + i % 16, 1 + (7 * i) % 16
        pairs.append({"input_ids": torch.randint(3, 20, (source_length,), generator=generator).tolist(),
                      "labels": torch.randint(3, 20, (target_length,), generator=generator).tolist()})
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, seed=0,
                                    per_device_train_batch_size=16, train_sampling_strategy="group_by_length")
    trainer = TranslationTrainer(model=tiny_model(), args=args, train_dataset=Dataset.from_list(pairs),
                                 data_collator=collate)
    sampler = trainer._get_train_sampler()
    assert sampler.lengths == [max(len(p["input_ids"]), len(p["labels"])) for p in pairs]
    order = list(sampler)
    assert sorted(order) == list(range(256))
    longest = [max(len(pairs[i]["labels"]) for i in order[start:start + 16]) for start in range(0, 256, 16)]
    by_source = [max(len(pairs[i]["labels"]) for i in range(start, start + 16)) for start in range(0, 256, 16)]
    assert sum(longest) < sum(by_source)  # fewer padded target steps than batches of mixed target lengths
