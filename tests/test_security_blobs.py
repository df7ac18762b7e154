"""Attachment blob names stay in the attachments container (issue 23).

A blob name goes into the request URL, and URL clients remove ``.``/``..`` segments before sending (urllib3), so
``api/<cid>/<id>/../../../../other/loot.bin`` used to read (and ``cleanup`` delete) ``/other/loot.bin``: any
blob of the account. Azurite with the account key hides that (the rewritten path breaks the SharedKey
signature); Azure with shared keys off does not. The storage tests here therefore run against Azurite over HTTPS
with bearer tokens (tests/fixtures/azurite_oauth.py), where the traversal reproduces, through the app's own
StorageClients and AttachmentStore.
"""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from jsonschema import Draft202012Validator
from urllib3.util import parse_url

from shared.base import errors
from shared.base.storage import StorageClients
from shared.send import attachments as attachments_module
from shared.send.attachments import AttachmentStore
from shared.send.mail import SendMessage, parse_message
from tests.fixtures.azurite_oauth import OAuthAzurite, oauth_settings
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)
from tests.test_send_schema import SCHEMA

LOOT = b"31 bytes of another container!!"
TRAVERSALS = ["..", ".", "a/../../x", "a/./b", "a//b", "/a", "a/", "a\\b", "%2e%2e/x", "a%2Fb", "a\x00b", "a b", "x."]


@pytest.fixture
def store(azurite_oauth: OAuthAzurite):
    """An AttachmentStore on its own container of the bearer-token Azurite, beside a container ``other`` holding
    ``loot.bin`` (what a traversal would reach). Returns (store, other container client)."""
    name = "att" + uuid.uuid4().hex[:12]
    clients = StorageClients(oauth_settings(azurite_oauth, name), credential=azurite_oauth.credential())
    clients.blobs.create_container(name)  # in Azure, infra creates it (identity-based: nothing is created here)
    other = clients.blobs.get_container_client("other" + uuid.uuid4().hex[:12])
    other.create_container()
    other.upload_blob("loot.bin", LOOT)
    yield AttachmentStore(clients, name), other
    clients.blobs.delete_container(name)
    other.delete_container()


def _message(cid: str = "c1", mid: str = "m1", **fields) -> SendMessage:
    return parse_message({"id": mid, "connection_id": cid, "to": [{"address": "bob@example.com"}], **fields})


def _traversal(other, cid: str = "c1", mid: str = "m1") -> str:
    """A name under this message's own api/ prefix that climbs out to ``<other>/loot.bin``."""
    return f"api/{cid}/{mid}/../../../../{other.container_name}/loot.bin"


def _exists(container, name: str) -> bool:
    try:
        container.get_blob_client(name).get_blob_properties()
    except ResourceNotFoundError:
        return False
    return True


# --- the published schema and the runtime refuse the same names -------------------------------------------------


@pytest.mark.parametrize("name", TRAVERSALS + ["api/c1/m1/../../../../other/loot.bin", "x" * 513])
@pytest.mark.parametrize("where", ["attachment", "body"])
def test_schema_and_runtime_refuse_names_that_are_not_plain_paths(name, where):
    if where == "attachment":
        data = {"attachments": [{"name": "loot.zip", "blob": name}]}
        field = "attachments.0.blob"
    else:
        data = {"body": {"blob": name}}
        field = "body.blob"
    message = {"id": "m1", "connection_id": "c1", "to": [{"address": "bob@example.com"}], **data}
    assert not Draft202012Validator(SCHEMA).is_valid(message), "the published schema must refuse it too"
    with pytest.raises(errors.InvalidMessage) as refused:
        parse_message(message)
    assert refused.value.code == "invalid_blob_name" and refused.value.extra["field"] == field


@pytest.mark.parametrize("name", ["producer/big.bin", "a", "api/c1/m1/att0-1f", "x/.hidden/y...z", "o:1/_-/a.b"])
def test_plain_names_pass_both(name):
    message = {"id": "m1", "connection_id": "c1", "to": [{"address": "bob@example.com"}], "body": {"blob": name}}
    assert Draft202012Validator(SCHEMA).is_valid(message)
    assert parse_message(message).body.blob == name


def test_urllib3_removes_dot_segments_which_is_why_names_are_checked():
    """The premise of the runtime check: the path sent is not the path the SDK built."""
    assert parse_url("https://h/acct/c/api/a/b/../../../../x/y").path == "/acct/x/y"
    assert attachments_module.sent_path("https://h/acct/c/a%3Ab/x/../y%20z") == "/acct/c/a:b/y z"


# --- against Azure-like storage (HTTPS, bearer tokens) -----------------------------------------------------------


def test_a_traversing_body_blob_reads_nothing_of_another_container(store):
    store, other = store
    msg = _message(body={"blob": "producer/body.txt"})
    msg.body.blob = _traversal(other)  # the runtime holds on its own, whatever validated the message
    try:
        leaked = store.body_text(msg)
    except errors.InvalidMessage as exc:
        refused = exc
    else:
        pytest.fail(f"read {leaked!r}: a blob of another container")
    assert refused.code == "invalid_blob_name" and refused.extra["field"] == "body.blob"


def test_a_traversing_attachment_is_neither_measured_nor_read(store):
    store, other = store
    msg = _message(attachments=[{"name": "loot.zip", "blob": "producer/x.bin"}])
    msg.attachments[0].blob = _traversal(other)
    with pytest.raises(errors.InvalidBlobName):
        store.measure(msg)
    with pytest.raises(errors.InvalidBlobName):
        store.content(msg, msg.attachments[0])
    with pytest.raises(errors.InvalidBlobName):
        list(store.chunks_of(msg, msg.attachments[0], 8))


def test_the_url_check_holds_even_if_the_name_check_were_gone(store, monkeypatch):
    """Two layers: with the name rules switched off, the check of the URL path the request will carry still
    refuses the traversal (and reads nothing)."""
    store, other = store
    monkeypatch.setattr(attachments_module, "is_blob_name", lambda name: True)
    msg = _message(body={"blob": "producer/body.txt"})
    msg.body.blob = _traversal(other)
    with pytest.raises(errors.InvalidBlobName) as refused:
        store.body_text(msg)
    assert "does not stay in the attachments container" in (refused.value.detail or "")


def test_cleanup_deletes_only_this_messages_api_blobs(store):
    store, other = store
    box = store.container
    mine, theirs, sibling, producer = "api/c1/m1/att0-a", "api/c2/m1/att0-a", "api/c1/m2/att0-a", "producer/big.bin"
    for name in (mine, theirs, sibling, producer):
        box.upload_blob(name, b"data")
    msg = _message(attachments=[{"name": f"a{i}", "blob": "producer/big.bin"} for i in range(5)])
    for att, name in zip(msg.attachments, [mine, theirs, sibling, producer, _traversal(other)], strict=True):
        att.blob = name
    store.cleanup(msg)
    assert _exists(other, "loot.bin"), "cleanup deleted a blob of another container"
    assert not _exists(box, mine)
    assert _exists(box, theirs) and _exists(box, sibling) and _exists(box, producer)


def test_another_messages_api_prefix_is_refused(store):
    store, _ = store
    store.container.upload_blob("api/c2/m9/att0-a", b"of another connection")
    store.container.upload_blob("api/c1/m2/att0-a", b"of another message")
    for name in ("api/c2/m9/att0-a", "api/c1/m2/att0-a", "api/c1/m1x/att0-a"):
        msg = _message(attachments=[{"name": "a", "blob": name}])
        with pytest.raises(errors.InvalidBlobName) as refused:
            store.measure(msg)
        assert refused.value.extra["field"] == "attachments.0.blob"


def test_producer_blobs_and_offloaded_content_still_work(store):
    store, _ = store
    store.container.upload_blob("producer/big.bin", b"p" * 1000)
    msg = _message(attachments=[{"name": "big.bin", "blob": "producer/big.bin"}])
    store.measure(msg)
    assert msg.attachments[0].size == 1000
    assert b"".join(store.chunks_of(msg, msg.attachments[0], 300)) == b"p" * 1000
    own = store.put(msg, b"offloaded", "body")
    assert own.startswith("api/c1/m1/")
    msg.body.blob = own
    assert store.body_text(msg) == "offloaded"
    store.cleanup(msg)
    assert not _exists(store.container, own) and _exists(store.container, "producer/big.bin")


def test_a_message_id_that_cannot_name_a_folder_gets_no_blob(store):
    store, _ = store
    msg = _message(mid="m.")
    with pytest.raises(errors.InvalidBlobName) as refused:
        store.put(msg, b"x", "body")
    assert refused.value.extra["field"] == "id"
    assert list(store.container.list_blobs()) == []


# --- end to end: the HTTP API and the queue refuse it with the stable code ---------------------------------------


def test_http_and_queue_refuse_a_traversal_with_invalid_blob_name(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    blobs = kit.services.storage.blobs
    other = blobs.get_container_client("loot" + uuid.uuid4().hex[:12])
    other.create_container()
    other.upload_blob("loot.bin", LOOT)
    traversal = f"../../../../{other.container_name}/loot.bin"
    posted = kit.message(cid, attachments=[{"name": "loot.zip", "blob": f"api/{cid}/m-http/{traversal}"}])
    resp = kit.mb.http("enqueue_message", "POST", body={**posted, "id": "m-http"})
    assert resp.status_code == 400 and kit.mb.json(resp)["error"]["code"] == "invalid_blob_name"
    queued = kit.message(
        cid, id="m-queue", attachments=[{"name": "loot.zip", "blob": f"api/{cid}/m-queue/{traversal}"}]
    )
    with kit.listener():
        kit.put(queued)
        rec = kit.wait_final([(cid, "m-queue")])[(cid, "m-queue")]
    assert rec.status == "rejected" and rec.error_code == "invalid_blob_name"
    assert _exists(other, "loot.bin")
    other.delete_container()
