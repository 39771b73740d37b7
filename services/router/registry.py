"""The router's model registry in its MongoDB database: every trained model with its metrics, and which
one routes (``current``) or runs beside it without deciding (``shadow``).

- ``models``: one document per model version (``_id`` = the classifier's version): its ``model.json``
  (``info``), the metrics it was judged by, where it came from, and how many chunks its bytes have.
- ``model_chunks``: the ``model.joblib`` bytes in chunks of :data:`CHUNK_BYTES` (``_id`` =
  ``"<version>:<n>"``), well under the 16 MiB document limit.
- ``model_pointer``: one document (``_id`` = ``"live"``): ``current`` (None: the model shipped with the
  code), ``shadow``, and ``previous``, the versions that were current before, newest last; a rollback
  pops it. Only the operator's commands write it, one at a time; workers read it by ``_id`` (cheap) every
  ``model_poll_seconds`` and load a new model off the event loop.

Nothing here is per-post data: a model is written when trained, the pointer when an operator promotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.common.events import utcnow
from services.router.classifier import TextClassifier

CHUNK_BYTES = 1 << 20
POINTER_ID = "live"


class RegistryError(ValueError):
    """An operator's request the registry cannot do (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class Pointer:
    current: str | None = None
    shadow: str | None = None
    previous: list[str] = field(default_factory=list)
    changed_at: datetime | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any] | None) -> Pointer:
        if not doc:
            return cls()
        return cls(doc.get("current"), doc.get("shadow"), list(doc.get("previous", [])), doc.get("changed_at"))


class ModelRegistry:
    def __init__(self, db: AsyncDatabase) -> None:
        self.models = db["models"]
        self.chunks = db["model_chunks"]
        self.pointers = db["model_pointer"]

    # -- models ------------------------------------------------------------------------------------------

    async def register(self, model: TextClassifier, *, metrics: Mapping[str, Any], source: Mapping[str, Any],
                       status: str = "candidate") -> str:
        """Store a model's bytes and description; registering the same version again changes nothing."""
        version = model.model_version
        if await self.models.find_one({"_id": version}, {"_id": 1}):
            return version
        blob = model.to_bytes()
        parts = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        for start in range(0, len(parts), 8):
            await self.chunks.insert_many([{"_id": f"{version}:{n}", "data": part}
                                           for n, part in enumerate(parts[start : start + 8], start)])
        # the description last: a model whose document exists has all its chunks
        await self.models.insert_one({"_id": version, "info": model.info, "metrics": dict(metrics),
                                      "source": dict(source), "status": status, "chunks": len(parts),
                                      "bytes": len(blob), "registered_at": utcnow()})
        return version

    async def describe(self, version: str) -> dict[str, Any] | None:
        return await self.models.find_one({"_id": version})

    async def list_models(self) -> list[dict[str, Any]]:
        docs = [d async for d in self.models.find({}, {"info": 0})]
        return sorted(docs, key=lambda d: d["registered_at"])

    async def set_status(self, version: str, status: str, **extra: Any) -> None:
        await self.models.update_one({"_id": version}, {"$set": {"status": status, **extra}})

    async def fetch(self, version: str) -> tuple[dict[str, Any], bytes]:
        """The model's ``info`` and bytes (to load with :meth:`TextClassifier.from_bytes`, off the loop)."""
        doc = await self.models.find_one({"_id": version})
        if doc is None:
            raise RegistryError(f"no model {version} in the registry")
        ids = [f"{version}:{n}" for n in range(doc["chunks"])]
        found = {d["_id"]: bytes(d["data"]) async for d in self.chunks.find({"_id": {"$in": ids}})}
        missing = [i for i in ids if i not in found]
        if missing:
            raise RegistryError(f"model {version}: chunks {missing} are missing")
        return doc["info"], b"".join(found[i] for i in ids)

    # -- the pointer ---------------------------------------------------------------------------------------

    async def pointer(self) -> Pointer:
        return Pointer.of(await self.pointers.find_one({"_id": POINTER_ID}))

    async def _write(self, pointer: Pointer) -> Pointer:
        written = Pointer(pointer.current, pointer.shadow, pointer.previous, utcnow())
        await self.pointers.replace_one({"_id": POINTER_ID}, {
            "current": written.current, "shadow": written.shadow, "previous": written.previous,
            "changed_at": written.changed_at}, upsert=True)
        return written

    async def _known(self, version: str) -> None:
        if await self.models.find_one({"_id": version}, {"_id": 1}) is None:
            raise RegistryError(f"no model {version} in the registry (see `models`)")

    async def promote(self, version: str) -> Pointer:
        """Make ``version`` the routing model on every worker (within one poll); the one it replaces can be
        rolled back to. A shadow of the same version stops shadowing."""
        await self._known(version)
        pointer = await self.pointer()
        if pointer.current == version:
            return pointer
        previous = [*pointer.previous, pointer.current or ""]  # "" = the model shipped with the code
        shadow = None if pointer.shadow == version else pointer.shadow
        written = await self._write(Pointer(version, shadow, previous))
        await self.set_status(version, "current", promoted_at=written.changed_at)
        if pointer.current:
            await self.set_status(pointer.current, "retired")
        return written

    async def rollback(self) -> Pointer:
        """Back to the model that was current before the current one."""
        pointer = await self.pointer()
        if not pointer.previous:
            raise RegistryError("nothing to roll back to: no model was promoted before the current one")
        back = pointer.previous[-1] or None
        written = await self._write(Pointer(back, pointer.shadow, pointer.previous[:-1]))
        if pointer.current:
            await self.set_status(pointer.current, "rolled_back", rolled_back_at=written.changed_at)
        if back:
            await self.set_status(back, "current")
        return written

    async def set_shadow(self, version: str | None) -> Pointer:
        """Run ``version`` beside the current model without deciding (None: no shadow)."""
        if version is not None:
            await self._known(version)
        pointer = await self.pointer()
        if version is not None and version == pointer.current:
            raise RegistryError(f"{version} is the current model; a shadow is a model that is not")
        return await self._write(Pointer(pointer.current, version, pointer.previous))
