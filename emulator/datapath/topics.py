"""MQTT topic filters as AWS IoT rules use them (the rule's FROM clause).

* ``+`` matches exactly one topic level (which may be empty);
* ``#`` matches any number of levels, including none (``a/#`` matches ``a``,
  ``a/b`` and ``a/b/c``); it must be the last level of the filter;
* every other level matches itself exactly (case-sensitive);
* a wildcard in the first level never matches a topic that starts with ``$``
  (MQTT 3.1.1 section 4.7.2: ``#`` and ``+/...`` do not see ``$aws/...``).

A filter with a wildcard mixed into a level (``a+``, ``a/#b``), ``#`` before
the end, or an empty filter is invalid (``TopicFilterError``).
"""

from __future__ import annotations


class TopicFilterError(ValueError):
    """The topic filter is not a valid MQTT topic filter."""


def validate_filter(topic_filter: str) -> list[str]:
    """The filter's levels; TopicFilterError when it is not a valid filter."""
    if not isinstance(topic_filter, str) or topic_filter == "":
        raise TopicFilterError("empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            if index != len(levels) - 1:
                raise TopicFilterError(f"'#' must be the last level in {topic_filter!r}")
        elif level == "+":
            continue
        elif "#" in level or "+" in level:
            raise TopicFilterError(f"wildcard inside a level in {topic_filter!r}")
    return levels


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` (a concrete topic name) matches ``topic_filter``.

    An invalid filter raises TopicFilterError; an empty topic or one that
    contains a wildcard character matches nothing.
    """
    levels = validate_filter(topic_filter)
    if topic == "" or "+" in topic or "#" in topic:
        return False
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(levels):
        if level == "#":
            return True  # the rest, including nothing (a/# matches a)
        if index >= len(parts):
            return False
        if level != "+" and level != parts[index]:
            return False
    return len(parts) == len(levels)
