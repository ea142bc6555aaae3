"""`workbench config keys` reads each field's help from the schema's source, wherever the formatter put it."""

from dataclasses import dataclass, field

from workbench.config.keys import field_comments, matching


@dataclass
class Formatted:
    short: int = 1  # on the field's line
    wrapped: int = field(
        default=2, metadata={"min": 0, "max": 10**12}
    )  # after the closing parenthesis, where ruff format moves a comment too long for the line
    inner: str = (
        # inside the parentheses
        "x"
    )
    # above the field,
    # on two lines
    above: bool = False
    bare: int = 3


def test_help_is_found_on_the_line_after_the_parenthesis_inside_and_above():
    assert field_comments(Formatted) == {
        "short": "on the field's line",
        "wrapped": "after the closing parenthesis, where ruff format moves a comment too long for the line",
        "inner": "inside the parentheses",
        "above": "above the field, on two lines",
    }


def test_the_schema_fields_a_formatter_wrapped_keep_their_help():
    helps = {info.key: info.help for info in matching(None)}
    assert helps["train.steps"].startswith("pre-training optimiser steps")  # comment after `)`
    assert helps["augment.randaug_set"].startswith("RandAugment ops: geometric")  # comment inside `( )`
    assert helps["data.pretrain_shards"].startswith("tar shards (webdataset layout)")  # comment lines above
