"""The round loop with a scripted generator: prompts, counts, determinism and resume."""

import json
import re

import pytest

from flantune.data import JsonlSource
from flantune.selfinstruct import (
    SelfInstructConfig,
    SelfInstructError,
    load_seed_tasks,
    self_instruct,
)
from flantune.selfinstruct.pipeline import SelfInstruct
from tests.selfinstruct.scripted import ScriptedGenerator


def _config(tmp_path, name="run", **overrides):
    settings = {"output_dir": str(tmp_path / name), "num_tasks": 12, "max_rounds": 4,
                "prompts_per_round": 3, **overrides}
    return SelfInstructConfig(**settings)


def test_prompts_show_six_seed_and_two_generated_instructions_in_seeded_order(tmp_path):
    seeds = {t.instruction for t in load_seed_tasks()}
    run = SelfInstruct(_config(tmp_path), ScriptedGenerator())
    first = run.instruction_prompts(0)
    assert first == SelfInstruct(_config(tmp_path, "b"), ScriptedGenerator()
                                 ).instruction_prompts(0)
    assert first != SelfInstruct(_config(tmp_path, "c", seed=1), ScriptedGenerator()
                                 ).instruction_prompts(0)
    for prompt in first:
        lines = prompt.split("\n")
        assert lines[0] == "Come up with a series of tasks:" and lines[-1] == "9."
        listed = [re.sub(r"^\d+\. ", "", line) for line in lines[1:-1]]
        assert len(listed) == 8 and set(listed) <= seeds
    run.round()
    pool = set(run.state.pool)
    assert len(pool) >= 2
    for prompt in run.instruction_prompts(1):
        listed = [re.sub(r"^\d+\. ", "", line) for line in prompt.split("\n")[1:-1]]
        assert len([t for t in listed if t in pool]) == 2
        assert len([t for t in listed if t in seeds]) == 6


def test_a_round_counts_every_candidate_by_reason(tmp_path):
    generator = ScriptedGenerator()
    run = SelfInstruct(_config(tmp_path), generator)
    summary = run.round()
    # Each of 3 generations: items 9..15 ("16." ends the list): 3 new, 1 too short,
    # 1 blacklisted, 1 a seed's repeat, 1 the same in all three.
    assert summary["instructions_generated"] == 3 * 7
    assert summary["instruction_rejected/too_short"] == 3
    assert summary["instruction_rejected/blacklist"] == 3
    assert summary["instruction_rejected/similar"] >= 3 + 2
    assert summary["instructions_kept"] + summary["instruction_rejected/similar"] == 3 * 5
    assert "instruction_rejected/truncated" not in summary
    kept = summary["instructions_kept"]
    assert summary["classification_yes"] + summary["classification_no"] == kept
    # Input-first instances: 2 each; output-first: 2 each; all distinct and valid.
    assert summary["tasks_kept"] == kept and summary["instances_kept"] == 2 * kept
    assert len(run.state.similarities) == 3 * 5  # every candidate that reached novelty
    calls = [len(prompts) for prompts, _, _ in generator.calls]
    assert calls == [3, kept, kept]


def test_output_file_is_a_self_instruct_task_file(tmp_path):
    config = _config(tmp_path)
    state = self_instruct(config, ScriptedGenerator())
    path = tmp_path / "run" / "self_instruct.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len(state.tasks) >= config.num_tasks
    flat = list(JsonlSource(path, format="self_instruct"))
    assert len(flat) == sum(len(r["instances"]) for r in records)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["tasks"] == len(records)
    assert sum(report["rouge_l_histogram"]["counts"]) == len(state.similarities)
    assert (tmp_path / "run" / "rouge_l_histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_files_and_an_interrupted_run_resumes_to_them(tmp_path):
    self_instruct(_config(tmp_path, "a"), ScriptedGenerator())
    self_instruct(_config(tmp_path, "b"), ScriptedGenerator())
    files = ("self_instruct.jsonl", "report.json", "rouge_l_histogram.png")
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Interrupted in the second round's instance generation (call 5 of 3 per round).
    with pytest.raises(KeyboardInterrupt):
        self_instruct(_config(tmp_path, "c"), ScriptedGenerator(fail_on_call=5))
    state = json.loads((tmp_path / "c" / "state.json").read_text())["state"]
    assert state["rounds_done"] == 1
    resumed = ScriptedGenerator()
    self_instruct(_config(tmp_path, "c"), resumed)
    rounds = json.loads((tmp_path / "a" / "state.json").read_text())["state"]["rounds_done"]
    assert rounds >= 2 and len(resumed.calls) == 3 * (rounds - 1)  # round 0 is not redone
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    other = _config(tmp_path, "d", seed=3)
    self_instruct(other, ScriptedGenerator())
    assert (tmp_path / "d" / files[0]).read_bytes() != (tmp_path / "a" / files[0]).read_bytes()


def test_resuming_with_other_settings_is_refused_and_more_rounds_extend(tmp_path):
    self_instruct(_config(tmp_path, max_rounds=1), ScriptedGenerator())
    with pytest.raises(SelfInstructError, match="another configuration"):
        self_instruct(_config(tmp_path, max_rounds=2, similarity_threshold=0.5),
                      ScriptedGenerator())
    state = self_instruct(_config(tmp_path, max_rounds=2, num_tasks=1000), ScriptedGenerator())
    assert state.rounds_done == 2


def test_malformed_generations_are_counted_never_raised(tmp_path):
    def garbage(prompts, sampling, seed):
        return ["\x00 .. ;;; 10. 10. \n\n" if p.startswith("Come") else "???" for p in prompts]

    state = self_instruct(_config(tmp_path, max_rounds=2), garbage)
    assert state.tasks == [] and state.rounds_done == 2
    assert sum(v for k, v in state.rounds[0].items() if k.startswith("instruction_rejected")) \
        == state.rounds[0]["instructions_generated"] > 0


def test_a_generator_must_answer_every_prompt(tmp_path):
    with pytest.raises(ValueError, match="one per prompt"):
        self_instruct(_config(tmp_path), lambda prompts, sampling, seed: ["x"])
    with pytest.raises(TypeError, match="return str"):
        self_instruct(_config(tmp_path, "b"), lambda prompts, sampling, seed: [1] * len(prompts))


def test_bad_configurations_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="machine_instructions"):
        _config(tmp_path, machine_instructions=8)
    with pytest.raises(ValueError, match="last_number"):
        _config(tmp_path, last_number=8)
    few = tmp_path / "few.jsonl"
    few.write_text('{"instruction": "Say hi.", "instances": [{"output": "hi"}], '
                   '"is_classification": false}\n')
    with pytest.raises(SelfInstructError, match="add seed tasks"):
        self_instruct(_config(tmp_path, seed_path=str(few)), ScriptedGenerator())
