"""Label and field selectors as the kube-apiserver parses and applies them.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a`` (exists),
``!a`` (does not exist), comma-separated (AND). Field selectors: ``field=value``,
``field==value``, ``field!=value`` over the fields each kind supports (``metadata.name``,
``metadata.namespace`` everywhere, plus ``spec.nodeName``/``status.phase`` for pods,
``involvedObject.*``/``reason``/``type`` for events, ...).
"""

import re

from .errors import bad_request

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(r"^\s*(?P<key>" + _KEY + r")\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>" + _KEY + r")\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>" + _KEY + r")\s*$")


def _split_top(text):
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text):
    """Parse a label selector string into a list of (key, op, values) requirements.

    ``op`` is one of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``. Raises ApiError 400
    with the apiserver's wording for a malformed selector.
    """
    requirements = []
    if not text:
        return requirements
    for part in _split_top(text):
        match = _SET_RE.match(part)
        if match:
            values = [v.strip() for v in match.group("values").split(",") if v.strip()]
            requirements.append((match.group("key"), match.group("op"), values))
            continue
        match = _CMP_RE.match(part)
        if match:
            op = "!=" if match.group("op") == "!=" else "="
            requirements.append((match.group("key"), op, [match.group("value")]))
            continue
        match = _EXISTS_RE.match(part)
        if match:
            requirements.append((match.group("key"), "!" if match.group("neg") else "exists", []))
            continue
        raise bad_request('unable to parse requirement: found \'%s\', expected: in, notin, =, ==, !=, gt, '
                          'lt' % part.strip())
    return requirements


def labels_match(requirements, labels):
    """True when a labels dict satisfies every parsed requirement."""
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and not (present and value == values[0]):
            return False
        if op == "!=" and present and value == values[0]:
            return False
        if op == "in" and not (present and value in values):
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def selector_from_label_selector(selector):
    """Requirements of a metav1.LabelSelector dict (matchLabels + matchExpressions)."""
    requirements = []
    for key, value in sorted(((selector or {}).get("matchLabels") or {}).items()):
        requirements.append((key, "=", [value]))
    for expr in (selector or {}).get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(expr.get("operator"))
        if op:
            requirements.append((expr.get("key"), op, list(expr.get("values") or [])))
    return requirements


def label_selector_string(selector):
    """The string form of a metav1.LabelSelector (as Scale.status.selector shows it)."""
    parts = []
    for key, op, values in selector_from_label_selector(selector):
        if op == "=":
            parts.append("%s=%s" % (key, values[0]))
        elif op in ("in", "notin"):
            parts.append("%s %s (%s)" % (key, op, ",".join(values)))
        elif op == "exists":
            parts.append(key)
        else:
            parts.append("!" + key)
    return ",".join(parts)


# Field selectors each kind supports beyond metadata.name / metadata.namespace.
FIELDS = {
    "pods": ["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"],
    "events": ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"],
    "secrets": ["type"],
    "nodes": ["spec.unschedulable"],
    "namespaces": ["status.phase"],
    "replicasets.apps": ["status.replicas"],
}


def parse_field_selector(text, resource):
    """Parse a field selector into (field, op, value) triples; 400 for an unsupported field."""
    requirements = []
    if not text:
        return requirements
    allowed = set(["metadata.name", "metadata.namespace"] + FIELDS.get(resource, []))
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                field, value = part.split(op, 1)
                break
        else:
            raise bad_request('invalid selector: \'%s\'; can\'t understand \'%s\'' % (text, part))
        field = field.strip()
        if field not in allowed:
            raise bad_request('field label not supported: %s' % field)
        requirements.append((field, "!=" if op == "!=" else "=", value.strip()))
    return requirements


def _field_value(obj, field):
    if field == "source":
        return ((obj.get("source") or {}).get("component")) or ""
    value = obj
    for part in field.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_match(requirements, obj):
    """True when an object satisfies every parsed field requirement."""
    for field, op, value in requirements:
        actual = _field_value(obj, field)
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
    return True
