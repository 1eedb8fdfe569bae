"""The Composite resources: several operations in one round trip (behind ``sf.composite*``).

::

    sf.composite([
        {"method": "POST", "url": "sobjects/Account", "referenceId": "acct", "body": {"Name": "Acme"}},
        {"method": "POST", "url": "sobjects/Contact", "referenceId": "c",
         "body": {"LastName": "Doe", "AccountId": "@{acct.id}"}},
    ], all_or_none=True)                                   # the compositeResponse list
    sf.composite_batch([{"method": "GET", "url": "sobjects/Account/001..."}, ...])   # the results list
    sf.composite_tree("Account", [{"attributes": {"type": "Account", "referenceId": "a1"}, "Name": "Acme",
                                   "Contacts": {"records": [...]}}])                # the results list
    sf.composite_graph([{"graphId": "g1", "compositeRequest": [...]}])              # the graphs list

Subrequests, records and graphs are Salesforce's own JSON; a subrequest
``url`` may be relative (``"sobjects/Account"``) as any path on the client.
A subrequest that fails does not raise: read its status in the answer.  A call
over its limit (25 subrequests for composite and batch, 200 records in a tree,
500 subrequests in a graph) is a ``ValueError`` before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from authkit.salesforce._names import check_name

if TYPE_CHECKING:
    from authkit.salesforce.client import SalesforceClient

__all__ = ["MAX_COMPOSITE", "MAX_BATCH", "MAX_TREE_RECORDS", "MAX_GRAPH_NODES", "MAX_GRAPHS"]

MAX_COMPOSITE = 25
MAX_BATCH = 25
MAX_TREE_RECORDS = 200
MAX_TREE_DEPTH = 5
MAX_GRAPH_NODES = 500
MAX_GRAPHS = 75

_VERSIONED = re.compile(r"^v\d{2,3}\.\d(?:/|$)")


def _subrequests(requests: Iterable[Mapping[str, Any]], required: set[str], what: str) -> list[dict[str, Any]]:
    if isinstance(requests, (Mapping, str)):
        raise TypeError(f"{what} takes a list of subrequests")
    subs = []
    for sub in requests:
        if not isinstance(sub, Mapping):
            raise TypeError(f"each {what} subrequest must be a mapping")
        missing = required - set(sub)
        if missing:
            raise ValueError(f"{what} subrequest lacks {', '.join(sorted(missing))}")
        subs.append(dict(sub))
    return subs


def composite_url(client: SalesforceClient, url: object) -> str:
    """A composite subrequest URL: relative ones go under ``/services/data/vXX.X/``."""
    text = str(url)
    return text if text.startswith("/") else client._data_path + text


def composite(
    client: SalesforceClient, requests: Iterable[Mapping[str, Any]], all_or_none: bool,
    collate_subrequests: bool,
) -> list[dict[str, Any]]:
    subs = _subrequests(requests, {"method", "url", "referenceId"}, "composite")
    if not 1 <= len(subs) <= MAX_COMPOSITE:
        raise ValueError(f"composite takes 1 to {MAX_COMPOSITE} subrequests, got {len(subs)}")
    for sub in subs:
        sub["url"] = composite_url(client, sub["url"])
    body = {"allOrNone": bool(all_or_none), "collateSubrequests": bool(collate_subrequests),
            "compositeRequest": subs}
    return list(client.post("composite", json=body)["compositeResponse"])


def composite_batch(
    client: SalesforceClient, requests: Iterable[Mapping[str, Any]], halt_on_error: bool
) -> list[dict[str, Any]]:
    subs = _subrequests(requests, {"method", "url"}, "composite_batch")
    if not 1 <= len(subs) <= MAX_BATCH:
        raise ValueError(f"composite_batch takes 1 to {MAX_BATCH} subrequests, got {len(subs)}")
    for sub in subs:
        # Batch URLs are relative to /services/data and start with the version: "v62.0/sobjects/...".
        url = str(sub["url"])
        if url.startswith("/services/data/"):
            url = url[len("/services/data/"):]
        elif not _VERSIONED.match(url):
            if url.startswith("/"):
                raise ValueError(f"composite_batch subrequests must be under /services/data: {url!r}")
            url = f"v{client.api_version}/{url}"
        sub["url"] = url
    body = {"haltOnError": bool(halt_on_error), "batchRequests": subs}
    return list(client.post("composite/batch", json=body)["results"])


def _count_tree(records: Any, depth: int) -> int:
    if not isinstance(records, list):
        raise TypeError("composite_tree records must be a list of records")
    if depth > MAX_TREE_DEPTH:
        raise ValueError(f"composite_tree records nest at most {MAX_TREE_DEPTH} levels deep")
    total = 0
    for record in records:
        if not isinstance(record, Mapping):
            raise TypeError("each composite_tree record must be a mapping")
        attributes = record.get("attributes")
        if not isinstance(attributes, Mapping) or "type" not in attributes or "referenceId" not in attributes:
            raise ValueError('each composite_tree record needs "attributes": {"type", "referenceId"}')
        total += 1
        for value in record.values():
            if isinstance(value, Mapping) and "records" in value:
                total += _count_tree(value["records"], depth + 1)
    return total


def composite_tree(
    client: SalesforceClient, sobject: str, records: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    check_name(sobject, "sObject")
    rows = [dict(r) if isinstance(r, Mapping) else r for r in records]
    count = _count_tree(rows, 1)
    if not 1 <= count <= MAX_TREE_RECORDS:
        raise ValueError(f"composite_tree takes 1 to {MAX_TREE_RECORDS} records in all, got {count}")
    # A tree that fails answers 400 with the same {"hasErrors", "results"} shape: hand it back, not raise.
    response = client._request("POST", f"composite/tree/{sobject}", frozenset({400}), json={"records": rows})
    body = response.json() if response.content else None
    if not (isinstance(body, dict) and "results" in body):
        from authkit.salesforce._responses import api_error

        raise api_error(response)
    return list(body["results"])


def composite_graph(client: SalesforceClient, graphs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(graphs, (Mapping, str)):
        raise TypeError("composite_graph takes a list of graphs")
    items = []
    total = 0
    for graph in graphs:
        if not isinstance(graph, Mapping) or "graphId" not in graph or "compositeRequest" not in graph:
            raise ValueError('each graph needs "graphId" and "compositeRequest"')
        subs = _subrequests(graph["compositeRequest"], {"method", "url", "referenceId"}, "composite_graph")
        if not subs:
            raise ValueError("a graph needs at least one subrequest")
        total += len(subs)
        for sub in subs:
            sub["url"] = composite_url(client, sub["url"])
        items.append({**graph, "compositeRequest": subs})
    if not 1 <= len(items) <= MAX_GRAPHS:
        raise ValueError(f"composite_graph takes 1 to {MAX_GRAPHS} graphs, got {len(items)}")
    if total > MAX_GRAPH_NODES:
        raise ValueError(f"composite_graph takes at most {MAX_GRAPH_NODES} subrequests in all, got {total}")
    return list(client.post("composite/graph", json={"graphs": items})["graphs"])
