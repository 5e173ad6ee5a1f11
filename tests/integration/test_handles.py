"""Connection and folder handles: slugs, validation, collisions and stable assignment."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from canopy_integration.handles import (
    CONNECTION_HANDLE,
    FOLDER_HANDLE,
    MAX_HANDLE,
    FolderHandleRequest,
    HandleRequest,
    assign_connection_handles,
    assign_folder_handles,
    collision_candidates,
    connection_handle_problem,
    dynamic_connection_handle,
    dynamic_folder_handle,
    folder_collision_candidates,
    folder_handle_problem,
    is_own_folder_variant,
    is_own_variant,
    is_reserved,
    prefix_problem,
    prefix_replaced,
    reprefix_connection_handles,
    slug,
)

ID = "123456789012"
OTHER_ID = "210987654321"
OU = "ou-ab12-cd34ef56"
OTHER_OU = "ou-ab12-99887766"

PROPERTY = settings(max_examples=200, deadline=None)


def first(candidates: Iterator[str], count: int) -> list[str]:
    return list(itertools.islice(candidates, count))


def new(account_id: str, name: str, key: str | None = None) -> HandleRequest:
    return HandleRequest(
        key=key or account_id, account_id=account_id, account_name=name, current=None, static=False
    )


def held(account_id: str, name: str, current: str, *, static: bool = False) -> HandleRequest:
    return HandleRequest(
        key=account_id, account_id=account_id, account_name=name, current=current, static=static
    )


def new_folder(ou_id: str, name: str) -> FolderHandleRequest:
    return FolderHandleRequest(key=ou_id, ou_id=ou_id, name=name, current=None, static=False)


def held_folder(
    ou_id: str, name: str, current: str, *, static: bool = False
) -> FolderHandleRequest:
    return FolderHandleRequest(key=ou_id, ou_id=ou_id, name=name, current=current, static=static)


# -- strategies ---------------------------------------------------------------------------------

account_ids = st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
any_names = st.text(max_size=60)
TRICKY_NAMES = [
    "",
    "Public",
    "public",
    "pg_stats",
    "PG",
    "pg",
    "Steampipe Prod",
    "steampipe",
    "information schema",
    "information",
    "schema",
    "123",
    "2024 Prod",
    "Ünïcödé",
    "Prod",
    "prod",
    "PROD!",
    "x" * 60,
    "Sales " * 10,
]
tricky_names = st.sampled_from(TRICKY_NAMES)
# Every string of up to 2 characters from a tiny alphabet: most of them slug alike.
TINY_NAMES = [
    "".join(chars) for size in range(3) for chars in itertools.product("aB1 -é", repeat=size)
]
tiny_names = st.sampled_from(TINY_NAMES)
names = st.one_of(any_names, tricky_names, tiny_names)
# A handful of names with few distinct slugs, so that the accounts of a world collide often.
WORLD_NAMES = ["", "a", "A", "a ", "b", "B-", "ab", "a b", "Prod", "prod!", "PROD", "Public"]
WORLD_NAMES += ["pg_stats", "PG", "steampipe", "2024", "é", "x" * 50, "x" * 38 + " y"]
world_names = st.sampled_from(WORLD_NAMES)
tricky_prefixes = st.sampled_from(
    ["", "p", "pg", "steampipe", "information_", "information_schem", "publi", "a_", "z" * 20]
)
built_prefixes = st.builds(
    lambda head, words, trailing: (head + "_".join(words) + trailing)[:20],
    st.from_regex(r"[a-z]", fullmatch=True),
    st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), max_size=4),
    st.sampled_from(["", "_"]),
).filter(lambda prefix: prefix_problem(prefix) is None)
prefixes = st.one_of(tricky_prefixes, built_prefixes)
world_prefixes = st.sampled_from(["", "aws_", "p", "pg", "information_", "z" * 20, "acme"])
ou_ids = st.sampled_from(
    [
        f"ou-{root}-{tail}"
        for root in ("ab12", "r00t", "x9y8")
        for tail in ("cd34ef56", "zz34ef56", "99887766", "cd34ef56cd34ef56cd34ef56")
    ]
)


def assert_valid_connection_handle(handle: str) -> None:
    assert CONNECTION_HANDLE.match(handle), handle
    assert len(handle) <= MAX_HANDLE
    assert not is_reserved(handle), handle
    assert connection_handle_problem(handle) is None


def assert_valid_folder_handle(handle: str) -> None:
    assert FOLDER_HANDLE.match(handle), handle
    assert folder_handle_problem(handle) is None


# -- slug ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Production", "production"),
        ("My Account", "my_account"),
        ("  padded  ", "padded"),
        ("a  --  b", "a_b"),
        ("Dev/Test (EU)", "dev_test_eu"),
        ("!!!shout!!!", "shout"),
        ("Café Société", "caf_soci_t"),
        ("日本語 account", "account"),
        ("Kelvin \u212a", "kelvin"),
        ("2024 Budget", "2024_budget"),
        ("already_slugged_1", "already_slugged_1"),
        ("snake__double", "snake_double"),
        ("", ""),
        ("---", ""),
        ("日本語", ""),
    ],
)
def test_slug_lowercases_and_turns_every_run_of_other_characters_into_one_underscore(
    text: str, expected: str
) -> None:
    assert slug(text) == expected


@PROPERTY
@given(any_names)
def test_slug_output_is_ascii_letters_digits_and_single_inner_underscores(text: str) -> None:
    result = slug(text)
    assert result == "" or not result.startswith("_")
    assert not result.endswith("_")
    assert "__" not in result
    assert set(result) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "handle",
    ["public", "information_schema", "pg_catalog", "pg_x", "steampipe_command", "steampipe_"],
)
def test_postgres_and_steampipe_names_are_reserved(handle: str) -> None:
    assert is_reserved(handle)


@pytest.mark.parametrize("handle", ["pg", "pgx", "steampipe", "steampipex", "publicity", "a"])
def test_names_that_only_resemble_reserved_ones_are_not_reserved(handle: str) -> None:
    assert not is_reserved(handle)


@pytest.mark.parametrize("handle", ["a", "prod", "aws_prod_1", "a" * 39, "pg", "x1_2_3"])
def test_valid_connection_handles_have_no_problem(handle: str) -> None:
    assert connection_handle_problem(handle) is None


@pytest.mark.parametrize(
    ("handle", "problem"),
    [
        ("", "must not be empty"),
        ("a" * 40, "must be at most 39 characters"),
        ("1abc", "lower-case letter"),
        ("_abc", "lower-case letter"),
        ("Abc", "lower-case letter"),
        ("ab__c", "single '_'"),
        ("abc_", "single '_'"),
        ("ab-c", "single '_'"),
        ("public", "is reserved"),
        ("information_schema", "is reserved"),
        ("pg_stats", "is reserved"),
        ("steampipe_prod", "is reserved"),
    ],
)
def test_invalid_connection_handles_name_their_problem(handle: str, problem: str) -> None:
    found = connection_handle_problem(handle)
    assert found is not None
    assert problem in found
    assert "\n" not in found


@pytest.mark.parametrize("handle", ["a", "sales", "sales-emea", "eu_west-1", "b" * 39, "public"])
def test_valid_folder_handles_allow_hyphens_and_have_no_reserved_names(handle: str) -> None:
    assert folder_handle_problem(handle) is None


@pytest.mark.parametrize(
    ("handle", "problem"),
    [
        ("", "must not be empty"),
        ("a" * 40, "must be at most 39 characters"),
        ("1sales", "lower-case letter"),
        ("sales--emea", "single '-' or '_'"),
        ("sales_-emea", "single '-' or '_'"),
        ("sales-", "single '-' or '_'"),
        ("Sales", "lower-case letter"),
    ],
)
def test_invalid_folder_handles_name_their_problem(handle: str, problem: str) -> None:
    found = folder_handle_problem(handle)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    "prefix", ["", "a", "aws_", "aws", "acme_prod_", "x1", "pg", "steampipe", "a" * 20, "p_g_"]
)
def test_valid_prefixes_have_no_problem(prefix: str) -> None:
    assert prefix_problem(prefix) is None


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("a" * 21, "at most 20 characters"),
        ("1aws", "lower-case letter"),
        ("_aws", "lower-case letter"),
        ("Aws", "lower-case letter"),
        ("aws-", "lower-case letter"),
        ("aws__", "'__'"),
        ("a__b_", "'__'"),
        ("pg_", "'pg_'"),
        ("pg_prod_", "'pg_'"),
        ("steampipe_", "'steampipe_'"),
        ("steampipe_x", "'steampipe_'"),
    ],
)
def test_invalid_prefixes_name_their_problem(prefix: str, problem: str) -> None:
    found = prefix_problem(prefix)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    "check", [connection_handle_problem, folder_handle_problem, prefix_problem]
)
def test_a_trailing_newline_is_a_problem_not_the_end_of_the_name(
    check: Callable[[str], str | None],
) -> None:
    # `$` matches before a final newline: a prefix "s_\n" passed, then crashed the renames.
    assert check("sales\n") is not None


# -- the dynamic connection handle --------------------------------------------------------------


def test_dynamic_handle_is_the_prefix_and_the_slug_of_the_account_name() -> None:
    assert dynamic_connection_handle("aws_", "Prod (EU)", ID) == "aws_prod_eu"


def test_dynamic_handle_without_prefix_is_the_slug_of_the_account_name() -> None:
    assert dynamic_connection_handle("", "Prod (EU)", ID) == "prod_eu"


@pytest.mark.parametrize("name", ["", "!!!", "日本語", "   "])
def test_an_account_name_that_slugs_to_nothing_falls_back_to_the_account_id(name: str) -> None:
    assert dynamic_connection_handle("", name, ID) == "a123456789012"
    assert dynamic_connection_handle("aws_", name, ID) == "aws_a123456789012"


def test_a_name_starting_with_a_digit_falls_back_to_the_account_id_without_prefix() -> None:
    assert dynamic_connection_handle("", "2024 Budget", ID) == "a123456789012"


def test_a_name_starting_with_a_digit_keeps_its_slug_behind_a_prefix() -> None:
    assert dynamic_connection_handle("aws_", "2024 Budget", ID) == "aws_2024_budget"
    assert dynamic_connection_handle("aws", "2024 Budget", ID) == "aws2024_budget"


@pytest.mark.parametrize("name", ["Public", "pg_stats", "Steampipe Prod", "information schema"])
def test_a_name_that_would_be_reserved_falls_back_to_the_account_id(name: str) -> None:
    assert dynamic_connection_handle("", name, ID) == "a123456789012"


@pytest.mark.parametrize(
    ("prefix", "name", "expected"),
    [
        ("p", "g stats", "pa123456789012"),
        ("information_", "Schema", "information_a123456789012"),
        ("publi", "C", "publia123456789012"),
    ],
)
def test_a_prefix_and_name_that_together_are_reserved_fall_back_to_the_account_id(
    prefix: str, name: str, expected: str
) -> None:
    assert dynamic_connection_handle(prefix, name, ID) == expected


@pytest.mark.parametrize(
    ("prefix", "name", "expected"),
    [
        ("steampipe", "Prod", "steampipeprod"),
        ("pg", "Stats", "pgstats"),
        ("publi", "Cs", "publics"),
    ],
)
def test_a_prefix_that_only_resembles_a_reserved_name_keeps_the_name(
    prefix: str, name: str, expected: str
) -> None:
    assert dynamic_connection_handle(prefix, name, ID) == expected


def test_a_long_name_is_cut_to_39_characters() -> None:
    handle = dynamic_connection_handle("aws_", "x" * 100, ID)
    assert handle == "aws_" + "x" * 35
    assert len(handle) == MAX_HANDLE


def test_a_long_name_cut_at_an_underscore_leaves_no_trailing_underscore() -> None:
    # The 39th character would be the underscore between the words.
    name = "a" * 38 + " tail"
    assert dynamic_connection_handle("", name, ID) == "a" * 38
    assert dynamic_connection_handle("aws_", "b" * 34 + " tail", ID) == "aws_" + "b" * 34


def test_an_invalid_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        dynamic_connection_handle("pg_", "Prod", ID)


@PROPERTY
@given(prefix=prefixes, name=names, account_id=account_ids)
def test_every_dynamic_connection_handle_is_valid_and_not_reserved(
    prefix: str, name: str, account_id: str
) -> None:
    handle = dynamic_connection_handle(prefix, name, account_id)
    assert_valid_connection_handle(handle)
    assert handle.startswith(prefix)


# -- collision candidates -----------------------------------------------------------------------


def test_collision_candidates_start_with_the_base_then_ever_longer_account_id_suffixes() -> None:
    assert first(collision_candidates("prod", ID), 7) == [
        "prod",
        "prod_9012",
        "prod_789012",
        "prod_123456789012",
        "prod_123456789012_2",
        "prod_123456789012_3",
        "prod_123456789012_4",
    ]


def test_collision_candidates_shorten_the_base_to_stay_within_39_characters() -> None:
    base = "abcd_" + "x" * 34
    candidates = first(collision_candidates(base, ID), 5)
    assert candidates == [
        base,
        "abcd_" + "x" * 29 + "_9012",
        "abcd_" + "x" * 27 + "_789012",
        "abcd_" + "x" * 21 + "_123456789012",
        "abcd_" + "x" * 19 + "_123456789012_2",
    ]
    assert all(len(c) == MAX_HANDLE for c in candidates)


def test_collision_candidates_never_leave_a_double_underscore_when_shortening() -> None:
    # base[:34] ends with the underscore before "y".
    base = "x" * 33 + "_yyyyy"
    assert first(collision_candidates(base, ID), 2) == [base, "x" * 33 + "_9012"]


@pytest.mark.parametrize(("base", "joined"), [("pg", "pg9012"), ("steampipe", "steampipe9012")])
def test_collision_candidates_drop_the_underscore_where_it_would_make_a_reserved_name(
    base: str, joined: str
) -> None:
    candidates = first(collision_candidates(base, ID), 5)
    assert candidates[1] == joined
    for candidate in candidates:
        assert_valid_connection_handle(candidate)


def test_collision_candidates_refuse_an_invalid_base() -> None:
    with pytest.raises(ValueError, match="reserved"):
        next(collision_candidates("pg_stats", ID))


@PROPERTY
@given(prefix=prefixes, name=names, account_id=account_ids)
def test_every_collision_candidate_is_valid_unique_and_not_reserved(
    prefix: str, name: str, account_id: str
) -> None:
    base = dynamic_connection_handle(prefix, name, account_id)
    candidates = first(collision_candidates(base, account_id), 30)
    assert len(set(candidates)) == len(candidates)
    for candidate in candidates:
        assert_valid_connection_handle(candidate)


def test_candidates_with_large_counters_still_fit() -> None:
    candidates = collision_candidates("x" * 39, ID)
    (candidate,) = itertools.islice(candidates, 100_002, 100_003)
    assert candidate == "x" * 19 + "_123456789012_100000"
    assert_valid_connection_handle(candidate)


# -- own variants -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "handle",
    [
        "prod",
        "prod_9012",
        "prod_789012",
        "prod_123456789012",
        "prod_123456789012_2",
        "prod_123456789012_99",
        "prod_123456789012_1000",
    ],
)
def test_the_base_and_its_account_id_forms_are_own_variants(handle: str) -> None:
    assert is_own_variant(handle, "prod", ID)


@pytest.mark.parametrize(
    "handle",
    [
        "prod_1",
        "prod_2",
        "prod_5678",
        "prod_654321",
        "prod_210987654321",
        "prod_123456789012_1",
        "prod_123456789012_02",
        "staging",
        "prod_staging",
        "prodx",
    ],
)
def test_other_handles_are_not_own_variants(handle: str) -> None:
    assert not is_own_variant(handle, "prod", ID)


def test_another_accounts_suffixed_form_is_not_an_own_variant() -> None:
    assert not is_own_variant("prod_4321", "prod", ID)
    assert is_own_variant("prod_4321", "prod", OTHER_ID)


@PROPERTY
@given(prefix=prefixes, name=names, account_id=account_ids, index=st.integers(0, 200))
def test_every_collision_candidate_is_an_own_variant(
    prefix: str, name: str, account_id: str, index: int
) -> None:
    base = dynamic_connection_handle(prefix, name, account_id)
    candidate = next(itertools.islice(collision_candidates(base, account_id), index, None))
    assert is_own_variant(candidate, base, account_id)


# -- connection assignment ----------------------------------------------------------------------


def test_new_accounts_get_their_dynamic_handles() -> None:
    assigned = assign_connection_handles(
        "aws_", [new(ID, "Prod"), new(OTHER_ID, "Dev")], frozenset()
    )
    assert assigned == {ID: "aws_prod", OTHER_ID: "aws_dev"}


def test_a_new_account_that_collides_gets_a_suffix_from_its_account_id() -> None:
    assigned = assign_connection_handles(
        "", [held(OTHER_ID, "Prod", "prod"), new(ID, "Prod")], frozenset()
    )
    assert assigned == {OTHER_ID: "prod", ID: "prod_9012"}


def test_two_new_accounts_with_one_name_the_lower_account_id_gets_the_plain_handle() -> None:
    assigned = assign_connection_handles("", [new(OTHER_ID, "Prod"), new(ID, "Prod")], frozenset())
    assert assigned == {ID: "prod", OTHER_ID: "prod_4321"}


def test_a_handle_taken_elsewhere_in_the_tenant_is_never_assigned() -> None:
    assigned = assign_connection_handles("", [new(ID, "Prod")], frozenset({"prod", "prod_9012"}))
    assert assigned == {ID: "prod_789012"}


def test_collisions_on_every_id_suffix_fall_through_to_counters() -> None:
    taken = frozenset({"prod", "prod_9012", "prod_789012", "prod_123456789012"})
    assigned = assign_connection_handles("", [new(ID, "Prod")], taken)
    assert assigned == {ID: "prod_123456789012_2"}


def test_accounts_sharing_the_last_digits_of_their_ids_still_get_unique_handles() -> None:
    ids = ["000000789012", "111111789012", "222222339012", "333333339012"]
    assigned = assign_connection_handles("", [new(i, "Prod") for i in ids], frozenset())
    assert assigned == {
        "000000789012": "prod",
        "111111789012": "prod_9012",
        "222222339012": "prod_339012",
        "333333339012": "prod_333333339012",
    }


def test_a_renamed_account_that_collides_gets_a_suffix_from_its_account_id() -> None:
    assigned = assign_connection_handles(
        "", [held(OTHER_ID, "Prod", "prod"), held(ID, "Prod", "staging")], frozenset()
    )
    assert assigned == {OTHER_ID: "prod", ID: "prod_9012"}


def test_a_renamed_account_gets_the_new_name_when_it_is_free() -> None:
    assigned = assign_connection_handles("", [held(ID, "Production", "prod")], frozenset())
    assert assigned == {ID: "production"}


def test_the_holder_keeps_its_handle_even_when_its_account_id_sorts_later() -> None:
    assigned = assign_connection_handles(
        "", [held(OTHER_ID, "Prod", "prod"), new(ID, "Prod")], frozenset()
    )
    assert assigned[OTHER_ID] == "prod"


def test_a_suffixed_handle_stays_when_the_plain_handle_becomes_free() -> None:
    # The account that held "prod" is gone; the suffixed one does not churn.
    assigned = assign_connection_handles("", [held(ID, "Prod", "prod_9012")], frozenset())
    assert assigned == {ID: "prod_9012"}


def test_a_handle_being_given_up_is_not_taken_by_another_account_in_the_same_assignment() -> None:
    # OTHER_ID is renamed away from "prod" while ID is renamed to "Prod".
    assigned = assign_connection_handles(
        "", [held(OTHER_ID, "Staging", "prod"), held(ID, "Prod", "dev")], frozenset()
    )
    assert assigned == {OTHER_ID: "staging", ID: "prod_9012"}


def test_two_accounts_that_exchange_names_do_not_swap_handles() -> None:
    assigned = assign_connection_handles(
        "", [held(ID, "Beta", "alpha"), held(OTHER_ID, "Alpha", "beta")], frozenset()
    )
    assert assigned == {ID: "beta_9012", OTHER_ID: "alpha_4321"}


def test_a_static_handle_is_kept_even_when_the_name_changes() -> None:
    assigned = assign_connection_handles(
        "aws_", [held(ID, "Renamed", "my_schema", static=True)], frozenset()
    )
    assert assigned == {ID: "my_schema"}


def test_a_static_handle_equal_to_another_accounts_desired_base_wins_and_the_other_is_suffixed() -> (
    None
):
    assigned = assign_connection_handles(
        "", [held(OTHER_ID, "Anything", "prod", static=True), new(ID, "Prod")], frozenset()
    )
    assert assigned == {OTHER_ID: "prod", ID: "prod_9012"}


def test_a_static_handle_wins_over_a_dynamic_holder_of_the_same_base() -> None:
    # ID held "prod" dynamically; OTHER_ID's user-set handle is also "prod" (data from before a
    # fix): the static one keeps it, the dynamic one moves to a suffixed form.
    assigned = assign_connection_handles(
        "",
        [held(ID, "Prod", "prod"), held(OTHER_ID, "X", "prod", static=True)],
        frozenset(),
    )
    assert assigned == {OTHER_ID: "prod", ID: "prod_9012"}


def test_a_static_request_without_a_handle_is_refused() -> None:
    request = HandleRequest(key=ID, account_id=ID, account_name="Prod", current=None, static=True)
    with pytest.raises(ValueError, match="no handle"):
        assign_connection_handles("", [request], frozenset())


def test_a_static_handle_taken_elsewhere_is_refused() -> None:
    with pytest.raises(ValueError, match="taken twice"):
        assign_connection_handles("", [held(ID, "Prod", "prod", static=True)], frozenset({"prod"}))


def test_repeated_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="repeat a key"):
        assign_connection_handles("", [new(ID, "A", key="k"), new(OTHER_ID, "B", key="k")], set())


def test_a_dynamic_handle_taken_elsewhere_in_the_meantime_is_replaced() -> None:
    assigned = assign_connection_handles("", [held(ID, "Prod", "prod")], frozenset({"prod"}))
    assert assigned == {ID: "prod_9012"}


def test_a_prefix_change_recomputes_every_dynamic_handle_but_leaves_static_ones() -> None:
    first_pass = assign_connection_handles(
        "old_", [new(ID, "Prod"), new(OTHER_ID, "Dev")], frozenset()
    )
    assert first_pass == {ID: "old_prod", OTHER_ID: "old_dev"}
    assigned = assign_connection_handles(
        "new_",
        [held(ID, "Prod", "old_prod"), held(OTHER_ID, "Dev", "old_dev", static=True)],
        frozenset(),
    )
    assert assigned == {ID: "new_prod", OTHER_ID: "old_dev"}


def test_removing_the_prefix_recomputes_dynamic_handles() -> None:
    assigned = assign_connection_handles("", [held(ID, "Prod", "aws_prod")], frozenset())
    assert assigned == {ID: "prod"}


# -- prefix changes -----------------------------------------------------------------------------

ID_8159 = "000000008159"


def test_a_prefix_change_keeps_the_collision_suffix_after_the_base_holder_left() -> None:
    # "e2e_prod_a" was held by an account that has since left; only the prefix changes.
    assigned = reprefix_connection_handles(
        "e2e_", "acc_", [held(ID_8159, "Prod A", "e2e_prod_a_8159")], frozenset()
    )
    assert assigned == {ID_8159: "acc_prod_a_8159"}


def test_a_prefix_change_replaces_only_the_prefix_of_every_form() -> None:
    requests = [
        held("000000000001", "Prod", "old_prod"),
        held("000000009012", "Prod", "old_prod_9012"),
        held("000000789012", "Prod", "old_prod_789012"),
        held("123456789012", "Prod", "old_prod_123456789012"),
        held("223456789012", "Prod", "old_prod_223456789012_2"),
    ]
    assigned = reprefix_connection_handles("old_", "new_", requests, frozenset())
    assert assigned == {r.key: "new_" + (r.current or "")[4:] for r in requests}


def test_a_prefix_can_be_added_and_removed_keeping_the_suffix() -> None:
    added = reprefix_connection_handles("", "aws_", [held(ID, "Prod", "prod_9012")], frozenset())
    assert added == {ID: "aws_prod_9012"}
    removed = reprefix_connection_handles(
        "aws_", "", [held(ID, "Prod", "aws_prod_9012")], frozenset()
    )
    assert removed == {ID: "prod_9012"}


def test_a_prefix_change_leaves_static_handles_alone() -> None:
    assigned = reprefix_connection_handles(
        "old_",
        "new_",
        [held(ID, "Prod", "old_prod", static=True), held(OTHER_ID, "Prod", "old_prod_4321")],
        frozenset(),
    )
    assert assigned == {ID: "old_prod", OTHER_ID: "new_prod_4321"}


def test_a_prefix_change_that_would_collide_elsewhere_follows_the_collision_rule() -> None:
    # Another integration of the tenant holds the replaced handle: the usual candidates apply,
    # and the plain base is free.
    assigned = reprefix_connection_handles(
        "old_", "new_", [held(ID, "Prod", "old_prod_9012")], frozenset({"new_prod_9012"})
    )
    assert assigned == {ID: "new_prod"}


def test_a_prefix_change_never_hands_one_connections_old_handle_to_another() -> None:
    # "a_" → "a_b_": the account named "x" would become "a_b_x", which the account named "b x"
    # held before the change; it takes the next candidate instead.
    assigned = reprefix_connection_handles(
        "a_", "a_b_", [held(ID, "b x", "a_b_x"), held(OTHER_ID, "x", "a_x")], frozenset()
    )
    assert assigned == {ID: "a_b_b_x", OTHER_ID: "a_b_x_4321"}


def test_a_prefix_change_keeps_the_suffix_where_the_name_is_cut_to_fit() -> None:
    name = "n" * 40
    before = "aws_" + "n" * 30 + "_9012"
    assigned = reprefix_connection_handles("aws_", "p_", [held(ID, name, before)], frozenset())
    assert assigned == {ID: "p_" + "n" * 32 + "_9012"}


def test_a_prefix_change_where_the_slug_depends_on_the_prefix_keeps_the_form() -> None:
    # Without a prefix a leading digit falls back to the account id; behind one it does not.
    assert prefix_replaced("", "aws_", held(ID, "2024 Prod", f"a{ID}")) == "aws_2024_prod"
    assert prefix_replaced("", "aws_", held(ID, "2024 Prod", f"a{ID}_9012")) == (
        "aws_2024_prod_9012"
    )
    assert prefix_replaced("aws_", "", held(ID, "2024 Prod", "aws_2024_prod_9012")) == (
        f"a{ID}_9012"
    )


def test_prefix_replaced_asks_nothing_for_new_static_or_foreign_handles() -> None:
    assert prefix_replaced("old_", "new_", new(ID, "Prod")) is None
    assert prefix_replaced("old_", "new_", held(ID, "Prod", "mine", static=True)) is None
    assert prefix_replaced("old_", "new_", held(ID, "Prod", "old_staging")) is None


def test_a_second_assignment_with_the_first_result_changes_nothing() -> None:
    requests = [new(i, "Prod") for i in (ID, OTHER_ID, "000000009012", "999999999999")]
    first_pass = assign_connection_handles("aws_", requests, frozenset({"aws_prod_9012"}))
    again = [held(r.account_id, r.account_name, first_pass[r.key]) for r in requests]
    assert assign_connection_handles("aws_", again, frozenset({"aws_prod_9012"})) == first_pass


def test_an_empty_request_list_assigns_nothing() -> None:
    assert assign_connection_handles("aws_", [], frozenset({"x"})) == {}


# Each account of a world is one tuple: its id, its name before and after a possible rename, and
# its standing (see `standing`) — whole values keep generation fast.
WORLD_ACCOUNT_IDS = [
    head + tail
    for head in ("000000", "111111", "222222")
    for tail in ("339012", "449012", "789012")  # shared last 4 / 6 digits
] + [f"{n:012d}" for n in (7, 123456789012, 210987654321, 555555555555, 987654321098)]
world_accounts = st.tuples(
    st.sampled_from(WORLD_ACCOUNT_IDS), world_names, world_names, st.integers(0, 7)
)


def standing(code: int) -> tuple[bool, bool, bool]:
    """Whether an item already exists, has a user-set handle, and was renamed since."""
    exists = code >= 2
    return exists, code == 2, not exists or code >= 6


@st.composite
def connection_worlds(
    draw: st.DrawFn,
) -> tuple[str, list[HandleRequest], frozenset[str]]:
    """A prefix, requests with a history (some held, some static, some renamed) and the handles
    other integrations hold — built so that collisions are frequent."""
    prefix = draw(world_prefixes)
    accounts = draw(st.lists(world_accounts, min_size=1, max_size=8, unique_by=lambda a: a[0]))
    # Other integrations hold the first few candidates of some name and id: deep enough that
    # accounts of this world run out of id suffixes and need counters.
    taken = frozenset(
        candidate
        for name, account_id, depth in draw(
            st.lists(
                st.tuples(world_names, st.sampled_from(WORLD_ACCOUNT_IDS), st.integers(1, 6)),
                max_size=3,
            )
        )
        for candidate in first(
            collision_candidates(dynamic_connection_handle(prefix, name, account_id), account_id),
            depth,
        )
    )
    history = assign_connection_handles(
        prefix, [new(i, before) for i, before, _, code in accounts if standing(code)[0]], taken
    )
    requests = []
    for account_id, before, after, code in accounts:
        exists, static, renamed = standing(code)
        name = after if renamed else before
        if exists:
            requests.append(held(account_id, name, history[account_id], static=static))
        else:
            requests.append(new(account_id, name))
    return prefix, requests, taken


@PROPERTY
@given(connection_worlds())
def test_assigned_handles_are_unique_valid_and_disjoint_from_handles_taken_elsewhere(
    world: tuple[str, list[HandleRequest], frozenset[str]],
) -> None:
    prefix, requests, taken = world
    assigned = assign_connection_handles(prefix, requests, taken)
    assert set(assigned) == {r.key for r in requests}
    assert len(set(assigned.values())) == len(assigned)
    assert not set(assigned.values()) & taken
    for request in requests:
        handle = assigned[request.key]
        if request.static:
            assert handle == request.current
        else:
            assert_valid_connection_handle(handle)
            base = dynamic_connection_handle(prefix, request.account_name, request.account_id)
            assert is_own_variant(handle, base, request.account_id)


@PROPERTY
@given(connection_worlds())
def test_no_request_takes_a_handle_another_request_held(
    world: tuple[str, list[HandleRequest], frozenset[str]],
) -> None:
    prefix, requests, taken = world
    assigned = assign_connection_handles(prefix, requests, taken)
    for request in requests:
        for other in requests:
            if other.key != request.key and other.current is not None:
                assert assigned[request.key] != other.current


@PROPERTY
@given(connection_worlds())
def test_a_dynamic_handle_that_is_still_an_own_variant_is_kept(
    world: tuple[str, list[HandleRequest], frozenset[str]],
) -> None:
    prefix, requests, taken = world
    assigned = assign_connection_handles(prefix, requests, taken)
    for request in requests:
        if request.current is None or request.static:
            continue
        base = dynamic_connection_handle(prefix, request.account_name, request.account_id)
        if is_own_variant(request.current, base, request.account_id):
            assert assigned[request.key] == request.current


@PROPERTY
@given(connection_worlds(), st.randoms(use_true_random=False))
def test_assignment_does_not_depend_on_the_order_of_requests(
    world: tuple[str, list[HandleRequest], frozenset[str]], shuffler: random.Random
) -> None:
    prefix, requests, taken = world
    shuffled = list(requests)
    shuffler.shuffle(shuffled)
    assert assign_connection_handles(prefix, shuffled, taken) == assign_connection_handles(
        prefix, requests, taken
    )


@PROPERTY
@given(connection_worlds())
def test_assigning_again_with_the_result_as_current_changes_nothing(
    world: tuple[str, list[HandleRequest], frozenset[str]],
) -> None:
    prefix, requests, taken = world
    assigned = assign_connection_handles(prefix, requests, taken)
    again = [
        HandleRequest(
            key=r.key,
            account_id=r.account_id,
            account_name=r.account_name,
            current=assigned[r.key],
            static=r.static,
        )
        for r in requests
    ]
    assert assign_connection_handles(prefix, again, taken) == assigned


@st.composite
def prefix_changes(
    draw: st.DrawFn,
) -> tuple[str, str, list[HandleRequest], frozenset[str]]:
    """A world (see `connection_worlds`) as a sync left it, and the new prefix."""
    prefix, requests, taken = draw(connection_worlds())
    synced = assign_connection_handles(prefix, requests, taken)
    held_now = [
        HandleRequest(r.key, r.account_id, r.account_name, synced[r.key], r.static)
        for r in requests
    ]
    return prefix, draw(world_prefixes.filter(lambda p: p != prefix)), held_now, taken


@PROPERTY
@given(prefix_changes())
def test_a_prefix_change_keeps_handles_unique_valid_and_forms_of_the_new_prefix(
    change: tuple[str, str, list[HandleRequest], frozenset[str]],
) -> None:
    old_prefix, new_prefix, requests, taken = change
    assigned = reprefix_connection_handles(old_prefix, new_prefix, requests, taken)
    assert set(assigned) == {r.key for r in requests}
    assert len(set(assigned.values())) == len(assigned)
    assert not set(assigned.values()) & taken
    for request in requests:
        handle = assigned[request.key]
        if request.static:
            assert handle == request.current
            continue
        assert_valid_connection_handle(handle)
        base = dynamic_connection_handle(new_prefix, request.account_name, request.account_id)
        assert is_own_variant(handle, base, request.account_id)
        others_held = {o.current for o in requests if o.key != request.key}
        assert handle not in others_held


@PROPERTY
@given(prefix_changes())
@example(  # a name cut to fit recomputes a form that must not take another's literal handle
    (
        "",
        "p",
        [
            HandleRequest("000000339012", "000000339012", "x" * 50, "x" * 39, False),
            HandleRequest("000000449012", "000000449012", "x" * 38 + " y", "x" * 38, False),
        ],
        frozenset(),
    )
)
def test_a_prefix_change_replaces_only_the_prefix_wherever_that_handle_is_free(
    change: tuple[str, str, list[HandleRequest], frozenset[str]],
) -> None:
    old_prefix, new_prefix, requests, taken = change
    assigned = reprefix_connection_handles(old_prefix, new_prefix, requests, taken)
    statics = {r.current for r in requests if r.static}
    literal = {
        r.key: new_prefix + (r.current or "").removeprefix(old_prefix)
        for r in requests
        if not r.static
    }
    for request in requests:
        if request.static:
            continue
        wanted = literal[request.key]
        base = dynamic_connection_handle(new_prefix, request.account_name, request.account_id)
        free = (
            wanted not in taken
            and wanted not in statics
            and all(o.current != wanted for o in requests if o.key != request.key)
            and all(literal.get(o.key) != wanted for o in requests if o.key != request.key)
        )
        if (
            free
            and connection_handle_problem(wanted) is None
            and is_own_variant(wanted, base, request.account_id)
        ):
            assert assigned[request.key] == wanted


@PROPERTY
@given(prefix_changes())
def test_a_sync_after_a_prefix_change_renames_nothing(
    change: tuple[str, str, list[HandleRequest], frozenset[str]],
) -> None:
    old_prefix, new_prefix, requests, taken = change
    assigned = reprefix_connection_handles(old_prefix, new_prefix, requests, taken)
    after = [
        HandleRequest(r.key, r.account_id, r.account_name, assigned[r.key], r.static)
        for r in requests
    ]
    assert assign_connection_handles(new_prefix, after, taken) == assigned


@PROPERTY
@given(prefix_changes(), st.randoms(use_true_random=False))
def test_a_prefix_change_does_not_depend_on_the_order_of_requests(
    change: tuple[str, str, list[HandleRequest], frozenset[str]], shuffler: random.Random
) -> None:
    old_prefix, new_prefix, requests, taken = change
    shuffled = list(requests)
    shuffler.shuffle(shuffled)
    assert reprefix_connection_handles(
        old_prefix, new_prefix, shuffled, taken
    ) == reprefix_connection_handles(old_prefix, new_prefix, requests, taken)


@PROPERTY
@given(prefix_changes())
def test_changing_the_prefix_back_restores_every_handle_nothing_else_wanted(
    change: tuple[str, str, list[HandleRequest], frozenset[str]],
) -> None:
    old_prefix, new_prefix, requests, _taken = change
    there = reprefix_connection_handles(old_prefix, new_prefix, requests, frozenset())
    moved = [
        HandleRequest(r.key, r.account_id, r.account_name, there[r.key], r.static) for r in requests
    ]
    back = reprefix_connection_handles(new_prefix, old_prefix, moved, frozenset())
    if all(prefix_replaced(old_prefix, new_prefix, r) in (None, there[r.key]) for r in requests):
        assert back == {r.key: r.current for r in requests}


# -- folders ------------------------------------------------------------------------------------


def test_dynamic_folder_handle_is_the_slug_of_the_ou_name() -> None:
    assert dynamic_folder_handle("Sales & Marketing", OU) == "sales_marketing"


@pytest.mark.parametrize("name", ["", "---", "日本語", "2024", "9 Lives"])
def test_a_folder_name_that_slugs_to_nothing_or_a_digit_falls_back_to_the_ou_id(
    name: str,
) -> None:
    assert dynamic_folder_handle(name, OU) == "ou_ab12_cd34ef56"


def test_a_long_folder_name_is_cut_to_39_characters_without_trailing_underscore() -> None:
    assert dynamic_folder_handle("s" * 38 + " tail", OU) == "s" * 38
    assert dynamic_folder_handle("s" * 50, OU) == "s" * 39


def test_a_long_ou_id_fallback_is_cut_to_39_characters() -> None:
    ou_id = "ou-" + "a" * 32 + "-" + "b" * 32
    assert dynamic_folder_handle("", ou_id) == "ou_" + "a" * 32 + "_bbb"


def test_folder_candidates_use_the_last_4_then_8_then_all_of_the_ou_id() -> None:
    assert first(folder_collision_candidates("sales", OU), 6) == [
        "sales",
        "sales_ef56",
        "sales_cd34ef56",
        "sales_ou_ab12_cd34ef56",
        "sales_ou_ab12_cd34ef56_2",
        "sales_ou_ab12_cd34ef56_3",
    ]


def test_folder_candidates_shorten_the_base_and_strip_a_trailing_hyphen() -> None:
    base = "s" * 33 + "-emea"
    assert first(folder_collision_candidates(base, OU), 2) == [base, "s" * 33 + "_ef56"]


@PROPERTY
@given(name=names, ou_id=ou_ids, index=st.integers(0, 100))
def test_every_folder_candidate_is_valid_and_an_own_variant(
    name: str, ou_id: str, index: int
) -> None:
    base = dynamic_folder_handle(name, ou_id)
    assert_valid_folder_handle(base)
    candidate = next(itertools.islice(folder_collision_candidates(base, ou_id), index, None))
    assert_valid_folder_handle(candidate)
    assert len(candidate) <= MAX_HANDLE
    assert is_own_folder_variant(candidate, base, ou_id)


def test_another_ous_suffixed_form_is_not_an_own_folder_variant() -> None:
    assert not is_own_folder_variant("sales_ef56", "sales", OTHER_OU)
    assert is_own_folder_variant("sales_7766", "sales", OTHER_OU)


def test_sibling_folders_with_one_name_the_lower_ou_id_gets_the_plain_handle() -> None:
    assigned = assign_folder_handles(
        [new_folder(OU, "Sales"), new_folder(OTHER_OU, "Sales")], frozenset()
    )
    assert assigned == {OTHER_OU: "sales", OU: "sales_ef56"}


def test_a_renamed_folder_that_collides_with_a_sibling_gets_a_suffix_from_its_ou_id() -> None:
    assigned = assign_folder_handles(
        [held_folder(OTHER_OU, "Sales", "sales"), held_folder(OU, "Sales", "hr")], frozenset()
    )
    assert assigned == {OTHER_OU: "sales", OU: "sales_ef56"}


def test_a_folder_handle_taken_by_a_sibling_outside_the_request_is_not_assigned() -> None:
    assigned = assign_folder_handles([new_folder(OU, "Sales")], frozenset({"sales"}))
    assert assigned == {OU: "sales_ef56"}


def test_two_folders_that_exchange_names_do_not_swap_handles() -> None:
    assigned = assign_folder_handles(
        [held_folder(OU, "HR", "sales"), held_folder(OTHER_OU, "Sales", "hr")], frozenset()
    )
    assert assigned == {OU: "hr_ef56", OTHER_OU: "sales_7766"}


def test_a_static_folder_handle_with_a_hyphen_is_kept_and_the_sibling_wanting_it_is_suffixed() -> (
    None
):
    assigned = assign_folder_handles(
        [held_folder(OTHER_OU, "X", "sales", static=True), new_folder(OU, "Sales")], frozenset()
    )
    assert assigned == {OTHER_OU: "sales", OU: "sales_ef56"}
    kept = assign_folder_handles([held_folder(OU, "Y", "team-a", static=True)], frozenset())
    assert kept == {OU: "team-a"}


def test_a_suffixed_folder_handle_stays_when_the_plain_one_becomes_free() -> None:
    assigned = assign_folder_handles([held_folder(OU, "Sales", "sales_ef56")], frozenset())
    assert assigned == {OU: "sales_ef56"}


world_folders = st.tuples(ou_ids, world_names, world_names, st.integers(0, 7))


@st.composite
def folder_worlds(draw: st.DrawFn) -> tuple[list[FolderHandleRequest], frozenset[str]]:
    """Sibling folders with a history, and the handles of siblings outside the request."""
    folders = draw(st.lists(world_folders, min_size=1, max_size=8, unique_by=lambda f: f[0]))
    taken = frozenset(
        dynamic_folder_handle(name, OU) for name in draw(st.lists(world_names, max_size=3))
    )
    history = assign_folder_handles(
        [new_folder(i, before) for i, before, _, code in folders if standing(code)[0]], taken
    )
    requests = []
    for ou_id, before, after, code in folders:
        exists, static, renamed = standing(code)
        name = after if renamed else before
        if exists:
            requests.append(held_folder(ou_id, name, history[ou_id], static=static))
        else:
            requests.append(new_folder(ou_id, name))
    return requests, taken


@PROPERTY
@given(folder_worlds(), st.randoms(use_true_random=False))
def test_folder_assignment_is_unique_valid_stable_and_order_independent(
    world: tuple[list[FolderHandleRequest], frozenset[str]], shuffler: random.Random
) -> None:
    requests, taken = world
    assigned = assign_folder_handles(requests, taken)
    assert set(assigned) == {r.key for r in requests}
    assert len(set(assigned.values())) == len(assigned)
    assert not set(assigned.values()) & taken
    for request in requests:
        assert_valid_folder_handle(assigned[request.key])
        for other in requests:
            if other.key != request.key and other.current is not None:
                assert assigned[request.key] != other.current
    shuffled = list(requests)
    shuffler.shuffle(shuffled)
    assert assign_folder_handles(shuffled, taken) == assigned
    again = [
        FolderHandleRequest(
            key=r.key, ou_id=r.ou_id, name=r.name, current=assigned[r.key], static=r.static
        )
        for r in requests
    ]
    assert assign_folder_handles(again, taken) == assigned
