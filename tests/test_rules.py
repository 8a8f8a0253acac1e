"""The queue's pure rules: state transitions, retry decisions, matching and fair share."""

from __future__ import annotations

import pytest

from pilotwave.errors import IllegalTransition
from pilotwave.protocol import AttemptState, JobState
from pilotwave.wms.matching import Capacity, Demand, Gpu, select
from pilotwave.wms.retry import AttemptEnd, RetryPolicy, after_attempt
from pilotwave.wms.states import check_transition


def test_final_states_move_only_by_a_workflow_retry() -> None:
    for final in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        for target in JobState:
            if final is not JobState.SUCCEEDED and target in (JobState.QUEUED, JobState.PENDING):
                assert "retried" in check_transition(final, target)
                continue
            with pytest.raises(IllegalTransition):
                check_transition(final, target)


def test_a_retry_goes_back_to_queued() -> None:
    assert check_transition(JobState.RUNNING, JobState.QUEUED)


POLICY = RetryPolicy(backoff_base_s=2, backoff_max_s=10)


def decide(
    outcome: AttemptState,
    failures: int = 0,
    max_attempts: int = 3,
    retryable: bool = True,
    state=JobState.RUNNING,
):  # type: ignore[no-untyped-def]
    return after_attempt(
        job_state=state,
        failures=failures,
        max_attempts=max_attempts,
        end=AttemptEnd(outcome, retryable),
        now=100.0,
        policy=POLICY,
    )


def test_failed_attempt_is_retried_with_exponential_backoff() -> None:
    first = decide(AttemptState.FAILED, failures=0)
    second = decide(AttemptState.FAILED, failures=1)
    assert (first.state, first.failures, first.not_before) == (JobState.QUEUED, 1, 102.0)
    assert (second.state, second.failures, second.not_before) == (JobState.QUEUED, 2, 104.0)
    assert POLICY.delay(10) == 10  # capped


def test_attempts_exhausted_fails_the_job() -> None:
    d = decide(AttemptState.FAILED, failures=2, max_attempts=3)
    assert d.state is JobState.FAILED and d.failures == 3


def test_lost_attempt_counts_as_a_failure() -> None:
    assert decide(AttemptState.LOST, failures=0, max_attempts=1).state is JobState.FAILED
    assert decide(AttemptState.LOST, failures=0, max_attempts=2).state is JobState.QUEUED


def test_not_retryable_failure_fails_at_once() -> None:
    assert decide(AttemptState.FAILED, failures=0, retryable=False).state is JobState.FAILED


def test_handed_back_attempt_is_requeued_without_counting() -> None:
    d = decide(AttemptState.KILLED, failures=2, max_attempts=3)
    assert (d.state, d.failures, d.not_before) == (JobState.QUEUED, 2, 100.0)


def test_attempt_ending_after_cancel_changes_nothing() -> None:
    assert decide(AttemptState.SUCCEEDED, state=JobState.CANCELLED).state is JobState.CANCELLED


def cap(slots: int = 4, cores: int = 4, memory_mb: int = 8000, gpus=(), labels=()):  # type: ignore[no-untyped-def]
    return Capacity(slots, cores, memory_mb, list(gpus), frozenset(labels))


def test_jobs_that_do_not_fit_are_skipped_and_smaller_ones_backfill() -> None:
    big = Demand(1, owner_id=1, cores=8)
    small = Demand(2, owner_id=1, cores=2)
    picked = select([big, small], cap(cores=4))
    assert [d.id for d, _ in picked] == [2]


def test_higher_priority_goes_first() -> None:
    jobs = [Demand(5, 1, priority=10), Demand(1, 1, priority=0)]
    assert [d.id for d, _ in select(jobs, cap(slots=1))] == [5]


def test_fair_share_interleaves_owners_by_usage() -> None:
    # Owner 1 submitted first and already runs 3 cores elsewhere; owner 2 runs nothing.
    jobs = [Demand(1, 1), Demand(2, 1), Demand(3, 1), Demand(4, 2), Demand(5, 2)]
    picked = select(jobs, cap(slots=3, cores=3), usage={1: 3.0})
    assert [d.id for d, _ in picked] == [4, 5, 1]


def test_age_breaks_fair_share_ties() -> None:
    jobs = [Demand(7, 2), Demand(3, 1)]
    assert [d.id for d, _ in select(jobs, cap(slots=1))] == [3]


def test_labels_must_all_be_carried_by_the_pilot() -> None:
    jobs = [
        Demand(1, 1, labels=frozenset({"ssd", "avx512"})),
        Demand(2, 1, labels=frozenset({"ssd"})),
    ]
    assert [d.id for d, _ in select(jobs, cap(labels={"ssd"}))] == [2]


def test_gpu_model_and_memory_constraints_choose_gpus() -> None:
    gpus = [
        Gpu(index=0, model="Tesla T4", memory_mb=16000),
        Gpu(index=1, model="NVIDIA A100-SXM4-80GB", memory_mb=80000),
        Gpu(index=2, model="NVIDIA A100-SXM4-80GB", memory_mb=80000),
    ]
    want_a100 = Demand(1, 1, gpus=2, gpu_model="a100")
    want_big = Demand(2, 1, gpus=1, gpu_memory_mb=20000)
    picked = select([want_a100, want_big], cap(gpus=gpus))
    assert [(d.id, g) for d, g in picked] == [(1, (1, 2))]  # no 20 GB GPU left for job 2


def test_gpu_count_beyond_free_gpus_does_not_match() -> None:
    assert (
        select([Demand(1, 1, gpus=2)], cap(gpus=[Gpu(index=0, model="T4", memory_mb=16000)])) == []
    )


def test_slots_cap_the_number_of_jobs() -> None:
    jobs = [Demand(i, 1, cores=0) for i in range(10)]
    assert len(select(jobs, cap(slots=3, cores=100))) == 3
    assert len(select(jobs, cap(slots=10, cores=100), limit=4)) == 4


def test_gpu_model_globs_are_found_anywhere_in_the_name_without_case() -> None:
    from pilotwave.protocol.globs import glob_search

    name = "NVIDIA A100-SXM4-80GB"
    assert glob_search("a100", name) and glob_search("T4|A100", name)
    assert glob_search("A100*80GB", name) and glob_search("A?00", name)
    assert not glob_search("A100*40GB", name) and not glob_search("H100", name)
    assert glob_search("*", "") and not glob_search("?", "")


def test_gpu_model_constraints_are_globs_not_regular_expressions() -> None:
    from pilotwave.protocol.globs import check_glob, glob_search

    for bomb in ["(a+)+$", "^A100", "[AH]100", r"A\d+", "A100||H100", ""]:
        with pytest.raises(ValueError):
            check_glob(bomb)
    # The glob form of a backtracking bomb runs in len(pattern) * len(text) steps.
    assert not glob_search("*a" * 90 + "b", "a" * 10_000)
