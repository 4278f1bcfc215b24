"""AWS IoT provisioning templates (bulk registration, fleet provisioning).

``render(template_body, parameters)`` evaluates a template, ``apply(account,
region, rendered, certificate_id=None)`` creates its resources in moto's IoT
backend; see ``template.py`` for the API, what AWS does and what is guessed.
"""

from .template import (
    CERTIFICATE,
    POLICY,
    THING,
    Rendered,
    Resource,
    TemplateError,
    apply,
    policy_name_for,
    render,
)

__all__ = [
    "CERTIFICATE",
    "POLICY",
    "THING",
    "Rendered",
    "Resource",
    "TemplateError",
    "apply",
    "policy_name_for",
    "render",
]
