"""Package layout (metadata is in pyproject.toml).

The checkout keeps ``tasks/`` and ``gin_configs/`` at its top level; they install inside the
package, as ``flantune.tasks`` (with its JSONL examples) and ``flantune/gin_configs/*.gin``, so
nothing generic lands at the top level of site-packages.
"""

from setuptools import find_namespace_packages, setup

MAPPED = {"flantune.tasks": "tasks", "flantune.gin_configs": "gin_configs"}


def mapped_packages(name: str, directory: str) -> list[str]:
    """``name`` and every directory below ``directory`` as dotted packages (data dirs too)."""
    found = find_namespace_packages(directory, exclude=["*__pycache__*"])
    return [name, *(f"{name}.{sub}" for sub in found)]


packages = mapped_packages("flantune", "flantune")
for name, directory in MAPPED.items():
    packages += mapped_packages(name, directory)

setup(
    packages=packages,
    package_dir=MAPPED,
    package_data={**{p: ["*"] for p in packages if p.startswith("flantune.assets")},
                  "flantune.tasks.examples": ["*.jsonl"],
                  **{p: ["*.gin"] for p in packages if p.startswith("flantune.gin_configs")}},
)
