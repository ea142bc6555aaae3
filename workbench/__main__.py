"""`python -m workbench ...` = the `workbench` command."""

from workbench.cli import app

if __name__ == "__main__":
    app(prog_name="workbench")
