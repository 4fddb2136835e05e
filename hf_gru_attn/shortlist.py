"""Building a lexical shortlist ([`GruAttnShortlist`]) from a tokenized parallel corpus by co-occurrence counts.

Method (Jean et al. 2015, Sec. 3.2, with co-occurrence counts in place of a word-alignment dictionary; Marian's
`--shortlist` takes its lexical table from fast_align instead): over the sentence pairs, `c(s)` counts the pairs whose
source holds token `s`, `c(s, t)` the pairs that hold `s` in the source and `t` in the target (each token once per
pair). The candidates of source token `s` are the `top_k` targets with the highest `p(t | s) = c(s, t) / c(s)` (ties:
the more frequent target first), taken among the targets that are not candidates anyway: the `num_frequent` most
frequent target tokens (by token count) and the special tokens.
"""

from collections.abc import Iterable, Sequence

import torch

from .modeling_gru_attn import GruAttnShortlist


def build_shortlist(
    source_ids: Iterable[Sequence[int]],
    target_ids: Iterable[Sequence[int]],
    vocab_size: int,
    decoder_vocab_size: int,
    top_k: int = 10,
    num_frequent: int = 100,
    special_ids: Sequence[int] = (),
) -> GruAttnShortlist:
    """
    Counts source/target co-occurrence over sentence pairs and returns the shortlist table (see the module docstring).

    Args:
        source_ids (`Iterable[Sequence[int]]`), target_ids (`Iterable[Sequence[int]]`): token ids of the aligned
            source and target sentences (as the model's tokenizer gives them, special tokens included).
        vocab_size (`int`), decoder_vocab_size (`int`): the model's source and target vocabulary sizes.
        top_k (`int`, *optional*, defaults to 10): candidates kept per source token.
        num_frequent (`int`, *optional*, defaults to 100): most frequent target tokens that are always candidates.
        special_ids (`Sequence[int]`, *optional*): special token ids; never counted as source tokens, always
            candidates.

    Returns:
        [`GruAttnShortlist`]: `top_targets` `(vocab_size, top_k)` (-1 where a source token has fewer candidates,
        e.g. one never seen), `frequent_targets` = `special_ids` and then the `num_frequent` most frequent targets.

    Raises:
        ValueError: if `top_k` or `num_frequent` is negative, the corpora differ in length or are empty, or an id is
            outside its vocabulary.
    """
    if top_k < 0 or num_frequent < 0:
        raise ValueError(f"top_k and num_frequent must be >= 0, got {top_k} and {num_frequent}.")
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    pair_keys, source_rows, target_tokens, num_pairs = [], [], [], 0
    for source, target in zip(source_ids, target_ids, strict=True):
        source = torch.as_tensor(source, dtype=torch.long)
        target = torch.as_tensor(target, dtype=torch.long)
        for name, ids, size in (("source", source, vocab_size), ("target", target, decoder_vocab_size)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= size):
                raise ValueError(f"Pair {num_pairs}: a {name} id is outside [0, {size}); wrong tokenizer?")
        num_pairs += 1
        target_tokens.append(target)
        source = source[~torch.isin(source, specials)].unique()
        target = target[~torch.isin(target, specials)].unique()
        source_rows.append(source)
        pair_keys.append((source[:, None] * decoder_vocab_size + target[None, :]).flatten())
    if num_pairs == 0:
        raise ValueError("No sentence pairs to count: the corpus is empty.")

    target_counts = torch.bincount(torch.cat(target_tokens), minlength=decoder_vocab_size)
    target_counts[specials] = 0
    frequent = target_counts.argsort(descending=True, stable=True)[:num_frequent]
    frequent = frequent[target_counts[frequent] > 0]
    always = torch.cat([specials, frequent])

    keys, pair_counts = torch.cat(pair_keys).unique(return_counts=True)
    sources, targets = keys // decoder_vocab_size, keys % decoder_vocab_size
    keep = ~torch.isin(targets, always)
    sources, targets, pair_counts = sources[keep], targets[keep], pair_counts[keep]
    source_counts = torch.bincount(torch.cat(source_rows), minlength=vocab_size)
    probability = pair_counts / source_counts[sources]
    # Sort by source, then p(t|s) descending, then target frequency descending (stable sorts, last key first).
    order = target_counts[targets].argsort(descending=True, stable=True)
    order = order[probability[order].argsort(descending=True, stable=True)]
    order = order[sources[order].argsort(stable=True)]
    sources, targets = sources[order], targets[order]
    rank = torch.arange(len(sources)) - torch.searchsorted(sources, sources)
    keep = rank < top_k
    top_targets = torch.full((vocab_size, top_k), -1, dtype=torch.long)
    top_targets[sources[keep], rank[keep]] = targets[keep]
    metadata = {
        "method": "co-occurrence p(t|s), Jean et al. 2015 Sec. 3.2", "num_pairs": str(num_pairs),
        "num_frequent": str(len(frequent)),
    }
    return GruAttnShortlist(top_targets, always, decoder_vocab_size, metadata)
