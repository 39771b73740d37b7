"""MongoDB adapter for people: accounts, sessions, sign-in failures, the audit trail, machine tokens, unit
settings and reply templates (all in ``wenzheng_intake``).

Lookups on the hot path go by ``_id`` (the only index FerretDB's SQLite backend uses): a session by its
token's hash, a machine token by its hash, a person by id, a user name through a pointer document keyed
by the name. A person's staff-contact record leaves through the outbox (:mod:`services.intake.outbox`), in
the same group commit as the write of the person.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.mongo import upsert_one
from services.intake.outbox import OutboxWriter, Write, new_writer_id

AUDIT_PAGE_MAX = 500
PERSON_LIST_PROJECTION = {"write_refs": 0, "outbox": 0, "password_hash": 0}  # plumbing and the hash stay in


class AccountsStore:
    def __init__(self, db: AsyncDatabase, outbox: OutboxWriter | None = None) -> None:
        self.db = db
        self.outbox = outbox or OutboxWriter(db, new_writer_id())
        self.people = db["people"]
        self.usernames = db["usernames"]
        self.sessions = db["sessions"]
        self.oidc_states = db["oidc_states"]  # one per started OpenID Connect sign-in, deleted when used
        self.failures = db["login_failures"]
        self.audit = db["audit"]
        self.machine_tokens = db["machine_tokens"]
        self.unit_settings = db["unit_settings"]
        self.templates = db["reply_templates"]

    async def ensure_indexes(self) -> None:
        await self.audit.create_index([("at", DESCENDING)])
        await self.audit.create_index("person_id")
        await self.audit.create_index("case_id")
        await self.sessions.create_index("person_id")
        await self.templates.create_index("unit_id")

    # ------------------------------------------------------------------ people
    async def insert_person(self, doc: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Claims the user name first (the pointer's _id is unique), then stores the person and its events."""
        await self.usernames.insert_one({"_id": doc["username"], "person_id": doc["_id"]})
        try:
            await self.outbox.write(Write(events, holder="people", doc_id=doc["_id"], insert=doc))
        except Exception:
            await self.usernames.delete_one({"_id": doc["username"], "person_id": doc["_id"]})
            raise

    async def person(self, person_id: str) -> dict[str, Any] | None:
        return await self.people.find_one({"_id": person_id}, {"write_refs": 0, "outbox": 0})

    async def person_by_username(self, username: str) -> dict[str, Any] | None:
        pointer = await self.usernames.find_one({"_id": username})
        return await self.person(pointer["person_id"]) if pointer else None

    async def list_people(self, query: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        cursor = self.people.find(query, PERSON_LIST_PROJECTION).sort([("username", 1)])
        docs = await cursor.skip(skip).limit(limit).to_list()
        return docs, await self.people.count_documents(query)

    async def update_person(self, person_id: str, changes: dict[str, Any],
                            outbox: list[dict[str, Any]] | None = None) -> bool:
        if not outbox:
            result = await self.people.update_one({"_id": person_id}, {"$set": changes})
            return result.matched_count == 1
        return await self.outbox.write(Write(outbox, holder="people", doc_id=person_id, guard={"_id": person_id},
                                             update={"$set": changes}))

    # ------------------------------------------------------------------ sign-in failures
    async def failures_of(self, username: str) -> list[datetime]:
        doc = await self.failures.find_one({"_id": username})
        return list(doc.get("at", [])) if doc else []

    async def record_failure(self, username: str, at: datetime, keep: list[datetime]) -> None:
        await upsert_one(self.failures, {"_id": username}, {"$set": {"at": [*keep, at]}})

    async def clear_failures(self, username: str) -> None:
        await self.failures.delete_one({"_id": username})

    # ------------------------------------------------------------------ sessions
    async def insert_session(self, doc: dict[str, Any]) -> None:
        await self.sessions.insert_one(doc)

    async def session(self, token_hash: str) -> dict[str, Any] | None:
        return await self.sessions.find_one({"_id": token_hash})

    async def insert_oidc_state(self, doc: dict[str, Any]) -> None:
        await self.oidc_states.insert_one(doc)

    async def take_oidc_state(self, state_hash: str) -> dict[str, Any] | None:
        """The started sign-in with this state, removed so that it cannot be used twice."""
        return await self.oidc_states.find_one_and_delete({"_id": state_hash})

    async def delete_session(self, token_hash: str) -> None:
        await self.sessions.delete_one({"_id": token_hash})

    async def delete_sessions_of(self, person_id: str, keep: str | None = None) -> None:
        query: dict[str, Any] = {"person_id": person_id}
        if keep:
            query["_id"] = {"$ne": keep}
        await self.sessions.delete_many(query)

    # ------------------------------------------------------------------ audit
    async def add_audit(self, row: dict[str, Any]) -> None:
        await self.audit.insert_one({"_id": f"a-{secrets.token_hex(10)}", **row})

    async def list_audit(self, query: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        cursor = self.audit.find(query).sort([("at", DESCENDING), ("_id", DESCENDING)])
        docs = await cursor.skip(skip).limit(limit).to_list()
        return docs, await self.audit.count_documents(query)

    # ------------------------------------------------------------------ machine tokens
    async def insert_machine_token(self, doc: dict[str, Any]) -> None:
        await self.machine_tokens.insert_one(doc)

    async def machine_token(self, token_hash: str) -> dict[str, Any] | None:
        return await self.machine_tokens.find_one({"_id": token_hash})

    async def list_machine_tokens(self) -> list[dict[str, Any]]:
        return await self.machine_tokens.find({}).sort([("created_at", 1)]).to_list()

    async def revoke_machine_token(self, public_id: str, at: datetime) -> bool:
        result = await self.machine_tokens.update_one({"id": public_id, "revoked_at": None},
                                                      {"$set": {"revoked_at": at}})
        return result.matched_count == 1

    # ------------------------------------------------------------------ unit settings and templates
    async def unit_settings_of(self, unit_id: str) -> dict[str, Any]:
        doc = await self.unit_settings.find_one({"_id": unit_id})
        return {"reply_approval_required": bool(doc and doc.get("reply_approval_required"))}

    async def put_unit_settings(self, unit_id: str, settings: dict[str, Any]) -> None:
        await upsert_one(self.unit_settings, {"_id": unit_id}, {"$set": settings})

    async def insert_template(self, doc: dict[str, Any]) -> None:
        await self.templates.insert_one(doc)

    async def template(self, template_id: str) -> dict[str, Any] | None:
        return await self.templates.find_one({"_id": template_id})

    async def templates_of(self, unit_id: str | None) -> list[dict[str, Any]]:
        query = {"unit_id": unit_id} if unit_id else {}
        return await self.templates.find(query).sort([("title", 1)]).to_list()

    async def update_template(self, template_id: str, changes: dict[str, Any]) -> bool:
        return (await self.templates.update_one({"_id": template_id}, {"$set": changes})).matched_count == 1

    async def delete_template(self, template_id: str) -> bool:
        return (await self.templates.delete_one({"_id": template_id})).deleted_count == 1


__all__ = ["AccountsStore", "DuplicateKeyError"]
