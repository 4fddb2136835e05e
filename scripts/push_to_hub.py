#!/usr/bin/env python
"""
Upload a saved GRU attention model folder to the Hugging Face Hub in one commit.

    python scripts/push_to_hub.py --model outputs/gru-attn --repo_id NAMESPACE/NAME [--private] [--revision BRANCH]
        [--commit_message MSG] [--token TOKEN] [--source_lang de] [--target_lang en]

The commit holds the weights (`*.safetensors` only: pickle files such as `*.bin`/`*.pt` are never uploaded), the
config, the generation config, the tokenizer files, the model's code files (`*.py`, written by `save_pretrained`
for `trust_remote_code` loading), the translation pipeline file with the `custom_pipelines` entry of `config.json`
(so `pipeline("translation", model=repo_id, trust_remote_code=True)` works), `all_results.json` and
`training_data.json` (which data the model was trained on) when present, and `README.md`, the model card rendered
from `model_card.md` for this repo id. Checkpoints, optimizer states and
training arguments in the folder are left out. Files of those kinds that an earlier push left on the branch and that
the folder no longer has (old weight shards, results, code files) are deleted in the same commit.

The Hub endpoint and token come from the usual huggingface_hub settings (`HF_ENDPOINT`, `HF_TOKEN` or
`hf auth login`) unless `--token` is given. Prints the commit URL and the new commit sha.
"""

import argparse
import json
import shutil
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi

from hf_gru_attn import pipeline_gru_attn
from hf_gru_attn.model_card import render_model_card


# Files copied from the model folder (top level only). Weights are matched by WEIGHT_PATTERNS.
UPLOAD_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "all_results.json",
    "training_data.json",
    "learning_curve.png",
)
WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json")
CODE_PATTERN = "*.py"
# Top-level repo files this script manages: those the new folder lacks are deleted (stale shards, results, code).
MANAGED_PATTERNS = (*UPLOAD_FILES, *WEIGHT_PATTERNS, CODE_PATTERN)
# The card template of this checkout (an installed, non-editable package does not carry the top-level file).
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"


def stage_model_folder(
    model_dir: Path, staging_dir: Path, repo_id: str, source_lang: str, target_lang: str
) -> list[str]:
    """Copy what is to be uploaded from `model_dir` into the empty folder `staging_dir`, and write the card.

    Args:
        model_dir: folder written by `save_pretrained` (model and tokenizer), e.g. by `scripts/train.py`.
        staging_dir: empty folder that becomes the commit's content.
        repo_id: repo id used in the model card.
        source_lang, target_lang: translation direction for the card.

    Returns:
        The sorted file names in `staging_dir`.

    Raises:
        FileNotFoundError: `model_dir` has no `config.json`, no `*.safetensors` weights, or lacks a code file that
            its `config.json` `auto_map` names.
    """
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: pass a folder written by save_pretrained.")
    weights = [path for pattern in WEIGHT_PATTERNS for path in model_dir.glob(pattern)]
    if not any(path.suffix == ".safetensors" for path in weights):
        raise FileNotFoundError(
            f"{model_dir} has no *.safetensors weights; pickle checkpoints (.bin/.pt) are not uploaded. "
            "Save the model with save_pretrained (safetensors is its default)."
        )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    missing = sorted({
        f"{ref.split('.')[0]}.py" for ref in config.get("auto_map", {}).values() if isinstance(ref, str)
    } - {path.name for path in model_dir.glob(CODE_PATTERN)})
    if missing:
        raise FileNotFoundError(f"{model_dir} lacks the code files named by config.json's auto_map: {missing}.")

    for path in [*weights, *model_dir.glob(CODE_PATTERN), *(model_dir / name for name in UPLOAD_FILES)]:
        if path.is_file():
            shutil.copyfile(path, staging_dir / path.name)
    # The pipeline file and its `custom_pipelines` entry are always those of this package version.
    shutil.copyfile(pipeline_gru_attn.__file__, staging_dir / Path(pipeline_gru_attn.__file__).name)
    config["custom_pipelines"] = pipeline_gru_attn.custom_pipelines()
    (staging_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = render_model_card(
        staging_dir, repo_id, source_lang=source_lang, target_lang=target_lang, template=CARD_TEMPLATE
    )
    (staging_dir / "README.md").write_text(card, encoding="utf-8")
    return sorted(path.name for path in staging_dir.iterdir())


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    source_lang: str = "de",
    target_lang: str = "en",
) -> CommitInfo:
    """Stage the model folder, create the repo if needed (and the branch `revision`), then upload it as one commit.

    The commit adds the staged files and deletes the repo's top-level files of the managed kinds (weights, code,
    config, tokenizer, results) that the folder no longer has; other files on the Hub are kept.

    Args:
        model_dir: the saved model folder (see `stage_model_folder`).
        repo_id: `namespace/name` on the Hub.
        private: create the repo as private (ignored when it exists).
        revision: branch to commit to; created from `main` if it does not exist. None means `main`.
        commit_message: the commit summary; defaults to "Upload <folder name>".
        token: Hub token; None uses the saved login or `HF_TOKEN`.
        source_lang, target_lang: translation direction for the model card.

    Returns:
        The `CommitInfo` of the commit (`.oid` is the new commit sha, `.commit_url` its URL).

    Raises:
        FileNotFoundError: as `stage_model_folder`.
        huggingface_hub.errors.HfHubHTTPError: the Hub refused a request (authentication, invalid card metadata...).
    """
    model_dir = Path(model_dir)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        staged = stage_model_folder(model_dir, Path(staging), repo_id, source_lang, target_lang)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        stale = [
            path for path in api.list_repo_files(repo_id, revision=revision)
            if path not in staged and "/" not in path and any(fnmatch(path, pattern) for pattern in MANAGED_PATTERNS)
        ]
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=Path(staging, name)) for name in staged]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {model_dir.resolve().name}",
            revision=revision,
        )


def main(argv: list[str] | None = None) -> CommitInfo:
    """Command-line entry point; see the module docstring. Returns the `CommitInfo` of the upload."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--model", required=True, help="Folder written by save_pretrained (model + tokenizer).")
    parser.add_argument("--repo_id", required=True, help="Target repo, NAMESPACE/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (created if missing); default main.")
    parser.add_argument("--commit_message", default=None, help="Commit summary.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
    parser.add_argument("--source_lang", default="de", help="Source language code, for the model card.")
    parser.add_argument("--target_lang", default="en", help="Target language code, for the model card.")
    args = parser.parse_args(argv)
    commit = push_to_hub(
        args.model,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
        source_lang=args.source_lang,
        target_lang=args.target_lang,
    )
    print(f"Pushed {args.model} to {commit.commit_url} (commit {commit.oid}).", file=sys.stdout)
    return commit


if __name__ == "__main__":
    main()
