"""Assertions shared by the CLI tests."""


def assert_one_line_error(result, needle: str) -> None:
    """A CliRunner result that failed the way bad input must: exit 2, one `error:` line, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.output
