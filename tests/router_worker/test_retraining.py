"""Retraining from the city's corrections against the real MongoDB-wire server: a retrain from a few
hundred reassignments changes the decisions for the corrected kind of post, a worse candidate is refused,
and a promotion and a rollback reach every worker (two live engines sharing one registry)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.common.mongo import new_client
from services.common.reference import load_reference
from services.router.admin import retrain
from services.router.classifier import TextClassifier, TrainingParams
from services.router.cli import shipped_examples
from services.router.config import DEFAULT_MODEL_DIR, DEFAULT_TRAINING_FILES
from services.router.engine import load_engine
from services.router.live import LiveEngine
from services.router.policies import CaseRouting
from services.router.registry import ModelRegistry, RegistryError
from services.router.retraining import CityCase, held_out_scores, judge, split_holdout
from services.router.store import RouterStore

pytestmark = pytest.mark.integration

# The city's practice: square-dance noise is a matter for the police (noise nuisance), which the shipped
# model routes to urban management (广场舞 is one of its keywords) for about half of them.
PLACES = ["幸福里小区", "东门广场", "滨江公园", "文化广场", "人民公园", "红旗社区", "和平路口", "体育馆门前",
          "万达广场", "老城区", "新城花园", "江边步道"]
TIMES = ["每天晚上七点到十点", "每天早上五点多", "周末整晚", "天天晚上", "每晚九点以后", "节假日全天"]
COMPLAINTS = ["跳广场舞音响开得震天响", "广场舞音乐声音特别大", "有人跳广场舞还用大功率音箱",
              "广场舞队伍放歌扰民", "广场舞噪音吵得人无法入睡", "广场舞的高音喇叭声很刺耳"]
ASKS = ["多次劝说无果，请派出所出警处理噪音扰民", "打110说会来看，结果没人管，请公安机关依法处理",
        "希望警方依照治安管理处罚法制止噪声扰民", "老人孩子都休息不好，请民警来管一管"]


ALL_POSTS = [f"{p}{t}{c}，{a}" for p, t, c, a in itertools.product(PLACES, TIMES, COMPLAINTS, ASKS)]
random.Random(7).shuffle(ALL_POSTS)


def square_dance_posts(n: int, seed: int) -> list[str]:
    """``n`` distinct posts; different seeds give disjoint posts (seed 99: posts never corrected)."""
    start = len(ALL_POSTS) - n if seed == 99 else seed * 300
    return ALL_POSTS[start : start + n]


@pytest.fixture
async def db(mongo_url, run_id):
    client = new_client(mongo_url)
    name = f"wenzheng_router_retrain_{run_id}"
    yield client[name]
    await client.drop_database(name)
    await client.close()


@pytest.fixture(scope="module")
def reference():
    return load_reference()


@pytest.fixture(scope="module")
def shipped():
    return shipped_examples(DEFAULT_TRAINING_FILES)


async def record_reassignments(store: RouterStore, posts: list[str], label: str) -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    await store.record_corrections([
        (f"evt-{i}", CaseRouting(case_id=f"WZ-{i:05d}", text=text, submitted_at=start + timedelta(minutes=i)),
         label, "county_public_security_xingguo", "reassigned") for i, text in enumerate(posts)])


async def test_a_retrain_from_a_few_hundred_reassignments_changes_decisions(db, reference, shipped):
    store, registry = RouterStore(db), ModelRegistry(db)
    await record_reassignments(store, square_dance_posts(300, seed=1), "public_security_law")
    # returns are recorded too, but say only which unit was wrong: they train nothing
    await store.record_corrections([("evt-r", CaseRouting(case_id="WZ-R", text="路灯坏了"), "urban_management",
                                     "county_urban_management_xingguo", "returned")])
    fresh = square_dance_posts(40, seed=99)
    worker = LiveEngine(load_engine(DEFAULT_MODEL_DIR), load_engine(DEFAULT_MODEL_DIR).assigner, registry)
    await worker.refresh()
    before = worker.current.classifier.predict(fresh)
    # the shipped model routes at most half of them to the police (every post asks for it), the rest elsewhere
    assert sum(c == "public_security_law" for c in before) <= 20

    result = await retrain(store, registry, shipped=shipped, shipped_dir=DEFAULT_MODEL_DIR,
                           taxonomy=reference.taxonomy)

    assert result["action"] == "promoted", result["reasons"]
    assert result["city_cases"]["reassignments"] == 300 and result["city_cases"]["returns_not_labels"] == 1
    assert result["held_out"] >= 30 and result["training"] + result["held_out"] == 300
    assert result["candidate"]["macro_f1"] > result["current"]["macro_f1"]
    assert "公安政法" in result["table"]  # the side-by-side names categories in Chinese
    assert await worker.refresh()  # the worker follows the registry without a restart
    assert worker.classifier_version == result["candidate_model_version"]
    after = worker.current.classifier.predict(fresh)
    assert sum(c == "public_security_law" for c in after) >= 36
    decision = worker.preclassified(fresh[:1]).propose(fresh[0], None, frozenset())
    assert decision.category == "public_security_law"
    assert decision.model_version.startswith(result["candidate_model_version"])  # decisions carry the version
    # an unrelated kind of post is still routed as before
    lamp = "水西镇村口的路灯坏了半个月，晚上出行很不安全，请尽快安排维修"
    assert worker.current.classifier.classify(lamp).category == "urban_management"


async def test_a_worse_candidate_is_refused_and_the_current_model_stays(db, reference, shipped):
    store, registry = RouterStore(db), ModelRegistry(db)
    texts = [row[0] for row in shipped]
    labels = [row[1] for row in shipped]
    keywords = reference.taxonomy.keywords_by_category()
    good = TextClassifier.train(texts[::3], labels[::3], keywords, small_params())
    names = sorted(set(labels))
    swapped = {a: b for a, b in zip(names, names[1:] + names[:1], strict=True)}
    rotated = [swapped[label] if i % 2 else label for i, label in enumerate(labels[::3])]  # half mislabelled
    worse = TextClassifier.train(texts[::3], rotated, keywords, small_params())
    await registry.register(good, metrics={}, source={"test": "good"})
    await registry.promote(good.model_version)
    held = [CityCase(f"k{i}", t, label, "history") for i, (t, label) in enumerate(zip(texts[1::7], labels[1::7],
                                                                                        strict=True))]
    _, holdout = split_holdout(held, 0.5)
    before, after = held_out_scores(good, holdout), held_out_scores(worse, holdout)
    support = {label: sum(c.label == label for c in holdout) for label in before["per_label_recall"]}
    verdict = judge(before, after, support, min_holdout=30, max_recall_drop=0.1, min_support=5)
    assert not verdict.promote and any("宏平均F1 下降" in r for r in verdict.reasons)

    # the whole command: a candidate that scores worse on the city's held-out cases is registered as refused
    # and the current model stays
    await registry.rollback()  # back to the shipped model
    await store.import_history([{"_id": f"h{i}", "text": t, "label": label} for i, (t, label) in
                                enumerate(zip(texts[2::11], labels[2::11], strict=True))])
    result = await retrain(store, registry, shipped=shipped, shipped_dir=DEFAULT_MODEL_DIR,
                           taxonomy=reference.taxonomy, params=TrainingParams(c=1e-5, neighbours=0))
    assert result["action"] == "refused", result
    assert result["candidate"]["macro_f1"] < result["current"]["macro_f1"]
    assert any("宏平均F1 下降" in r for r in result["reasons"])
    assert (await registry.pointer()).current is None
    assert (await registry.describe(result["candidate_model_version"]))["status"] == "refused"


def small_params():
    return TrainingParams(neighbours=0, calibration_folds=2)


def tiny_model(reference, seed: int) -> TextClassifier:
    """A small model trained in a second, different per seed."""
    rng = random.Random(seed)
    keywords = reference.taxonomy.keywords_by_category()
    texts, labels = [], []
    for category, words in itertools.islice(keywords.items(), 4):
        for _ in range(8):
            texts.append("".join(rng.sample(words, 3)))
            labels.append(category)
    return TextClassifier.train(texts, labels, keywords, small_params())


async def test_promote_and_rollback_reach_every_worker(db, reference):
    registry = ModelRegistry(db)
    shipped = load_engine(DEFAULT_MODEL_DIR)
    workers = [LiveEngine(shipped, shipped.assigner, ModelRegistry(db)) for _ in range(2)]
    first, second = tiny_model(reference, 1), tiny_model(reference, 2)
    for model in (first, second):
        await registry.register(model, metrics={"held_out": {"macro_f1": 0.5}}, source={"test": True})
    shipped_version = shipped.classifier.model_version

    async def versions() -> list[str]:
        for worker in workers:
            await worker.refresh()
        return [w.classifier_version for w in workers]

    assert await versions() == [shipped_version] * 2
    await registry.promote(first.model_version)
    assert await versions() == [first.model_version] * 2
    await registry.promote(second.model_version)
    assert await versions() == [second.model_version] * 2
    await registry.rollback()
    assert await versions() == [first.model_version] * 2
    assert (await registry.describe(second.model_version))["status"] == "rolled_back"
    await registry.rollback()
    assert await versions() == [shipped_version] * 2
    with pytest.raises(RegistryError):
        await registry.rollback()
    with pytest.raises(RegistryError):
        await registry.promote("charsvm-nope")


async def test_a_shadow_classifies_beside_the_current_model_without_deciding(db, reference):
    registry = ModelRegistry(db)
    shipped = load_engine(DEFAULT_MODEL_DIR)
    worker = LiveEngine(shipped, shipped.assigner, registry)
    shadow = tiny_model(reference, 3)
    await registry.register(shadow, metrics={}, source={"test": True})
    await registry.set_shadow(shadow.model_version)
    await worker.refresh()
    posts = ["小区物业乱收费，业主意见很大", "村口的路灯坏了半个月没人修", "公交车班次太少，等车要一个小时"]
    engine = worker.preclassified(posts)
    decided = [engine.propose(p, None, frozenset()) for p in posts]
    assert all(d.model_version.startswith(shipped.classifier.model_version) for d in decided)  # shadow decides nothing
    report = worker.shadow_report()
    assert report["shadow_model_version"] == shadow.model_version and report["posts"] == 3
    assert sum(row["posts"] for row in report["by_category"]) == 3
    assert all(row["category_name"] != row["category"] for row in report["by_category"])  # Chinese names
    await registry.set_shadow(None)
    await worker.refresh()
    assert worker.shadow is None and worker.shadow_report()["posts"] == 0
