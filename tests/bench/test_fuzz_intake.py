"""`python -m bench fuzz_intake --quick`: 300 generated hostile documents through the real intake."""

import json

from bench import fuzz_intake
from bench.fuzz_mutations import FAMILIES, Context, generate
from unlearn_ops.request_parsing import IntakeLimits


def test_quick_fuzz_has_no_crash_no_loss_and_a_reason_for_every_rejection(tmp_path):
    payload = fuzz_intake.main(["--quick", "--out-dir", str(tmp_path)])
    s = payload["summary"]
    assert s["documents"] == 300
    assert s["crashes"] == 0 and s["lost"] == 0 and s["extra_rows"] == 0, s
    assert s["rejections_without_reason"] == 0, s["no_reason_examples"]
    assert s["unexpected"] == 0, s["unexpected_examples"]
    assert s["accepted"] + s["rejected"] == 300
    assert set(s["families"]) == set(FAMILIES) and all(f["documents"] >= 23 for f in s["families"].values())
    assert s["families"]["valid"]["accepted"] == s["families"]["valid"]["documents"]
    assert s["parameter_documents"] > 0
    saved = json.loads((tmp_path / "fuzz_intake.json").read_text())
    assert saved["machine"]["commit"] and "crashes" in (tmp_path / "fuzz_intake.md").read_text()


def test_the_corpus_is_seeded_and_a_slice_of_the_full_run():
    ctx = Context(subjects=["subj-00001", "subj-00002"], train_ids=[f"digits/train/{i:06d}" for i in range(50)],
                  limits=IntakeLimits())
    assert [generate(i, 0, ctx) for i in range(40)] == [generate(i, 0, ctx) for i in range(40)]
    assert generate(7, 0, ctx) != generate(7, 1, ctx)
