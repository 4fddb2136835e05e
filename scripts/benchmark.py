#!/usr/bin/env python
"""Speed benchmark: the seed's sample model against `GruAttnForConditionalGeneration`, in one process.

Every section times its contenders interleaved (A B C A B C ...) after warm-up and reports the median of the repeats,
so that load from other processes hits all of them alike; compare the ratios, not the absolute numbers, on a shared
machine. There `--threads 1` also gives steadier numbers: with one thread per core, every parallel op waits until all
its threads are scheduled, which other processes' load delays. Sections:

- training: target tokens/s of one step (forward, cross-entropy, backward, fused AdamW step) in fp32 and under bf16
  autocast, for the seed (`scripts/seed_reference.py`), our model in the seed converter's architecture
  (unidirectional one-layer GRUs, additive attention, `decoder_init="last"`, untied output layer, no dropout) and our
  model with the `GruAttnConfig()` defaults (the default recipe), all with the seed's vocabulary, embedding and
  hidden sizes; with `--compile` also the seed converter's architecture under `torch.compile` (inductor), whose
  first step, the compile, is timed on its own. Utilisation is the model's FLOPs (worked out from the shapes,
  backward = 2 x forward) per second over the matmul peak, which every timed section measures among its contenders
  (a `--matmul_size` square fp32 `mm`, or for bf16 an `F.linear`, the layout `nn.Linear` uses), so that it sees the
  same load;
- bf16 loss: mean training loss over the last 5 of `--loss_check_steps` steps under bf16 autocast against fp32, from
  the same initial weights and batches, on a copy task over 64 token ids with a `--loss_check_width_divisor` times
  narrower model (bf16 steps are slow on CPUs without native bf16 matmuls);
- generation: sentences/s of the seed's greedy loop against `generate()` greedy and beam search, with fp32 models
  and with models in bf16 (ours loaded by `from_pretrained(..., dtype=torch.bfloat16)`). The EOS logit is pushed
  down so that every sentence runs the full `--target_length` steps, as the seed's loop does;
- greedy batches: the seed's greedy loop against our greedy `generate()` (seed converter's architecture) at each of
  `--greedy_batch_sizes`, fp32 (and ours in bf16, `from_pretrained(..., dtype=torch.bfloat16)`, when `--bf16`);
- shortlist: sentences/s of the seed's greedy loop against our greedy `generate()` without and with the vocabulary
  shortlist and beam search with it, at each of `--shortlist_batch_sizes`, for the seed converter's architecture. The
  random model has no real table, so a synthetic one gives every batch `--shortlist_candidates` candidate target
  tokens (special tokens included): by default the mean sizes that the table of `scripts/build_shortlist.py`
  (top 10 per source token, 100 frequent) gives for batches of 32 and 64 Multi30k validation sentences with the
  trained default-recipe model's tokenizer (8000 tokens);
- decode scaling: greedy time per sentence for each of `--decode_source_lengths` (fixed output length), which grows
  linearly with the source length when nothing per step is quadratic; the slope columns should agree;
- peak memory: the highest sum of live tensor allocations during one training step, greedy or beam decode, above
  what was allocated before it (parameters, optimizer state), from the PyTorch profiler's allocation events;
- ONNX Runtime: sentences/s of our model in the seed converter's architecture, exported with
  `hf_gru_attn.onnx_export` and decoded by `hf_gru_attn.onnx_decoding` (`generate()`: greedy in its NumPy loop, beam
  search in transformers'; as many threads as torch), against our eager `generate()`, at each of `--onnx_batch_sizes`;
  skipped with a message when `onnx` or `onnxruntime` is not installed.

Example:
    python scripts/benchmark.py                 # full sizes (about 20 minutes on 2 cores without native bf16)
    python scripts/benchmark.py --bf16 False    # fp32 only
    python scripts/benchmark.py --compile       # adds the torch.compile training row (compiling takes minutes)
    python scripts/benchmark.py --quick --json  # tiny sizes, JSON on stdout (used by the tests)
"""

import copy
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration, GruAttnShortlist
from hf_gru_attn.decoding_dtype import cpu_isa


BOS, EOS = 1, 2
QUICK_SIZES = {
    "vocab_size": 200, "embedding_size": 16, "hidden_size": 32, "batch_size": 4, "target_length": 5,
    "source_length": 6, "decode_source_lengths": [4, 8, 16], "matmul_size": 128, "warmup": 1, "repeats": 5,
    "greedy_batch_sizes": [2, 4], "loss_check_steps": 10, "onnx_batch_sizes": [2, 4],
    "shortlist_batch_sizes": [4, 8], "shortlist_candidates": [50, 60],
}


@dataclass
class BenchmarkArguments:
    """Sizes, repeats and output format."""

    vocab_size: int = field(default=8000, metadata={"help": "Source and target vocabulary size."})
    embedding_size: int = field(default=256, metadata={"help": "Token embedding size."})
    hidden_size: int = field(default=512, metadata={"help": "GRU state size (decoder; encoder outputs too)."})
    batch_size: int = field(default=64, metadata={"help": "Sentences per batch."})
    target_length: int = field(default=14, metadata={"help": "Target tokens per sentence (trained or generated)."})
    source_length: int = field(default=14, metadata={"help": "Source tokens per sentence."})
    num_beams: int = field(default=5, metadata={"help": "Beam size of the beam-search rows."})
    decode_source_lengths: list[int] = field(
        default_factory=lambda: [10, 50, 200], metadata={"help": "Source lengths of the decode-scaling section."}
    )
    greedy_batch_sizes: list[int] = field(
        default_factory=lambda: [32, 64], metadata={"help": "Batch sizes of the greedy-batches section."}
    )
    onnx_batch_sizes: list[int] = field(
        default_factory=lambda: [32, 64], metadata={"help": "Batch sizes of the ONNX Runtime sections."}
    )
    shortlist_batch_sizes: list[int] = field(
        default_factory=lambda: [32, 64], metadata={"help": "Batch sizes of the shortlist section."}
    )
    shortlist_candidates: list[int] = field(
        default_factory=lambda: [1032, 1431],
        metadata={"help": "Candidate target tokens per batch in the shortlist section, one per batch size (default: "
                  "what the Multi30k table gives for 32 and 64 sentences)."},
    )
    matmul_size: int = field(default=2048, metadata={"help": "Side of the square matmul that gives the peak."})
    warmup: int = field(default=1, metadata={"help": "Untimed runs of every contender before timing."})
    repeats: int = field(default=5, metadata={"help": "Timed runs of every contender (the median is reported)."})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads; default: torch's choice."})
    bf16: bool = field(default=True, metadata={"help": "Also run the bf16 rows (slow on CPUs without bf16 units)."})
    compile: bool = field(
        default=False, metadata={"help": "Also time our model's fp32 training step under torch.compile (opt-in)."}
    )
    loss_check_steps: int = field(default=50, metadata={"help": "Training steps of the bf16-vs-fp32 loss check."})
    loss_check_width_divisor: int = field(
        default=4, metadata={"help": "The loss check divides vocabulary, embedding and hidden sizes by this."}
    )
    quick: bool = field(default=False, metadata={"help": "Tiny sizes (for tests): overrides the sizes above."})
    json: bool = field(default=False, metadata={"help": "Print the results as JSON instead of a table."})
    seed: int = field(default=0, metadata={"help": "Random seed for weights and data."})

    def __post_init__(self):
        if self.quick:
            for name, value in QUICK_SIZES.items():
                setattr(self, name, value)
        if self.repeats < 5:
            raise ValueError(f"--repeats must be at least 5 (medians of >= 5 runs), got {self.repeats}.")
        if not self.greedy_batch_sizes or min(self.greedy_batch_sizes) < 1:
            raise ValueError(f"--greedy_batch_sizes must be positive, got {self.greedy_batch_sizes}.")
        for name in ("vocab_size", "embedding_size", "hidden_size", "batch_size", "target_length", "source_length",
                     "num_beams", "matmul_size", "loss_check_steps", "loss_check_width_divisor"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if not self.onnx_batch_sizes or min(self.onnx_batch_sizes) < 1:
            raise ValueError(f"--onnx_batch_sizes must be positive, got {self.onnx_batch_sizes}.")
        if len(self.shortlist_candidates) != len(self.shortlist_batch_sizes) or not all(
            EOS < size <= self.vocab_size for size in self.shortlist_candidates
        ):
            raise ValueError("--shortlist_candidates needs one size in (EOS, vocab_size] per --shortlist_batch_sizes.")
        if self.vocab_size // self.loss_check_width_divisor <= EOS + 1:
            raise ValueError("--loss_check_width_divisor leaves no room for ordinary tokens in the vocabulary.")


def describe_isa() -> str:
    """The CPU's matrix instruction set for the header, e.g. "AMX (Intel(R) Xeon(R) ..., from /proc/cpuinfo)"."""
    isa = cpu_isa()
    return f"{isa['isa']} ({isa['cpu']}; from {isa['source']}, torch cpu capability {isa['torch_cpu_capability']})"


def load_seed_module():
    """Imports `scripts/seed_reference.py` (the seed's sample model) by path."""
    path = Path(__file__).resolve().parent / "seed_reference.py"
    spec = importlib.util.spec_from_file_location("seed_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_config_for(args: BenchmarkArguments, width_divisor: int = 1) -> GruAttnConfig:
    """Our model in the seed converter's architecture at the benchmark's sizes."""
    hidden_size = args.hidden_size // width_divisor
    return GruAttnConfig(
        vocab_size=args.vocab_size // width_divisor,
        embedding_size=args.embedding_size // width_divisor,
        hidden_size=hidden_size,
        encoder_hidden_size=hidden_size,
        bidirectional_encoder=False,
        attention_type="additive",
        attention_size=hidden_size,
        decoder_init="last",
        tie_word_embeddings=False,
        dropout=0.0,
    )


def default_config_for(args: BenchmarkArguments) -> GruAttnConfig:
    """The default recipe (`GruAttnConfig()` defaults) with the benchmark's vocabulary, embedding and hidden sizes."""
    return GruAttnConfig(
        vocab_size=args.vocab_size, embedding_size=args.embedding_size, hidden_size=args.hidden_size
    )


# ----------------------------------------------------------------------------------------------------------------
# FLOPs worked out from the shapes (one multiply-add = 2 FLOPs; elementwise work not counted)


def model_forward_flops(config: GruAttnConfig, source_length: int, target_length: int, beams: int = 1) -> int:
    """Matmul FLOPs of one forward pass of our model over one sentence (`beams` decoder copies when decoding)."""
    directions = 2 if config.bidirectional_encoder else 1
    encoder_hidden, encoder_out = config.encoder_hidden_size, config.encoder_output_size
    hidden, embedding, vocab = config.hidden_size, config.embedding_size, config.decoder_vocab_size
    encoder = 0
    for layer in range(config.encoder_layers):
        layer_input = embedding if layer == 0 else encoder_out
        encoder += directions * (2 * layer_input * 3 * encoder_hidden + 2 * encoder_hidden * 3 * encoder_hidden)
    encoder *= source_length
    if config.attention_type == "additive":
        keys = 2 * source_length * encoder_out * config.attention_size
        query = 2 * hidden * config.attention_size
        scores = 2 * source_length * config.attention_size
    else:
        keys = 2 * source_length * encoder_out * hidden if config.attention_type == "general" else 0
        query, scores = 0, 2 * source_length * hidden
    bridge = 2 * encoder_out * hidden * config.decoder_layers if config.decoder_init == "bridge" else 0
    readout_size = hidden + encoder_out + embedding
    if config.tie_word_embeddings:
        output_layer = 2 * readout_size * embedding + 2 * embedding * vocab
    else:
        output_layer = 2 * readout_size * vocab
    gru = 2 * (embedding + encoder_out) * 3 * hidden + 2 * hidden * 3 * hidden
    gru += (config.decoder_layers - 1) * 2 * (2 * hidden * 3 * hidden)
    per_step = query + scores + 2 * source_length * encoder_out + gru + output_layer
    return encoder + beams * (bridge + keys + target_length * per_step)


def seed_forward_flops(args: BenchmarkArguments, source_length: int, target_length: int) -> int:
    """Matmul FLOPs of one forward pass of the seed's sample model over one sentence."""
    embedding, hidden, vocab = args.embedding_size, args.hidden_size, args.vocab_size
    encoder = source_length * (2 * embedding * 3 * hidden + 2 * hidden * 3 * hidden)
    attention = 2 * source_length * 2 * hidden * hidden + 2 * source_length * hidden + 2 * source_length * hidden
    gru = 2 * (hidden + embedding) * 3 * hidden + 2 * hidden * 3 * hidden
    output_layer = 2 * (2 * hidden + embedding) * vocab
    return encoder + target_length * (attention + gru + output_layer)


# ----------------------------------------------------------------------------------------------------------------
# Timing helpers


def interleaved_medians(contenders: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Runs every contender `warmup` times, then `repeats` rounds of one run each in turn; returns median seconds."""
    for _ in range(warmup):
        for run in contenders.values():
            run()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_tensor_memory(run: Callable[[], object]) -> int:
    """Highest sum of live CPU tensor allocations (bytes) during `run()`, above what was allocated before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def matmul_runner(size: int, dtype: torch.dtype) -> tuple[str, Callable[[], object]]:
    """The matmul-peak contender: a `size`-square fp32 `mm`, or a bf16 `F.linear` (`x @ w.T`, `nn.Linear`'s layout)."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    if dtype == torch.bfloat16:
        a, b = a.bfloat16(), b.bfloat16()
        return f"matmul peak: bf16 linear {size}^2", lambda: F.linear(a, b)
    return f"matmul peak: fp32 mm {size}^2", lambda: torch.mm(a, b)


def add_peak_row(report, section: str, name: str, seconds: float, size: int) -> float:
    """Records the section's matmul peak and returns it in GFLOP/s."""
    gflops = 2 * size**3 / seconds / 1e9
    report.add(section, name, gflops=gflops)
    return gflops


# ----------------------------------------------------------------------------------------------------------------
# Contenders


class TrainingStep:
    """One training step (forward, cross-entropy, backward, fused AdamW step) of the seed or of our model."""

    def __init__(self, model: torch.nn.Module, is_seed: bool, source: torch.Tensor, labels: torch.Tensor,
                 autocast: bool, learning_rate: float = 1e-3):
        self.model, self.is_seed, self.source, self.labels, self.autocast = model, is_seed, source, labels, autocast
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, fused=True)
        self.model.train()

    def loss(self, source: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean token cross-entropy of predicting `labels` `(batch, target_length)` from `source`."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            if self.is_seed:
                decoder_tokens = torch.cat([torch.full_like(labels[:, :1], BOS), labels], dim=1)
                logits = self.model(source, decoder_tokens)
                return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
            return self.model(input_ids=source, labels=labels).loss

    def step(self, source: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> float:
        """One update on the given batch (default: the batch given at construction); returns the loss."""
        loss = self.loss(self.source if source is None else source, self.labels if labels is None else labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()


def never_emit_eos(model: GruAttnForConditionalGeneration):
    """Pushes the EOS logit down, so that every generated sentence runs to the length limit like the seed's loop."""
    with torch.no_grad():
        model.lm_head.bias[EOS] = -1e4


def seed_and_ours(args, seed_module, config: GruAttnConfig):
    """The seed model and ours (`config`), in eval mode, seeded by `args.seed`; ours never emits EOS."""
    torch.manual_seed(args.seed)
    seed = seed_module.Seq2Seq(args.vocab_size, args.embedding_size, args.hidden_size).eval()
    model = GruAttnForConditionalGeneration(config).eval()
    never_emit_eos(model)
    return seed, model


def generate_runner(model: GruAttnForConditionalGeneration, source: torch.Tensor, new_tokens: int, beams: int,
                    use_shortlist: bool = False):
    """`generate()` with `beams` beams (1: greedy) and exactly `new_tokens` decoder steps."""

    def run():
        with torch.no_grad():
            return model.generate(
                source, max_new_tokens=new_tokens, num_beams=beams, do_sample=False, max_length=None,
                **({"use_shortlist": True} if use_shortlist else {}),  # ONNX Runtime models take no such flag
            )

    return run


def seed_greedy_runner(seed: torch.nn.Module, source: torch.Tensor, new_tokens: int):
    """The seed's bare greedy loop over `new_tokens` steps."""
    return lambda: seed.greedy(source, BOS, new_tokens)


def random_tokens(generator: torch.Generator, vocab_size: int, *shape: int) -> torch.Tensor:
    """Ids of ordinary tokens (no padding, BOS or EOS)."""
    return torch.randint(EOS + 1, vocab_size, shape, generator=generator)


# ----------------------------------------------------------------------------------------------------------------
# Sections


class Report:
    """Collects the result rows and the target checks."""

    def __init__(self):
        self.rows: list[dict] = []
        self.targets: list[dict] = []

    def add(self, section: str, name: str, **values):
        """Adds the row `name` of `section` with its measured `values`."""
        self.rows.append({"section": section, "name": name, **values})

    def get(self, section: str, name: str) -> dict:
        """The row `name` of `section`."""
        return next(row for row in self.rows if row["section"] == section and row["name"] == name)

    def target(self, name: str, value: float, target: float, higher_is_better: bool = True):
        """Records whether `value` meets `target` (at least it, or at most it when lower is better)."""
        met = value >= target if higher_is_better else value <= target
        self.targets.append({"name": name, "value": value, "target": target, "met": met})


def bench_training(args, report, seed_module, autocast: bool, configs: dict[str, GruAttnConfig]):
    """Training throughput of the seed and of our models, fp32 or under bf16 autocast, interleaved."""
    section = "train_bf16_autocast" if autocast else "train_fp32"
    generator = torch.Generator().manual_seed(args.seed)
    source = random_tokens(generator, args.vocab_size, args.batch_size, args.source_length)
    labels = random_tokens(generator, args.vocab_size, args.batch_size, args.target_length)
    torch.manual_seed(args.seed)
    trainers = {"seed": TrainingStep(seed_module.Seq2Seq(args.vocab_size, args.embedding_size, args.hidden_size),
                                True, source, labels, autocast)}
    for name, config in configs.items():
        trainers[name] = TrainingStep(GruAttnForConditionalGeneration(config), False, source, labels, autocast)
    compile_seconds = None
    if args.compile and not autocast:
        compiled = torch.compile(GruAttnForConditionalGeneration(configs["ours"]))
        trainers["ours compiled"] = TrainingStep(compiled, False, source, labels, autocast)
        start = time.perf_counter()
        trainers["ours compiled"].step()  # compiles forward and backward
        compile_seconds = time.perf_counter() - start
    peak_name, peak_run = matmul_runner(args.matmul_size, torch.bfloat16 if autocast else torch.float32)
    contenders = {name: trainer.step for name, trainer in trainers.items()}
    seconds = interleaved_medians({**contenders, peak_name: peak_run}, args.warmup, args.repeats)
    peak = add_peak_row(report, section, peak_name, seconds.pop(peak_name), args.matmul_size)
    tokens = args.batch_size * args.target_length
    for name, value in seconds.items():
        if name == "seed":
            flops = 3 * seed_forward_flops(args, args.source_length, args.target_length)
        else:
            config = configs["ours" if name == "ours compiled" else name]
            flops = 3 * model_forward_flops(config, args.source_length, args.target_length)
        flops_per_token = flops / args.target_length
        extra = {"compile_seconds": compile_seconds} if name == "ours compiled" else {}
        report.add(section, name, ms=value * 1e3, throughput=tokens / value, unit="target tokens/s",
                   mflop_per_token=flops_per_token / 1e6,
                   utilisation_pct=100 * tokens / value * flops_per_token / (peak * 1e9), **extra)
    return trainers


def bench_loss_check(args, report):
    """bf16-autocast training loss against fp32 from the same start, on a copy task, at reduced width."""
    config = seed_config_for(args, args.loss_check_width_divisor)
    # Sentences drawn from few ids, so that the loss falls well below log(vocab_size) within the check's steps.
    vocabulary = min(config.vocab_size, EOS + 1 + 64)
    torch.manual_seed(args.seed)
    fp32_model = GruAttnForConditionalGeneration(config)
    bf16_model = copy.deepcopy(fp32_model)
    losses = {}
    for name, model, autocast in (("fp32", fp32_model, False), ("bf16_autocast", bf16_model, True)):
        generator = torch.Generator().manual_seed(args.seed)
        trainer = TrainingStep(model, False, None, None, autocast, learning_rate=3e-3)
        steps = []
        for _ in range(args.loss_check_steps):
            source = random_tokens(generator, vocabulary, args.batch_size // 2 or 1, args.target_length)
            steps.append(trainer.step(source, source))
        losses[name] = statistics.mean(steps[-5:])
    relative = abs(losses["bf16_autocast"] - losses["fp32"]) / losses["fp32"]
    for name, value in losses.items():
        report.add("bf16_loss", name, loss=value, steps=args.loss_check_steps,
                   relative_difference_pct=100 * relative if name != "fp32" else 0.0)
    report.target("bf16 autocast loss vs fp32 after the loss-check steps (%)", 100 * relative, 1.0,
                  higher_is_better=False)


def bench_generation(args, report, seed_module, dtype: torch.dtype, configs: dict[str, GruAttnConfig]):
    """Sentences/s of the seed's greedy loop and of our generate() (greedy and beam), interleaved."""
    section = "generate_bf16" if dtype == torch.bfloat16 else "generate_fp32"
    generator = torch.Generator().manual_seed(args.seed)
    source = random_tokens(generator, args.vocab_size, args.batch_size, args.source_length)
    torch.manual_seed(args.seed)
    seed = seed_module.Seq2Seq(args.vocab_size, args.embedding_size, args.hidden_size).eval().to(dtype)
    contenders = {"seed greedy loop": seed_greedy_runner(seed, source, args.target_length)}
    models = {}
    for name, config in configs.items():
        model = GruAttnForConditionalGeneration(config)
        never_emit_eos(model)
        if dtype == torch.bfloat16:
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                model = GruAttnForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16)
        models[name] = model.eval()
        contenders[f"{name} greedy"] = generate_runner(model, source, args.target_length, 1)
        contenders[f"{name} beam{args.num_beams}"] = generate_runner(model, source, args.target_length,
                                                                       args.num_beams)
    peak_name, peak_run = matmul_runner(args.matmul_size, dtype)
    seconds = interleaved_medians({**contenders, peak_name: peak_run}, args.warmup, args.repeats)
    peak = add_peak_row(report, section, peak_name, seconds.pop(peak_name), args.matmul_size)
    for name, value in seconds.items():
        if name == "seed greedy loop":
            flops = seed_forward_flops(args, args.source_length, args.target_length)
        else:
            model_name, mode = name.rsplit(" ", 1)
            beams = 1 if mode == "greedy" else args.num_beams
            flops = model_forward_flops(configs[model_name], args.source_length, args.target_length, beams)
        report.add(section, name, ms=value * 1e3, throughput=args.batch_size / value, unit="sentences/s",
                   utilisation_pct=100 * args.batch_size / value * flops / (peak * 1e9))
    return seed, models, source


def bench_greedy_batches(args, report, seed_module, config: GruAttnConfig):
    """Sentences/s of the seed's greedy loop and of our greedy generate() at each batch size, interleaved."""
    seed, model = seed_and_ours(args, seed_module, config)
    models = {"ours greedy": model}
    if args.bf16:
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            models["ours greedy bf16"] = GruAttnForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(args.seed)
    contenders = {}
    for batch_size in args.greedy_batch_sizes:
        source = random_tokens(generator, args.vocab_size, batch_size, args.source_length)
        contenders[f"seed greedy loop B={batch_size}"] = seed_greedy_runner(seed, source, args.target_length)
        for name, each in models.items():
            contenders[f"{name} B={batch_size}"] = generate_runner(each.eval(), source, args.target_length, 1)
    seconds = interleaved_medians(contenders, args.warmup, args.repeats)
    for batch_size in args.greedy_batch_sizes:
        seed_seconds = seconds[f"seed greedy loop B={batch_size}"]
        for name in ("seed greedy loop", *models):
            value = seconds[f"{name} B={batch_size}"]
            report.add("greedy_batches", f"{name} B={batch_size}", ms=value * 1e3,
                       sentences_per_s=batch_size / value, vs_seed_loop=seed_seconds / value)
        report.target(f"greedy fp32 batch {batch_size}: ours / seed loop fp32",
                      seed_seconds / seconds[f"ours greedy B={batch_size}"], 1.4)


def synthetic_shortlist(vocab_size: int, num_candidates: int, generator: torch.Generator) -> GruAttnShortlist:
    """A table whose candidate set is the special tokens and random other targets, `num_candidates` in all, for
    every batch (no per-source candidates, so the size does not depend on the random source)."""
    others = torch.randperm(vocab_size - (EOS + 1), generator=generator)[: num_candidates - (EOS + 1)] + EOS + 1
    always = torch.cat([torch.arange(EOS + 1), others])
    return GruAttnShortlist(torch.full((vocab_size, 1), -1), always, vocab_size)


def bench_shortlist(args, report, seed_module, config: GruAttnConfig):
    """Seed greedy loop against our greedy without and with the shortlist and beam search with it, per batch size."""
    seed, model = seed_and_ours(args, seed_module, config)
    generator = torch.Generator().manual_seed(args.seed)
    for batch_size, num_candidates in zip(args.shortlist_batch_sizes, args.shortlist_candidates):
        section = f"shortlist_batch{batch_size}"
        model.set_shortlist(synthetic_shortlist(args.vocab_size, num_candidates, generator))
        source = random_tokens(generator, args.vocab_size, batch_size, args.source_length)
        beam = f"ours beam{args.num_beams} shortlist"
        contenders = {
            "seed greedy loop": seed_greedy_runner(seed, source, args.target_length),
            "ours greedy": generate_runner(model, source, args.target_length, 1),
            "ours greedy shortlist": generate_runner(model, source, args.target_length, 1, use_shortlist=True),
            beam: generate_runner(model, source, args.target_length, args.num_beams, use_shortlist=True),
        }
        peak_name, peak_run = matmul_runner(args.matmul_size, torch.float32)
        seconds = interleaved_medians({**contenders, peak_name: peak_run}, args.warmup, args.repeats)
        peak = add_peak_row(report, section, peak_name, seconds.pop(peak_name), args.matmul_size)
        shortlisted = GruAttnConfig(**{**config.to_dict(), "decoder_vocab_size": num_candidates})
        for name, value in seconds.items():
            if name == "seed greedy loop":
                flops = seed_forward_flops(args, args.source_length, args.target_length)
            else:
                beams = args.num_beams if "beam" in name else 1
                flops = model_forward_flops(shortlisted if "shortlist" in name else config, args.source_length,
                                            args.target_length, beams)
            report.add(section, name, ms=value * 1e3, throughput=batch_size / value, unit="sentences/s",
                       utilisation_pct=100 * batch_size / value * flops / (peak * 1e9),
                       candidates=num_candidates if "shortlist" in name else args.vocab_size)
        rows = {row["name"]: row.get("throughput") for row in report.rows if row["section"] == section}
        report.target(f"batch {batch_size}: ours greedy shortlist / seed loop",
                      rows["ours greedy shortlist"] / rows["seed greedy loop"], 3.0)
        report.target(f"batch {batch_size}: {beam} / seed greedy loop", rows[beam] / rows["seed greedy loop"], 1.0)


def bench_decode_scaling(args, report, seed_module, config: GruAttnConfig):
    """Greedy decode time per sentence against the source length (fixed output length), interleaved."""
    seed, model = seed_and_ours(args, seed_module, config)
    generator = torch.Generator().manual_seed(args.seed)
    contenders = {}
    for length in args.decode_source_lengths:
        source = random_tokens(generator, args.vocab_size, args.batch_size, length)
        contenders[f"ours S={length}"] = generate_runner(model, source, args.target_length, 1)
        contenders[f"seed S={length}"] = seed_greedy_runner(seed, source, args.target_length)
    seconds = interleaved_medians(contenders, args.warmup, args.repeats)
    lengths = args.decode_source_lengths
    for who in ("ours", "seed"):
        per_sentence = [seconds[f"{who} S={length}"] / args.batch_size * 1e3 for length in lengths]
        for index, length in enumerate(lengths):
            slope = None
            if index > 0:
                slope = (per_sentence[index] - per_sentence[index - 1]) / (length - lengths[index - 1]) * 1e3
            report.add("decode_scaling", f"{who} S={length}", ms_per_sentence=per_sentence[index],
                       us_per_sentence_per_extra_source_token=slope)


def bench_memory(args, report, trainers, seed, models, source):
    """Peak tensor memory of one training step (fp32) and of one greedy and beam decode."""
    for name, trainer in trainers.items():
        report.add("peak_memory", f"train step: {name}", mb=peak_tensor_memory(trainer.step) / 2**20)
    report.add("peak_memory", "greedy: seed loop",
               mb=peak_tensor_memory(seed_greedy_runner(seed, source, args.target_length)) / 2**20)
    for name, model in models.items():
        for beams in (1, args.num_beams):
            label = "greedy" if beams == 1 else f"beam{beams}"
            run = generate_runner(model, source, args.target_length, beams)
            report.add("peak_memory", f"{label}: {name}", mb=peak_tensor_memory(run) / 2**20)


def bench_onnx(args, report, config: GruAttnConfig):
    """Sentences/s of ONNX Runtime greedy and beam search against our eager generate(), per batch size, interleaved."""
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        print("ONNX Runtime sections skipped: install onnx and onnxruntime (pip install -e '.[onnx]').",
              file=sys.stderr)
        return
    from hf_gru_attn.onnx_decoding import GruAttnOnnxForConditionalGeneration
    from hf_gru_attn.onnx_export import export_onnx

    torch.manual_seed(args.seed)
    model = GruAttnForConditionalGeneration(config).eval()
    never_emit_eos(model)
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(model, folder)
        onnx_model = GruAttnOnnxForConditionalGeneration.from_pretrained(folder)
    generator = torch.Generator().manual_seed(args.seed)
    for batch_size in args.onnx_batch_sizes:
        section = f"onnx_runtime_batch{batch_size}"
        source = random_tokens(generator, args.vocab_size, batch_size, args.source_length)
        contenders = {}
        for mode, beams in (("greedy", 1), (f"beam{args.num_beams}", args.num_beams)):
            contenders[f"eager {mode}"] = generate_runner(model, source, args.target_length, beams)
            contenders[f"onnx runtime {mode}"] = generate_runner(onnx_model, source, args.target_length, beams)
        peak_name, peak_run = matmul_runner(args.matmul_size, torch.float32)
        seconds = interleaved_medians({**contenders, peak_name: peak_run}, args.warmup, args.repeats)
        peak = add_peak_row(report, section, peak_name, seconds.pop(peak_name), args.matmul_size)
        for name, value in seconds.items():
            beams = 1 if name.endswith("greedy") else args.num_beams
            flops = model_forward_flops(config, args.source_length, args.target_length, beams)
            report.add(section, name, ms=value * 1e3, throughput=batch_size / value, unit="sentences/s",
                       utilisation_pct=100 * batch_size / value * flops / (peak * 1e9))
        report.target(f"onnx runtime greedy / eager greedy, batch {batch_size}",
                      seconds["eager greedy"] / seconds["onnx runtime greedy"], 1.5)


def check_targets(args, report):
    """The issue's targets, for the seed converter's architecture (`ours`) against the seed."""
    train = {row["name"]: row for row in report.rows if row["section"] == "train_fp32"}
    report.target("train fp32: ours / seed", train["ours"]["throughput"] / train["seed"]["throughput"], 2.0)
    report.target("train fp32: ours utilisation of the fp32 matmul peak (%)", train["ours"]["utilisation_pct"], 70.0)
    generate = {row["name"]: row for row in report.rows if row["section"] == "generate_fp32"}
    seed_greedy = generate["seed greedy loop"]["throughput"]
    report.target("greedy fp32: ours / seed loop fp32", generate["ours greedy"]["throughput"] / seed_greedy, 1.4)
    beam = f"ours beam{args.num_beams}"
    report.target(f"{beam} fp32 / ours greedy fp32",
                  generate[beam]["throughput"] / generate["ours greedy"]["throughput"], 1 / 3)
    if args.bf16:
        train16 = {row["name"]: row for row in report.rows if row["section"] == "train_bf16_autocast"}
        report.target("train bf16 autocast: ours / seed fp32",
                      train16["ours"]["throughput"] / train["seed"]["throughput"], 3.5)
        generate16 = {row["name"]: row for row in report.rows if row["section"] == "generate_bf16"}
        report.target("greedy bf16: ours / seed loop fp32",
                      generate16["ours greedy"]["throughput"] / seed_greedy, 2.5)
        report.target(f"{beam} bf16 / ours greedy bf16",
                      generate16[beam]["throughput"] / generate16["ours greedy"]["throughput"], 1 / 3)


# ----------------------------------------------------------------------------------------------------------------
# Output


def format_table(header: dict, report: Report) -> str:
    """The results as a plain-text table, section by section; ratios are against each section's first contender."""
    lines = [f"# {key}: {value}" for key, value in header.items()]
    for section in dict.fromkeys(row["section"] for row in report.rows):
        rows = [row for row in report.rows if row["section"] == section]
        baseline = next((row["throughput"] for row in rows if "throughput" in row), None)
        lines.append(f"\n## {section}")
        for row in rows:
            name = f"{row['name']:<32}"
            if "gflops" in row:
                lines.append(f"{name} {row['gflops']:>10.1f} GFLOP/s")
            elif "throughput" in row:
                lines.append(
                    f"{name} {row['ms']:>10.1f} ms {row['throughput']:>10.1f} {row['unit']:<16} "
                    f"x{row['throughput'] / baseline:5.2f}  util {row['utilisation_pct']:5.1f}%"
                    + (f"  {row['mflop_per_token']:.1f} MFLOP/token" if "mflop_per_token" in row else "")
                    + (f"  {row['candidates']} candidate tokens" if "candidates" in row else "")
                    + (f"  (compiled in {row['compile_seconds']:.0f} s)" if "compile_seconds" in row else "")
                )
            elif "loss" in row:
                lines.append(f"{name} loss {row['loss']:.4f}  diff {row['relative_difference_pct']:.3f}%")
            elif "vs_seed_loop" in row:
                lines.append(f"{name} {row['ms']:>10.1f} ms {row['sentences_per_s']:>10.1f} sentences/s      "
                             f"x{row['vs_seed_loop']:5.2f} of the seed loop at this batch size")
            elif "ms_per_sentence" in row:
                slope = row["us_per_sentence_per_extra_source_token"]
                slope_text = "" if slope is None else f"  +{slope:7.2f} us/sentence per extra source token"
                lines.append(f"{name} {row['ms_per_sentence']:>10.3f} ms/sentence{slope_text}")
            else:
                lines.append(f"{name} {row['mb']:>10.1f} MB")
    lines.append("\n## targets")
    for target in report.targets:
        lines.append(f"{'MET ' if target['met'] else 'MISS'} {target['name']}: {target['value']:.3f} "
                     f"(target {target['target']:.3f})")
    return "\n".join(lines)


def main():
    """Parse the arguments, run every section and print the table (or JSON)."""
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_module = load_seed_module()
    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "isa": describe_isa(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "native bf16 matmul (oneDNN)": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        "threads": torch.get_num_threads(),
        "sizes": f"vocab {args.vocab_size}, embedding {args.embedding_size}, hidden {args.hidden_size}, "
                 f"batch {args.batch_size}, source {args.source_length}, target {args.target_length} tokens",
        "timing": f"median of {args.repeats} interleaved runs after {args.warmup} warm-up",
    }
    if args.quick:
        header["note"] = "--quick: tiny sizes that only check that every row runs; the targets apply to full sizes"
    configs = {"ours": seed_config_for(args), "ours default": default_config_for(args)}
    report = Report()

    trainers = bench_training(args, report, seed_module, False, configs)
    if args.bf16:
        bench_training(args, report, seed_module, True, configs)
        bench_loss_check(args, report)
    seed, models, source = bench_generation(args, report, seed_module, torch.float32, configs)
    if args.bf16:
        bench_generation(args, report, seed_module, torch.bfloat16, configs)
    bench_greedy_batches(args, report, seed_module, configs["ours"])
    bench_shortlist(args, report, seed_module, configs["ours"])
    bench_decode_scaling(args, report, seed_module, configs["ours"])
    bench_memory(args, report, trainers, seed, models, source)
    check_targets(args, report)
    bench_onnx(args, report, configs["ours"])

    if args.json:
        print(json.dumps({"header": header, "arguments": asdict(args), "rows": report.rows,
                          "targets": report.targets}, indent=1))
    else:
        print(format_table(header, report))


if __name__ == "__main__":
    sys.exit(main())
