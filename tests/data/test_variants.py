"""Tests for flantune.data.variants."""

from __future__ import annotations

import pytest

from flantune.data.errors import TemplateError
from flantune.data.templates import (
    COT_TEMPLATES,
    INSTRUCTION_TEMPLATES,
    QA_TEMPLATES,
    OptionStyle,
    Template,
)
from flantune.data.variants import (
    DEFAULT_FEW_SHOT_FORMATS,
    FewShotConfig,
    FewShotFormat,
    Variant,
    choose_exemplar_indices,
    render_example,
    variant_task_name,
    variants_for,
)

RECORDS = [
    {"question": f"What is {i} plus {i}?", "answer": str(2 * i),
     "options": [str(2 * i - 1), str(2 * i), str(2 * i + 1)],
     "rationale": f"{i} doubled is {2 * i}."}
    for i in range(40)
]
HEADERS = {
    OptionStyle.DASH_LIST: "OPTIONS:\n", OptionStyle.LETTERED_INLINE: "(A) ",
    OptionStyle.CHOOSE_FROM: "Choose from: ", OptionStyle.ROMAN_LIST: "Possible answers:\n",
    OptionStyle.NUMBERED_LIST: "Pick one of these:\n",
    OptionStyle.LETTERED_LIST: "Answer choices:\n",
}
# One marker word per template, so the template of every block can be identified.
MARKED = tuple(Template(f"[{m}] {{question}}", "{answer}", name=m)
               for m in ("alpha", "beta", "gamma", "delta"))


def fs_render(index: int, *, variant=Variant.FS_NOOPT, templates=QA_TEMPLATES, seed=0,
              config=None, k=None, length_fn=None):
    """The pipeline the task layer runs: choose exemplar indices, then render."""
    config = config or FewShotConfig(pool_size=len(RECORDS))
    key = ("qa", "train", index)
    picks = choose_exemplar_indices(config.pool_size, k or config.max_exemplars + 2, seed=seed,
                                    key=key, exclude=index)
    return render_example(templates, RECORDS[index], variant=variant, seed=seed, key=key,
                          exemplars=[RECORDS[j] for j in picks], few_shot=config,
                          length_fn=length_fn, task="qa")


# ----------------------------------------------------------------------------- variants


def test_variant_suffixes_and_flags():
    assert [v.suffix for v in Variant] == ["zsopt", "zsnoopt", "fsopt", "fsnoopt"]
    assert [(v.few_shot, v.with_options) for v in Variant] == [
        (False, True), (False, False), (True, True), (True, False)]
    assert variant_task_name("gcd", Variant.FS_OPT) == "gcd_fsopt"


def test_variants_for_offers_options_variants_only_with_options():
    assert variants_for(QA_TEMPLATES, has_options=False) == [Variant.ZS_NOOPT, Variant.FS_NOOPT]
    assert variants_for(QA_TEMPLATES, has_options=True) == list(Variant)


def test_variants_for_respects_what_the_templates_allow():
    only_opt = [Template("{q}\n{options_}", "{a}", requires_options=True)]
    assert variants_for(only_opt, has_options=True) == [Variant.ZS_OPT, Variant.FS_OPT]
    assert variants_for(only_opt, has_options=False) == []
    no_opt = [Template("{q}", "{a}", accepts_options=False)]
    assert variants_for(no_opt, has_options=True) == [Variant.ZS_NOOPT, Variant.FS_NOOPT]


def test_few_shot_config_is_validated():
    assert FewShotConfig().max_input_tokens == 1920
    for field in ("max_exemplars", "max_input_tokens", "pool_size"):
        with pytest.raises(ValueError, match=field):
            FewShotConfig(**{field: 0})
    with pytest.raises(ValueError, match="formats"):
        FewShotConfig(formats=())


# ----------------------------------------------------------------------------- exemplar choice


def test_choose_exemplar_indices_never_returns_the_excluded_index():
    for exclude in range(12):
        for key in range(30):
            picks = choose_exemplar_indices(12, 5, seed=1, key=("t", key), exclude=exclude)
            assert exclude not in picks
            assert len(picks) == len(set(picks)) == 5
            assert all(0 <= p < 12 for p in picks)


def test_choose_exemplar_indices_is_seeded_by_seed_and_key():
    a = choose_exemplar_indices(1000, 4, seed=3, key=("t", "train", 7), exclude=7)
    assert a == choose_exemplar_indices(1000, 4, seed=3, key=("t", "train", 7), exclude=7)
    assert a != choose_exemplar_indices(1000, 4, seed=4, key=("t", "train", 7), exclude=7)
    assert a != choose_exemplar_indices(1000, 4, seed=3, key=("t", "train", 8), exclude=7)


def test_choose_exemplar_indices_reaches_every_other_index_and_handles_small_pools():
    seen = set()
    for key in range(300):
        seen.update(choose_exemplar_indices(10, 2, seed=0, key=(key,), exclude=4))
    assert seen == set(range(10)) - {4}
    assert choose_exemplar_indices(1, 3, seed=0, key=(), exclude=0) == []
    assert sorted(choose_exemplar_indices(3, 5, seed=0, key=(), exclude=1)) == [0, 2]
    assert sorted(choose_exemplar_indices(3, 5, seed=0, key=(), exclude=None)) == [0, 1, 2]
    # An example outside the pool (e.g. from the validation split) excludes nothing.
    assert sorted(choose_exemplar_indices(3, 5, seed=0, key=(), exclude=99)) == [0, 1, 2]
    assert choose_exemplar_indices(0, 5, seed=0, key=(), exclude=None) == []
    with pytest.raises(ValueError):
        choose_exemplar_indices(3, -1, seed=0, key=(), exclude=None)


# ----------------------------------------------------------------------------- rendering


def test_render_example_is_deterministic():
    for variant in Variant:
        for index in range(10):
            assert fs_render(index, variant=variant) == fs_render(index, variant=variant)


def layout_of(inputs: str) -> str:
    """Which default few-shot layout produced ``inputs`` (MARKED templates only)."""
    for fmt in DEFAULT_FEW_SHOT_FORMATS:
        if fmt.input_prefix and inputs.startswith(fmt.input_prefix):
            return fmt.input_prefix
    return "blank-lines-3" if "\n\n\n" in inputs else "blank-lines-2"


def test_different_keys_spread_over_templates_option_styles_and_layouts():
    templates, styles, layouts = set(), set(), set()
    for index in range(len(RECORDS)):
        for seed in range(5):
            zs = render_example(MARKED, RECORDS[index], variant=Variant.ZS_OPT, seed=seed,
                                key=("qa", "train", index))
            templates.add(zs["template"])
            styles.update(s for s, header in HEADERS.items() if header in zs["inputs"])
            layouts.add(layout_of(fs_render(index, seed=seed, templates=MARKED)["inputs"]))
    assert templates == {t.name for t in MARKED}
    assert styles == set(OptionStyle)
    assert layouts == {"Q: ", "Input: ", "Problem: ", "blank-lines-2", "blank-lines-3"}


def test_zero_shot_result_fields():
    result = render_example(QA_TEMPLATES, RECORDS[1], variant=Variant.ZS_NOOPT, seed=0,
                            key=("qa", "train", 1))
    assert set(result) == {"inputs", "targets", "template", "variant", "num_exemplars"}
    assert result["variant"] == "zsnoopt" and result["num_exemplars"] == 0
    assert result["targets"] == "2"
    assert "What is 1 plus 1?" in result["inputs"]


def test_unnamed_template_is_reported_by_index():
    templates = [Template("A: {question}", "{answer}"), Template("B: {question}", "{answer}")]
    for index in range(10):
        result = render_example(templates, RECORDS[index], variant=Variant.ZS_NOOPT, seed=0,
                                key=("qa", "train", index))
        assert result["inputs"].startswith("AB"[int(result["template"])] + ":")


def test_few_shot_never_contains_the_example_itself():
    for index in range(len(RECORDS)):
        for variant in (Variant.FS_OPT, Variant.FS_NOOPT):
            result = fs_render(index, variant=variant)
            assert result["num_exemplars"] > 0
            assert result["inputs"].count(RECORDS[index]["question"]) == 1


def test_few_shot_skips_the_example_even_when_handed_in_as_a_candidate():
    record = RECORDS[5]
    duplicate = dict(record)
    for seed in range(20):
        result = render_example(MARKED, record, variant=Variant.FS_NOOPT, seed=seed,
                                key=("qa", "train", 5),
                                exemplars=[duplicate, RECORDS[6], record, RECORDS[7]],
                                few_shot=FewShotConfig(max_exemplars=3))
        assert result["num_exemplars"] == 2
        assert result["inputs"].count(record["question"]) == 1
        assert RECORDS[6]["question"] in result["inputs"]
        assert RECORDS[7]["question"] in result["inputs"]


def test_few_shot_exemplars_use_the_query_template_and_come_first():
    for index in range(20):
        result = fs_render(index, templates=MARKED)
        markers = [m for m in ("alpha", "beta", "gamma", "delta")
                   if f"[{m}]" in result["inputs"]]
        assert markers == [result["template"]]
        assert result["inputs"].count(f"[{result['template']}]") == result["num_exemplars"] + 1
        query_block = result["inputs"].rsplit(f"[{result['template']}] ", 1)[1]
        assert query_block.startswith(RECORDS[index]["question"])


def test_few_shot_respects_max_exemplars():
    for max_exemplars in (1, 2, 4):
        config = FewShotConfig(max_exemplars=max_exemplars, pool_size=len(RECORDS))
        for index in range(10):
            result = fs_render(index, config=config, k=max_exemplars + 3)
            assert result["num_exemplars"] == max_exemplars


def test_few_shot_respects_the_token_cap_and_stops_at_the_first_overflow():
    # A layout without prefixes and a one-template set make the lengths easy to count by hand.
    fmt = FewShotFormat("", "", "\n", "\n\n")
    template = (Template("{question}", "{answer}", name="plain"),)
    query, ex1, ex2 = RECORDS[3], RECORDS[10], RECORDS[11]
    query_words = len(query["question"].split())
    ex_words = len(ex1["question"].split()) + 1  # question + answer
    for cap in range(1, query_words + 3 * ex_words + 2):
        config = FewShotConfig(max_exemplars=5, max_input_tokens=cap, formats=(fmt,))
        result = render_example(template, query, variant=Variant.FS_NOOPT, seed=0,
                                key=("qa", "train", 3), exemplars=[ex1, ex2, RECORDS[12]],
                                few_shot=config)
        expected = max(0, min(3, (cap - query_words) // ex_words))
        assert result["num_exemplars"] == expected, cap
        if expected:
            assert len(result["inputs"].split()) <= cap
    config = FewShotConfig(max_input_tokens=query_words + ex_words, formats=(fmt,))
    result = render_example(template, query, variant=Variant.FS_NOOPT, seed=0,
                            key=("qa", "train", 3), exemplars=[ex1, ex2], few_shot=config)
    assert result["inputs"] == f"{ex1['question']}\n{ex1['answer']}\n\n{query['question']}"


def test_a_query_over_the_cap_is_rendered_zero_shot():
    config = FewShotConfig(max_input_tokens=3, pool_size=len(RECORDS))
    result = fs_render(2, config=config)
    alone = render_example(QA_TEMPLATES, RECORDS[2], variant=Variant.FS_NOOPT, seed=0,
                           key=("qa", "train", 2), exemplars=())
    assert result["num_exemplars"] == 0
    assert result["inputs"] == alone["inputs"]
    assert result["inputs"].count("What is") == 1


def test_length_fn_is_used_for_the_cap():
    plain = (Template("{question}", "{answer}", name="plain"),)
    chars = FewShotConfig(max_input_tokens=60, pool_size=len(RECORDS),
                          formats=(FewShotFormat("", "", "\n", "\n\n"),))
    result = fs_render(4, config=chars, length_fn=len, templates=plain)
    assert result["num_exemplars"] >= 1 and len(result["inputs"]) <= 60
    by_words = fs_render(4, config=chars, templates=plain)
    assert by_words["num_exemplars"] > result["num_exemplars"]


def test_few_shot_with_options_uses_one_option_style_for_all_blocks():
    for index in range(20):
        result = fs_render(index, variant=Variant.FS_OPT, templates=MARKED)
        counts = {s: result["inputs"].count(h) for s, h in HEADERS.items()}
        used = [s for s, c in counts.items() if c]
        assert len(used) == 1
        assert counts[used[0]] == result["num_exemplars"] + 1


def test_cot_few_shot_exemplars_carry_rationale_and_answer_sentence():
    result = fs_render(9, templates=COT_TEMPLATES)
    assert result["num_exemplars"] >= 1
    assert result["inputs"].count("doubled is") == result["num_exemplars"]
    assert result["targets"].startswith("9 doubled is 18. ")
    assert result["targets"].endswith("18.")


def test_templates_ending_in_a_cue_get_no_answer_prefix():
    cue = (Template("Question: {question}\nAnswer:", "{answer}", name="cue"),)
    for index in range(30):
        result = fs_render(index, templates=cue)
        assert "Answer:\nA:" not in result["inputs"]
        assert "Answer:\nOutput:" not in result["inputs"]
        assert "Answer:\nSolution:" not in result["inputs"]


def test_exemplars_the_query_template_does_not_apply_to_are_skipped():
    query = {"instruction": "Summarise.", "context": "Long text.", "response": "Short."}
    no_ctx = {"instruction": "Say hi.", "context": "", "response": "Hi."}
    with_ctx = {"instruction": "Translate.", "context": "Bonjour.", "response": "Hello."}
    result = render_example(INSTRUCTION_TEMPLATES, query, variant=Variant.FS_NOOPT, seed=0,
                            key=("inst", "train", 0), exemplars=[no_ctx, with_ctx])
    assert result["num_exemplars"] == 1
    assert "Bonjour." in result["inputs"] and "Say hi." not in result["inputs"]


def test_exemplar_missing_a_field_is_reported_as_an_exemplar_error():
    with pytest.raises(TemplateError, match="few-shot exemplar 1: task 'qa'.*no field 'answer'"):
        render_example(QA_TEMPLATES, RECORDS[0], variant=Variant.FS_NOOPT, seed=0,
                       key=("qa", "train", 0), task="qa",
                       exemplars=[RECORDS[1], {"question": "q"}])


def test_missing_field_in_the_query_names_the_task_and_field():
    with pytest.raises(TemplateError, match="task 'qa'.*no field 'answer'"):
        render_example(QA_TEMPLATES, {"question": "q"}, variant=Variant.ZS_NOOPT, seed=0,
                       key=("qa", "train", 0), task="qa")


def test_a_copy_of_the_example_is_skipped_even_when_its_options_render_differently():
    shuffling = (Template("{question}\n{options_}", "{answer}", name="s", shuffle_options=True),)
    record = {**RECORDS[5], "options": [f"choice {i}" for i in range(8)]}
    for seed in range(20):
        result = render_example(shuffling, record, variant=Variant.FS_OPT, seed=seed,
                                key=("qa", "train", 5), exemplars=[dict(record), RECORDS[6]])
        assert result["num_exemplars"] == 1
        assert result["inputs"].count(record["question"]) == 1


def test_an_exemplar_rendering_to_the_query_inputs_is_skipped():
    same_question = {**RECORDS[5], "rationale": "another source row"}
    result = render_example(MARKED, RECORDS[5], variant=Variant.FS_NOOPT, seed=0,
                            key=("qa", "train", 5), exemplars=[same_question, RECORDS[6]])
    assert result["num_exemplars"] == 1
    assert result["inputs"].count(RECORDS[5]["question"]) == 1
