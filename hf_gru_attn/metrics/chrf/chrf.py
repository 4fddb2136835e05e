"""`evaluate` module for corpus chrF computed by sacreBLEU, packaged with `hf_gru_attn` for offline use.

Same inputs and output keys as the Hub's `evaluate-metric/chrf`, plus the sacreBLEU `signature`, and references
may be flat (one string per example) as well as nested (a list of strings per example).
"""

import evaluate
from sacrebleu.metrics import CHRF

from hf_gru_attn.evaluation import reference_streams, translation_metric_features


_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W15-3049",
    pages = "392--395",
}
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
Corpus-level chrF (Popovic, 2015): the F-beta score of character n-gram (and, for chrF++, word n-gram) precision
and recall, as computed by sacreBLEU (Post, 2018); the returned signature records every setting that affects the
score.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): detokenised hypotheses, one per example.
    references (`list[str]` or `list[list[str]]`): one reference per example, or a list of one or more references
        per example (the count may vary). A length different from `predictions` raises `ValueError`.
    char_order (`int`, defaults to 6): character n-gram order.
    word_order (`int`, defaults to 0): word n-gram order; 2 gives chrF++.
    beta (`int`, defaults to 2): weight of recall relative to precision.
    lowercase (`bool`, defaults to `False`): lowercase hypotheses and references.
    whitespace (`bool`, defaults to `False`): keep whitespace in character n-grams.
    eps_smoothing (`bool`, defaults to `False`): chrF++.py/NLTK/Moses-style epsilon smoothing instead of sacreBLEU's.
Returns:
    score (`float`): chrF, 0..100. char_order, word_order, beta (`int`): the settings used.
    signature (`str`): sacreBLEU signature, e.g. `"nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"`.
Examples:
    >>> chrf = evaluate.load("hf_gru_attn/metrics/chrf")
    >>> chrf.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])["score"]
    100.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            homepage="https://github.com/mjpost/sacrebleu",
            inputs_description=_KWARGS_DESCRIPTION,
            features=translation_metric_features(),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W15-3049"],
        )

    def _compute(
        self,
        predictions,
        references,
        char_order=CHRF.CHAR_ORDER,
        word_order=CHRF.WORD_ORDER,
        beta=CHRF.BETA,
        lowercase=False,
        whitespace=False,
        eps_smoothing=False,
    ):
        chrf = CHRF(
            char_order=char_order,
            word_order=word_order,
            beta=beta,
            lowercase=lowercase,
            whitespace=whitespace,
            eps_smoothing=eps_smoothing,
        )
        output = chrf.corpus_score(predictions, reference_streams(references, len(predictions)))
        return {
            "score": output.score,
            "char_order": output.char_order,
            "word_order": output.word_order,
            "beta": output.beta,
            "signature": str(chrf.get_signature()),
        }
