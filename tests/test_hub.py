"""Sharing on the Hub, end to end, against the fake Hub of `tests/hub_fake.py` (the real huggingface_hub client).

`scripts/push_to_hub.py` pushes a tiny random model and tokenizer; a fresh interpreter in which `hf_gru_attn` cannot
be imported loads it back by repo id with remote code. Also: revisions and history, the model card metadata, the
pipeline tasks, and the bug cases BL-05 (re-saving remote code, "." and dotted folders), BL-06 (Auto classes on a
custom `model_type`, re-import), BL-07 (GenerationMixin) and BL-14 (translation pipelines) of
`shared/docs/bug_cases.md`.
"""

import importlib
import importlib.util
import io
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from hub_fake import fake_hub  # noqa: F401  (pytest fixture)
from huggingface_hub import HfApi, ModelCard, hf_hub_download, metadata_load
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    pipeline,
)

import hf_gru_attn
from hf_gru_attn import GruAttnConfig, GruAttnForConditionalGeneration
from hf_gru_attn.model_card import TrainingData, render_model_card
from hf_gru_attn.pipeline_gru_attn import REGISTERED_TASK, register_pipeline


REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "test-user/gru-attn-toy"
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "the", "man", "dog", "cat", "runs", "sits"]
SOURCES = ["a b c", "d e", "the man runs a b"]
MAX_NEW_TOKENS = 8
GREEDY = {"do_sample": False, "num_beams": 1, "max_new_tokens": MAX_NEW_TOKENS}
RESULTS = {"test_bleu": 12.345, "test_chrf": 40.5, "test_bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|"
           "smooth:exp|version:2.6.0", "test_num_beams": 5, "eval_bleu": 11.0, "train_loss": 3.2}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built with `tokenizers`: pad=0, <s>=1, </s>=2 (appended), <unk>=3."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{word: i + 4 for i, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        model_max_length=64,
    )


def make_model(seed: int, vocab_size: int) -> GruAttnForConditionalGeneration:
    torch.manual_seed(seed)
    config = GruAttnConfig(vocab_size=vocab_size, embedding_size=8, hidden_size=16, dropout=0.0)
    return GruAttnForConditionalGeneration(config).eval()


def greedy_ids(model, tokenizer, texts=SOURCES) -> list[list[int]]:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.generate(**batch, **GREEDY).tolist()


def save_model(model, tokenizer, folder: Path, results: dict | None = None) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if results is not None:
        (folder / "all_results.json").write_text(json.dumps(results))
    return folder


def load_push_script():
    spec = importlib.util.spec_from_file_location("push_to_hub_script", REPO_ROOT / "scripts" / "push_to_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _LogCapture:
    """Collect transformers' log records and Python warnings (for the "no GenerationMixin / not supported" checks)."""

    def __enter__(self):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        transformers.logging.get_logger().addHandler(self.handler)
        self.warnings = warnings.catch_warnings(record=True)
        self.caught = self.warnings.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        transformers.logging.get_logger().removeHandler(self.handler)

    @property
    def text(self) -> str:
        return self.stream.getvalue() + "\n".join(str(w.message) for w in self.caught)


# Runs in a fresh interpreter (`python -I -c`): hf_gru_attn is blocked, so only the repo's remote code can load the
# model. argv[1] is a JSON dict of arguments; the result is printed as one JSON line after "RESULT ".
REMOTE_CHECKS = r"""
import sys
sys.modules["hf_gru_attn"] = None  # block the package even though it is pip-installed
import contextlib, io, json, logging, os, shutil, time, warnings
args = json.loads(sys.argv[1])
result = {}
try:
    import hf_gru_attn  # noqa: F401
    result["package_importable"] = True
except ImportError:
    result["package_importable"] = False
import transformers
from huggingface_hub import snapshot_download
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationMixin, dynamic_module_utils, pipeline

log = io.StringIO()
transformers.logging.get_logger().addHandler(logging.StreamHandler(log))
warnings.simplefilter("always")
caught = warnings.catch_warnings(record=True).__enter__()
repo, greedy = args["repo_id"], args["greedy"]

start = time.monotonic()
try:  # stdin is closed: transformers' [y/N] prompt must fail at once, not wait
    AutoModelForSeq2SeqLM.from_pretrained(repo)
    result["untrusted"] = "loaded"
except ValueError as error:
    result["untrusted"] = str(error)
result["untrusted_seconds"] = time.monotonic() - start
result["prompt_timeout"] = dynamic_module_utils.TIME_OUT_REMOTE_CODE

tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
def generate(model, texts=args["sources"]):
    return model.generate(**tokenizer(texts, return_tensors="pt", padding=True), **greedy).tolist()

model = AutoModelForSeq2SeqLM.from_pretrained(repo, trust_remote_code=True, use_safetensors=True)
cls = type(model)
result.update(
    main=generate(model), module=cls.__module__, is_generation_mixin=isinstance(model, GenerationMixin),
    can_generate=model.can_generate(), bases=[base.__name__ for base in cls.__mro__],
    v1=generate(AutoModelForSeq2SeqLM.from_pretrained(repo, revision=args["v1_sha"], trust_remote_code=True)),
)
snapshot = snapshot_download(repo)
result["snapshot_files"] = sorted(os.listdir(snapshot))
result["snapshot_v1_files"] = sorted(os.listdir(snapshot_download(repo, revision=args["v1_sha"])))

resaved = os.path.join(args["workdir"], "resaved")  # BL-05
model.save_pretrained(resaved)
tokenizer.save_pretrained(resaved)
dotted = shutil.copytree(resaved, os.path.join(args["workdir"], "gru-attn-v1.0"))
with open(os.path.join(resaved, "config.json")) as f:
    result["resaved_auto_map"] = json.load(f)["auto_map"]
result["resaved_files"] = sorted(os.listdir(resaved))
loads = {"resaved": resaved, "dotted": dotted}
result["loads"] = {name: generate(AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True))
                   for name, path in loads.items()}
os.chdir(dotted)
for path in (".", "./"):
    result["loads"][path] = generate(AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True))

texts = args["pipeline_texts"]  # BL-14
result["pipeline_reference"] = [tokenizer.decode(ids, skip_special_tokens=True) for ids in generate(model, texts)]
for task, key in (("translation", "translation_text"), ("text2text-generation", "generated_text")):
    pipe = pipeline(task, model=snapshot, tokenizer=snapshot, trust_remote_code=True)
    result[task] = [answer[key] for answer in pipe(texts, **greedy)]
    result[task + "_class"] = type(pipe).__name__

with open(os.path.join(snapshot, "README.md"), encoding="utf-8") as f:  # the card's usage snippet, as written
    snippet = f.read().split("```python\n")[1].split("```")[0]
with contextlib.redirect_stdout(io.StringIO()) as printed:
    exec(snippet, {})
result["snippet_output"] = printed.getvalue()
result["log"] = log.getvalue() + "\n".join(str(w.message) for w in caught)
print("\nRESULT " + json.dumps(result))
"""


def run_isolated(code: str, args: dict, cwd: Path, timeout: float = 240) -> dict:
    """Run `code` with `python -I -c` (no cwd/PYTHONPATH on sys.path), stdin closed, in the fake-Hub environment."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, json.dumps(args)], cwd=cwd, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_push_then_load_with_remote_code_only(fake_hub, tmp_path):  # noqa: F811
    tokenizer = make_tokenizer()
    v1, v2 = make_model(0, len(tokenizer)), make_model(1, len(tokenizer))
    reference_v1, reference_v2 = greedy_ids(v1, tokenizer), greedy_ids(v2, tokenizer)
    assert reference_v1 != reference_v2
    push = load_push_script()

    commit_v1 = push.main(["--model", str(save_model(v1, tokenizer, tmp_path / "v1", RESULTS)), "--repo_id",
                           REPO_ID, "--commit_message", "v1", "--source_lang", "en", "--target_lang", "de"])
    files = fake_hub.files(REPO_ID)
    assert sorted(files) == [
        ".gitattributes", "README.md", "all_results.json", "config.json", "configuration_gru_attn.py",
        "generation_config.json", "model.safetensors", "modeling_gru_attn.py", "pipeline_gru_attn.py",
        "tokenizer.json", "tokenizer_config.json",
    ]
    assert not [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    config = json.loads(files["config.json"])
    assert set(config["custom_pipelines"]) == {"translation", "text2text-generation"}
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_gru_attn.GruAttnForConditionalGeneration"
    card = ModelCard(files["README.md"].decode())
    assert card.data.language == ["en", "de"] and card.data.pipeline_tag == "translation"
    assert f'model_id = "{REPO_ID}"' in card.text

    pushes = [request for request in fake_hub.requests if "/commit/" in request]
    assert pushes == [f"POST /api/models/{REPO_ID}/commit/main"]  # one commit with every file
    commit_v2 = push.main(["--model", str(save_model(v2, tokenizer, tmp_path / "v2")), "--repo_id", REPO_ID])
    assert commit_v2.oid != commit_v1.oid and fake_hub.head(REPO_ID) == commit_v2.oid
    history = [commit.commit_id for commit in HfApi().list_repo_commits(REPO_ID)]
    assert history[:2] == [commit_v2.oid, commit_v1.oid] and len(history) == 3
    assert "all_results.json" not in fake_hub.files(REPO_ID, commit_v2.oid)  # v2 has no results ...
    assert "test_bleu" in json.loads(fake_hub.files(REPO_ID, commit_v1.oid)["all_results.json"])  # v1 still has

    result = run_isolated(REMOTE_CHECKS, {
        "repo_id": REPO_ID, "v1_sha": commit_v1.oid, "sources": SOURCES, "greedy": GREEDY,
        "workdir": str(tmp_path), "pipeline_texts": ["a b c", "d e"],
    }, cwd=tmp_path)

    assert result["package_importable"] is False
    # the transformers error at once: the [y/N] prompt read a closed stdin instead of waiting for its alarm
    assert "trust_remote_code=True" in result["untrusted"] and result["untrusted_seconds"] < result["prompt_timeout"]
    assert result["module"].startswith("transformers_modules.")
    assert result["main"] == reference_v2 and result["v1"] == reference_v1  # pinned revision = the old weights
    assert result["snapshot_files"] == sorted(fake_hub.files(REPO_ID))
    assert "all_results.json" in result["snapshot_v1_files"]
    # BL-07: generation comes from GenerationMixin, listed after PreTrainedModel; no warning about it
    assert result["is_generation_mixin"] and result["can_generate"]
    assert result["bases"].index("PreTrainedModel") < result["bases"].index("GenerationMixin")
    # BL-05: the re-saved copy keeps its code and auto_map; every copy and path form generates the same
    code_files = {"configuration_gru_attn.py", "modeling_gru_attn.py", "pipeline_gru_attn.py"}
    assert code_files <= set(result["resaved_files"])
    assert result["resaved_auto_map"] == config["auto_map"]
    assert result["loads"] == dict.fromkeys(("resaved", "dotted", ".", "./"), reference_v2)
    # BL-14: both removed task names work through custom_pipelines and equal decode(generate(...))
    assert result["translation"] == result["text2text-generation"] == result["pipeline_reference"]
    assert result["translation_class"] == "GruAttnTranslationPipeline"
    assert "translation_text" in result["snippet_output"]  # the card's snippet ran as written
    assert "GenerationMixin" not in result["log"] and "not supported" not in result["log"]


def test_push_to_a_branch_of_a_private_repo(fake_hub, tmp_path):  # noqa: F811
    tokenizer = make_tokenizer()
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "model")
    (folder / "training_args.bin").write_bytes(b"pickle")  # training leftovers are never uploaded
    (folder / "optimizer.pt").write_bytes(b"pickle")
    commit = load_push_script().push_to_hub(folder, "test-user/private-toy", private=True, revision="dev")
    assert fake_hub.repos["test-user/private-toy"].private
    assert fake_hub.head("test-user/private-toy", "dev") == commit.oid
    assert sorted(fake_hub.files("test-user/private-toy", "main")) == [".gitattributes"]
    uploaded = fake_hub.files("test-user/private-toy", "dev")
    assert "model.safetensors" in uploaded and not [name for name in uploaded if name.endswith(PICKLE_SUFFIXES)]
    assert "No results were recorded" in uploaded["README.md"].decode()


def test_push_refuses_a_folder_without_safetensors(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        load_push_script().push_to_hub(folder, REPO_ID)


def test_fake_hub_history_and_errors(fake_hub):  # noqa: F811
    api = HfApi()
    api.create_repo("test-user/raw")
    api.create_repo("test-user/raw", exist_ok=True)
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="dir/x.txt", repo_id="test-user/raw",
                            commit_message="first")
    second = api.upload_file(path_or_fileobj=b"two", path_in_repo="dir/x.txt", repo_id="test-user/raw",
                             commit_message="second")
    assert api.model_info("test-user/raw").sha == second.oid
    assert Path(hf_hub_download("test-user/raw", "dir/x.txt", revision=first.oid)).read_bytes() == b"one"
    assert Path(hf_hub_download("test-user/raw", "dir/x.txt")).read_bytes() == b"two"
    assert sorted(entry.path for entry in api.list_repo_tree("test-user/raw", recursive=True)) == [
        ".gitattributes", "dir", "dir/x.txt"]
    assert [ref.target_commit for ref in api.list_repo_refs("test-user/raw").branches] == [second.oid]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("test-user/raw", "missing.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("test-user/raw", "dir/x.txt", revision="no-such-branch")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md",
                        repo_id="test-user/raw", commit_message="bad card")
    assert api.model_info("test-user/raw").sha == second.oid  # the refused commit changed nothing


def test_model_card_metadata(tmp_path):
    tokenizer = make_tokenizer()
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "m", RESULTS)
    card_text = render_model_card(folder, "someone/gru-de-en", template=REPO_ROOT / "model_card.md")
    (folder / "README.md").write_text(card_text, encoding="utf-8")
    metadata = metadata_load(folder / "README.md")
    assert metadata["library_name"] == "transformers" and metadata["language"] == ["de", "en"]
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["multi30k"]
    assert "translation" in metadata["tags"] and metadata["pipeline_tag"] == "translation"
    results = {(r.dataset_split, r.metric_type): r for r in ModelCard.load(folder / "README.md").data.eval_results}
    assert results[("test", "sacrebleu")].metric_value == 12.35
    assert results[("test", "sacrebleu")].metric_config == RESULTS["test_bleu_signature"]
    assert results[("test", "chrf")].metric_value == 40.5 and results[("validation", "sacrebleu")].metric_value == 11.0
    assert {r.dataset_name for r in results.values()} == {"Multi30k test2016 (Flickr)", "Multi30k validation"}
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "${" not in text and "Bahdanau" in text and "Elliott" in text and "Multi30K" in text
    assert "| Multi30k test2016 (Flickr) | test | sacreBLEU | 12.35 |" in text

    (folder / "all_results.json").unlink()
    card = ModelCard(render_model_card(folder, template=REPO_ROOT / "model_card.md"))
    assert card.data.eval_results is None and "all_results.json` was missing" in card.text
    assert 'model_id = "."' in card.text


def card_sections(text: str) -> dict[str, str]:
    """The card's YAML front matter (key "yaml") and its `## ` sections by title."""
    _, front_matter, body = text.split("---\n", 2)
    sections = {"yaml": front_matter}
    for chunk in body.split("\n## ")[1:]:
        title, _, content = chunk.partition("\n")
        sections[title] = content
    return sections


def test_model_card_says_whether_the_checkpoint_average_was_kept(tmp_path):
    tokenizer = make_tokenizer()
    trained = dict(RESULTS, train_wall_clock_minutes=27.9, epoch=20.1)
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "m", trained)
    assert "the checkpoint with the best validation BLEU" in render_model_card(folder)
    averaged = dict(trained, checkpoints_averaged=4, eval_averaged_bleu=11.5, eval_best_bleu=11.0)
    (folder / "all_results.json").write_text(json.dumps(averaged))
    text = render_model_card(folder)
    assert "the average of the last 4 checkpoints was kept" in text and "(11.00)" in text and "11.50" in text
    assert "the checkpoint with the best validation BLEU" not in text


def test_model_card_names_the_local_files_it_was_trained_on(tmp_path):
    tokenizer = make_tokenizer()
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "m", RESULTS)
    TrainingData(train_file="corpus/fr-en.train.tsv", validation_file="corpus/dev.tsv",
                 test_file="corpus/news.test.tsv").save(folder)
    text = render_model_card(folder, "someone/gru-fr-en", source_lang="fr", target_lang="en")
    sections = card_sections(text)
    assert "`corpus/fr-en.train.tsv`" in sections["Training data"] and "`corpus/dev.tsv`" in sections["Training data"]
    assert "| corpus/news.test.tsv | test | sacreBLEU | 12.35 |" in sections["Evaluation"]
    assert "| corpus/dev.tsv | validation | sacreBLEU | 11.00 |" in sections["Evaluation"]
    card = ModelCard(text)
    assert card.data.datasets is None  # `datasets:` holds Hub dataset ids, and local files have none
    assert {(r.dataset_name, r.dataset_type, r.dataset_split) for r in card.data.eval_results} == {
        ("corpus/news.test.tsv", "corpus/news.test.tsv", "test"), ("corpus/dev.tsv", "corpus/dev.tsv", "validation")}
    assert "multi30k" not in text.lower() and "image captions" not in text and "${" not in text


def test_model_card_names_the_hub_dataset_it_was_trained_on(tmp_path):
    tokenizer = make_tokenizer()
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "m", RESULTS)
    TrainingData(dataset_name="wmt16", dataset_config_name="de-en").save(folder)
    text = render_model_card(folder)
    card = ModelCard(text)
    assert card.data.datasets == ["wmt16"]
    assert {(r.dataset_type, r.dataset_config, r.dataset_name) for r in card.data.eval_results} == {
        ("wmt16", "de-en", "wmt16 (de-en) test"), ("wmt16", "de-en", "wmt16 (de-en) validation")}
    sections = card_sections(text)
    assert "https://huggingface.co/datasets/wmt16" in sections["Training data"]
    assert "| wmt16 (de-en) test | test | sacreBLEU | 12.35 |" in sections["Evaluation"]
    assert "multi30k" not in text.lower()


def test_push_renders_the_card_for_the_data_the_folder_was_trained_on(tmp_path):
    tokenizer = make_tokenizer()
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "m", RESULTS)
    TrainingData(train_file="pairs.jsonl", test_file="test.jsonl").save(folder)
    staging = tmp_path / "staging"
    staging.mkdir()
    assert "training_data.json" in load_push_script().stage_model_folder(folder, staging, REPO_ID, "de", "en")
    sections = card_sections((staging / "README.md").read_text(encoding="utf-8"))
    assert "- training: `pairs.jsonl`" in sections["Training data"]
    assert "- validation (checkpoint selection): none" in sections["Training data"]
    assert "| test.jsonl | test | sacreBLEU | 12.35 |" in sections["Evaluation"]
    assert "Multi30k" not in "".join(sections.values())


def test_training_data_file_that_is_not_a_record_is_a_clear_error(tmp_path):
    (tmp_path / "training_data.json").write_text('{"train_files": ["a"]}', encoding="utf-8")
    with pytest.raises(ValueError, match="training_data.json is not a JSON object of"):
        TrainingData.load(tmp_path)


def test_bl06_auto_classes_on_a_custom_model_type_and_reimport(tmp_path):
    tokenizer = make_tokenizer()
    folder = save_model(make_model(0, len(tokenizer)), tokenizer, tmp_path / "m")
    for _ in range(2):  # before and after re-importing the package
        loaded = AutoTokenizer.from_pretrained(folder)
        assert loaded.is_fast and loaded.vocab_size == tokenizer.vocab_size
        assert [loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id] == [0, 1, 2, 3]
        assert AutoConfig.from_pretrained(folder).__class__ is hf_gru_attn.GruAttnConfig
        remote = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(remote).__name__ == "GruAttnConfig" and remote.model_type == "gru_attn"
        importlib.reload(hf_gru_attn)


def test_bl07_generation_mixin_without_warnings(tmp_path):
    tokenizer = make_tokenizer()
    with _LogCapture() as capture:
        model = make_model(0, len(tokenizer))
        folder = save_model(model, tokenizer, tmp_path / "m")
        loaded = AutoModelForSeq2SeqLM.from_pretrained(folder)
        for candidate in (model, loaded):
            assert isinstance(candidate, GenerationMixin) and candidate.can_generate()
            assert greedy_ids(candidate, tokenizer) == greedy_ids(model, tokenizer)
    bases = GruAttnForConditionalGeneration.__bases__
    assert issubclass(bases[0], PreTrainedModel) and bases[-1] is GenerationMixin
    assert "GenerationMixin" not in capture.text


def test_bl14_pipelines_in_process(tmp_path):
    tokenizer = make_tokenizer()
    model = make_model(0, len(tokenizer))
    expected = [tokenizer.decode(ids, skip_special_tokens=True) for ids in greedy_ids(model, tokenizer)]
    register_pipeline()
    register_pipeline()  # idempotent
    with _LogCapture() as capture:
        translator = pipeline(REGISTERED_TASK, model=model, tokenizer=tokenizer)
        assert translator(SOURCES, **GREEDY) == [{"translation_text": text} for text in expected]
        assert translator(SOURCES[0], **GREEDY) == [{"translation_text": expected[0]}]
        beams = translator(SOURCES[0], num_beams=3, num_return_sequences=2, max_new_tokens=MAX_NEW_TOKENS)
        assert len(beams) == 2 and all("translation_text" in answer for answer in beams)
        # saved through the pipeline: the folder carries the pipeline file and both custom tasks
        translator.save_pretrained(tmp_path / "saved")
        folder_pipe = pipeline("translation", model=str(tmp_path / "saved"), trust_remote_code=True)
        assert folder_pipe(SOURCES, **GREEDY) == [{"translation_text": text} for text in expected]
    assert "not supported" not in capture.text
    # What transformers 5 refuses: its removed task names for a model object (no config `custom_pipelines`)
    with pytest.raises(KeyError, match="has been removed"):
        pipeline("translation", model=model, tokenizer=tokenizer)
