"""The docstring corpus: English prose from the standard library, deterministic, wrapped as chat exchanges."""
from corrsteer.sae.corpus import QUESTIONS, chat_documents, stdlib_docstrings


def test_docstrings_are_prose_of_bounded_length_and_deterministic():
    docs = stdlib_docstrings()
    assert len(docs) > 500
    assert docs == stdlib_docstrings()
    assert all(200 <= len(text) <= 1500 for _, text in docs)
    short = stdlib_docstrings(min_chars=1000, max_chars=1200)
    assert short and all(1000 <= len(t) <= 1200 for _, t in short)


def test_chat_documents_are_user_question_then_docstring_answer():
    chats = chat_documents()
    assert chats == chat_documents() and chats != chat_documents(seed=1)
    texts = {t for _, t in stdlib_docstrings()}
    for chat in chats[:50]:
        user, answer = chat
        assert user["role"] == "user" and answer["role"] == "assistant"
        assert any(user["content"].startswith(q.split("{}")[0]) for q in QUESTIONS)
        assert answer["content"] in texts
