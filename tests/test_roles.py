"""Every role follows the project's conventions (DESIGN.md): the things a reviewer would check by hand."""

from __future__ import annotations

import re

import pytest
from conftest import ROLES, ROOT, load_yaml, role_defaults, role_spec_options


def test_there_are_roles():
    assert "server" in ROLES


@pytest.mark.parametrize("role", ROLES)
def test_role_has_the_expected_files(role):
    base = ROOT / "roles" / role
    for relative in ["meta/argument_specs.yml", "meta/main.yml", "defaults/main.yml", "README.md",
                     "molecule/default/molecule.yml", "molecule/default/converge.yml"]:
        assert (base / relative).is_file(), f"roles/{role}/{relative} is missing"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_agree(role):
    """A default nobody validates, or a validated input with no documented default, is drift."""
    defaults = set(role_defaults(role))
    options = role_spec_options(role)
    required = {name for name, spec in options.items() if spec.get("required")}
    assert not defaults - set(options), f"in defaults/main.yml but not in argument_specs: {defaults - set(options)}"
    missing = set(options) - required - defaults
    assert not missing, f"in argument_specs but without a default in defaults/main.yml: {missing}"
    assert not required & defaults, f"required inputs must not have a default: {required & defaults}"


@pytest.mark.parametrize("role", ROLES)
def test_required_inputs_are_documented_as_comments_in_defaults(role):
    text = (ROOT / "roles" / role / "defaults" / "main.yml").read_text()
    for name, spec in role_spec_options(role).items():
        if spec.get("required"):
            assert re.search(rf"^#\s*{re.escape(name)}:", text, re.M), \
                f"required input {name} should appear commented out in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_every_input_is_named_after_the_role_and_described(role):
    for name, spec in role_spec_options(role).items():
        assert name.startswith(f"{role}_"), f"{name}: public variables are named {role}_*"
        assert spec.get("description"), f"{name} has no description in argument_specs"
        assert "type" in spec, f"{name} has no type in argument_specs"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment(role):
    lines = (ROOT / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(rf"^({role}_\w+):", line)
        if match:
            above = lines[index - 1].strip() if index else ""
            assert above.startswith("#") or "#" in line, f"{match.group(1)} has no comment in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_the_required_inputs_and_points_at_the_defaults(role):
    """Every input has its comment in defaults/main.yml; the README must name the ones an inventory
    has to set (no default) and send the reader to the full list."""
    readme = (ROOT / "roles" / role / "README.md").read_text()
    required = [name for name, spec in role_spec_options(role).items() if spec.get("required")]
    undocumented = [name for name in required if name not in readme]
    assert not undocumented, f"roles/{role}/README.md does not mention its required inputs {undocumented}"
    assert "defaults/main.yml" in readme, f"roles/{role}/README.md does not point at defaults/main.yml"


def scenarios():
    for role in ROLES:
        for molecule_yml in sorted((ROOT / "roles" / role / "molecule").glob("*/molecule.yml")):
            yield pytest.param(role, molecule_yml, id=f"{role}/{molecule_yml.parent.name}")


@pytest.mark.parametrize(("role", "molecule_yml"), list(scenarios()))
def test_scenarios_cover_both_debian_releases_with_role_named_instances(role, molecule_yml):
    platforms = load_yaml(molecule_yml)["platforms"]
    images = {p.get("image", "") for p in platforms}
    assert any(i.endswith(":debian12") for i in images), "no Debian 12 platform"
    assert any(i.endswith(":debian13") for i in images), "no Debian 13 platform"
    for platform in platforms:
        assert platform["name"].startswith(f"{role}-"), \
            f"instance {platform['name']} must start with '{role}-' so scenarios can run side by side"


@pytest.mark.parametrize(("role", "molecule_yml"), list(scenarios()))
def test_scenarios_have_testinfra_tests(role, molecule_yml):
    tests = list((molecule_yml.parent / "tests").glob("test_*.py"))
    assert tests, f"{molecule_yml.parent} has no tests/test_*.py: Molecule would skip verify silently"


def test_instance_names_are_unique_across_scenarios():
    seen: dict[str, str] = {}
    for molecule_yml in sorted([*ROOT.glob("roles/*/molecule/*/molecule.yml"), *ROOT.glob("molecule/*/molecule.yml")]):
        for platform in load_yaml(molecule_yml).get("platforms", []):
            where = str(molecule_yml.relative_to(ROOT))
            assert platform["name"] not in seen, f"{platform['name']} in {where} and {seen.get(platform['name'])}"
            seen[platform["name"]] = where


@pytest.mark.parametrize("role", ROLES)
def test_templates_start_with_ansible_managed_and_carry_no_dates(role):
    for template in (ROOT / "roles" / role / "templates").glob("**/*.j2"):
        text = template.read_text()
        head = "\n".join(text.splitlines()[:3])
        assert "ansible_managed" in head, f"{template.name} does not start with {{{{ ansible_managed | comment }}}}"
        assert "ansible_date_time" not in text and "now(" not in text, f"{template.name} carries a date"


@pytest.mark.parametrize("role", ROLES)
def test_task_names_in_phase_files_are_prefixed(role):
    for tasks_file in (ROOT / "roles" / role / "tasks").glob("*.yml"):
        if tasks_file.name == "main.yml":
            continue
        for task in load_yaml(tasks_file) or []:
            if "name" in task and "block" not in task:
                assert task["name"].startswith(f"{tasks_file.stem} | "), \
                    f"roles/{role}/tasks/{tasks_file.name}: '{task['name']}' should start with '{tasks_file.stem} | '"
