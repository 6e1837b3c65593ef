"""bench.compare helpers that need no model."""

from bench.compare import reports_in


def test_a_report_writing_method_writes_into_the_benchmarks_scratch_folder(tmp_path):
    # concept_poisoning's Config has report_dir ("" = a new temp folder per call, left behind)
    assert reports_in("concept_poisoning", {"epochs": 1}, str(tmp_path)) == {"epochs": 1, "report_dir": str(tmp_path)}
    # a folder the settings name is kept; a method without reports is untouched
    assert reports_in("concept_poisoning", {"report_dir": "/keep"}, str(tmp_path)) == {"report_dir": "/keep"}
    assert reports_in("salun", {"epochs": 1}, str(tmp_path)) == {"epochs": 1}
