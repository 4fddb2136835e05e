"""hf_gru_attn: a GRU encoder-decoder with attention as a Hugging Face transformers model.

Importing the package registers the model with `AutoConfig`, `AutoModel` and `AutoModelForSeq2SeqLM`, and marks the
classes for auto-class export, so that `save_pretrained` writes the modeling code and `auto_map` (for
`trust_remote_code=True` loading without this package).
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .configuration_gru_attn import GruAttnConfig
from .modeling_gru_attn import (
    GruAttnCache,
    GruAttnEncoderOutput,
    GruAttnForConditionalGeneration,
    GruAttnModel,
    GruAttnPreTrainedModel,
    GruAttnShortlist,
)
from .pipeline_gru_attn import GruAttnTranslationPipeline, register_pipeline


AutoConfig.register(GruAttnConfig.model_type, GruAttnConfig, exist_ok=True)
AutoModel.register(GruAttnConfig, GruAttnModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(GruAttnConfig, GruAttnForConditionalGeneration, exist_ok=True)
GruAttnConfig.register_for_auto_class()
GruAttnModel.register_for_auto_class("AutoModel")
GruAttnForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
register_pipeline()

__all__ = [
    "GruAttnCache",
    "GruAttnConfig",
    "GruAttnEncoderOutput",
    "GruAttnForConditionalGeneration",
    "GruAttnModel",
    "GruAttnPreTrainedModel",
    "GruAttnShortlist",
    "GruAttnTranslationPipeline",
]
