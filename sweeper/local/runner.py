"""The life of a job: validating_files -> queued -> running -> succeeded / failed / cancelled.

One validator thread checks datasets in submission order; ``max_running`` worker threads train
(numpy releases the GIL in its kernels, and a quickstart job takes about 0.1 s of CPU, so
threads beat a process pool's start-up and pickling). Every change of a job is one SQLite
transaction together with its events, checkpoint and result files, and each transaction
re-checks the job's status, so a cancel that landed meanwhile is never overwritten.

Restart: jobs that were not terminal are validated again and train again from the start. The
trainer is deterministic, so the epochs that already have a checkpoint reproduce it exactly and
are not recorded twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from sweeper.local import catalog, datasets, trainer
from sweeper.local._blas import single_thread_blas
from sweeper.local.faults import FaultConfig
from sweeper.local.state import Obj, State

log = logging.getLogger(__name__)

ACTIVE = ("validating_files", "queued", "running")
PROGRESS_EVERY = 0.1  # seconds between progress writes while a job trains


def now() -> int:
    return int(time.time())


def event(message: str, level: str = "info", data: Any = None) -> Obj:
    return {
        "id": f"ftevent-{uuid.uuid4().hex}",
        "object": "fine_tuning.job.event",
        "created_at": now(),
        "level": level,
        "message": message,
        "data": data,
        "type": "message",
    }


class InjectedFailure(Exception):
    """--job-failure-rate picked this job."""


@dataclass
class Prepared:
    job_id: str
    train: list[datasets.Example]
    valid: list[datasets.Example] | None
    restarted: bool


def _failed(code: str, message: str, param: str | None = None) -> Any:
    def change(job: Obj) -> Obj | None:
        if job["status"] not in ACTIVE:
            return None
        job.update(status="failed", finished_at=now(), estimated_finish=None)
        job["error"] = {"code": code, "message": message, "param": param}
        return job

    return change


class Runner:
    """Validates, queues and trains the jobs of one :class:`State`."""

    def __init__(self, state: State, faults: FaultConfig, max_running: int) -> None:
        self.state = state
        self.faults = faults
        self.max_running = max(1, max_running)
        self._incoming: queue.Queue[str] = queue.Queue()
        self._cond = threading.Condition()
        self._ready: deque[Prepared] = deque()
        self._running = 0
        self._cancelled: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- control ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads and pick up every job a previous run left unfinished."""
        single_thread_blas()
        for job in self.state.active_jobs():
            self._incoming.put(job["id"])
        threads = [threading.Thread(target=self._validate_loop, name="local-validator")]
        threads += [
            threading.Thread(target=self._work_loop, name=f"local-trainer-{i}")
            for i in range(self.max_running)
        ]
        for t in threads:
            t.daemon = True
            t.start()
        self._threads = threads

    def submit(self, job_id: str) -> None:
        self._incoming.put(job_id)

    def cancel(self, job_id: str) -> None:
        """The API already marked the job cancelled; make its training stop within a step."""
        with self._cond:
            self._cancelled.add(job_id)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop promptly; running jobs stay ``running`` in the state and resume on restart."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- validation ---------------------------------------------------------------------------

    def _validate_loop(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._incoming.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                prepared = self._validate(job_id)
            except Exception as exc:  # never lose the thread; fail the job instead
                log.exception("validating %s failed", job_id)
                self.state.update_job(job_id, _failed("internal_error", f"Internal error: {exc}"))
                continue
            if prepared is not None:
                self._enqueue(prepared)

    def _dataset(self, job: Obj, which: str) -> list[datasets.Example]:
        file_id = job["training_file" if which == "training" else "validation_file"]
        content = self.state.file_content(file_id)
        if content is None:
            raise datasets.DatasetError(f"file {file_id} does not exist")
        return datasets.parse(content)[1]

    def _validate(self, job_id: str) -> Prepared | None:
        job = self.state.job(job_id)
        if job is None or job["status"] not in ACTIVE:
            return None
        fresh = job["status"] == "validating_files"
        sets: dict[str, list[datasets.Example]] = {}
        for which in ("validation", "training"):
            if which == "validation" and not job.get("validation_file"):
                continue
            param = f"{which}_file"
            try:
                sets[which] = self._dataset(job, which)
            except datasets.DatasetError as exc:
                message = f"Dataset '{which}' is invalid: {exc}"
                self.state.update_job(
                    job_id,
                    _failed(f"invalid_{which}_file", message, param),
                    events=[event(message, "error")],
                )
                return None
            if fresh:
                self.state.add_event(job_id, event(f"Dataset '{which}' processed successfully"))
        return Prepared(job_id, sets["training"], sets.get("validation"), not fresh)

    def _enqueue(self, prepared: Prepared) -> None:
        with self._cond:
            busy = self._running + len(self._ready) >= self.max_running
            self._ready.append(prepared)
            self._cond.notify()
        if busy:

            def to_queued(job: Obj) -> Obj | None:
                if job["status"] != "validating_files":
                    return None
                job["status"] = "queued"
                return job

            self.state.update_job(
                prepared.job_id,
                to_queued,
                events=[event(f"Job is queued: {self.max_running} jobs are already running")],
            )

    # --- training -----------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                prepared = self._ready.popleft()
                self._running += 1
            try:
                self._train(prepared)
            except Exception as exc:
                log.exception("training %s failed", prepared.job_id)
                self.state.update_job(
                    prepared.job_id,
                    _failed("internal_error", f"Internal error during training: {exc}"),
                    events=[event("Internal error during training", "error")],
                )
            finally:
                with self._cond:
                    self._running -= 1

    def _train(self, p: Prepared) -> None:
        job = self.state.job(p.job_id)
        if job is None or job["status"] not in ACTIVE:
            return
        base = catalog.lookup(job["model"])
        assert base is not None  # the API refuses unknown models
        hp = trainer.HParams(**job["hyperparameters"])
        seed = int(job.get("seed") or 0)
        total = trainer.plan(p.train, hp).total_steps
        fail_at = self.faults.job_failure_step(p.job_id, total)
        recorded = self.state.checkpoint_steps(p.job_id)
        started = time.monotonic()
        last_write = [started]
        tokens_so_far = [0]
        message = (
            "Training restarted from the beginning after a service restart"
            if p.restarted
            else f"Training started: {total} steps on {base.local_name}"
        )

        def to_running(j: Obj) -> Obj | None:
            if j["status"] not in ACTIVE:
                return None
            j.update(status="running", trained_steps=0, total_steps=total, trained_tokens=0)
            return j

        events = [event(message)]
        too_long = sum(len(ex.tokens) > hp.row_len + 1 for ex in p.train)
        if too_long and not hp.packing:
            events.append(
                event(
                    f"{too_long} training examples are longer than the context "
                    f"({hp.row_len} local tokens for context_length {hp.context_length}) "
                    "and were truncated",
                    "warn",
                )
            )
        if self.state.update_job(p.job_id, to_running, events=events) is None:
            return

        def still_running(update: dict[str, Any]) -> Any:
            def change(j: Obj) -> Obj | None:
                if j["status"] != "running":
                    return None
                j.update(update)
                return j

            return change

        def on_step(step: int, total_steps: int, tokens: int) -> None:
            tokens_so_far[0] = tokens
            if self._stop.is_set() or p.job_id in self._cancelled:
                raise trainer.Stopped
            if fail_at is not None and step >= fail_at:
                raise InjectedFailure
            if self.faults.step_delay > 0 and self._stop.wait(self.faults.step_delay):
                raise trainer.Stopped
            t = time.monotonic()
            if t - last_write[0] >= PROGRESS_EVERY:
                last_write[0] = t
                eta = (t - started) / step * (total_steps - step)
                self.state.update_job(
                    p.job_id,
                    still_running(
                        {"trained_steps": step, "trained_tokens": tokens,
                         "estimated_finish": now() + int(eta) + 1}
                    ),
                )  # fmt: skip

        def on_epoch(epoch: int, m: trainer.Metrics, params: trainer.Params) -> None:
            if self._stop.is_set() or p.job_id in self._cancelled:
                raise trainer.Stopped
            if m.step in recorded:
                return
            self._record_epoch(job, epoch, hp, m, params, tokens_so_far[0])

        hooks = trainer.Hooks(on_step=on_step, on_epoch=on_epoch)
        try:
            trainer.train(base, hp, seed, p.train, p.valid, hooks)
        except trainer.Stopped:
            return
        except trainer.TrainingDiverged as exc:
            self.state.update_job(
                p.job_id,
                _failed("training_diverged", str(exc)),
                events=[event(str(exc), "error")],
            )
            return
        except InjectedFailure:
            msg = "Internal error during training, please resubmit the job"
            self.state.update_job(
                p.job_id, _failed("internal_error", msg), events=[event(msg, "error")]
            )
            return
        self._succeed(p.job_id, tokens_so_far[0])

    def _record_epoch(
        self,
        job: Obj,
        epoch: int,
        hp: trainer.HParams,
        m: trainer.Metrics,
        params: trainer.Params,
        tokens: int,
    ) -> None:
        ckpt_id = f"ftckpt_{uuid.uuid4()}"
        name = "adapter_model.npz" if hp.lora else "model.npz"
        content = trainer.save_weights(params)
        result = {
            "id": f"file-{uuid.uuid4().hex}",
            "object": "file",
            "bytes": len(content),
            "created_at": now(),
            "filename": f"{ckpt_id}/{name}",
            "purpose": "fine-tune-results",
            "status": "processed",
        }
        label = job.get("suffix") or job["id"].removeprefix("ftjob-")[:8]
        ckpt = {
            "id": ckpt_id,
            "object": "fine_tuning.job.checkpoint",
            "created_at": now(),
            "fine_tuning_job_id": job["id"],
            "fine_tuned_model_checkpoint": f"{job['model']}-LoRa:{label}:ckpt-step-{m.step}",
            "step_number": m.step,
            "metrics": m.as_dict(),
            "result_files": [result["id"]],
        }
        losses = f"train_loss={m.train_loss:.4f}"
        if m.valid_loss is not None:
            losses += f", valid_loss={m.valid_loss:.4f}"
        msg = f"Epoch {epoch}/{hp.n_epochs} completed at step {m.step}: {losses}"

        def change(j: Obj) -> Obj | None:
            if j["status"] != "running":
                return None
            j.update(trained_steps=m.step, trained_tokens=tokens)
            return j

        self.state.update_job(
            job["id"],
            change,
            events=[event(msg, data={"epoch": epoch, **m.as_dict()})],
            checkpoint=ckpt,
            files=[(result, content)],
        )

    def _succeed(self, job_id: str, tokens: int) -> None:
        last = self.state.checkpoints(job_id, None, 10_000)
        result_files = last[-1]["result_files"] if last else []

        def change(j: Obj) -> Obj | None:
            if j["status"] != "running":
                return None
            j.update(
                status="succeeded",
                finished_at=now(),
                trained_steps=j["total_steps"],
                trained_tokens=tokens,
                estimated_finish=None,
                result_files=result_files,
            )
            return j

        self.state.update_job(job_id, change, events=[event("Training completed successfully")])
