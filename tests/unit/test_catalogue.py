"""The catalogue guard's decision rule: claims decided in log order against the account's caps,
the names a record brings, seeding, and the guard's per-record admission (no Kafka here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from connector import cli
from connector.batching import Cost, encode
from connector.catalogue.guard import CatalogueGuard, claims_topic, load_seed
from connector.catalogue.rule import (
    Catalogue,
    CatalogueError,
    Limits,
    Names,
    names_of,
)
from connector.catalogue.settings import CatalogueSettings
from connector.config import parse_settings
from connector.errors import ConfigError
from connector.observability.metrics import PREFIX, Metrics
from connector.processing import Prepared
from tests.unit.configs import minimal_raw


def users(*names: str) -> Names:
    return Names(set(names))


def events(**attrs: list[str]) -> Names:
    out = Names()
    for event, a in attrs.items():
        out.add_event(event, a)
    return out


def replay(log: list[tuple[Names, bool]], limits: Limits) -> tuple[Catalogue, list[bool]]:
    """One reader of the claims log: every claim in order; which were granted."""
    cat = Catalogue(limits)
    return cat, [cat.apply(names, seed=seed) is None for names, seed in log]


# ----- the decision rule -------------------------------------------------------------------------


def test_a_claim_within_the_cap_is_granted_and_its_names_held() -> None:
    cat = Catalogue(Limits(user_attributes=3))
    assert cat.apply(users("a", "b")) is None
    assert cat.user_attributes == {"a", "b"}
    assert cat.apply(users("a", "c")) is None  # "a" is held already: only "c" is new
    assert cat.sizes()["user_attributes"] == 3


def test_the_race_for_the_last_free_name_is_won_by_the_claim_first_in_the_log() -> None:
    limits = Limits(user_attributes=2)
    log = [(users("a"), False), (users("from_b"), False), (users("from_c"), False)]
    cat, granted = replay(log, limits)
    assert granted == [True, True, False]
    assert cat.user_attributes == {"a", "from_b"}
    # The other order in the log: the other instance wins, never both.
    _, swapped = replay([log[0], log[2], log[1]], limits)
    assert swapped == [True, True, False]


def test_every_reader_of_the_same_log_reaches_the_same_verdicts() -> None:
    """Three instances and a restarted one read the same log: identical catalogues and
    verdicts, however many claims came before the cap."""
    log = [(users(f"n{i}", f"n{i + 1}"), False) for i in range(0, 12, 2)]
    log += [(users("n0"), False), (users("late"), False), (events(E=["x"]), False)]
    results = [replay(log, Limits(user_attributes=7)) for _ in range(4)]
    first_cat, first_granted = results[0]
    # Pairs fill 6 of 7; a pair cannot take the last one, a single late name can.
    assert first_granted == [True, True, True, False, False, False, True, True, True]
    held = {f"n{i}" for i in range(6)} | {"late"}
    for cat, granted in results[1:]:
        assert granted == first_granted
        assert cat.user_attributes == first_cat.user_attributes == held


def test_a_claim_is_all_or_nothing_so_a_refused_record_spends_no_name() -> None:
    cat = Catalogue(Limits(user_attributes=3))
    cat.apply(users("a", "b"))
    refused = cat.apply(users("c", "d"))
    assert refused is not None
    assert cat.user_attributes == {"a", "b"}  # "c" would have fitted, but the record cannot
    assert refused.name == "d"  # the first name past the cap, in sorted order
    assert (refused.cap, refused.in_use, refused.rule) == (
        3,
        2,
        "policy.catalogue.user_attributes",
    )


def test_the_refusal_names_the_name_the_cap_and_how_many_are_in_use() -> None:
    cat = Catalogue(Limits(user_attributes=2))
    cat.apply(users("a", "b"))
    refused = cat.apply(users("zz_new"))
    assert refused is not None
    message = refused.message()
    assert "'zz_new'" in message
    assert "cap of 2 distinct custom user attributes" in message
    assert "2 in use" in message
    assert "catalogue.max_user_attributes" in message
    assert "Data Tracking Policies" in message
    error = refused.error()
    assert isinstance(error, CatalogueError)
    assert (error.stage, error.rule) == ("policy", "policy.catalogue.user_attributes")


def test_events_have_their_own_cap() -> None:
    cat = Catalogue(Limits(events=2))
    assert cat.apply(events(A=[], B=[])) is None
    refused = cat.apply(events(C=[]))
    assert refused is not None
    assert (refused.rule, refused.name, refused.cap, refused.in_use) == (
        "policy.catalogue.events",
        "C",
        2,
        2,
    )
    assert "cap of 2 distinct events" in refused.message()
    assert cat.apply(events(A=["x"])) is None  # a known event may still gain attributes


def test_attributes_are_capped_per_event() -> None:
    cat = Catalogue(Limits(event_attributes=2))
    assert cat.apply(events(A=["x", "y"])) is None
    assert cat.apply(events(B=["x", "y"])) is None  # another event has its own 2
    refused = cat.apply(events(A=["z"]))
    assert refused is not None
    assert (refused.rule, refused.event, refused.name, refused.in_use) == (
        "policy.catalogue.event_attributes",
        "A",
        "z",
        2,
    )
    assert "attribute 'z' of event 'A'" in refused.message()
    assert cat.apply(events(A=["x"])) is None
    assert cat.sizes() == {"user_attributes": 0, "events": 2, "event_attributes": 2}


def test_a_new_event_with_more_attributes_than_its_cap_is_refused_whole() -> None:
    cat = Catalogue(Limits(event_attributes=2))
    assert cat.apply(events(A=["a", "b", "c"])) is not None
    assert cat.events == {}


def test_a_seed_is_always_added_even_past_the_cap_and_then_new_names_are_refused() -> None:
    cat = Catalogue(Limits(user_attributes=2))
    assert cat.apply(users("a", "b", "c"), seed=True) is None
    assert cat.sizes()["user_attributes"] == 3
    refused = cat.apply(users("d"))
    assert refused is not None
    assert (refused.name, refused.in_use) == ("d", 3)
    assert cat.apply(users("a", "c")) is None  # names the account has stay usable


def test_full_refuses_only_what_no_later_claim_could_grant() -> None:
    cat = Catalogue(Limits(user_attributes=2, events=1, event_attributes=1))
    cat.apply(users("a"))
    assert cat.full(users("b")) is None  # one slot free: a claim decides
    cat.apply(users("b"))
    full = cat.full(users("c"))
    assert full is not None
    assert full.name == "c"
    cat.apply(events(E=["x"]))
    assert cat.full(events(F=[])) is not None
    assert cat.full(cat.unknown(events(E=["y"]))) is not None


# ----- the names a record brings -----------------------------------------------------------------


def test_standard_and_system_user_attributes_are_not_custom() -> None:
    elements: list[dict[str, Any]] = [
        {
            "type": "customer",
            "customer_id": "c1",
            "attributes": {
                "first_name": "A",
                "email": "a@example.com",
                "u_em": "a@example.com",
                "moe_mobile": "1",
                "platforms": [],
                "plan": "gold",
            },
        },
        {"type": "device", "customer_id": "c1", "device_id": "d", "attributes": {"model": "x"}},
        {
            "type": "event",
            "customer_id": "c1",
            "actions": [
                {"action": "Buy", "attributes": {"sku": "1"}},
                {"action": "Buy", "attributes": {"price": 2}},
                {"action": "Open"},
            ],
        },
    ]
    names = names_of(elements)
    assert names.user_attributes == {"plan"}
    assert names.events == {"Buy": {"sku", "price"}, "Open": set()}


def test_names_round_trip_through_a_claims_json() -> None:
    names = Names({"b", "a"}, {"E": {"y", "x"}, "F": set()})
    assert names.as_json() == {
        "user_attributes": ["a", "b"],
        "events": {"E": ["x", "y"], "F": []},
    }
    assert Names.from_json(names.as_json()) == names
    with pytest.raises(ValueError, match="must be a list"):
        Names.from_json({"user_attributes": "a"})


# ----- settings, seeding and the guard -----------------------------------------------------------


def test_defaults_are_moengages_caps() -> None:
    settings = parse_settings(minimal_raw(), base_dir=Path("."), environ={})
    c = settings.catalogue
    assert (c.enabled, c.max_user_attributes, c.max_events, c.max_event_attributes) == (
        True,
        256,
        512,
        100,
    )
    assert claims_topic(c, "WS 1") == "moengage-connector.catalogue.WS_1"
    assert claims_topic(CatalogueSettings(topic="mine"), "WS") == "mine"


def test_a_seed_file_is_read_and_a_bad_one_names_its_key(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text("user_attributes: [plan, tier, email]\nevents:\n  Buy: [sku]\n  Open:\n")
    assert load_seed(path) == Names({"plan", "tier"}, {"Buy": {"sku"}, "Open": set()})
    path.write_text("users: [plan]\n")
    with pytest.raises(ConfigError, match=r"catalogue\.seed_file"):
        load_seed(path)


def prepared(*elements: dict[str, Any]) -> list[Prepared]:
    return [(encode(el), Cost(users=1), "c", el) for el in elements]


def customer(**attrs: Any) -> dict[str, Any]:
    return {"type": "customer", "customer_id": "c1", "attributes": attrs}


def make_guard(**catalogue: Any) -> CatalogueGuard:
    raw = minimal_raw(catalogue=catalogue)
    settings = parse_settings(raw, base_dir=Path("."), environ={})
    return CatalogueGuard(settings, "WS", Metrics(process_metrics=False))


def test_the_guard_passes_known_names_claims_new_ones_and_refuses_a_full_kind() -> None:
    guard = make_guard(max_user_attributes=2)
    assert guard.admit(prepared(customer(first_name="A", email="e"))) is None
    wanted = guard.admit(prepared(customer(plan=1, first_name="A")))
    assert wanted == Names({"plan"})
    guard.catalogue.apply(users("plan", "tier"))
    guard._publish()  # the claims log does this after each change
    assert guard.admit(prepared(customer(plan=2, tier=3, u_fn="x"))) is None
    with pytest.raises(CatalogueError) as e:
        guard.admit(prepared(customer(plan=2, extra=3)))
    assert e.value.rule == "policy.catalogue.user_attributes"
    assert "'extra'" in e.value.message


def test_the_guard_claims_an_events_new_attribute_only() -> None:
    guard = make_guard()
    guard.catalogue.apply(events(Buy=["sku"]))
    event = {"type": "event", "customer_id": "c", "actions": [{"action": "Buy"}]}
    assert guard.admit(prepared(event)) is None
    event["actions"][0]["attributes"] = {"sku": 1, "price": 2}
    assert guard.admit(prepared(event)) == events(Buy=["price"])


def test_the_catalogue_size_is_a_gauge_per_kind() -> None:
    guard = make_guard(max_events=7)
    guard.catalogue.apply(Names({"a"}, {"E": {"x", "y"}, "F": {"z"}}))
    guard._publish()
    metrics = guard._metrics
    assert metrics is not None

    def sample(name: str, kind: str) -> float | None:
        return metrics.registry.get_sample_value(PREFIX + name, {"kind": kind})

    assert sample("catalogue_names", "user_attributes") == 1
    assert sample("catalogue_names", "events") == 2
    assert sample("catalogue_names", "event_attributes") == 2  # the most any one event has
    assert sample("catalogue_cap", "events") == 7
    assert sample("catalogue_cap", "user_attributes") == 256


def test_validate_reads_the_seed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(orjson.dumps(minimal_raw(catalogue={"seed_file": "names.yaml"})).decode())
    (tmp_path / "names.yaml").write_text("users: [plan]\n")
    assert cli.main(["validate", "--config", str(config)]) == 1
    assert "error: catalogue.seed_file:" in capsys.readouterr().out
    (tmp_path / "names.yaml").write_text("user_attributes: [plan]\n")
    assert cli.main(["validate", "--config", str(config)]) == 0
