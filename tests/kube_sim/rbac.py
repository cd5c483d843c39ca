"""RBAC as kube-apiserver's authorizer applies it (rbac.authorization.k8s.io/v1).

A request is allowed when a rule of a Role or ClusterRole bound to the user (RoleBinding in the
request's namespace, or ClusterRoleBinding) matches its verb, API group, resource (with its
subresource: ``pods/log``, ``deployments/scale``, ``services/proxy``), name (``resourceNames``)
or, for a path outside the resources, its ``nonResourceURLs``. Group ``system:masters`` (the
admin's client certificate) may do anything. Every authenticated user may read the discovery
and version paths, as k3s's ``system:discovery``/``system:public-info-viewer`` bindings allow.
A refusal is RBAC's 403 Status with its own text.
"""

from .errors import ApiError

RBAC = "rbac.authorization.k8s.io"
# system:discovery, system:public-info-viewer and system:basic-user, bound to system:authenticated
DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/version/",
                  "/openapi", "/openapi/*")
SELF_REVIEWS = (("authorization.k8s.io", "selfsubjectaccessreviews"), ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews"))


class Request(object):
    """What RBAC decides on: verb, API group, resource, subresource, namespace, name; or a path."""

    def __init__(self, verb, group="", resource=None, subresource=None, namespace=None, name=None, path=None):
        self.verb = verb
        self.group = group
        self.resource = resource
        self.subresource = subresource
        self.namespace = namespace
        self.name = name
        self.path = path


def _subject_matches(subject, user):
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return user.sa_name is not None and subject.get("name") == user.sa_name and \
            subject.get("namespace") == user.sa_namespace
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    return False


def _rules_of(store, role_ref, namespace):
    kind, name = role_ref.get("kind"), role_ref.get("name")
    try:
        if kind == "ClusterRole":
            role = store.get("clusterroles." + RBAC, name)
        elif kind == "Role" and namespace:
            role = store.get("roles." + RBAC, name, namespace)
        else:
            return []
    except ApiError:
        return []    # a binding to a role that does not exist grants nothing
    return list(role.get("rules") or [])


def rules_for(store, user, namespace):
    """The rules that apply to ``user`` for a request in ``namespace`` (None: cluster scope)."""
    rules = []
    for binding in store.list("clusterrolebindings." + RBAC)[0]:
        if any(_subject_matches(s, user) for s in binding.get("subjects") or []):
            rules.extend(_rules_of(store, binding.get("roleRef") or {}, None))
    if namespace:
        for binding in store.list("rolebindings." + RBAC, namespace)[0]:
            if any(_subject_matches(s, user) for s in binding.get("subjects") or []):
                rules.extend(_rules_of(store, binding.get("roleRef") or {}, namespace))
    return rules


def _has(values, wanted):
    return "*" in values or wanted in values


def _resource_matches(rule, request):
    resources = rule.get("resources") or []
    if "*" in resources:
        return True
    if request.subresource:
        return "%s/%s" % (request.resource, request.subresource) in resources or \
            "*/%s" % request.subresource in resources
    return request.resource in resources


def _path_matches(rule, path):
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def rule_allows(rule, request):
    """Whether one PolicyRule allows the request."""
    if not _has(rule.get("verbs") or [], request.verb):
        return False
    if request.path is not None:
        return _path_matches(rule, request.path)
    if not _has(rule.get("apiGroups") or [], request.group) or not _resource_matches(rule, request):
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


def allowed(store, user, request):
    """Whether RBAC allows ``request`` (a Request) for ``user`` (auth.User)."""
    if user.is_admin:
        return True
    if request.path is not None:
        if request.verb in ("get", "head") and any(_path_matches({"nonResourceURLs": [u]}, request.path)
                                                   for u in DISCOVERY_URLS):
            return True
    elif request.verb == "create" and (request.group, request.resource) in SELF_REVIEWS:
        return True
    namespace = request.namespace if request.path is None else None
    return any(rule_allows(rule, request) for rule in rules_for(store, user, namespace))


def forbidden(user, request):
    """RBAC's 403 Status for a refused request (kube-apiserver's text)."""
    if request.path is not None:
        message = 'forbidden: User "%s" cannot %s path "%s"' % (user.name, request.verb, request.path)
        return ApiError(403, "Forbidden", message, {})
    qualified = "%s.%s" % (request.resource, request.group) if request.group else request.resource
    resource = request.resource + ("/" + request.subresource if request.subresource else "")
    where = ' in the namespace "%s"' % request.namespace if request.namespace else " at the cluster scope"
    message = '%s%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s"%s' % (
        qualified, ' "%s"' % request.name if request.name else "", user.name, request.verb, resource,
        request.group, where)
    details = {"group": request.group, "kind": request.resource}
    if request.name:
        details["name"] = request.name
    return ApiError(403, "Forbidden", message, details)


def authorize(store, user, request):
    """Raise RBAC's 403 unless the request is allowed."""
    if not allowed(store, user, request):
        raise forbidden(user, request)
