"""The [profiles.NAME.slurm] table: every key checked on load, exit 2 with the key named, and the
sbatch options it becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from colabtunnel.errors import ConfigError
from colabtunnel.profiles import load_profiles
from colabtunnel.slurm_settings import SlurmSettings

HEAD = '[profiles.c]\nhost = "login"\nlauncher = "slurm"\n[profiles.c.slurm]\n'


def _load(tmp_path: Path, text: str) -> SlurmSettings:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    settings = load_profiles(path)["c"].slurm
    assert settings is not None
    return settings


def test_a_full_table_becomes_sbatch_options(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        HEAD + 'partition = "gpu"\ngpus = "a100:2"\ncpus = 8\nmem = "64G"\ntime = "1-00:00:00"\n'
        'account = "lab"\nqos = "normal"\nconstraint = "ampere"\n'
        'extra_args = ["--exclusive", "--nodelist=gpu01"]\naccess = "srun"\n'
        'queue_timeout = "1h30m"\nstart_timeout = "90s"\n',
    )
    assert settings.sbatch_options() == [
        "--partition=gpu",
        "--gres=gpu:a100:2",
        "--cpus-per-task=8",
        "--mem=64G",
        "--time=1-00:00:00",
        "--account=lab",
        "--qos=normal",
        "--constraint=ampere",
        "--exclusive",
        "--nodelist=gpu01",
    ]
    assert (settings.queue_timeout_s, settings.start_timeout_s) == (5400, 90)
    assert settings.access == "srun"


def test_defaults_and_the_gpus_flag(tmp_path: Path) -> None:
    settings = _load(tmp_path, HEAD + 'gpus = 1\ngpu_flag = "gpus"\naccount = ""\n')
    assert settings.sbatch_options() == ["--gpus=1"]
    assert (settings.access, settings.session_root) == ("auto", "~/.colabtunnel/slurm")
    assert (settings.queue_timeout_s, settings.start_timeout_s) == (1800, 600)
    no_table = tmp_path / "p.toml"
    no_table.write_text('[profiles.c]\nhost = "login"\nlauncher = "slurm"\n')
    assert load_profiles(no_table)["c"].slurm == SlurmSettings()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('extra_args = ["--output=/tmp/x"]', "may not set --output"),
        ('extra_args = ["-o", "x"]', "may not set -o"),
        ('extra_args = ["--job-name=x"]', "may not set --job-name"),
        ('extra_args = ["--export=ALL"]', "may not set --export"),
        ('extra_args = ["--wrap=sleep 1"]', "may not set --wrap"),
        ('extra_args = ["--parsable"]', "may not set --parsable"),
        ('extra_args = ["--signal=B:USR1@60"]', "may not set --signal"),
        ('extra_args = ["gpu01"]', "not an sbatch option"),
        ('access = "ssh"', "must be one of auto, srun, node-ssh, network"),
        ('time = "4h"', "not a time sbatch takes"),
        ('queue_timeout = "soon"', "must be a duration"),
        ("gpus = 0", "count or TYPE:COUNT"),
        ("cpus = true", "integer 1..4096"),
        ('partitions = "gpu"', "unknown key 'slurm.partitions'"),
    ],
)
def test_bad_values_are_exit_2_naming_the_key(tmp_path: Path, line: str, words: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(HEAD + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert info.value.exit_code == 2
    assert words in info.value.message and "profile 'c'" in info.value.message


def test_a_slurm_table_without_the_slurm_launcher_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.c]\nhost = "login"\n[profiles.c.slurm]\npartition = "gpu"\n')
    with pytest.raises(ConfigError, match='needs launcher = "slurm"'):
        load_profiles(path)
    path.write_text('[profiles.c]\nhost = "local"\nlauncher = "slurm"\n')
    with pytest.raises(ConfigError, match="login node"):
        load_profiles(path)
    path.write_text('[profiles.c]\nhost = "login"\nlauncher = "pbs"\n')
    with pytest.raises(ConfigError, match="must be one of direct, slurm"):
        load_profiles(path)
