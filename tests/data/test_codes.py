import pytest

from fedicd.data.codes import format_code, is_valid_code


@pytest.mark.parametrize("raw, version, kind, expected", [
    ("I5022", 10, "diagnosis", "I50.22"), ("i10", 10, "diagnosis", "I10"), ("r50.9", 10, "diagnosis", "R50.9"),
    ("4280", 9, "diagnosis", "428.0"), ("V1582", 9, "diagnosis", "V15.82"), ("E8497", 9, "diagnosis", "E849.7"),
    ("3961", 9, "procedure", "39.61"), ("0DTJ4ZZ", 10, "procedure", "0DTJ4ZZ"), (" 250 ", 9, "diagnosis", "250"),
])
def test_format_code_places_the_point(raw, version, kind, expected):
    code = format_code(raw, version, kind)
    assert code == expected
    assert is_valid_code(code, version, kind)


@pytest.mark.parametrize("code, version, kind", [
    ("I50.2222X", 10, "diagnosis"), ("150.2", 10, "diagnosis"), ("42.80", 9, "diagnosis"),
    ("0DTJ4", 10, "procedure"), ("0DTI4ZZ", 10, "procedure"), ("391.6", 9, "procedure"),
])
def test_malformed_codes_are_rejected(code, version, kind):
    assert not is_valid_code(code, version, kind)


def test_unknown_system_raises():
    with pytest.raises(ValueError, match="allowed versions 9 or 10"):
        format_code("A00", 11)
