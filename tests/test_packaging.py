from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "django_studio_backups"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (built,) = dist.glob("django_studio_backups-*.whl")
    return built


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    (built,) = dist.glob("django_studio_backups-*.tar.gz")
    return built


def test_wheel_ships_code_types_templates_and_translations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(path.relative_to(REPO))
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and (path.suffix in {".py", ".html", ".mo", ".po"} or path.name == "py.typed")
    }
    assert "django_studio_backups/py.typed" in expected
    assert "django_studio_backups/services.py" in expected
    assert expected <= names
    assert not any(name.startswith(("tests/", "example_project/")) for name in names)
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: Django>=4.2" in text
    assert "Classifier: Framework :: Django :: 6.1" in text
    assert "Project-URL: Source, " in text
    extras = {
        extra: re.findall(rf"Requires-Dist: (.*); extra == \"{extra}\"", text)
        for extra in ("offsite", "s3", "sftp")
    }
    assert any(r.startswith("django-storages[s3]") for r in extras["s3"])
    assert any(r.startswith("django-storages[sftp]") for r in extras["sftp"])
    for requirements in extras.values():
        assert any(r.startswith("zstandard") for r in requirements)
        assert any(r.startswith("pyrage") for r in requirements)
        assert any(r.startswith("django-storages") and "<2" in r for r in requirements)


def test_sdist_ships_the_docs_and_no_tests(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"README.md", "CHANGELOG.md", "LICENSE", "docs/guide.en.md", "docs/guide.es.md"} <= names
    assert "docs/img/en-backups.png" in names
    assert not any(name.startswith(("tests/", "example_project/", "bench/")) for name in names)
    assert "django_studio_backups/locale/es/LC_MESSAGES/django.mo" in names


def fresh_venv(where: Path, package: Path) -> Path:
    """A new venv with ``package`` (a wheel or an sdist) installed from the package index."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(package), "Django>=5.2,<5.3"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_project(python: Path, where: Path) -> Path:
    """``django-admin startproject`` with the app added, as the README says."""
    where.mkdir()
    subprocess.run([str(python), "-m", "django", "startproject", "studio", str(where)], check=True)
    settings = where / "studio" / "settings.py"
    text = settings.read_text()
    text = text.replace(
        "INSTALLED_APPS = [\n", 'INSTALLED_APPS = [\n    "django_studio_backups",\n', 1
    )
    settings.write_text(text + '\nSTUDIO_BACKUPS = {"TIME_ZONE": "America/Hermosillo"}\n')
    return where / "manage.py"


def project_env() -> dict[str, str]:
    # The new project's own settings, and none of this repository's code.
    return {
        k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH"}
    }


def manage(python: Path, manage_py: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), str(manage_py), *args],
        cwd=manage_py.parent,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def has_warning(output: str) -> bool:
    return "WARNING" in output or re.search(r"\bstudio_backups\.[EW]\d", output) is not None


def assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert not has_warning(output), output


@pytest.mark.slow
def test_the_wheel_in_a_new_project(wheel: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv", wheel)
    manage_py = new_project(python, tmp_path / "site")
    # A developer's machine (startproject's DEBUG = True): no warning anywhere.
    check = manage(python, manage_py, "check")
    assert_quiet(check)
    assert "System check identified no issues (0 silenced)." in check.stdout
    assert_quiet(manage(python, manage_py, "migrate"))
    port = free_port()
    server = subprocess.Popen(
        [str(python), str(manage_py), "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=manage_py.parent,
        env=project_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/") as page:
                    assert page.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "runserver did not start"
                assert server.poll() is None, server.communicate()[0]
                time.sleep(0.2)
    finally:
        server.terminate()
        served = server.communicate(timeout=30)[0]
    assert "System check identified no issues (0 silenced)." in served
    # (Django's own notice that runserver is for development is not ours to silence.)
    ours = served.replace("WARNING: This is a development server.", "")
    assert not has_warning(ours), served
    # The README's steps.
    made = manage(python, manage_py, "backup_now")
    assert_quiet(made)
    backup = Path(made.stdout.strip())
    assert backup.parent == tmp_path / "site" / "backups"
    assert (backup.parent / ".gitignore").read_text() == "*\n"
    listed = manage(python, manage_py, "list_backups")
    assert_quiet(listed)
    assert backup.name in listed.stdout
    verified = manage(python, manage_py, "verify_backups", "--full")
    assert_quiet(verified)
    assert verified.stdout.strip().endswith("The backup passed.")
    restored = manage(python, manage_py, "restore_backup", "--latest", "--no-input")
    assert_quiet(restored)
    assert f"Restored {backup.name}." in restored.stdout
    assert_quiet(manage(python, manage_py, "check"))
    # The advice on the journal mode is for a deployment.
    deploy = manage(python, manage_py, "check", "--deploy")
    assert deploy.stderr.count("studio_backups.W010") == 1, deploy.stderr


@pytest.mark.slow
def test_the_sdist_installs(sdist: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv", sdist)
    manage_py = new_project(python, tmp_path / "site")
    assert_quiet(manage(python, manage_py, "migrate"))
    made = manage(python, manage_py, "backup_now")
    assert_quiet(made)
    assert Path(made.stdout.strip()).exists()
    spanish = subprocess.run(
        [
            str(python),
            "-c",
            "import django_studio_backups, pathlib; print(pathlib.Path("
            "django_studio_backups.__file__).parent / 'locale/es/LC_MESSAGES/django.mo')",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(spanish.stdout.strip()).exists()
