"""The deploy/ files with placeholders, filled the way their servers' images fill them:
${VAR} in the nginx template (envsubst), $(VAR) in the PostgREST config file."""

from __future__ import annotations

import re

from stepledger import StepledgerError

_TEMPLATE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONF_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def render_template(text: str, env: dict[str, str]) -> str:
    """envsubst as the nginx image does it: replace ${VAR} for defined names, keep nginx's $vars."""
    missing = sorted(template_variables(text) - set(env))
    if missing:
        raise StepledgerError(f"nginx template needs undefined variables: {', '.join(missing)}")
    return _TEMPLATE_VAR.sub(lambda m: env[m.group(1)], text)


def template_variables(text: str) -> set[str]:
    """${VAR} names in an nginx template (comments skipped)."""
    return _names(text, _TEMPLATE_VAR)


def conf_variables(text: str) -> set[str]:
    """$(VAR) names in a PostgREST config file (comments skipped)."""
    return _names(text, _CONF_VAR)


def _names(text: str, pattern: re.Pattern[str]) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            names.update(pattern.findall(line))
    return names
