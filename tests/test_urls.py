"""One redactor for every store URL a message or tag shows (MLflow and Optuna alike)."""

import pytest

from workbench.errors import ConfigError
from workbench.sweeps.study import open_optuna
from workbench.tracking import check_store
from workbench.urls import redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:pw@host/db", "postgresql://***@host/db"),
        ("mysql+pymysql://u:p@ss/w@db.example:3306/optuna?ssl=1", "mysql+pymysql://***@db.example:3306/optuna?ssl=1"),
        ("https://TOKEN@mlflow.example/", "https://***@mlflow.example/"),
        ("postgresql://host/db", "postgresql://host/db"),  # no password: shown as it is
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),  # an '@' in a path is no user
        ("outputs/sweeps/optuna-journal.log", "outputs/sweeps/optuna-journal.log"),
    ],
)
def test_redacted_hides_the_user_info_and_nothing_else(url, shown):
    assert redacted(url) == shown


def test_tracking_and_sweep_errors_never_show_the_password():
    with pytest.raises(ConfigError) as tracking_error:
        check_store("postgersql://user:hunter2@host/db")  # a typo'd scheme: refused, URL shown
    with pytest.raises(ConfigError) as storage_error:
        open_optuna("nosuchdb://user:hunter2@host/db", heartbeat_s=5, retries=0)
    for err in (tracking_error, storage_error):
        assert "hunter2" not in str(err.value) and "***@host/db" in str(err.value)
