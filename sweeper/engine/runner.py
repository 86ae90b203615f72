"""The sweep loop: claim -> ask -> launch -> watch -> report -> tell.

One :class:`Runner` is one worker. Every step is a short transaction on sweeper's tables; no
session is held across an HTTP call. Each attempt belongs to one worker (``worker_id``); the
attempts of a worker that died are adopted by the next one that looks, so resume is just
"start a worker". State moves forward by compare-and-set, so two workers can never both launch,
tell or close the same attempt.

Crash windows and how they heal (see store/models.py for the states):
- claimed, no trial yet      -> ask (or adopt the Optuna trial tagged with our launch ref)
- claimed, trial known       -> launch (nothing was ever POSTed for it)
- launching (POST may have happened) -> find the job by the attempt's unique suffix; else POST
- submitted                  -> watch the job
- finished (told or not)     -> tell with skip_if_finished, then close
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sweeper.api.client import ApiClient
from sweeper.api.models import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    CreateJobRequest,
    Hyperparameters,
    Integration,
    Job,
    OpenAIHyperparameters,
    WandbIntegration,
)
from sweeper.config import Config, IntParam
from sweeper.engine import objective
from sweeper.engine.study import JOB_ID_ATTR, LAUNCH_REF_ATTR, distributions, grid_points
from sweeper.errors import ApiNotFound, ApiRejected, EvaluatorError
from sweeper.store import queries as q
from sweeper.store.db import transaction, write_transaction
from sweeper.store.models import (
    CLAIMED,
    CLOSED,
    FINISHED,
    LAUNCHING,
    SUBMITTED,
    Attempt,
    Sweep,
)

log = logging.getLogger("sweeper.engine")

Hook = Callable[[str, int], None]
CANCELLED_BY_USER = "cancelled by `sweep cancel`"  # (fault point name, attempt id)


class Observer(Protocol):
    """What the engine tells the outside world (the CLI renders it; tests record it)."""

    def __call__(self, kind: str, **info: Any) -> None: ...


def _silent(kind: str, **info: Any) -> None:
    return None


@dataclass(frozen=True)
class RunOptions:
    n_trials: int
    max_concurrent: int
    cancel_on_exit: bool = False
    lease: timedelta = timedelta(seconds=120)


@dataclass
class Files:
    training_file: str
    validation_file: str | None
    tokens_per_epoch: int  # estimated training tokens per epoch


@dataclass
class RunResult:
    stop_reason: str | None
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    requests: dict[str, int] = field(default_factory=dict)


class Runner:
    def __init__(
        self,
        *,
        cfg: Config,
        opts: RunOptions,
        client: ApiClient,
        session_factory: sessionmaker[Session],
        study: optuna.Study,
        sweep: Sweep,
        worker_id: str,
        files: Files,
        secrets: dict[str, str],
        observer: Observer = _silent,
        hook: Hook | None = None,
        evaluator: Callable[[dict[str, Any]], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.opts = opts
        self.client = client
        self.Session = session_factory
        self.study = study
        self.sweep = sweep
        self.worker_id = worker_id
        self.files = files
        self._secrets = secrets
        self.observe = observer
        self._hook = hook
        self.evaluator = evaluator
        self.clock = clock
        self.stopping = threading.Event()
        self.started = clock()
        self.stop_reason: str | None = None
        self.n_trials = opts.n_trials
        self._grid: list[dict[str, Any]] | None = None
        if cfg.sweep.sampler == "grid":
            self._grid = grid_points(cfg)
            self.n_trials = min(self.n_trials, len(self._grid))
        self._pruning = cfg.pruning.pruner != "none" and len(cfg.sweep.metrics) == 1
        q.LIVE_IN_PROCESS.add(worker_id)
        self._list_jobs_works = True
        self._interrupted = threading.Event()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run until every trial is closed or a stop condition holds; Ctrl-C returns early."""
        with self._ctrl_c_stops_gracefully():
            try:
                while not self.stopping.is_set():
                    started = self.clock()
                    if self.tick():
                        break
                    # poll_interval is the period of the ticks, not a pause after each one
                    pause = self.cfg.api.poll_interval - (self.clock() - started)
                    self.stopping.wait(max(0.0, pause))
                if self._interrupted.is_set():
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                self.observe("interrupted", cancel=self.opts.cancel_on_exit)
                if self.opts.cancel_on_exit:
                    self._adopt_posted_jobs()  # a POST the interrupt cut short may have a job
                    self.cancel_in_flight(reason="interrupted")
                return RunResult(self.stop_reason, self.counts(), interrupted=True)
        return RunResult(self.stop_reason, self.counts())

    @contextlib.contextmanager
    def _ctrl_c_stops_gracefully(self) -> Iterator[None]:
        """The first Ctrl-C stops the loop at its next safe point; a second one interrupts.

        Python raises KeyboardInterrupt in whatever code runs when the signal lands, and in a
        finalizer or weakref callback (SQLAlchemy has some) it is printed and lost; a flag
        cannot be lost. Only the main thread can own the handler.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._interrupted.is_set():
                raise KeyboardInterrupt
            self._interrupted.set()
            self.stopping.set()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def tick(self) -> bool:
        """One round; True when the sweep is done (for this worker)."""
        with transaction(self.Session) as s:
            q.heartbeat(s, self.worker_id)
            adopted = q.adopt_attempts(s, self.sweep.id, self.worker_id, self.opts.lease)
        if adopted:
            self.observe("adopted", count=adopted)
        self.resume_owned()
        self.watch()
        self.close_finished()
        claimed_all = self.launch_more()
        with transaction(self.Session) as s:
            open_left = q.count_open(s, self.sweep.id)
        return claimed_all and open_left == 0

    def retire(self) -> None:
        """This worker is leaving: its attempts may be adopted at once by the next one."""
        q.LIVE_IN_PROCESS.discard(self.worker_id)
        self._heartbeat(stopped=True)

    def mark_finished(self) -> None:
        with transaction(self.Session) as s:
            row = s.get(Sweep, self.sweep.id)
            if row is not None and q.count_open(s, row.id) == 0:
                row.finished_at = q.utcnow()

    def _heartbeat(self, *, stopped: bool = False) -> None:
        with transaction(self.Session) as s:
            q.heartbeat(s, self.worker_id, stopped=stopped)

    def hook(self, point: str, attempt_id: int) -> None:
        if self._hook is not None:
            self._hook(point, attempt_id)

    # --- claim and ask ------------------------------------------------------------------------

    def launch_more(self) -> bool:
        """Claim, ask and launch while the caps allow; True when no trial is left to claim."""
        while not self.stopping.is_set():
            verdict, attempt_id = self.claim()
            if attempt_id is None:
                return verdict == "done"
            self.hook("after_claim", attempt_id)
            attempt = self.ask(attempt_id, fresh=True)
            if attempt is not None and attempt.state == CLAIMED:
                self.launch(attempt)
        return False

    def claim(self) -> tuple[str, int | None]:
        """The claim transaction: global caps, budgets and failure caps under the sweep lock."""
        with write_transaction(self.Session, self.sweep.id) as s:
            used = q.count_trials(s, self.sweep.id)
            if used >= self.n_trials:
                return "done", None
            requested = s.get(Sweep, self.sweep.id)
            if requested is not None and requested.stop_reason == CANCELLED_BY_USER:
                self.stop_reason = CANCELLED_BY_USER
            reason = self.stop_reason or self._stop_condition(s)
            if reason is not None:
                self._set_stop(s, reason)
                return "done", None
            in_flight = q.count_in_flight(s, self.sweep.id)
            if in_flight >= self.opts.max_concurrent:
                return "busy", None
            if (
                in_flight
                and self._token_cap() is not None
                and q.calibration(s, self.sweep.id) is None
            ):
                return "busy", None  # under a token budget, the first job calibrates alone
            planned = self._planned_params(s, used)
            if planned is None:
                return "done", None
            attempt = q.new_attempt(s, self.sweep, self.worker_id, params=planned or None)
            return "claimed", attempt.id

    def _planned_params(self, s: Session, slot: int) -> dict[str, Any] | None:
        """Params fixed before asking: an enqueued point, or the next unclaimed grid point."""
        enqueue = self.cfg.sweep.enqueue
        if slot < len(enqueue):
            return dict(enqueue[slot])
        if self._grid is None:
            return {}
        taken = {
            _key(a.params or {})
            for a in s.scalars(
                select(Attempt).where(Attempt.sweep_id == self.sweep.id, Attempt.attempt_no == 1)
            )
        }
        for point in self._grid:
            if _key(point) not in taken:
                return point
        return None

    def ask(self, attempt_id: int, *, fresh: bool = False) -> Attempt | None:
        """Give a claimed attempt its Optuna trial, with no crash window between the two.

        The trial is created already tagged with the attempt's launch ref (a WAITING trial
        carrying the planned params, in one storage call), then moved to RUNNING by
        compare-and-set and sampled. A crash anywhere leaves a tagged trial that the next ask
        finds again, never an orphan. ``fresh`` (claimed this instant, no earlier ask possible)
        skips that search.
        """
        for i in range(20):
            with transaction(self.Session) as s:
                attempt = s.get(Attempt, attempt_id)
                if attempt is None or attempt.state != CLAIMED or attempt.trial_number is not None:
                    break
                ref, planned = attempt.launch_ref, dict(attempt.params or {})
            tagged = None if fresh and i == 0 else self._tagged(ref)
            if tagged is None:
                template = optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    system_attrs={"fixed_params": planned} if planned else None,
                    user_attrs={LAUNCH_REF_ATTR: ref},
                )
                storage = self.study._storage
                trial_id = storage.create_new_trial(self.study._study_id, template_trial=template)
                tagged = storage.get_trial(trial_id)
            self._sample_and_assign(tagged)
        self.hook("after_ask", attempt_id)
        with transaction(self.Session) as s:
            attempt = s.get(Attempt, attempt_id)
            if attempt is None or attempt.state != CLAIMED or attempt.trial_number is None:
                return attempt
            repeat = q.find_repeat(s, self.sweep.id, attempt.repeat_key or "")
        if repeat is not None:
            self._reuse(attempt, repeat)
        return attempt

    def _tagged(self, ref: str) -> optuna.trial.FrozenTrial | None:
        """The waiting or running trial created for this launch ref, if any."""
        for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)
        ):
            if t.user_attrs.get(LAUNCH_REF_ATTR) == ref:
                return t
        return None

    def _sample_and_assign(self, frozen: optuna.trial.FrozenTrial) -> None:
        storage = self.study._storage
        if frozen.state == TrialState.WAITING:
            try:
                storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:
                return
        # as Study.ask does: sample what the trial lacks (fixed params come from the enqueue)
        self.study._thread_local.cached_all_trials = None
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        try:
            for name, dist in self._distributions().items():
                trial._suggest(name, dist)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another worker sampled, launched and finished it meanwhile
        params = dict(trial.params)
        hps, model = self._resolve(params)
        ref = frozen.user_attrs[LAUNCH_REF_ATTR]
        with transaction(self.Session) as s:
            base, estimate = self._estimate(s, hps)
            q.set_trial(
                s,
                ref,
                self.sweep.name,
                trial_number=trial.number,
                trial_id=frozen._trial_id,
                params=params,
                hyperparameters=hps,
                model=model,
                repeat_key=q.repeat_key(model, hps),
                base_tokens=base,
                estimated_tokens=estimate,
            )

    def _distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return distributions(self.cfg)

    def _resolve(self, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        hps: dict[str, Any] = dict(self.cfg.job.hyperparameters)
        model = self.cfg.job.model
        for name, value in params.items():
            if name == "model":
                model = str(value)
            else:
                spec = self.cfg.search.get(name)
                hps[name] = int(value) if isinstance(spec, IntParam) else value
        return dict(sorted(hps.items())), model

    def _estimate(self, s: Session, hps: dict[str, Any]) -> tuple[int, int]:
        """(dataset tokens x epochs, that calibrated by the jobs that finished)."""
        epochs = int(hps.get("n_epochs") or 3)  # the provider's default
        base = self.files.tokens_per_epoch * epochs
        factor = q.calibration(s, self.sweep.id)
        # uncalibrated estimates get a margin so the token cap holds
        return base, math.ceil(base * (factor if factor is not None else 1.25))

    def _reuse(self, attempt: Attempt, earlier: Attempt) -> None:
        """An exact repeat of finished hyperparameters: reuse the result, launch nothing."""
        values = list(earlier.values or [])
        assert attempt.trial_number is not None
        self.study.tell(attempt.trial_number, values, skip_if_finished=True)
        with transaction(self.Session) as s:
            q.move(
                s,
                attempt.id,
                CLAIMED,
                CLOSED,
                trial_state="COMPLETE",
                values=values,
                reused_from=earlier.id,
                estimated_tokens=0,
                closed_at=q.utcnow(),
            )
        self.observe("reused", trial=attempt.trial_number, earlier=earlier.trial_number)

    # --- launch -------------------------------------------------------------------------------

    def launch(self, attempt: Attempt) -> None:
        """Mark the attempt launching (committed) before the POST that creates its job."""
        with transaction(self.Session) as s:
            if not q.move(s, attempt.id, CLAIMED, LAUNCHING, launched_at=q.utcnow()):
                return
        self._post(attempt.id)

    def _post(self, attempt_id: int) -> None:
        with transaction(self.Session) as s:
            a = s.get(Attempt, attempt_id)
            assert a is not None
            request = self._request(a)
        self.hook("before_post", attempt_id)
        try:
            job = self.client.create_job(request)
        except ApiRejected as exc:
            self._fail_unlaunched(attempt_id, exc)
            with transaction(self.Session) as s:
                failed = s.get(Attempt, attempt_id)
            if failed is not None:
                self._close(failed)  # now, so the failure caps see it before the next claim
            return
        self.hook("after_post", attempt_id)
        self._record_job(attempt_id, job)

    def _request(self, a: Attempt) -> CreateJobRequest:
        job = self.cfg.job
        values = {
            k: (
                float(v)
                if isinstance(v, int) and not isinstance(v, bool) and k in _FLOAT_HPS
                else v
            )
            for k, v in (a.hyperparameters or {}).items()
        }
        openai = self.cfg.api.provider == "openai"
        hps = (OpenAIHyperparameters if openai else Hyperparameters).model_validate(values)
        integrations = [
            Integration(
                wandb=WandbIntegration(
                    project=i.wandb.project,
                    api_key=None if openai else SecretStr(self._secrets[i.wandb.api_key_env]),
                    name=i.wandb.name or a.suffix,
                    entity=i.wandb.entity,
                    tags=i.wandb.tags,
                )
            )
            for i in job.integrations
        ]
        labels = {"sweep": self.sweep.name, "trial": str(a.trial_number), "launch": a.launch_ref}
        return CreateJobRequest(
            model=a.model or "",
            training_file=self.files.training_file,
            validation_file=self.files.validation_file,
            hyperparameters=hps,
            integrations=integrations or None,
            seed=job.seed,
            suffix=a.suffix,
            # Nebius takes tags (not echoed); OpenAI has no tags but metadata (echoed)
            tags=None
            if openai
            else [self.sweep.name, f"trial-{a.trial_number}", a.launch_ref, *job.tags],
            metadata={**labels, **{f"tag{i}": t for i, t in enumerate(job.tags)}}
            if openai
            else None,
        )

    def _record_job(self, attempt_id: int, job: Job) -> None:
        with transaction(self.Session) as s:
            moved = q.move(
                s,
                attempt_id,
                LAUNCHING,
                SUBMITTED,
                job_id=job.id,
                job_status=job.status,
                trained_tokens=job.trained_tokens,
                trained_steps=job.trained_steps,
                total_steps=job.total_steps,
            )
            a = s.get(Attempt, attempt_id)
        if moved and a is not None and a.trial_id is not None:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.study._storage.set_trial_user_attr(a.trial_id, JOB_ID_ATTR, job.id)
            self.observe("launched", trial=a.trial_number, job_id=job.id, params=a.params)

    def _fail_unlaunched(self, attempt_id: int, exc: ApiRejected) -> None:
        """The provider refused the create: no job exists; the trial fails with its reason."""
        with transaction(self.Session) as s:
            q.move(
                s,
                attempt_id,
                LAUNCHING,
                FINISHED,
                job_status=FAILED,
                error_code=exc.code or f"http_{exc.status_code}",
                error_message=str(exc),
                finished_at=q.utcnow(),
            )

    # --- resume -------------------------------------------------------------------------------

    def resume_owned(self) -> None:
        """Carry on with this worker's claimed/launching attempts (after a crash or adoption)."""
        with transaction(self.Session) as s:
            pending = q.attempts_of(s, self.sweep.id, self.worker_id, (CLAIMED, LAUNCHING))
            work = [(a.id, a.state, a.suffix, a.trial_number) for a in pending]
        for attempt_id, state, suffix, trial_number in work:
            if state == CLAIMED:
                if trial_number is None:
                    self.ask(attempt_id)
                with transaction(self.Session) as s:
                    attempt = s.get(Attempt, attempt_id)
                if attempt is not None and attempt.state == CLAIMED:
                    self.launch(attempt)
            else:
                job = self.client.find_job_by_suffix(suffix)
                if job is not None:
                    self.observe("reattached", job_id=job.id, suffix=suffix)
                    self._record_job(attempt_id, job)
                else:
                    self._post(attempt_id)

    def _adopt_posted_jobs(self) -> None:
        """Record the jobs of this worker's launching attempts that exist at the provider,
        without launching anything (claimed attempts stay for the next run)."""
        with transaction(self.Session) as s:
            launching = q.attempts_of(s, self.sweep.id, self.worker_id, (LAUNCHING,))
        for a in launching:
            job = self.client.find_job_by_suffix(a.suffix)
            if job is not None:
                self._record_job(a.id, job)

    # --- watch --------------------------------------------------------------------------------

    def watch(self) -> None:
        with transaction(self.Session) as s:
            inflight = q.attempts_of(s, self.sweep.id, self.worker_id, (SUBMITTED,))
        if not inflight:
            return
        wanted = {a.job_id for a in inflight}
        seen: dict[str, Job] = {}
        if self._list_jobs_works:
            try:
                page = self.client.list_jobs(limit=min(100, max(20, 2 * len(inflight))))
                seen = {j.id: j for j in page.data if j.id in wanted}
            except ApiRejected as exc:  # a provider without a job list: one GET per job
                log.warning("listing jobs failed (%s); polling each job instead", exc)
                self._list_jobs_works = False
        for a in inflight:
            assert a.job_id is not None
            job = seen.get(a.job_id)
            if job is None:
                try:
                    job = self.client.retrieve_job(a.job_id)
                except ApiNotFound:
                    self._vanished(a)
                    continue
            self._update(a, job)
        self._enforce_token_cap()

    def _update(self, a: Attempt, job: Job) -> None:
        changed = (job.status, job.trained_steps, job.trained_tokens) != (
            a.job_status,
            a.trained_steps,
            a.trained_tokens,
        )
        if changed and not job.is_terminal:
            extra = {}
            if job.trained_steps and job.total_steps and job.trained_tokens:
                # the job's own pace is a better estimate than the dataset's size
                projected = math.ceil(job.trained_tokens / job.trained_steps * job.total_steps)
                extra["estimated_tokens"] = max(projected, job.trained_tokens)
            with transaction(self.Session) as s:
                q.set_fields(
                    s,
                    a.id,
                    job_status=job.status,
                    trained_steps=job.trained_steps,
                    total_steps=job.total_steps,
                    trained_tokens=job.trained_tokens,
                    **extra,
                )
            self.observe(
                "progress",
                trial=a.trial_number,
                job_id=job.id,
                status=job.status,
                steps=job.trained_steps,
                total=job.total_steps,
            )
        if a.pruned and not job.is_terminal:
            self._cancel(job.id)  # a cancel lost in a crash: send it again
            return
        if job.is_terminal:
            self._collect(a, job, final=True)
            with transaction(self.Session) as s:
                q.move(
                    s,
                    a.id,
                    SUBMITTED,
                    FINISHED,
                    job_status=job.status,
                    trained_steps=job.trained_steps,
                    total_steps=job.total_steps,
                    trained_tokens=job.trained_tokens,
                    error_code=job.error.code if job.error else None,
                    error_message=job.error.message if job.error else None,
                    finished_at=q.utcnow(),
                )
        elif self._pruning and changed and self._epoch_due(a, job):
            self._collect(a, job, final=False)

    def _epoch_due(self, a: Attempt, job: Job) -> bool:
        """Whether a new per-epoch checkpoint should exist since we last looked."""
        if not job.trained_steps:
            return False
        with transaction(self.Session) as s:
            have = len(q.checkpoints_of(s, a.id))
        epochs = _as_int((a.hyperparameters or {}).get("n_epochs")) or (
            job.hyperparameters.n_epochs if job.hyperparameters else None
        )
        if not job.total_steps or not isinstance(epochs, int) or epochs <= 0:
            return True
        done = job.trained_steps * epochs // job.total_steps
        return done > have

    def _collect(self, a: Attempt, job: Job, *, final: bool) -> None:
        """Store new checkpoints (reporting them to the pruner) and, at the end, the events."""
        checkpoints = self.client.list_checkpoints(job.id)
        with transaction(self.Session) as s:
            q.store_checkpoints(s, a.id, checkpoints)
            rows = q.checkpoints_of(s, a.id)
        if final:
            events = self.client.list_events(job.id)
            with transaction(self.Session) as s:
                q.store_events(s, a.id, events)
        if self._pruning and not final and a.trial_id is not None:
            self._report(a, rows)

    def _report(self, a: Attempt, rows: list[Any]) -> None:
        metric = self.cfg.sweep.metrics[0]
        if metric not in ("valid_loss", "train_loss"):
            return
        series = objective.metric_series(rows, metric)
        assert a.trial_id is not None
        trial = optuna.trial.Trial(self.study, a.trial_id)
        frozen = self.study._storage.get_trial(a.trial_id)
        for epoch, (_, value) in enumerate(series, start=1):
            if epoch in frozen.intermediate_values:
                continue
            trial.report(value, epoch)
        if series and trial.should_prune():
            with transaction(self.Session) as s:
                q.set_fields(s, a.id, pruned=True, cancel_reason="pruned")
            assert a.job_id is not None
            self._cancel(a.job_id)
            self.observe("pruned", trial=a.trial_number, job_id=a.job_id, epoch=len(series))

    def _cancel(self, job_id: str) -> None:
        try:
            self.client.cancel_job(job_id)
        except ApiRejected as exc:  # already terminal: nothing to cancel
            log.info("cancel %s refused: %s", job_id, exc)

    def _vanished(self, a: Attempt) -> None:
        with transaction(self.Session) as s:
            q.move(
                s,
                a.id,
                SUBMITTED,
                FINISHED,
                job_status=FAILED,
                error_code="job_not_found",
                error_message=f"job {a.job_id} is no longer known to the provider",
                finished_at=q.utcnow(),
            )

    def _enforce_token_cap(self) -> None:
        """Jobs that outgrow their estimates must not push the sweep past the token budget.

        Each job's final size is projected from its own progress (tokens per step times total
        steps); when the projections no longer fit, the newest jobs are cancelled first.
        """
        cap = self._token_cap()
        if cap is None:
            return
        with transaction(self.Session) as s:
            spent, pending = q.token_totals(s, self.sweep.id)
            if spent + pending <= cap:
                return
            mine = q.attempts_of(s, self.sweep.id, self.worker_id, (SUBMITTED,))
        for a in sorted(mine, key=lambda a: a.launched_at or a.created_at, reverse=True):
            if spent + pending <= cap or a.cancel_reason is not None or a.job_id is None:
                continue
            pending -= max((a.estimated_tokens or 0) - (a.trained_tokens or 0), 0)
            with transaction(self.Session) as s:
                q.set_fields(s, a.id, cancel_reason="budget")
            self._cancel(a.job_id)
            self.observe("budget_cancel", trial=a.trial_number, job_id=a.job_id)

    def _token_cap(self) -> int | None:
        b = self.cfg.budget
        caps = []
        if b.max_trained_tokens is not None:
            caps.append(b.max_trained_tokens)
        if b.max_cost is not None and self.cfg.price_per_million_tokens > 0:
            caps.append(int(b.max_cost / self.cfg.price_per_million_tokens * 1e6))
        return min(caps) if caps else None

    # --- tell and close -----------------------------------------------------------------------

    def close_finished(self) -> None:
        with transaction(self.Session) as s:
            done = q.attempts_of(s, self.sweep.id, self.worker_id, (FINISHED,))
        for a in done:
            self._close(a)

    def _close(self, a: Attempt) -> None:
        state, values, error = self._outcome(a)
        if state == "RETRY":
            with transaction(self.Session) as s:
                if q.move(s, a.id, FINISHED, CLOSED, trial_state="RETRIED", closed_at=q.utcnow()):
                    q.new_attempt(
                        s,
                        self.sweep,
                        self.worker_id,
                        trial_number=a.trial_number,
                        trial_id=a.trial_id,
                        attempt_no=a.attempt_no + 1,
                        params=a.params,
                        hyperparameters=a.hyperparameters,
                        model=a.model,
                        estimated_tokens=a.estimated_tokens,
                        base_tokens=a.base_tokens,
                        repeat_key=a.repeat_key,
                    )
            self.observe("retry", trial=a.trial_number, error=error)
            return
        if a.trial_number is not None:
            if state == "FAIL" and a.trial_id is not None and error:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    self.study._storage.set_trial_user_attr(a.trial_id, "fail_reason", error[:500])
            self.study.tell(
                a.trial_number,
                values if state == "COMPLETE" else None,
                state=TrialState[state],
                skip_if_finished=True,
            )
        self.hook("after_tell", a.id)
        with transaction(self.Session) as s:
            q.move(
                s,
                a.id,
                FINISHED,
                CLOSED,
                trial_state=state,
                values=values,
                closed_at=q.utcnow(),
            )
        self.observe(
            "closed",
            trial=a.trial_number,
            state=state,
            values=values,
            error=error,
            job_id=a.job_id,
        )

    def _result_files(self, a: Attempt) -> tuple[list[str], dict[str, list[str]]]:
        """The job's result files and each checkpoint's (model weights, adapters, metrics)."""
        if a.job_id is None:
            return [], {}
        try:
            job = self.client.retrieve_job(a.job_id)
            checkpoints = self.client.list_checkpoints(a.job_id)
        except ApiNotFound:
            return [], {}
        return list(job.result_files), {c.id: list(c.result_files) for c in checkpoints}

    def _outcome(self, a: Attempt) -> tuple[str, list[float] | None, str | None]:
        status = a.job_status
        if status == SUCCEEDED:
            with transaction(self.Session) as s:
                rows = q.checkpoints_of(s, a.id)
            record = _record(a, rows, *self._result_files(a)) if self.evaluator else None
            try:
                if self.evaluator is not None and record is not None:
                    values = objective.run_evaluator(
                        self.evaluator, record, len(self.cfg.sweep.metrics)
                    )
                else:
                    values = objective.compute_values(self.cfg, rows, a.trained_tokens)
            except (ValueError, EvaluatorError) as exc:
                return "FAIL", None, str(exc)
            return "COMPLETE", values, None
        error = f"{a.error_code or 'error'}: {a.error_message or ''}".strip()
        if status == CANCELLED:
            if a.pruned:
                return "PRUNED", None, None
            return "FAIL", None, f"cancelled ({a.cancel_reason or 'outside sweeper'})"
        if (
            objective.is_transient_failure(a.error_code, a.error_message)
            and a.attempt_no <= self.cfg.sweep.max_retries
            and a.job_id is not None
        ):
            return "RETRY", None, error
        return "FAIL", None, error

    # --- stopping -----------------------------------------------------------------------------

    def _stop_condition(self, s: Session) -> str | None:
        b = self.cfg.budget
        if b.timeout is not None and self.clock() - self.started >= b.timeout:
            return f"budget.timeout: {b.timeout:g} s of wall time used"
        failed = q.count_failed_trials(s, self.sweep.id)
        if b.max_failed_trials is not None and failed >= b.max_failed_trials:
            return f"budget.max_failed_trials: {failed} trials failed"
        repeated = self._repeated_failure(s)
        if repeated:
            return repeated
        cap = self._token_cap()
        if cap is not None:
            spent, pending = q.token_totals(s, self.sweep.id)
            nxt = self._next_estimate(s)
            if spent + pending + nxt > cap:
                which = (
                    "budget.max_trained_tokens"
                    if b.max_trained_tokens is not None and cap == b.max_trained_tokens
                    else "budget.max_cost"
                )
                return (
                    f"{which}: {spent + pending:,} tokens spent or committed, the next trial "
                    f"needs ~{nxt:,} of the {cap:,} allowed"
                )
        return None

    def _next_estimate(self, s: Session) -> int:
        """The largest plausible next trial: the most epochs the search allows."""
        hps = dict(self.cfg.job.hyperparameters)
        spec = self.cfg.search.get("n_epochs")
        if spec is not None:
            hi = getattr(spec, "high", None)
            hps["n_epochs"] = hi if hi is not None else max(getattr(spec, "choices", [3]))
        return self._estimate(s, hps)[1]

    def _repeated_failure(self, s: Session) -> str | None:
        """The same non-transient provider error on two trials: the fixed fields are at fault."""
        rows = s.execute(
            select(Attempt.error_code, Attempt.error_message).where(
                Attempt.sweep_id == self.sweep.id,
                Attempt.state == CLOSED,
                Attempt.trial_state == "FAIL",
                Attempt.error_code.is_not(None),
            )
        ).all()
        seen: dict[str, int] = {}
        for code, message in rows:
            if code is None or objective.is_transient_failure(code, message) or "diverg" in code:
                continue
            seen[code] = seen.get(code, 0) + 1
            if seen[code] >= 2:
                return f"the provider failed two trials with {code!r} ({message}); fix the config"
        return None

    def _set_stop(self, s: Session, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.observe("stopping", reason=reason)
        sweep = s.get(Sweep, self.sweep.id)
        if sweep is not None and sweep.stop_reason != reason:
            sweep.stop_reason = reason

    def cancel_in_flight(
        self, *, reason: str, trial: int | None = None, everyone: bool = False, wait: float = 30.0
    ) -> list[tuple[int | None, str]]:
        """Cancel jobs in flight (this worker's, or every worker's) and close their trials.

        Returns (trial number, job id) of each job cancelled. Trials close once the provider
        reports the job cancelled (or finished first), within ``wait`` seconds.
        """
        with transaction(self.Session) as s:
            query = select(Attempt).where(
                Attempt.sweep_id == self.sweep.id, Attempt.state == SUBMITTED
            )
            if not everyone:
                query = query.where(Attempt.worker_id == self.worker_id)
            inflight = [a for a in s.scalars(query) if trial is None or a.trial_number == trial]
        for a in inflight:
            with transaction(self.Session) as s:
                q.set_fields(s, a.id, cancel_reason=reason)
            assert a.job_id is not None
            self._cancel(a.job_id)
        deadline = self.clock() + wait
        pending = list(inflight)
        while pending and self.clock() < deadline:
            still = []
            for a in pending:
                assert a.job_id is not None
                job = self.client.retrieve_job(a.job_id)
                if not job.is_terminal:
                    still.append(a)
                    continue
                with transaction(self.Session) as s:
                    fresh = s.get(Attempt, a.id)
                if fresh is not None and fresh.state == SUBMITTED:
                    self._update(fresh, job)
                with transaction(self.Session) as s:
                    fresh = s.get(Attempt, a.id)
                if fresh is not None and fresh.state == FINISHED:
                    self._close(fresh)
            pending = still
            if pending:
                time.sleep(min(0.5, self.cfg.api.poll_interval))  # also while stopping
        return [(a.trial_number, a.job_id or "") for a in inflight]

    def counts(self) -> dict[str, int]:
        with transaction(self.Session) as s:
            rows = s.execute(
                select(Attempt.trial_state, Attempt.state).where(Attempt.sweep_id == self.sweep.id)
            ).all()
        out: dict[str, int] = {}
        for trial_state, state in rows:
            if trial_state == "RETRIED":
                continue
            key = trial_state or ("RUNNING" if state != CLAIMED else "WAITING")
            out[key] = out.get(key, 0) + 1
        return out


# hyperparameters the request types as floats even where the TOML wrote an integer
_FLOAT_HPS = frozenset(
    {
        "learning_rate",
        "learning_rate_multiplier",
        "warmup_ratio",
        "weight_decay",
        "max_grad_norm",
        "lora_dropout",
    }
)


def _as_int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _record(
    a: Attempt, rows: list[Any], result_files: list[str], checkpoint_files: dict[str, list[str]]
) -> dict[str, Any]:
    """What a user evaluator receives about a finished trial."""
    return {
        "trial_number": a.trial_number,
        "job_id": a.job_id,
        "model": a.model,
        "params": dict(a.params or {}),
        "hyperparameters": dict(a.hyperparameters or {}),
        "trained_tokens": a.trained_tokens,
        "result_files": result_files,
        "checkpoints": [
            {
                "id": r.checkpoint_id,
                "step_number": r.step_number,
                "metrics": dict(r.metrics),
                "result_files": checkpoint_files.get(r.checkpoint_id, []),
            }
            for r in rows
        ],
    }
