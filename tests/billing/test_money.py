import pytest

from billing.money import format_cents, percent_of


@pytest.mark.parametrize(
    ("amount", "percent", "expected"),
    [
        (12000, 20, 2400),
        (12003, 20, 2401),  # 2400.6 rounds up
        (12002, 20, 2400),  # 2400.4 rounds down
        (25, 10, 3),  # 2.5 rounds half up, not to even
        (15, 10, 2),  # 1.5 rounds half up
        (10001, "12.5", 1250),  # 1250.125
        (10004, "12.5", 1251),  # 1250.5 rounds half up
        (0, 30, 0),
        (9999, 100, 9999),
        (9999, 0, 0),
    ],
)
def test_share_rounds_half_up_to_the_cent(amount: int, percent: object, expected: int) -> None:
    assert percent_of(amount, percent) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("cents", "text"), [(0, "$0.00"), (5, "$0.05"), (123456, "$1,234.56"), (-1200, "-$12.00")])
def test_cents_print_as_dollars(cents: int, text: str) -> None:
    assert format_cents(cents) == text
