"""`evaluate` module for corpus BLEU computed by sacreBLEU, packaged with `hf_gru_attn` for offline use.

Same inputs and output keys as the Hub's `evaluate-metric/sacrebleu`, plus the sacreBLEU `signature`, and
references may be flat (one string per example) as well as nested (a list of strings per example).
"""

import evaluate
from sacrebleu.metrics import BLEU

from hf_gru_attn.evaluation import reference_streams, translation_metric_features


_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    url = "https://www.aclweb.org/anthology/W18-6319",
    pages = "186--191",
}
"""

_DESCRIPTION = """\
Corpus-level BLEU (Papineni et al., 2002) as computed by sacreBLEU (Post, 2018), which tokenises detokenised text
itself so that scores are comparable across papers; the returned signature records every setting that affects the
score.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): detokenised hypotheses, one per example.
    references (`list[str]` or `list[list[str]]`): one reference per example, or a list of one or more references
        per example (the count may vary). A length different from `predictions` raises `ValueError`.
    smooth_method (`str`, defaults to `"exp"`): `"none"`, `"floor"`, `"add-k"` or `"exp"`.
    smooth_value (`float`, *optional*): value for `"floor"`/`"add-k"` smoothing; `None` uses sacreBLEU's default.
    force (`bool`, defaults to `False`): score even text that looks tokenised.
    lowercase (`bool`, defaults to `False`): lowercase hypotheses and references.
    tokenize (`str`, *optional*): sacreBLEU tokeniser (`"13a"`, `"intl"`, `"zh"`, `"char"`, `"none"`, ...); `None`
        uses sacreBLEU's default (`"13a"`).
    use_effective_order (`bool`, defaults to `False`): ignore n-gram orders without matches (for sentence BLEU).
Returns:
    score (`float`): BLEU, 0..100. counts, totals, precisions (`list`): n-gram statistics, orders 1..4.
    bp (`float`): brevity penalty. sys_len, ref_len (`int`): hypothesis and effective reference lengths.
    signature (`str`): sacreBLEU signature, e.g. `"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"`.
Examples:
    >>> bleu = evaluate.load("hf_gru_attn/metrics/sacrebleu")
    >>> bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["score"]
    100.00000000000004
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            homepage="https://github.com/mjpost/sacrebleu",
            inputs_description=_KWARGS_DESCRIPTION,
            features=translation_metric_features(),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://www.aclweb.org/anthology/W18-6319"],
        )

    def _compute(
        self,
        predictions,
        references,
        smooth_method="exp",
        smooth_value=None,
        force=False,
        lowercase=False,
        tokenize=None,
        use_effective_order=False,
    ):
        bleu = BLEU(
            lowercase=lowercase,
            force=force,
            tokenize=tokenize,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            effective_order=use_effective_order,
        )
        output = bleu.corpus_score(predictions, reference_streams(references, len(predictions)))
        return {
            "score": output.score,
            "counts": output.counts,
            "totals": output.totals,
            "precisions": output.precisions,
            "bp": output.bp,
            "sys_len": output.sys_len,
            "ref_len": output.ref_len,
            "signature": str(bleu.get_signature()),
        }
