"""Translation pipeline for `GruAttnForConditionalGeneration` (transformers 5.x removed the `translation` task).

This file is shipped as remote code next to the model (it imports only transformers and stdlib), and the saved
`config.json` names it under `custom_pipelines`, so that, without this package installed::

    pipe = pipeline("translation", model="user/gru-attn-en-de", trust_remote_code=True)
    pipe(["A man is riding a bike.", "Two dogs play."], num_beams=4, max_new_tokens=40)
    # -> [{"translation_text": "..."}, {"translation_text": "..."}]

`"text2text-generation"` works the same way and answers `{"generated_text": ...}`. Both task names are resolved
from `custom_pipelines` before transformers looks at its own (removed) tasks; see `custom_pipelines()`. In a process
that has imported this package, `register_pipeline()` also registers the task `"gru-translation"`, which works with
a model object and needs no remote code: `pipeline("gru-translation", model=model, tokenizer=tokenizer)`.
"""

from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY


# The task registered in this process by `register_pipeline()` (not a removed transformers task name, so that
# `pipeline()` accepts it for a model object too).
REGISTERED_TASK = "gru-translation"


class GruAttnTranslationPipeline(Pipeline):
    """Translate strings with a seq2seq model: tokenizer -> `model.generate` -> decode.

    Call it with a string or a list of strings plus any `generate()` keyword arguments (`num_beams`,
    `max_new_tokens`, `do_sample`, ...; those given when the pipeline is built apply to every call) and
    `truncation=True` to cut sources to the tokenizer's `model_max_length`. Returns, like the transformers 4.x
    translation pipeline, `[{"translation_text": str}]` per input (a list with one dict per returned sequence when
    `num_return_sequences > 1`); for a list of inputs, a list of those. Texts are decoded with
    `skip_special_tokens=True`, so each equals `tokenizer.decode(model.generate(...)[i], skip_special_tokens=True)`.

    Source: the transformers 4.x `TranslationPipeline`/`Text2TextGenerationPipeline` behaviour, and
    `transformers.Pipeline`'s preprocess/_forward/postprocess contract.
    """

    output_key = "translation_text"
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    _pipeline_calls_generate = True

    def __call__(self, inputs, **kwargs):
        """Translate `inputs` (a string or a list of strings); see the class docstring for kwargs and the result."""
        result = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and all(len(res) == 1 for res in result):
            return [res[0] for res in result]
        return result

    def _sanitize_parameters(self, truncation=None, **generate_kwargs):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        return preprocess_params, generate_kwargs, {}

    def preprocess(self, text, truncation=False):
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__} translates strings; got {type(text).__name__}.")
        return self.tokenizer(text, truncation=truncation, return_tensors="pt")

    def _forward(self, model_inputs, **generate_kwargs):
        model_inputs = {key: model_inputs[key] for key in ("input_ids", "attention_mask")}
        output_ids = self.model.generate(**model_inputs, **self._prepare_generate_kwargs(generate_kwargs))
        return {"output_ids": output_ids}

    def postprocess(self, model_outputs):
        return [
            {self.output_key: self.tokenizer.decode(ids, skip_special_tokens=True)}
            for ids in model_outputs["output_ids"]
        ]

    def save_pretrained(self, save_directory, **kwargs):
        """Save the model, the tokenizer and this file, with `custom_pipelines()` in the saved `config.json`.

        Unlike `Pipeline.save_pretrained`, which writes only the one task this class was registered under in the
        current process, every task of `custom_pipelines()` is written.

        Args:
            save_directory: folder to write (created if missing).
            kwargs: passed to the model's and the tokenizer's `save_pretrained`.
        """
        self.model.config.custom_pipelines = custom_pipelines()
        self.model.save_pretrained(save_directory, **kwargs)
        self.tokenizer.save_pretrained(save_directory, **kwargs)
        custom_object_save(self, save_directory)


class GruAttnText2TextPipeline(GruAttnTranslationPipeline):
    """The same pipeline for the `"text2text-generation"` task: results are `{"generated_text": str}`."""

    output_key = "generated_text"


def custom_pipelines() -> dict:
    """The `custom_pipelines` entry of a saved `config.json`: the tasks that `pipeline(task, model=folder_or_repo,
    trust_remote_code=True)` resolves to the classes of this file.

    `pipeline()` looks a task up in the config's `custom_pipelines` before it checks transformers' own tasks, so the
    names that transformers 5.x removed ("translation", "text2text-generation") work here. `pt` names the Auto class
    that loads the model (through the config's `auto_map`).

    Returns:
        A new dict `{task: {"impl": "pipeline_gru_attn.<Class>", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}}`.
    """
    module = __name__.split(".")[-1]
    classes = {"translation": GruAttnTranslationPipeline, "text2text-generation": GruAttnText2TextPipeline}
    return {
        task: {"impl": f"{module}.{cls.__name__}", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
        for task, cls in classes.items()
    }


def register_pipeline() -> None:
    """Register `GruAttnTranslationPipeline` as the task `"gru-translation"` in transformers' `PIPELINE_REGISTRY`.

    Safe to call repeatedly (nothing happens when the task already points at this class). Afterwards, in this
    process, `pipeline("gru-translation", model=model_or_folder, tokenizer=...)` needs no remote code. The names
    "translation" and "text2text-generation" cannot be registered usefully: `pipeline()` raises
    `KeyError("The task translation has been removed from transformers...")` for them unless they come from the
    model config's `custom_pipelines` (see `custom_pipelines()`).
    """
    if PIPELINE_REGISTRY.supported_tasks.get(REGISTERED_TASK, {}).get("impl") is not GruAttnTranslationPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            REGISTERED_TASK, pipeline_class=GruAttnTranslationPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
        )
