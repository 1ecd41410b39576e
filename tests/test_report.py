"""hamverify.report: the per-stage breakdown of who decided each input and where the time went."""
from __future__ import annotations

from hamverify.records import VerificationRecord
from hamverify.report import format_summary, summarize


def _rec(i, status, by, times):
    return VerificationRecord(index=i, label=0, predicted=0, status=status, decided_by=by, eps=0.1,
                              pgd_robust=status == "verified", time_total=sum(times.values()), stage_times=times)


def test_summary_counts_every_deciding_stage_and_sums_stage_times():
    recs = [_rec(0, "verified", "bounds", {"bounds": 0.1}),
            _rec(1, "verified", "bab", {"bounds": 0.1, "pgd": 0.5, "attack": 1.0, "alpha": 0.4, "bab": 2.0}),
            _rec(2, "verified", "alpha", {"bounds": 0.1, "pgd": 0.5, "alpha": 0.3}),
            _rec(3, "falsified", "attack", {"bounds": 0.1, "pgd": 0.5, "attack": 0.2}),
            _rec(4, "falsified", "pgd", {"bounds": 0.1, "pgd": 0.4}),
            _rec(5, "verified", "milp", {"bounds": 0.1, "bab": 3.0, "milp": 4.0}),
            _rec(6, "timeout", None, {"bounds": 0.1, "bab": 5.0, "milp": 6.0})]
    s = summarize(recs)
    assert s["verified_by"] == {"bounds": 1, "alpha": 1, "bab": 1, "milp": 1}  # cascade order
    assert list(s["verified_by"]) == ["bounds", "alpha", "bab", "milp"]
    assert s["falsified_by"] == {"pgd": 1, "attack": 1}
    assert s["verified_by_bounds"] == 1 and s["verified_by_milp"] == 1  # the older columns stay
    assert abs(s["stage_seconds"]["bab"] - 10.0) < 1e-12 and abs(s["stage_seconds"]["bounds"] - 0.7) < 1e-12
    assert sum(s["verified_by"].values()) == s["verified"] and sum(s["falsified_by"].values()) == s["falsified"]
    text = format_summary(s)
    assert "bounds 1, alpha 1, bab 1, milp 1" in text
    assert "(by pgd 1, attack 1)" in text
    assert "bab 1.43 s" in text  # 10 s of BaB over 7 inputs


def test_summary_of_records_without_stage_fields():
    old = VerificationRecord(index=0, label=1, predicted=1, status="verified", decided_by="bounds", eps=0.3)
    text = format_summary(summarize([old]))
    assert "bounds 1" in text and "time per stage" not in text
