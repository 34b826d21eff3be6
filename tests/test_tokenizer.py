"""endprompt.tokenizer: the byte-level tokenizer is a stock transformers tokenizer and matches its numpy fast path."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from endprompt.tokenizer import BYTE_VOCAB_SIZE, byte_tokenizer, encode_bytes, is_byte_tokenizer

TOK = byte_tokenizer()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_ids_are_utf8_bytes_and_round_trip(text):
    ids = TOK(text, add_special_tokens=False).input_ids
    assert ids == list(text.encode("utf-8"))
    np.testing.assert_array_equal(encode_bytes(text), ids)
    assert TOK.decode(ids) == text


def test_special_tokens_and_save_load(tmp_path):
    assert len(TOK) == BYTE_VOCAB_SIZE == 260
    assert (TOK.pad_token_id, TOK.bos_token_id, TOK.eos_token_id) == (256, 257, 258)
    assert TOK.convert_tokens_to_ids("<|eot_id|>") == 259
    assert TOK("<eos>", add_special_tokens=False).input_ids == list(b"<eos>")  # text is never parsed as special
    TOK.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert is_byte_tokenizer(loaded) and loaded("héllo", add_special_tokens=False).input_ids == list("héllo".encode())
