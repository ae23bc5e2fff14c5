"""Fine-tuning jobs: a queue in SQLite and one worker thread that runs them one at a time.

A job's steps, each a subprocess in its own process group (malenia.process_tree: cancel ends the whole
tree, torchrun's workers included):
1. train: `torchrun --nproc_per_node=<GPUs> -m malenia.cli train ...` on a dataset view of the chosen
   cases (links, split train/val) and a replay view of earlier data; `python -m malenia.cli train`
   when there is no GPU (or `train_command` from the settings, which replaces that prefix);
2. validate (when the job has validation cases and the promotion policy needs it): the new model and
   the current one evaluated on the same cases (`malenia.server.validate_job`);
3. register the new version (free-text descriptions added to its attribute bank), then promote it
   when the policy allows.

Restart rules (`recover`): a job that was running is requeued when resuming is on (the trainer
resumes from RUN/checkpoints; a finished RUN/model is registered without training again), and
otherwise marked "interrupted" with the reason; its run folder is always kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from malenia.data.dataset import CASES_DIR, DatasetIndex, case_dir, read_dataset, write_dataset_index
from malenia.errors import InputError, MaleniaError, ModelError
from malenia.links import link_folder
from malenia.process_tree import new_group, signal_tree, start_id, stop_leftover, stop_tree
from malenia.model.folder import verify_model_folder
from malenia.server.bank_update import add_free_text
from malenia.server.cases import CaseStore, Conflict, NotFound
from malenia.server.config import ServerConfig
from malenia.server.layout import Layout, check_id
from malenia.server.store import Store, dumps, now
from malenia.server.versions import Registry, decide_promotion

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
MAX_CURVE = 2000  # loss points kept per job (thinned beyond)


def gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch or a broken CUDA setup: train on CPU
        return 0


def launcher_prefix(cfg: ServerConfig, gpus: int, job_id: str) -> list[str]:
    """The argv that starts `malenia train` (everything before its own options)."""
    if cfg.train_command:
        return list(cfg.train_command)
    module = ["-m", "malenia.cli", "train"]
    use_torchrun = cfg.launcher == "torchrun" or (cfg.launcher == "auto" and (gpus > 0 or cfg.nnodes > 1))
    python = cfg.python or sys.executable
    if not use_torchrun:
        return [python, *module]
    run = [python, "-m", "torch.distributed.run", f"--nproc_per_node={max(gpus, 1)}"]
    if cfg.nnodes > 1:
        run += [f"--nnodes={cfg.nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={cfg.rdzv_endpoint}",
                f"--rdzv_id={job_id}"]
    else:
        run += ["--standalone", "--nnodes=1"]
    return run + module


def checkpoint_every(steps: int) -> int:
    """Ten checkpoints per job, at most every 100 steps: a job shorter than the trainer's default interval
    (100) would otherwise have none and restart from zero after a server restart."""
    return max(1, min(100, int(steps) // 10))


# -- progress -------------------------------------------------------------------------------------

class ProgressTracker:
    """Folds the trainer's `--progress json` lines into the job's progress record."""

    KEYS = ("stage", "fraction", "message", "step", "total", "loss", "val_dsc")

    def __init__(self, state: dict[str, Any] | None = None, started: float | None = None):
        self.state = dict(state or {})
        self.state.setdefault("losses", [])
        self.state.setdefault("val", [])
        self.started = started

    def feed(self, line: str) -> bool:
        line = line.strip()
        if not line.startswith("{"):
            return False
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return False
        if not isinstance(obj, dict) or not set(obj) & {"stage", "step", "fraction"}:
            return False
        for key in self.KEYS:
            if key in obj and obj[key] is not None:
                self.state[key] = obj[key]
        step, loss, val = obj.get("step"), obj.get("loss"), obj.get("val_dsc")
        if isinstance(step, int) and step > 0 and obj.get("stage", "train") == "train":
            if "first_step_seconds" not in self.state and self.started is not None:
                self.state["first_step_seconds"] = round(time.time() - self.started, 3)
            losses = self.state["losses"]
            if isinstance(loss, (int, float)) and (not losses or losses[-1][0] != step):
                losses.append([step, float(loss)])
                if len(losses) > MAX_CURVE:
                    self.state["losses"] = losses[::2]
            vals = self.state["val"]
            if isinstance(val, (int, float)) and (not vals or vals[-1][1] != val):
                vals.append([step, float(val)])
        return True


# -- the queue and its worker ---------------------------------------------------------------------

class JobManager:
    def __init__(self, cfg: ServerConfig, store: Store, layout: Layout, cases: CaseStore, registry: Registry):
        self.cfg, self.store, self.layout, self.cases, self.registry = cfg, store, layout, cases, registry
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._running_id: str | None = None
        self._cancel: set[str] = set()
        self._gpus: int | None = cfg.gpus

    # -- API used by the HTTP layer and local mode
    def submit(self, params: dict[str, Any]) -> dict[str, Any]:
        params = self._check_params(params)
        job_id = "j" + secrets.token_hex(6)
        with self.store.transaction() as db:
            seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0]) + 1
            db.execute("INSERT INTO jobs(id, seq, state, created, params) VALUES(?,?,?,?,?)",
                       (job_id, seq, "queued", now(), dumps(params)))
        self._notify()
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        row = self.store.get("SELECT * FROM jobs WHERE id=?", (check_id("job", job_id),))
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return self._public(row)

    def list(self) -> list[dict[str, Any]]:
        return [self._public(r, curves=False) for r in self.store.query("SELECT * FROM jobs ORDER BY seq DESC")]

    def log_tail(self, job_id: str, lines: int = 200) -> str:
        self.get(job_id)
        path = self.layout.job_dir(job_id) / "log.txt"
        if not path.exists():
            return ""
        lines = max(1, min(int(lines), 10000))
        with open(path, "rb") as f:  # read the end only: logs of long runs are large
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - lines * 400))
            data = f.read().decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:]) + "\n"

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] in FINAL:
            raise Conflict(f"job {job_id} already {job['state']}")
        with self.store.transaction() as db:
            state = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
            if state == "queued":
                db.execute("UPDATE jobs SET state='cancelled', finished=?, error=? WHERE id=?",
                           (now(), "cancelled before it started", job_id))
                return self.get(job_id)
        self._cancel.add(job_id)
        self._terminate_running(job_id)
        return self.get(job_id)

    def active_case_ids(self) -> set[str]:
        used: set[str] = set()
        for row in self.store.query("SELECT params FROM jobs WHERE state IN ('queued', 'running')"):
            used.update(row["params"].get("case_ids") or [])
            used.update(row["params"].get("val_case_ids") or [])
            used.update(row["params"].get("replay_ids") or [])  # a running job's replay view links to them
        return used

    # -- worker lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="malenia-job-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: a running job is ended and handled like a restart would (requeued or interrupted)."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._running_id:
            self._terminate_running(self._running_id)
        if self._thread is not None:
            self._thread.join(timeout)

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._stop:
                    return
                row = self.store.get("SELECT * FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1")
                if row is None:
                    self._wake.wait(timeout=2.0)
                    continue
            try:
                self._run(row)
            except Exception as err:  # a bug must not stop the queue; the job says what happened
                self._finish(row["id"], "failed", error=f"internal error: {type(err).__name__}: {err}")

    # -- recovery at startup (before start())
    def recover(self) -> list[str]:
        notes = []
        for row in self.store.query("SELECT * FROM jobs WHERE state='running'"):
            job_id = row["id"]
            if row["pid"] and stop_leftover(row["pid"], row["pid_start"]):
                notes.append(f"job {job_id}: ended the processes the previous server had left running")
            run = self.layout.job_dir(job_id) / "run"
            finished = _model_ok(run / "model")
            resumable = self.cfg.resume_interrupted and (finished or _has_checkpoint(run))
            if resumable or finished:
                reason = ("training had finished; requeued to register its model" if finished
                          else "requeued; training resumes from its last checkpoint")
                self.store.execute("UPDATE jobs SET state='queued', pid=NULL, pid_start=NULL, notes=? WHERE id=?",
                                   (dumps(row["notes"] + [f"server restarted while running: {reason}"]), job_id))
                notes.append(f"job {job_id}: {reason}")
            else:
                self._finish(job_id, "interrupted",
                             error=f"the server stopped while this job ran; its run folder is kept at {run}")
                notes.append(f"job {job_id}: marked interrupted")
        return notes

    # -- running one job
    def _run(self, row: dict[str, Any]) -> None:
        job_id = row["id"]
        params = row["params"]
        jdir = self.layout.job_dir(job_id)
        run = jdir / "run"
        resuming = run.exists()
        started = now()
        claimed = self.store.execute("UPDATE jobs SET state='running', started=COALESCE(started, ?) WHERE id=? "
                                     "AND state='queued'", (started, job_id)).rowcount
        if not claimed:  # cancelled between the queue's read and here: it stays cancelled
            return
        self._running_id = job_id
        tracker = ProgressTracker(row["progress"] if resuming else {}, started=started)
        try:
            base = params.get("base_version") or self.registry.current()
            if base is None:
                raise InputError("no model version to fine-tune: the server has none (import one with `malenia serve model import`)")
            base_dir = self.layout.model_dir(base)
            data_dir, val_ids, replay_dir, resolved = self._prepare(job_id, params)
            self._update(job_id, params={**params, **resolved, "base_version": base})
            with open(jdir / "log.txt", "a", encoding="utf-8") as log:
                if not (resuming and _model_ok(run / "model")):
                    rc = self._spawn(job_id, self._train_argv(job_id, base_dir, data_dir, run, params, bool(val_ids),
                                                              replay_dir), log, tracker)
                    if rc is None:
                        return
                    if rc != 0:
                        raise _JobFailed(f"trainer exited with code {rc}: {_last_lines(jdir / 'log.txt')}")
                if not _model_ok(run / "model"):
                    raise _JobFailed(f"trainer finished but wrote no valid model folder at {run / 'model'}")
                new_dsc, base_dsc, current, vnotes = self._validation(job_id, run, data_dir, val_ids, log, tracker)
                if new_dsc is False:
                    return  # cancelled during validation
            self._register(job_id, params, base, run, resolved, tracker, new_dsc, base_dsc, current, vnotes)
        except _JobFailed as err:
            self._finish(job_id, "failed", error=str(err), progress=tracker.state)
        except MaleniaError as err:
            self._finish(job_id, "failed", error=str(err), progress=tracker.state)
        finally:
            self._running_id = None
            self._cancel.discard(job_id)

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        steps = params.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= self.cfg.max_steps:
            raise InputError(f"steps must be an integer in 1..{self.cfg.max_steps}")
        frac = params.get("replay_fraction", 0.5)
        if not isinstance(frac, (int, float)) or not 0.0 <= float(frac) <= 1.0:
            raise InputError("replay_fraction must be between 0 and 1")
        base = params.get("base_version")
        if base is not None:
            self.registry.get(base)
        elif self.registry.current() is None:
            raise Conflict("the server has no model version yet; import one with `malenia serve model import`")
        all_ids = {c["id"] for c in self.cases.list()}
        case_ids = params.get("case_ids")
        case_ids = sorted(all_ids) if case_ids is None else list(dict.fromkeys(case_ids))
        val_ids = list(dict.fromkeys(params.get("val_case_ids") or []))
        for cid in case_ids + val_ids:
            check_id("case", cid)
            if cid not in all_ids:
                raise NotFound(f"no case {cid!r}")
        if not case_ids:
            raise InputError("no training cases: upload corrections first")
        if set(val_ids) & set(case_ids) and params.get("val_case_ids") is not None:
            raise InputError("a case cannot be in both case_ids and val_case_ids")
        return {"base_version": base, "steps": steps, "case_ids": case_ids,
                "val_case_ids": val_ids if params.get("val_case_ids") is not None else None,
                "replay_fraction": float(frac)}

    def _prepare(self, job_id: str, params: dict[str, Any]) -> tuple[Path, list[str], Path | None, dict[str, Any]]:
        """Dataset views of stored cases (malenia.links) for training and replay; the split is fixed per job."""

        jdir = self.layout.job_dir(job_id)
        rng = random.Random(job_id)
        ids = list(params["case_ids"])
        if params.get("val_case_ids") is not None:
            train_ids, val_ids = ids, list(params["val_case_ids"])
        else:
            shuffled = sorted(ids)
            rng.shuffle(shuffled)
            n_val = int(round(len(ids) * self.cfg.val_fraction)) if len(ids) >= 2 else 0
            n_val = max(1, n_val) if len(ids) >= 2 and self.cfg.val_fraction > 0 else n_val
            val_ids, train_ids = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
        for cid in train_ids + val_ids:
            self.cases.folder(cid)  # raises NotFound if deleted meanwhile
        data = jdir / "data"
        _link_cases(data, {cid: self.layout.case_dir(cid) for cid in train_ids + val_ids})
        write_dataset_index(data, DatasetIndex(name=f"server-{job_id}", cases=train_ids + val_ids,
                                               split={"train": train_ids, **({"val": val_ids} if val_ids else {})},
                                               description="server cases chosen for this job (symlinks)"))
        # Replay: cases earlier jobs trained on (not in this job) plus the configured replay dataset.
        earlier: dict[str, Path] = {}
        for row in self.store.query("SELECT params FROM jobs WHERE state='succeeded'"):
            for cid in row["params"].get("train_ids", []):
                if cid not in ids and (self.layout.cases / cid).is_dir():
                    earlier[cid] = self.layout.case_dir(cid)
        stored = sorted(earlier)  # the server's own cases among them (the replay dataset's are not deletable here)
        if self.cfg.replay_dataset:
            ext = Path(self.cfg.replay_dataset)
            for cid in read_dataset(ext).cases:
                if "/" not in cid and cid not in ("..", ".") and case_dir(ext, cid).is_dir():
                    earlier.setdefault(cid, case_dir(ext, cid))
        replay_dir = None
        if earlier and params["replay_fraction"] > 0:
            replay_dir = jdir / "replay"
            _link_cases(replay_dir, earlier)
            write_dataset_index(replay_dir, DatasetIndex(name=f"replay-{job_id}", cases=sorted(earlier),
                                                         split={"train": sorted(earlier)},
                                                         description="earlier training data replayed"))
        sha = {c["id"]: c["sha256"] for c in self.cases.list()}
        val_set = hashlib.sha256("\n".join(sorted(sha.get(c, c) for c in val_ids)).encode()).hexdigest() if val_ids else None
        return data, val_ids, replay_dir, {"train_ids": train_ids, "val_ids": val_ids, "replay_cases": len(earlier),
                                           "replay_ids": stored if replay_dir is not None else [], "val_set": val_set}

    def _train_argv(self, job_id: str, base_dir: Path, data: Path, run: Path, params: dict[str, Any], has_val: bool,
                    replay: Path | None) -> list[str]:
        if self._gpus is None:
            self._gpus = gpu_count()
        argv = launcher_prefix(self.cfg, self._gpus, job_id)
        # without --config, `malenia train` keeps --init's own architecture (malenia.commands.train)
        argv += ["--config", self.cfg.train_config] if self.cfg.train_config else []
        argv += ["--data", str(data), "--out", str(run), "--init", str(base_dir),
                 "--steps", str(params["steps"]), "--checkpoint-every", str(checkpoint_every(params["steps"])),
                 "--split", "train", "--progress", "json"]
        if has_val:
            argv += ["--val-split", "val"]
        if replay is not None:
            argv += ["--replay", str(replay), "--replay-fraction", str(params["replay_fraction"])]
        if run.exists() and self.cfg.resume_flag:
            argv.append(self.cfg.resume_flag)
        return argv + list(self.cfg.extra_train_args)

    def _spawn(self, job_id: str, argv: list[str], log, tracker: ProgressTracker) -> int | None:
        """Runs one step; returns its exit code, or None when the job was cancelled."""
        if job_id in self._cancel:
            self._finish(job_id, "cancelled", error="cancelled", progress=tracker.state)
            return None
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        env = dict(os.environ, **(self.cfg.subprocess_env or {}), PYTHONUNBUFFERED="1", MALENIA_JOB_ID=job_id)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.layout.job_dir(job_id), env=env, text=True, encoding="utf-8",
                                errors="replace", bufsize=1, **new_group())
        self._proc = proc
        self.store.execute("UPDATE jobs SET pid=?, pid_start=? WHERE id=?", (proc.pid, start_id(proc.pid), job_id))
        last_write = 0.0
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if tracker.feed(line) and time.time() - last_write > 0.5:
                    self._update(job_id, progress=tracker.state)
                    last_write = time.time()
            rc = proc.wait()
        finally:
            signal_tree(proc.pid, force=True)  # whatever the leader left behind (torchrun workers)
            self._proc = None
            self.store.execute("UPDATE jobs SET pid=NULL, pid_start=NULL WHERE id=?", (job_id,))
        self._update(job_id, progress=tracker.state)
        log.write(f"[exit code {rc}]\n")
        if job_id in self._cancel:
            self._finish(job_id, "cancelled", error="cancelled by the user", progress=tracker.state)
            return None
        if self._stop:
            self._handle_stop(job_id, tracker)
            return None
        return rc

    def _handle_stop(self, job_id: str, tracker: ProgressTracker) -> None:
        run = self.layout.job_dir(job_id) / "run"
        if self.cfg.resume_interrupted and (_has_checkpoint(run) or _model_ok(run / "model")):
            self._update(job_id, progress=tracker.state)
            notes = self.store.get("SELECT notes FROM jobs WHERE id=?", (job_id,))["notes"]
            self.store.execute("UPDATE jobs SET state='queued', notes=? WHERE id=?",
                               (dumps(notes + ["server stopped while running: requeued; training resumes from its "
                                               "last checkpoint at the next start"]), job_id))
        else:
            self._finish(job_id, "interrupted", error="the server was stopped while this job ran", progress=tracker.state)

    def _terminate_running(self, job_id: str) -> None:
        proc = self._proc
        if proc is None or self._running_id != job_id:
            return
        # polite, then forced after the grace period (Windows: forced at once); _spawn's wait sees the end
        threading.Thread(target=stop_tree, args=(proc, self.cfg.cancel_grace_s), daemon=True,
                         name=f"stop-{job_id}").start()

    def _validation(self, job_id, run: Path, data: Path, val_ids: list[str], log, tracker):
        """(new DSC, current model's DSC on the same cases, current version, notes); new DSC False if cancelled."""
        current = self.registry.current()
        if self.cfg.promotion != "not_worse":
            return None, None, current, []
        if not val_ids:
            return None, None, current, ["no validation cases (fewer than 2 cases in the job)"]
        out = self.layout.job_dir(job_id) / "validation.json"
        models = [run / "model"] + ([self.layout.model_dir(current)] if current else [])
        argv = [self.cfg.python or sys.executable, "-m", "malenia.server.validate_job", *map(str, models), "--data", str(data),
                "--split", "val", "--out", str(out), "--device", "cuda" if (self._gpus or 0) > 0 else "cpu"]
        rc = self._spawn(job_id, argv, log, tracker)
        if rc is None:
            return False, None, current, []
        if rc != 0:
            return None, None, current, [f"validation failed (exit code {rc}); see the log"]
        result = json.loads(out.read_text())["models"]
        new = result.get(str(models[0]), {}).get("dsc")
        old = result.get(str(models[1]), {}).get("dsc") if current else None
        return new, old, current, [f"validation DSC on {len(val_ids)} case(s): new {new}, current {current} {old}"]

    def _register(self, job_id, params, base, run: Path, resolved, tracker, new_dsc, base_dsc, current, vnotes) -> None:
        free = sorted({(f["aspect"], f["text"]) for cid in resolved["train_ids"] + resolved["val_ids"]
                       if (self.layout.cases / cid).is_dir() for f in self.cases.get(cid)["free_text"]})
        metrics = {"val_dsc": new_dsc, "baseline_dsc": base_dsc, "baseline_version": current,
                   "val_set": resolved["val_set"], "val_cases": len(resolved["val_ids"]),
                   "train_cases": len(resolved["train_ids"]), "steps": params["steps"],
                   "trainer_val_dsc": tracker.state.get("val_dsc"), "final_loss": tracker.state.get("loss")}
        registered = self.store.get("SELECT name FROM versions WHERE job_id=?", (job_id,))
        if registered is not None:  # registered before the server stopped; requeued to finish, not to add a second
            version = self.registry.get(registered["name"])
        else:
            version = self.registry.register(
                run / "model", parent=base, job_id=job_id, metrics=metrics, notes=vnotes,
                training_data=f"fine-tuned from {base} on {len(resolved['train_ids'])} server case(s) (job {job_id})",
                adjust=lambda folder, manifest: add_free_text(folder, free, self.cfg.text_encoder))
        decision = decide_promotion(self.cfg.promotion, self.cfg.promotion_tolerance, new_dsc, base_dsc)
        if decision.promote and current is not None and self.registry.current() != current:
            decision.promote, decision.reason = False, "not promoted: the current version changed while the job ran"
        if decision.promote:
            self.registry.promote(version["name"], f"job {job_id}: {decision.reason}")
        self._finish(job_id, "succeeded", progress=tracker.state, result_version=version["name"],
                     notes=version["notes"] + [decision.reason])

    # -- records
    def _update(self, job_id: str, progress: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> None:
        if progress is not None:
            self.store.execute("UPDATE jobs SET progress=? WHERE id=?", (dumps(progress), job_id))
        if params is not None:
            self.store.execute("UPDATE jobs SET params=? WHERE id=?", (dumps(params), job_id))

    def _finish(self, job_id: str, state: str, error: str | None = None, progress: dict[str, Any] | None = None,
                result_version: str | None = None, notes: list[str] | None = None) -> None:
        row = self.store.get("SELECT notes, progress FROM jobs WHERE id=?", (job_id,))
        self.store.execute(
            "UPDATE jobs SET state=?, finished=?, error=?, progress=?, result_version=?, notes=?, pid=NULL, pid_start=NULL WHERE id=?",
            (state, now(), error, dumps(progress if progress is not None else row["progress"]), result_version,
             dumps(row["notes"] + (notes or [])), job_id))

    def _public(self, row: dict[str, Any], curves: bool = True) -> dict[str, Any]:
        progress = dict(row["progress"])
        if not curves:
            progress.pop("losses", None)
            progress.pop("val", None)
        return {"id": row["id"], "state": row["state"], "created": row["created"], "started": row["started"],
                "finished": row["finished"], "params": row["params"], "progress": progress,
                "result_version": row["result_version"], "error": row["error"], "notes": row["notes"]}


class _JobFailed(Exception):
    pass


def _link_cases(folder: Path, cases: dict[str, Path]) -> None:
    (folder / CASES_DIR).mkdir(parents=True, exist_ok=True)
    for cid, target in cases.items():
        link = folder / CASES_DIR / cid
        if link.is_symlink() or link.exists():
            continue
        link_folder(target, link)


def _model_ok(folder: Path) -> bool:
    try:
        verify_model_folder(folder)
        return True
    except ModelError:
        return False


def _has_checkpoint(run: Path) -> bool:
    folder = run / "checkpoints"
    return folder.is_dir() and any(folder.iterdir())


def _last_lines(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("[exit")]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-600:]
