"""Orbax checkpoints of a run: the whole vmapped TrainState plus the driver's Python state.

Layout: `<logdir>/checkpoints/<step>/` with the Orbax items `state` (the TrainState pytree,
every leaf a jax array, PRNG keys included as uint32 arrays) and `driver` (JSON: the next
chunk index, the rows already written to metrics.jsonl, the per-seed `prev_train` metrics
of `loop.run`, ...), and our own `agdjax_manifest.json` (size and SHA-256 of every file).
`step` is the number of chunks completed, i.e. the index of the next chunk to run.

Saving is synchronous and crash-safe: Orbax writes `<step>.orbax-checkpoint-tmp-*` and
renames it to `<step>` when every file is written (an unfinished save, e.g. a process killed
by SIGKILL, leaves only a tmp directory, which Orbax never lists as a step); after the rename
the manifest is written atomically (tmp file + os.replace). A step counts as valid only if
its manifest exists and every listed file has the recorded size and hash, and Orbax can
restore it; `restore` walks the steps newest first and returns the first valid one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

MANIFEST = "agdjax_manifest.json"
_ITEMS = ("state", "driver")


class Restored(NamedTuple):
    step: int
    state: object  # TrainState [n_seeds, ...]
    driver: dict


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _list_files(step_dir: str):
    out = []
    for root, _, files in os.walk(step_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(step_dir: str):
    files = {rel: [os.path.getsize(os.path.join(step_dir, rel)), _file_digest(os.path.join(step_dir, rel))]
             for rel in _list_files(step_dir)}
    tmp = os.path.join(step_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": 1, "files": files}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


def check_manifest(step_dir: str) -> Optional[str]:
    """None if every file of the checkpoint is there, whole and unchanged; else why not."""
    path = os.path.join(step_dir, MANIFEST)
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except FileNotFoundError:
        return "no manifest (the save did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    for rel, (size, digest) in files.items():
        p = os.path.join(step_dir, rel)
        if not os.path.isfile(p):
            return f"missing file {rel}"
        if os.path.getsize(p) != size:
            return f"file {rel} has {os.path.getsize(p)} bytes, expected {size} (cut short?)"
        if _file_digest(p) != digest:
            return f"file {rel} changed (hash mismatch)"
    return None


def _nonempty_leaves(tree) -> dict:
    """{index: leaf} of the leaves with data. Orbax refuses zero-size arrays, which MJX states
    hold (e.g. `pipeline_state.act` of a model without actuator activations)."""
    return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree)) if math.prod(x.shape) > 0}


def _from_nonempty_leaves(saved: dict, template):
    """Inverse of `_nonempty_leaves`: zero-size leaves are rebuilt from `template`."""
    leaves, treedef = jax.tree.flatten(template)
    out = [saved[f"{i:05d}"] if math.prod(x.shape) > 0 else
           jax.device_put(jnp.zeros(x.shape, x.dtype), getattr(x, "sharding", None))
           for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, out)


def abstract_like(tree, sharding=None):
    """ShapeDtypeStructs for every leaf of `tree` (arrays or ShapeDtypeStructs, e.g. from
    jax.eval_shape), placed by `sharding` (default: the first local device), the restore
    target of `Checkpointer.restore`."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _placed(abstract):
    """`abstract` with the default placement (first local device) on leaves that have none."""
    return jax.tree.map(lambda x: x if getattr(x, "sharding", None) is not None else abstract_like(x), abstract)


class Checkpointer:
    """Saves and restores (TrainState, driver dict) under `directory`; keeps the last
    `max_to_keep` steps."""

    def __init__(self, directory: str, max_to_keep: int = 3, read_only: bool = False, log_fn=print):
        import orbax.checkpoint as ocp
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.log = log_fn
        self.read_only = read_only
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    # ------------------------------------------------------------------ steps
    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def all_steps(self):
        """Every step directory Orbax lists (finished saves), oldest first; valid or not."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def check(self, step: int) -> Optional[str]:
        """None if `step`'s files are complete and unchanged, else the reason."""
        return check_manifest(self.step_dir(step))

    def valid_steps(self):
        return [s for s in self.all_steps() if self.check(s) is None]

    # ------------------------------------------------------------------ save / restore
    def save(self, step: int, state, driver: dict):
        """Writes `state` and `driver` as checkpoint `step` (synchronously, then the manifest).
        A step that already exists is replaced."""
        ocp = self._ocp
        if step in self.all_steps():
            self.delete(step)
        saved = self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_nonempty_leaves(state)), driver=ocp.args.JsonSave(driver)), force=True)
        self.manager.wait_until_finished()
        if not saved:
            raise RuntimeError(f"Orbax did not save checkpoint step {step} in {self.directory}")
        step_dir = self.step_dir(step)
        if not os.path.isdir(step_dir):
            raise RuntimeError(f"checkpoint step {step} is missing after its save: {step_dir}")
        write_manifest(step_dir)

    def restore_step(self, step: int, abstract_state) -> Restored:
        """Restores one step (no fallback). Raises on any problem."""
        why = self.check(step)
        if why is not None:
            raise ValueError(f"checkpoint step {step} is not valid: {why}")
        ocp = self._ocp
        r = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_placed(_nonempty_leaves(abstract_state))),
            driver=ocp.args.JsonRestore()))
        state, driver = _from_nonempty_leaves(r["state"], abstract_state), r["driver"]
        want = jax.tree.structure(abstract_state)
        if jax.tree.structure(state) != want:
            raise ValueError(f"checkpoint step {step}: state tree differs from the program's")
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state)):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(f"checkpoint step {step}: leaf {a.shape} {a.dtype} != {b.shape} {b.dtype}")
        if not isinstance(driver, dict) or driver.get("step") != step:
            raise ValueError(f"checkpoint step {step}: driver state missing or inconsistent")
        return Restored(step, state, driver)

    def restore(self, abstract_state, accept: Callable[[dict], Optional[str]] = lambda d: None,
                validate_state: Callable[[object], Optional[str]] = lambda s: None) -> Optional[Restored]:
        """The newest step that is complete, restores without error, and that `accept(driver)`
        and `validate_state(state)` do not reject (they return None or a reason); None if no
        step qualifies. Every step skipped is reported through `log_fn` with the reason."""
        for step in reversed(self.all_steps()):
            try:
                r = self.restore_step(step, abstract_state)
                why = accept(r.driver) or validate_state(r.state)
            except Exception as e:  # noqa: BLE001 - any failure means: use the previous step
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if why is None:
                return r
            self.log(f"checkpoint: skipping step {step} in {self.directory}: {why}")
        return None

    def delete(self, step: int):
        try:
            self.manager.delete(step)
        except Exception:  # noqa: BLE001 - a damaged step Orbax cannot delete: remove the files
            shutil.rmtree(self.step_dir(step), ignore_errors=True)
        self.manager.reload()

    def delete_after(self, step: int):
        """Removes every step newer than `step` (used when a run continues from `step`)."""
        for s in self.all_steps():
            if s > step:
                self.delete(s)

    def close(self):
        self.manager.close()


def trees_equal(a, b) -> bool:
    """Bitwise equality of two pytrees of arrays (NaNs equal)."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(np.asarray(x).dtype == np.asarray(y).dtype and
               np.array_equal(np.asarray(x), np.asarray(y), equal_nan=np.asarray(x).dtype.kind == "f")
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
