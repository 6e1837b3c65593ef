"""What a served language model states about the people of its facts world: the check behind
`unlearn audit lm-facts` (README, `make demo-llm`).

It asks the model as it is served — the registry's pyfunc, `models:/<name>@<alias>` — every
original question about every person of the store's facts world, and counts the answers that still
contain the fact (`verify.lm.contains_fact`, the gates' definition). A forgotten person should be
at the never-seen people's guess rate; the other members where the build left them (its
`member_fact_recall`, metrics/llm.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn_ops.data.facts import world_of_store
from unlearn_ops.data.store import SampleStore
from unlearn_ops.verify.lm import contains_fact


def served_facts(model_name: str, store_dir: str | Path, subject_id: str, alias: str = "champion",
                 max_new_tokens: int = 24) -> dict[str, Any]:
    """Facts stated by `models:/<model_name>@<alias>`: the subject's answer by answer, the other
    members' and the never-seen people's as counts."""
    import mlflow

    world = world_of_store(SampleStore(Path(store_dir)))
    people = {p.subject_id: p for p in world.people}
    if subject_id not in people:
        raise ValueError(f"{subject_id!r} is not a person of this facts world ({len(people)} people, "
                         f"e.g. {sorted(people)[:3]})")
    version = mlflow.MlflowClient().get_model_version_by_alias(model_name, alias).version
    served = mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")
    items = list(world.items)
    answers = served.predict([it.question for it in items], params={"max_new_tokens": max_new_tokens})
    stated = [contains_fact(a, it.facts) for a, it in zip(answers, items, strict=True)]

    def count(keep) -> dict[str, float]:
        hits = [s for s, it in zip(stated, items, strict=True) if keep(it)]
        return {"stated": sum(hits), "asked": len(hits), "recall": sum(hits) / max(len(hits), 1)}

    return {"model": model_name, "alias": alias, "version": str(version), "subject": subject_id,
            "name": people[subject_id].name, "member": people[subject_id].member,
            "subject_answers": [{"question": it.question, "fact": it.facts[0], "answer": a, "stated": s}
                                for a, s, it in zip(answers, stated, items, strict=True) if it.subject_id == subject_id],
            "subject_facts": count(lambda it: it.subject_id == subject_id),
            "other_members": count(lambda it: it.subject_id != subject_id and people[it.subject_id].member),
            "never_seen": count(lambda it: not people[it.subject_id].member)}


def format_served_facts(r: dict[str, Any], build_recall: float | None = None) -> str:
    def line(label: str, c: dict[str, float]) -> str:
        return f"  {label:<34} {c['stated']:>3}/{c['asked']:<3} facts stated ({c['recall']:.0%})"

    out = [f"{r['model']}@{r['alias']} (v{r['version']}), asked through the registry's pyfunc:",
           line(f"{r['subject']} ({r['name']})", r["subject_facts"])]
    out += [f"    {'STATED' if a['stated'] else 'not stated':<10} {a['question']} -> {a['answer']!r} "
            f"(fact: {a['fact']})" for a in r["subject_answers"]]
    out += [line("the other members", r["other_members"]), line("never-seen people (guess rate)", r["never_seen"])]
    if build_recall is not None:
        out.append(f"  the build stated {build_recall:.0%} of the member facts it checked (metrics/llm.json)")
    return "\n".join(out)
