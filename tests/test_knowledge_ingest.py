"""Ingestion on a real chromadb with the real offline model: idempotence, updates, pruning, bad input."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings

from core.knowledge.chunking import chunk_text, title_of
from core.knowledge.embeddings import MAX_TOKENS, Embedder, OnnxMiniLMEmbedder
from core.knowledge.errors import KnowledgeStoreError
from core.knowledge.ingest import Ingestor
from core.knowledge.lexical import LexicalIndex
from core.knowledge.ranking import Ranker
from core.knowledge.store import KnowledgeBase, KnowledgeCollection, collection_name

REFUNDS = """# Refunds

## Annual plans

Annual plans can be refunded within 30 days of purchase. After 30 days no refund is possible.

## Monthly plans

Monthly plans are never refunded, but you can cancel at any time and keep access until the period ends.
"""

EXPORT = """# Exporting data

You can export every project as CSV or JSON from Settings, then Export. Exports include comments and attachments.
"""

HTML = """<html><head><title>Keyboard shortcuts</title><style>p {color: red}</style></head>
<body><h2>Navigation</h2><p>Press <b>G</b> then <b>P</b> to jump to your projects list.</p>
<script>var ignored = "never indexed";</script></body></html>"""


def tiny_pdf(text: str) -> bytes:
    """A minimal valid one-page PDF whose only content is `text` (pypdf extracts it back)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@pytest.fixture(scope="module")
def embedder() -> Iterator[OnnxMiniLMEmbedder]:
    # One model per test module, as one per process in production.
    yield OnnxMiniLMEmbedder.load()


@pytest.fixture
async def kb(tmp_path: Path, embedder: OnnxMiniLMEmbedder) -> AsyncIterator[KnowledgeBase]:
    base = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    yield base
    await base.close()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "refunds.md").write_text(REFUNDS)
    (folder / "export.md").write_text(EXPORT)
    (folder / "guides").mkdir()
    (folder / "guides" / "shortcuts.html").write_text(HTML)
    (folder / "guides" / "sso.pdf").write_bytes(tiny_pdf("Single sign-on uses SAML with Okta or Azure AD."))
    return folder


async def chunks_of(collection: KnowledgeCollection) -> dict[str, str]:
    return await collection.source_hashes()


async def test_offline_embeddings_are_normalized_and_meaningful(embedder: OnnxMiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder) and embedder.dimensions == 384
    vectors = await embedder.embed(
        ["how do I reset my password", "I forgot my password", "The weather is nice in Paris today"]
    )
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    similar = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    unrelated = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
    assert similar > 0.6 and unrelated < 0.2


async def test_embedding_order_and_batches_do_not_change_vectors(embedder: OnnxMiniLMEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence about invoices and billing", "mid length text", ""]
    together = await embedder.embed(texts)
    alone = [(await embedder.embed([t]))[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        # Padding to the batch's longest text must not change a text's vector (the mask excludes padding).
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.9999


async def test_a_text_longer_than_the_model_input_is_truncated_not_an_error(embedder: OnnxMiniLMEmbedder) -> None:
    long_text = "refund policy for annual plans " * 2000
    (vector,) = await embedder.embed([long_text])
    (head,) = await embedder.embed([" ".join(long_text.split()[: MAX_TOKENS - 2])])
    assert sum(x * y for x, y in zip(vector, head, strict=True)) > 0.99


async def test_concurrent_embeds_from_many_tasks_agree(embedder: OnnxMiniLMEmbedder) -> None:
    texts = [f"question number {i} about exporting projects" for i in range(12)]
    results = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    expected = await embedder.embed(texts)
    for (got,), want in zip(results, expected, strict=True):
        assert sum(x * y for x, y in zip(got, want, strict=True)) > 0.9999


def test_chunks_follow_headings_and_keep_the_size_limit_with_overlap() -> None:
    paragraph = " ".join(f"Sentence {i} explains one more detail of the billing cycle." for i in range(40))
    text = f"# Billing\n\nIntro paragraph.\n\n## Cycle\n\n{paragraph}\n\n## Invoices\n\nInvoices are PDFs."
    chunks = chunk_text(text, max_chars=400, overlap_chars=80)
    assert title_of(text, "x") == "Billing"
    assert chunks[0].heading == "Billing" and chunks[-1].heading == "Invoices"
    cycle = [c for c in chunks if c.heading == "Cycle"]
    assert len(cycle) > 3 and all(len(c.text) <= 400 for c in chunks)
    # Consecutive chunks of one section share text, so a sentence cut at a boundary is whole in one of them.
    for first, second in itertools.pairwise(cycle):
        assert first.text[-40:] in second.text
    # No chunk crosses a heading.
    assert not any("Invoices are PDFs" in c.text for c in cycle)


async def test_ingesting_twice_adds_nothing_the_second_time(kb: KnowledgeBase, docs: Path) -> None:
    collection = await kb.collection("support")
    first = await Ingestor(collection).ingest([docs])
    assert sorted(first.added) == ["export.md", "guides/shortcuts.html", "guides/sso.pdf", "refunds.md"]
    assert first.skipped == [] and first.chunks_written >= 4
    count = await collection.count()

    second = await Ingestor(collection).ingest([docs])
    assert second.added == second.updated == second.pruned == [] and second.chunks_written == 0
    assert sorted(second.unchanged) == sorted(first.added)
    assert await collection.count() == count


async def test_each_chunk_keeps_its_source_title_and_heading(kb: KnowledgeBase, docs: Path) -> None:
    collection = await kb.collection("support")
    await Ingestor(collection).ingest([docs])
    (best, *_) = await Ranker(collection).search("are annual plans refunded after 30 days?", k=2)
    assert (best.source, best.title, best.heading) == ("refunds.md", "Refunds", "Annual plans")
    assert "30 days" in best.text
    (html,) = await Ranker(collection).search("keyboard shortcut to open the projects list", k=1)
    assert (html.source, html.title, html.heading) == ("guides/shortcuts.html", "Keyboard shortcuts", "Navigation")
    assert "never indexed" not in html.text and "color" not in html.text
    (pdf,) = await Ranker(collection).search("does tasklane support SAML single sign-on with Okta?", k=1)
    assert pdf.source == "guides/sso.pdf" and "Okta" in pdf.text


async def test_front_matter_names_the_document_and_gives_its_link(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "fm"
    folder.mkdir()
    (folder / "refund-policy.md").write_text(
        "---\ntitle: Refunds, explained\nurl: https://help.example.com/refunds\nlayout: page\n---\n\n"
        "# Refunds\n\n## Annual plans\n\nAnnual plans are refunded in full within 30 days.\n"
    )
    (folder / "no_heading.txt").write_text("Monthly plans are never refunded.\n")
    (folder / "bad-url.md").write_text("---\nurl: javascript:alert(1)\n---\n\n# Bad\n\nText.\n")
    (folder / "bad-yaml.md").write_text("---\ntitle: [unclosed\n---\n\n# Bad\n\nText.\n")
    collection = await kb.collection("support")
    summary = await Ingestor(collection).ingest([folder])
    assert sorted(summary.added) == ["no_heading.txt", "refund-policy.md"]
    reasons = dict(summary.skipped)
    assert "must be an absolute http(s) URL" in reasons["bad-url.md"]
    assert "front matter is not valid YAML" in reasons["bad-yaml.md"]

    (best,) = await Ranker(collection).search("are annual plans refunded?", k=1)
    # The front matter's title, not the file name or the first heading; the block itself is not content.
    assert (best.title, best.heading, best.url) == (
        "Refunds, explained",
        "Annual plans",
        "https://help.example.com/refunds",
    )
    assert best.label == "Refunds, explained (Annual plans)"
    assert best.markdown_label == "[Refunds, explained](https://help.example.com/refunds) (Annual plans)"
    found = await Ranker(collection).search("layout page url", k=5, min_score=-1)
    assert not any("layout" in p.text or "https://" in p.text for p in found)
    # Without front matter or heading: the file name, made readable; no link.
    (plain,) = await Ranker(collection).search("are monthly plans refunded?", k=1)
    assert (plain.title, plain.url, plain.markdown_label) == ("No heading", "", "No heading")


async def test_a_changed_file_replaces_its_old_chunks(kb: KnowledgeBase, docs: Path) -> None:
    collection = await kb.collection("support")
    await Ingestor(collection).ingest([docs])
    before = await collection.count()
    (docs / "export.md").write_text("# Exporting data\n\nExports are now available as XLSX spreadsheets only.\n")

    summary = await Ingestor(collection).ingest([docs])
    assert summary.updated == ["export.md"] and summary.added == []
    assert sorted(summary.unchanged) == ["guides/shortcuts.html", "guides/sso.pdf", "refunds.md"]
    assert await collection.count() == before
    found = await Ranker(collection).search("export projects as CSV or JSON", k=5, min_score=-1)
    export_texts = [p.text for p in found if p.source == "export.md"]
    assert export_texts == ["Exports are now available as XLSX spreadsheets only."]


async def test_deleted_files_are_pruned_only_when_asked(kb: KnowledgeBase, docs: Path) -> None:
    collection = await kb.collection("support")
    await Ingestor(collection).ingest([docs])
    (docs / "refunds.md").unlink()

    kept = await Ingestor(collection).ingest([docs])
    assert kept.pruned == [] and "refunds.md" in await chunks_of(collection)

    pruned = await Ingestor(collection).ingest([docs], prune=True)
    assert pruned.pruned == ["refunds.md"]
    assert "refunds.md" not in await chunks_of(collection)
    found = await Ranker(collection).search("refund for annual plans", k=5, min_score=-1)
    assert all(p.source != "refunds.md" for p in found)


async def test_unusable_files_are_reported_and_skipped_without_aborting(kb: KnowledgeBase, docs: Path) -> None:
    (docs / "empty.md").write_text("   \n\n")
    (docs / "logo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (docs / "latin1.txt").write_bytes("Caf\xe9 menu".encode("latin-1"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (docs / "notes.docx").write_bytes(b"ignored: not a supported type inside a folder")
    unreadable = docs / "secret.md"
    unreadable.write_text("# Secret\n\nhidden")
    unreadable.chmod(0)
    collection = await kb.collection("support")

    summary = await Ingestor(collection).ingest([docs, docs / "missing.md", docs / "notes.docx"])
    reasons = dict(summary.skipped)
    assert reasons["empty.md"] == "empty (no text)"
    assert reasons["logo.txt"].startswith("binary file")
    assert reasons["latin1.txt"].startswith("not UTF-8 text")
    assert reasons["broken.pdf"].startswith("unreadable PDF")
    assert reasons[str(docs / "missing.md")] == "no such file or folder"
    assert reasons["notes.docx"] == "unsupported file type .docx"
    if os.geteuid() != 0:  # root reads anything
        assert reasons["secret.md"].startswith("unreadable")
    # The good files went in all the same.
    assert {"export.md", "refunds.md", "guides/sso.pdf", "guides/shortcuts.html"} <= set(summary.added)
    assert "skipped empty.md: empty (no text)" in summary.describe()


async def test_documents_for_one_user_are_found_only_in_that_users_conversations(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir()
    (private / "contract.md").write_text("# Acme contract\n\nAcme's contract renews on 1 March with 40 seats.\n")
    collection = await kb.collection("support")
    await Ingestor(collection, audience="api:alice").ingest([private])

    question = "when does our contract renew?"
    assert await Ranker(collection).search(question, audiences=("*", "api:bob")) == []
    (found,) = await Ranker(collection).search(question, k=1, audiences=("*", "api:alice"))
    assert found.source == "contract.md"


async def test_a_reopened_store_keeps_its_chunks_and_never_needs_a_download(
    tmp_path: Path, embedder: OnnxMiniLMEmbedder, docs: Path
) -> None:
    kb = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    await Ingestor(await kb.collection("support")).ingest([docs])
    count = await (await kb.collection("support")).count()
    await kb.close()

    again = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    try:
        assert await (await again.collection("support")).count() == count
        assert (await Ingestor(await again.collection("support")).ingest([docs])).chunks_written == 0
    finally:
        await again.close()

    # A plain chromadb client that opens the collection by name, with no embedding function, rebuilds ours
    # from the stored config and embeds a text query offline (chromadb's default would try to download).
    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    try:
        raw = client.get_collection(collection_name("support"))
        result = raw.query(query_texts=["refund for an annual plan"], n_results=1)
        assert result["metadatas"][0][0]["source"] == "refunds.md"
    finally:
        client.close()


async def test_a_corrupted_store_gives_a_clear_error_with_the_fix(tmp_path: Path, embedder: Embedder) -> None:
    store = tmp_path / "chroma"
    store.mkdir()
    (store / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(KnowledgeStoreError) as caught:
        await KnowledgeBase.open(embedder=embedder, path=store)
    message = str(caught.value)
    assert str(store) in message and "move the folder aside" in message and "relaybot ingest" in message

    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    with pytest.raises(KnowledgeStoreError, match="is a file, not a directory"):
        await KnowledgeBase.open(embedder=embedder, path=a_file)


async def test_an_unreachable_chroma_server_names_the_url_and_the_fix(embedder: Embedder) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(KnowledgeStoreError) as caught:
        await KnowledgeBase.open(embedder=embedder, url=f"http://127.0.0.1:{port}")
    assert f"http://127.0.0.1:{port}" in str(caught.value) and "CHROMA_URL" in str(caught.value)


# --------------------------------------------------------------------------------------------------
# The BM25 index: saved next to the chroma store, in step with the collection


def lexical_sources(index: LexicalIndex, query: str, sources: dict[str, str]) -> set[str]:
    return {sources[chunk_id] for chunk_id, _ in index.search(query, 10, ("*",))}


async def ids_to_sources(collection: KnowledgeCollection) -> dict[str, str]:
    rows = await collection._call(lambda: collection._collection.get(include=["metadatas"]))
    return {i: str(m["source"]) for i, m in zip(rows["ids"], rows["metadatas"], strict=True)}


async def test_the_bm25_index_is_saved_next_to_the_store_and_follows_ingest_reingest_and_pruning(
    tmp_path: Path, embedder: OnnxMiniLMEmbedder, docs: Path
) -> None:
    kb = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    collection = await kb.collection("support")
    folder = tmp_path / "lexical" / collection.name
    await Ingestor(collection).ingest([docs])
    first = await collection.revision()
    # Built and saved by the ingest, under the collection's revision.
    assert (folder / "current").read_text() == first and (folder / first / "rows.json").is_file()
    sources = await ids_to_sources(collection)
    index = await collection.lexical_index()
    assert index.revision == first and len(index) == await collection.count()
    # Titles and headings are indexed with the text: "Annual plans" is a heading, not in its paragraph's words.
    assert lexical_sources(index, "annual", sources) == {"refunds.md"}
    assert lexical_sources(index, "CSV JSON", sources) == {"export.md"}

    # A run that changes nothing writes nothing: same revision, same files.
    await Ingestor(collection).ingest([docs])
    assert await collection.revision() == first

    # A changed file: a new revision, and the index has the new words and not the old ones.
    (docs / "export.md").write_text("# Exporting data\n\nExports are now available as XLSX spreadsheets only.\n")
    await Ingestor(collection).ingest([docs])
    second = await collection.revision()
    assert second != first and (folder / "current").read_text() == second
    assert not (folder / first).exists()  # the old revision's files are gone
    index = await collection.lexical_index()
    sources = await ids_to_sources(collection)
    assert lexical_sources(index, "XLSX", sources) == {"export.md"}
    assert lexical_sources(index, "CSV JSON", sources) == set()

    # Pruning a deleted file removes its chunks from the index too.
    (docs / "refunds.md").unlink()
    await Ingestor(collection).ingest([docs], prune=True)
    index = await collection.lexical_index()
    assert index.revision == await collection.revision() != second
    assert lexical_sources(index, "annual refund", await ids_to_sources(collection)) == set()
    await kb.close()

    # Another process opening the store finds the saved index at the collection's revision: no rebuild.
    again = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    reopened = await again.collection("support")
    saved = LexicalIndex.load(folder, await reopened.revision())
    assert saved is not None and saved.ids == (await reopened.lexical_index()).ids
    await again.close()


async def test_an_index_out_of_step_with_the_collection_is_rebuilt_from_chromadb(
    tmp_path: Path, embedder: OnnxMiniLMEmbedder, docs: Path
) -> None:
    kb = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    collection = await kb.collection("support")
    await Ingestor(collection).ingest([docs])
    folder = tmp_path / "lexical" / collection.name
    await kb.close()
    shutil.rmtree(folder)  # lost (or never written by an older version): derived data, rebuilt on first use
    kb = await KnowledgeBase.open(embedder=embedder, path=tmp_path / "chroma")
    collection = await kb.collection("support")
    found = await Ranker(collection).search("refund for annual plans", k=1, retrieval="lexical")
    assert found and found[0].source == "refunds.md"
    assert (folder / "current").read_text() == await collection.revision()
    await kb.close()
