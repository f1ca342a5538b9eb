"""Which plugins a workflow needs: recorded when it is saved, reported when one is missing.

A third-party node type is ``<plugin>.<Name>``, so the type alone says which plugin it needs; the
workflow's ``requires`` adds which distribution provides that plugin and the version it was made
with, so a user opening someone else's workflow is told what to ``pip install`` rather than only
that ``imageops.Resize`` is unknown.
"""

from __future__ import annotations

from nodeflow.errors import Issue
from nodeflow.plaintext import with_suggestion
from nodeflow.plugins import Catalog
from nodeflow.workflow import PluginRequirement, Workflow


def plugin_of(node_type: str) -> str | None:
    """The plugin a namespaced node type belongs to (``imageops.Resize`` -> ``imageops``)."""
    prefix, dot, _ = node_type.rpartition(".")
    return prefix if dot else None


def requirements(workflow: Workflow, catalog: Catalog) -> dict[str, PluginRequirement]:
    """The non-built-in plugins the workflow's node types come from, with distribution and
    version from the catalog (or, for a plugin not loaded here, as the file recorded it)."""
    found: dict[str, PluginRequirement] = {}
    recorded = workflow.requires or {}
    inner = [e for d in (workflow.subgraphs or {}).values() for e in d.nodes.values()]
    for entry in [*workflow.nodes.values(), *inner]:
        plugin = catalog.node_plugins.get(entry.type) or plugin_of(entry.type)
        if plugin is None:
            continue
        info = catalog.plugin(plugin)
        if info is not None and not info.builtin:
            found[plugin] = PluginRequirement(distribution=info.distribution, version=info.version)
        elif info is None and plugin in recorded:
            found[plugin] = recorded[plugin]
    return dict(sorted(found.items()))


def stamp(workflow: Workflow, catalog: Catalog) -> Workflow:
    """A copy whose ``requires`` names what this catalog provides its node types from."""
    requires = requirements(workflow, catalog)
    return workflow.model_copy(update={"requires": requires or None})


def missing_plugin_issue(
    node_id: str, node_type: str, workflow: Workflow, catalog: Catalog
) -> Issue | None:
    """A ``missing_plugin`` issue when ``node_type`` belongs to a plugin that is not loaded:
    not installed, disabled, or failed to load; each says what to do about it."""
    plugin = plugin_of(node_type)
    if plugin is None or catalog.plugin(plugin) is not None:
        return None
    recorded = (workflow.requires or {}).get(plugin)
    disabled = next((p for p in catalog.disabled if p.name == plugin), None)
    failure = next((f for f in catalog.failures if f.plugin == plugin), None)
    distribution = (
        (recorded.distribution if recorded else None)
        or (disabled.distribution if disabled else None)
        or (failure.distribution if failure else None)
    )
    made_with = f", saved with version {recorded.version}" if recorded and recorded.version else ""
    which = f"plugin {plugin!r}"
    if distribution:
        which += f" (distribution {distribution!r}{made_with})"
    if disabled is not None:
        state = (
            "is installed but disabled (--disable-plugin, NODEFLOW_DISABLE_PLUGINS or --no-plugins)"
        )
    elif failure is not None:
        state = f"is installed but failed to load ({failure.stage}: {failure.error})"
    elif distribution:
        state = f"is not installed: pip install {distribution}"
    else:  # nothing known about it: perhaps a typo for a type that is here
        state = f"is not installed: install the package that provides the {plugin!r} plugin"
        state = with_suggestion(state, node_type, catalog.nodes)
    return Issue(
        node_id, None, "missing_plugin", f"node type {node_type!r} needs {which}, which {state}"
    )
